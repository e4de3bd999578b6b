"""Shared fixtures of the rlblocks-dmcontrol tests: a small dm_env environment defined here.

The real dm_control suite is used everywhere it can show a behaviour; :class:`CountdownEnv`
is a plain ``dm_env.Environment`` for what the suite has no task for (nested observation
dicts, a discrete action, an episode that terminates after a known number of steps).
"""

from __future__ import annotations

import dm_env
import numpy as np
import pytest
from dm_env import specs

from rlblocks.dmcontrol import DMControlEnv


class CountdownEnv(dm_env.Environment):
    """Counts down from ``start`` by the action (0, 1 or 2) each step.

    The episode terminates (``LAST`` with discount 0) when the counter reaches 0 and is cut
    short (``LAST`` with discount 1) after ``max_steps`` steps. Reward: the amount counted.
    """

    def __init__(self, start: int = 5, max_steps: int = 100) -> None:
        self.start, self.max_steps = start, max_steps
        self.counter, self.steps = start, 0

    def _observation(self) -> dict:
        level = np.array([self.counter / self.start, 1.0], dtype=np.float32)
        return {"counter": np.int64(self.counter), "sensors": {"level": level}}

    def reset(self) -> dm_env.TimeStep:
        self.counter, self.steps = self.start, 0
        return dm_env.restart(self._observation())

    def step(self, action) -> dm_env.TimeStep:
        amount = min(int(action), self.counter)
        self.counter -= amount
        self.steps += 1
        reward = float(amount)
        if self.counter == 0:
            return dm_env.termination(reward, self._observation())
        if self.steps >= self.max_steps:
            return dm_env.truncation(reward, self._observation())
        return dm_env.transition(reward, self._observation())

    def observation_spec(self) -> dict:
        return {
            "counter": specs.Array((), np.int64, name="counter"),
            "sensors": {"level": specs.BoundedArray((2,), np.float32, 0.0, 1.0, name="level")},
        }

    def action_spec(self) -> specs.DiscreteArray:
        return specs.DiscreteArray(3, dtype=np.int64, name="action")


@pytest.fixture
def cartpole():
    env = DMControlEnv("cartpole", "swingup")
    yield env
    env.close()


@pytest.fixture
def countdown():
    """The :class:`CountdownEnv` class (build it with the arguments a test needs)."""
    return CountdownEnv
