"""Shared fixtures of the rlblocks-pettingzoo tests: two small PettingZoo envs defined here.

The real MPE tasks (``mpe2``) and classic games are used everywhere they can show a
behaviour. :class:`LeavingParallelEnv` and :class:`LeavingAECEnv` are for what they have no
task for: an agent that leaves the episode while the others go on, after a known number of
steps, with rewards that tell the agents apart.
"""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv

from rlblocks.pettingzoo import PettingZooEnv

AGENTS = ["walker_0", "walker_1", "walker_2"]


class LeavingParallelEnv(ParallelEnv):
    """Three walkers count the steps; ``walker_1`` terminates at step ``leave_at``, the
    others are truncated at step ``length``.

    Observation of walker ``i``: ``[step, i, last action]``. Reward: ``i + 1 + action``.
    ``step`` asserts PettingZoo's contract: actions only for the agents in ``self.agents``.
    """

    metadata = {"name": "leaving_parallel_v0"}  # noqa: RUF012 (PettingZoo's class attribute)

    def __init__(self, leave_at: int = 2, length: int = 4) -> None:
        self.leave_at, self.length = leave_at, length
        self.possible_agents = list(AGENTS)
        self.agents: list[str] = []
        self.t = 0
        self.received: list[dict] = []

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 100.0, (3,), np.float32)

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(3)

    def _obs(self, agent: str, action: int) -> np.ndarray:
        return np.array([self.t, AGENTS.index(agent), action], dtype=np.float32)

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.t = 0
        return {a: self._obs(a, 0) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), (sorted(actions), self.agents)
        self.received.append(dict(actions))
        self.t += 1
        agents = self.agents
        obs = {a: self._obs(a, actions[a]) for a in agents}
        rewards = {a: float(AGENTS.index(a) + 1 + actions[a]) for a in agents}
        terminations = {a: a == "walker_1" and self.t >= self.leave_at for a in agents}
        truncations = {a: self.t >= self.length for a in agents}
        infos = {a: {} for a in agents}
        self.agents = [a for a in agents if not (terminations[a] or truncations[a])]
        return obs, rewards, terminations, truncations, infos


class LeavingAECEnv(AECEnv):
    """Three players move in turn; ``walker_1`` terminates on its second move, the game is
    truncated after ``length`` moves in all.

    Observation: ``[moves made, own moves]``. A move with action ``a`` gives the mover
    ``1 + a`` and each other player still in the game ``0.25``.
    """

    metadata = {"name": "leaving_aec_v0"}  # noqa: RUF012 (PettingZoo's class attribute)

    def __init__(self, length: int = 8) -> None:
        super().__init__()
        self.length = length
        self.possible_agents = list(AGENTS)

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 100.0, (2,), np.float32)

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(2)

    def observe(self, agent: str) -> np.ndarray:
        return np.array([self.moves, self.own[agent]], dtype=np.float32)

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.moves = 0
        self.own = dict.fromkeys(self.agents, 0)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self.agent_selection = self.agents[0]

    def step(self, action):
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0
        self._clear_rewards()
        self.moves += 1
        self.own[agent] += 1
        for other in self.agents:
            self.rewards[other] = float(1 + action) if other == agent else 0.25
        if agent == "walker_1" and self.own[agent] == 2:
            self.terminations[agent] = True
        if self.moves >= self.length:
            self.truncations = dict.fromkeys(self.agents, True)
        self._accumulate_rewards()
        order = self.possible_agents
        for k in range(1, len(order) + 1):  # the next player still in the game
            candidate = order[(order.index(agent) + k) % len(order)]
            if candidate in self.agents and not self.terminations[candidate]:
                self.agent_selection = candidate
                break
        self._deads_step_first()


@pytest.fixture
def spread():
    env = PettingZooEnv("mpe2.simple_spread_v3", N=3, max_cycles=25)
    yield env
    env.close()


@pytest.fixture
def tictactoe():
    env = PettingZooEnv("classic.tictactoe_v3")
    yield env
    env.close()


@pytest.fixture
def leaving_parallel():
    """The :class:`LeavingParallelEnv` class (build it with the arguments a test needs)."""
    return LeavingParallelEnv


@pytest.fixture
def leaving_aec():
    """The :class:`LeavingAECEnv` class (build it with the arguments a test needs)."""
    return LeavingAECEnv
