"""Shared fixtures of the rlblocks-envs tests: small envs defined here."""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict

from rlblocks.core.specs import Bounded, Composite, Unbounded
from rlblocks.envs import EnvBase

DICT_ENV_ID = "rlblocks-tests/DictEnv-v0"


class DictSpaceEnv(gym.Env):
    """A small gymnasium env with Dict observation and action spaces.

    The agent moves a point in the plane; it terminates when it leaves the unit box and is
    truncated after ``max_steps`` steps. ``info["distance"]`` is the distance to the origin.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, max_steps: int = 8) -> None:
        self.observation_space = spaces.Dict(
            {
                "position": spaces.Box(-2.0, 2.0, (2,), np.float32),
                "mode": spaces.Discrete(3, start=1),
                "sensors": spaces.Dict({"bumps": spaces.MultiBinary(4)}),
            }
        )
        self.action_space = spaces.Dict(
            {"move": spaces.Box(-0.5, 0.5, (2,), np.float32), "gear": spaces.Discrete(2)}
        )
        self.max_steps = max_steps

    def _obs(self) -> dict:
        return {
            "position": self.position.astype(np.float32),
            "mode": int(self.mode),
            "sensors": {"bumps": (np.abs(np.tile(self.position, 2)) > 0.5).astype(np.int8)},
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-0.1, 0.1, 2)
        self.mode = 1 + self.np_random.integers(3)
        self.t = 0
        return self._obs(), {"distance": float(np.linalg.norm(self.position))}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.position = self.position + action["move"] * (1 + action["gear"])
        self.t += 1
        terminated = bool(np.abs(self.position).max() > 1.0)
        truncated = self.t >= self.max_steps
        info = {"distance": float(np.linalg.norm(self.position))}
        return self._obs(), float(-info["distance"]), terminated, truncated, info


if DICT_ENV_ID not in gym.registry:
    gym.register(DICT_ENV_ID, entry_point=DictSpaceEnv)


class CountingEnv(EnvBase):
    """A minimal batched EnvBase: the observation counts steps; done after ``limit`` steps.

    ``_step`` returns only ``terminated`` (EnvBase fills in ``done`` and ``truncated``).
    """

    def __init__(self, batch_size=(), limit: int = 5, device=None, check_actions=True) -> None:
        super().__init__(batch_size=batch_size, device=device, check_actions=check_actions)
        self.limit = limit
        shape = (*self.batch_size, 1)
        self.full_observation_spec = Composite(
            {"observation": Unbounded(shape=shape, dtype=torch.int64, device=self.device)},
            shape=self.batch_size,
            device=self.device,
        )
        self.action_spec = Bounded(-1.0, 1.0, shape=shape, device=self.device)
        self.reward_spec = Unbounded(shape=shape, device=self.device)
        self.count = torch.zeros(shape, dtype=torch.int64, device=self.device)
        self.seeds: list = []

    def _reset(self, tensordict, **kwargs):
        mask = tensordict.get("_reset", None) if tensordict is not None else None
        if mask is None:
            self.count.zero_()
        else:
            self.count[mask.reshape(self.count.shape)] = 0
        return TensorDict({"observation": self.count.clone()}, batch_size=self.batch_size)

    def _step(self, tensordict):
        self.count += 1
        action = tensordict.get("action")
        return TensorDict(
            {
                "observation": self.count.clone(),
                "reward": action.clone(),
                "terminated": self.count >= self.limit,
            },
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed):
        self.seeds.append(seed)


@pytest.fixture(name="counting_env_cls")
def counting_env_cls_fixture():
    """The :class:`CountingEnv` class (test modules cannot import conftest)."""
    return CountingEnv


@pytest.fixture(name="dict_env_id")
def dict_env_id_fixture():
    """Gymnasium id of :class:`DictSpaceEnv`."""
    return DICT_ENV_ID


@pytest.fixture(autouse=True)
def _single_torch_thread():
    # Tests step small tensors; extra threads only add noise on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
