"""Envs, policies and reference loops shared by the benchmark scripts (not a benchmark:
``run_all.py`` skips it).

Defined at module level so that they pickle: a ``ParallelEnv`` started with ``spawn`` or
``forkserver`` sends ``SleepEnv`` to its workers by reference.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from rlblocks.core import DONE, OBSERVATION, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.specs import Categorical, Composite, Unbounded
from rlblocks.envs import EnvBase, GymWrapper

#: How long a step of :class:`SleepEnv` sleeps.
SLEEP_STEP_S = 150e-6


class SleepEnv(EnvBase):
    """A CartPole-shaped env whose step sleeps ``step_s`` seconds and changes nothing.

    It stands for a simulator that waits rather than computes (a GPU, a remote process,
    I/O): worker processes can overlap such steps even on a loaded 2-core machine, so
    ``ParallelEnv`` over ``SerialEnv`` measures the batched env's own overhead.
    Observation ``[4]`` float32 zeros, action ``Categorical(2)``, reward 1, never done.

    Args:
        step_s: Seconds each step sleeps (``time.sleep``, so the OS adds its timer slack,
            alike for every env compared).

    Example:
        >>> env = SleepEnv()
        >>> env.rollout(3)["next", "reward"].shape
        torch.Size([3, 1])
    """

    step_returns_done_flags = True

    def __init__(self, step_s: float = SLEEP_STEP_S) -> None:
        super().__init__(batch_size=())
        self.step_s = step_s
        self.observation_spec = Composite({OBSERVATION: Unbounded(shape=(4,))}, shape=())
        self.action_spec = Categorical(2)
        self.reward_spec = Unbounded(shape=(1,))

    def _output(self, reward: float | None) -> TensorDictBase:
        flag = torch.zeros(1, dtype=torch.bool)
        data = {
            OBSERVATION: torch.zeros(4),
            DONE: flag,
            TERMINATED: flag.clone(),
            TRUNCATED: flag.clone(),
        }
        if reward is not None:
            data[REWARD] = torch.full((1,), reward)
        return TensorDict(data, batch_size=())

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        return self._output(None)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        time.sleep(self.step_s)
        return self._output(1.0)

    def _set_seed(self, seed: int | None) -> None:
        """Nothing is random."""


class SleepGymEnv(gym.Env):
    """:class:`SleepEnv` as a gymnasium env: each step sleeps ``step_s`` seconds.

    Wrapped with ``GymWrapper`` (:func:`make_sleep_gym`) it is a backend with the fast
    path (steppers), as simulators wrapped by rlblocks usually are; :class:`SleepEnv` is
    one without it (every step through TensorDicts).
    """

    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, step_s: float = SLEEP_STEP_S) -> None:
        self.step_s = step_s

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        time.sleep(self.step_s)
        return np.zeros(4, np.float32), 1.0, False, False, {}


def make_sleep_gym() -> GymWrapper:
    """``GymWrapper(SleepGymEnv())``, a module-level factory (it pickles)."""
    return GymWrapper(SleepGymEnv())


class Actor(nn.Module):
    """MLP(64, 64) over the CartPole observation; greedy action."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)
        )

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.mlp(observation).argmax(-1)


class VectorEnvLoop:
    """A hand-written (CleanRL-style) collection loop over a gymnasium vector env.

    Each call runs ``steps`` lockstep steps: ``actor`` on the observation batch, one
    ``venv.step``, and the transition (observation, action, next observation, reward,
    terminated, truncated) written into tensors allocated once per call, as a collector
    stores its batch. The vector env's own autoreset restarts finished episodes.

    Args:
        actor: Maps a float32 observation batch to actions.
        venv: The gymnasium vector env (reset here with seed 0; closed by the caller).
        steps: Lockstep steps per call.
    """

    def __init__(self, actor: nn.Module, venv: gym.vector.VectorEnv, steps: int) -> None:
        self.actor = actor
        self.venv = venv
        self.steps = steps
        self.num_envs = venv.num_envs
        self.obs, _ = venv.reset(seed=0)

    @property
    def frames(self) -> int:
        """Frames collected by one call."""
        return self.steps * self.num_envs

    def __call__(self) -> None:
        steps, n = self.steps, self.num_envs
        obs_shape = self.obs.shape[1:]
        observations = torch.empty(steps, n, *obs_shape)
        next_observations = torch.empty(steps, n, *obs_shape)
        actions = torch.empty(steps, n, dtype=torch.int64)
        rewards = torch.empty(steps, n)
        terminated = torch.empty(steps, n, dtype=torch.bool)
        truncated = torch.empty(steps, n, dtype=torch.bool)
        obs = self.obs
        with torch.no_grad():
            for t in range(steps):
                observation = torch.from_numpy(obs)
                observations[t] = observation
                action = self.actor(observation)
                actions[t] = action
                obs, reward, term, trunc, _ = self.venv.step(action.numpy())
                next_observations[t] = torch.from_numpy(obs)
                rewards[t] = torch.from_numpy(reward)
                terminated[t] = torch.from_numpy(term)
                truncated[t] = torch.from_numpy(trunc)
        self.obs = obs
