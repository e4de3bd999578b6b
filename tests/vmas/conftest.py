"""Shared fixtures of the rlblocks-vmas tests: a small VMAS scenario defined here.

VMAS's own scenarios are used everywhere they can show a behaviour (``navigation`` for
homogeneous agents, ``simple_tag`` for two agent types); :class:`CountdownScenario` covers
what they have no cheap case for: dict observations, and an episode that terminates after a
known number of steps.
"""

from __future__ import annotations

import pytest
import torch
from vmas.simulator.core import Agent, World
from vmas.simulator.scenario import BaseScenario


class CountdownScenario(BaseScenario):
    """Two agents on a plane, observed as ``{"pos": ..., "vel": ...}``.

    The episode terminates after ``end_at`` steps (``None``: never). Reward: minus the
    agent's distance to the origin.
    """

    def make_world(self, batch_dim: int, device: torch.device, **kwargs) -> World:
        self.end_at = kwargs.pop("end_at", None)
        world = World(batch_dim, device)
        for i in range(2):
            world.add_agent(Agent(name=f"agent_{i}", collide=False))
        self.elapsed = torch.zeros(batch_dim, device=device)
        return world

    def reset_world_at(self, env_index: int | None = None) -> None:
        for agent in self.world.agents:
            start = torch.empty(self.world.dim_p, device=self.world.device).uniform_(-1.0, 1.0)
            agent.set_pos(start, batch_index=env_index)
        if env_index is None:
            self.elapsed.zero_()
        else:
            self.elapsed[env_index] = 0

    def observation(self, agent: Agent) -> dict:
        return {"pos": agent.state.pos, "vel": agent.state.vel}

    def reward(self, agent: Agent) -> torch.Tensor:
        return -torch.linalg.vector_norm(agent.state.pos, dim=-1)

    def post_step(self) -> None:
        self.elapsed += 1

    def done(self) -> torch.Tensor:
        if self.end_at is None:
            return torch.zeros_like(self.elapsed, dtype=torch.bool)
        return self.elapsed >= self.end_at


@pytest.fixture
def countdown():
    """The :class:`CountdownScenario` class (build it where a test needs one)."""
    return CountdownScenario
