"""A small multi-agent env in torch: :class:`MultiAgentLineEnv`.

It has what multi-agent code has to get right and needs no simulator: an agent group with
an agent dim, per-agent rewards, agents that finish at different times (their rows stay in
the batch, flagged done), an env-level done derived from the agents', and a global state.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

from rlblocks.core import DONE, OBSERVATION, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.fast_td import new_tensordict
from rlblocks.core.specs import Binary, Bounded, Categorical, Composite, Unbounded
from rlblocks.core.utils import check_int
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs._multiagent import all_agents_done

__all__ = ["MultiAgentLineEnv"]

GROUP = "agents"
STATE = "state"
_FLAGS = (DONE, TERMINATED, TRUNCATED)


class MultiAgentLineEnv(EnvBase):
    """``n_agents`` agents on a line of ``length`` cells, each walking to its own goal.

    Each step every agent moves left (action 0), stays (1) or right (2); walls stop it.
    An agent that reaches its goal gets ``+1`` and is terminated: it stays there, its
    further actions are ignored and its reward is 0, but its row stays in the batch with
    its done flags set. Until then it gets ``-0.05`` per step. The episode is terminated
    when every agent is, and truncated after ``max_steps`` steps.

    Keys (group ``"agents"``, agent dim after the batch dims):

    * ``("agents", "observation")`` ``[*batch, n_agents, 3]``: own position, own goal and
      their difference, divided by ``length - 1``;
    * ``("agents", "action")`` ``[*batch, n_agents]``, ``Categorical(3)``;
    * ``("next", "agents", "reward")`` ``[*batch, n_agents, 1]``;
    * ``("agents", "done" | "terminated" | "truncated")`` ``[*batch, n_agents, 1]`` per
      agent, and ``done``/``terminated``/``truncated`` ``[*batch, 1]`` for the episode;
    * ``"state"`` ``[*batch, 2 * n_agents]``: every position and goal (a global state for
      centralised critics and mixers).

    Args:
        n_agents: Number of agents.
        length: Number of cells (>= 2).
        max_steps: Steps before the episode is truncated.
        batch_size: Batch dims (independent copies of the env).
        device: Device of the tensors.
        check_actions: Validate actions (see :class:`EnvBase`).

    Example:
        >>> env = MultiAgentLineEnv(n_agents=3, batch_size=[4])
        >>> env.group_map
        {'agents': ['agent_0', 'agent_1', 'agent_2']}
        >>> env.rollout(10)["next", "agents", "reward"].shape
        torch.Size([4, 10, 3, 1])
    """

    step_returns_done_flags = True

    def __init__(
        self,
        n_agents: int = 3,
        length: int = 8,
        max_steps: int = 30,
        *,
        batch_size: Any = (),
        device: Any = None,
        check_actions: bool = True,
    ) -> None:
        owner = "MultiAgentLineEnv"
        self.n_agents = check_int(n_agents, "n_agents", owner, minimum=1)
        self.length = check_int(length, "length", owner, minimum=2)
        self.max_steps = check_int(max_steps, "max_steps", owner, minimum=1)
        super().__init__(batch_size=batch_size, device=device, check_actions=check_actions)
        self.group_map = {GROUP: [f"agent_{i}" for i in range(self.n_agents)]}
        self._generator = torch.Generator(device=self.device)
        self._generator.seed()
        self._declare_specs()
        agents = (*self.batch_size, self.n_agents)
        self._position = torch.zeros(agents, dtype=torch.long, device=self.device)
        self._goal = torch.zeros(agents, dtype=torch.long, device=self.device)
        self._steps = torch.zeros((*self.batch_size, 1), dtype=torch.long, device=self.device)

    def _declare_specs(self) -> None:
        batch, device = self.batch_size, self.device
        agents = (*batch, self.n_agents)

        def group(**leaves: Any) -> Composite:
            return Composite(leaves, shape=agents, device=device)

        def flags(shape: tuple[int, ...]) -> dict[str, Binary]:
            return {k: Binary(shape=(*shape, 1), device=device) for k in _FLAGS}

        self.full_observation_spec = Composite(
            {
                GROUP: group(**{OBSERVATION: Bounded(-1.0, 1.0, (*agents, 3), device=device)}),
                STATE: Bounded(0.0, 1.0, (*batch, 2 * self.n_agents), device=device),
            },
            shape=batch,
            device=device,
        )
        self.full_action_spec = Composite(
            {GROUP: group(action=Categorical(3, shape=agents, device=device))},
            shape=batch,
            device=device,
        )
        self.full_reward_spec = Composite(
            {GROUP: group(**{REWARD: Unbounded(shape=(*agents, 1), device=device)})},
            shape=batch,
            device=device,
        )
        self.full_done_spec = Composite(
            {GROUP: group(**flags(agents)), **flags(batch)}, shape=batch, device=device
        )

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)

    def _observe(self, agent_flags: dict[str, torch.Tensor]) -> TensorDictBase:
        scale = 1.0 / (self.length - 1)
        position = self._position.float() * scale
        goal = self._goal.float() * scale
        observation = torch.stack([position, goal, goal - position], dim=-1)
        agents = (*self.batch_size, self.n_agents)
        group = new_tensordict({OBSERVATION: observation, **agent_flags}, agents, self.device)
        data = {
            GROUP: group,
            STATE: torch.cat([position, goal], dim=-1),
            DONE: all_agents_done(agent_flags[DONE], self.batch_dims),
            TERMINATED: all_agents_done(agent_flags[TERMINATED], self.batch_dims),
        }
        data[TRUNCATED] = data[DONE] & ~data[TERMINATED]
        return new_tensordict(data, self.batch_size, self.device)

    @property
    def batch_dims(self) -> int:
        """Number of batch dims."""
        return len(self.batch_size)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        agents = (*self.batch_size, self.n_agents)
        position = torch.randint(self.length, agents, generator=self._generator, device=self.device)
        # A goal other than the start: a random non-zero offset around the line.
        offset = torch.randint(
            1, self.length, agents, generator=self._generator, device=self.device
        )
        goal = (position + offset) % self.length
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        if mask is None:
            self._position, self._goal = position, goal
            self._steps.zero_()
        else:
            rows = mask.reshape(*self.batch_size, 1)
            self._position = torch.where(rows, position, self._position)
            self._goal = torch.where(rows, goal, self._goal)
            self._steps.masked_fill_(rows, 0)
        arrived = (self._position == self._goal).unsqueeze(-1)
        truncated = torch.zeros_like(arrived)
        return self._observe({DONE: arrived, TERMINATED: arrived.clone(), TRUNCATED: truncated})

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get((GROUP, "action"))
        was_done = self._position == self._goal
        move = torch.where(was_done, 0, action.long() - 1)
        self._position = (self._position + move).clamp(0, self.length - 1)
        self._steps += 1
        arrived = self._position == self._goal
        reward = torch.where(was_done, 0.0, torch.where(arrived, 1.0, -0.05)).unsqueeze(-1)
        terminated = arrived.unsqueeze(-1)
        out_of_time = (self._steps >= self.max_steps).unsqueeze(-1)
        truncated = out_of_time & ~terminated
        out = self._observe(
            {DONE: terminated | truncated, TERMINATED: terminated, TRUNCATED: truncated}
        )
        out.get(GROUP).set(REWARD, reward)
        return out
