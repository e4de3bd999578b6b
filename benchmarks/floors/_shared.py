"""What the floors and the SB3 runner share with the examples: flags, envs, evaluation.

Each is written to do what ``examples/_common.py`` does, without rlblocks: the flags every
example has, a gymnasium vector env that autoresets in the same step (as rlblocks' ``GymEnv``
makes it) and the final evaluation protocol.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn


def base_parser(description: str, env_id: str, total_frames: int) -> argparse.ArgumentParser:
    """The flags of ``examples/_common.base_parser`` that change what is run."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--env-id", default=env_id, help="gymnasium environment id")
    parser.add_argument("--seed", type=int, default=1, help="seed of torch and the envs")
    parser.add_argument("--total-frames", type=int, default=total_frames, help="env steps")
    parser.add_argument("--eval-episodes", type=int, default=10, help="final evaluation")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser


def setup(args: argparse.Namespace) -> None:
    """Seed torch and set its thread count, as the examples do."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)


def make_vector_env(env_id: str, num_envs: int) -> gym.vector.VectorEnv:
    """``num_envs`` copies in a ``SyncVectorEnv`` that starts the next episode in the step
    that ends one, the final observation in ``info["final_obs"]`` (rlblocks' ``GymEnv``)."""
    return gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )


def final_observations(next_obs: np.ndarray, done: np.ndarray, info: dict) -> np.ndarray:
    """The observation each step ended in: ``next_obs``, except the final one where done."""
    if not done.any():
        return next_obs
    ended = next_obs.copy()
    for i in np.flatnonzero(done):
        ended[i] = info["final_obs"][i]
    return ended


def evaluate(
    act: Callable[[np.ndarray], np.ndarray], env_id: str, episodes: int, seed: int
) -> float:
    """Mean return of ``episodes`` deterministic episodes, as ``examples/_common.evaluate``.

    All episodes run at once in one vector env seeded ``seed + 10_000`` (never a training
    seed) for the env's time limit; each copy's first episode is the one counted.
    """
    max_steps = gym.spec(env_id).max_episode_steps or 1000
    env = make_vector_env(env_id, episodes)
    obs, _ = env.reset(seed=seed + 10_000)
    returns = np.zeros(episodes)
    running = np.ones(episodes, dtype=bool)
    with torch.no_grad():
        for _ in range(max_steps):
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            returns += reward * running
            running &= ~(terminated | truncated)
    env.close()
    return float(returns.mean())


def report(frames: int, eval_return: float, episodes: int) -> None:
    """Print the frames trained and the final return the way learning.py reads them."""
    print(f"frames: {frames}")
    print(f"final evaluation return: {eval_return:.1f} ({episodes} episodes)")


def mlp(
    in_features: int, out_features: int, hidden: int, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """Two hidden layers of ``hidden`` cells (ReLU unless told otherwise)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        activation(),
        nn.Linear(hidden, hidden),
        activation(),
        nn.Linear(hidden, out_features),
    )


class Replay:
    """A ring buffer of transitions in preallocated tensors (CleanRL style)."""

    def __init__(self, capacity: int, obs_dim: int, action: torch.Tensor) -> None:
        """``action``: one action, giving the shape and dtype of the stored ones."""
        self.capacity, self.pos, self.size = capacity, 0, 0
        self.obs = torch.zeros(capacity, obs_dim)
        self.next_obs = torch.zeros(capacity, obs_dim)
        self.actions = torch.zeros(capacity, *action.shape, dtype=action.dtype)
        self.rewards = torch.zeros(capacity)
        self.terminated = torch.zeros(capacity)

    def add(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: np.ndarray,
        terminated: np.ndarray,
        next_obs: np.ndarray,
    ) -> None:
        """Store one transition of each of ``len(obs)`` envs."""
        n = len(obs)
        rows = torch.arange(self.pos, self.pos + n) % self.capacity
        self.obs[rows] = obs
        self.actions[rows] = action
        self.rewards[rows] = torch.as_tensor(reward, dtype=torch.float32)
        self.terminated[rows] = torch.as_tensor(terminated, dtype=torch.float32)
        self.next_obs[rows] = torch.as_tensor(next_obs)
        self.pos, self.size = (self.pos + n) % self.capacity, min(self.size + n, self.capacity)

    def sample_indices(self, batch_size: int) -> torch.Tensor:
        return torch.randint(self.size, (batch_size,))
