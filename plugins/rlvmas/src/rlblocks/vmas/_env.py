"""VMAS scenarios as rlblocks envs: :class:`VmasWrapper` and :class:`VmasEnv`."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase

from rlblocks.core import ACTION, DONE, OBSERVATION, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.errors import MissingKeyError
from rlblocks.core.fast_td import fast_get, new_tensordict
from rlblocks.core.specs import Composite, TensorSpec, Unbounded
from rlblocks.core.utils import as_device, check_int
from rlblocks.envs import EnvBase, MarlGroupMapType, make_group_map
from rlblocks.vmas._scenarios import check_scenario, import_vmas
from rlblocks.vmas._specs import ActionKind, action_spec, homogeneous, info_spec, observation_spec

__all__ = ["VmasWrapper", "VmasEnv", "INFO"]

INFO = "info"
"""Key, under each group, of the agents' VMAS info entries: ``("next", group, "info", name)``."""

# numpy's global seed, which VMAS sets along with torch's, takes 32-bit values.
_SEED_RANGE = 2**32


class _Group:
    """What a step needs to know about one group: its agents' indices and action kind."""

    __slots__ = ("action_kind", "action_spec", "batch", "indices", "info_keys", "name")

    def __init__(
        self,
        name: str,
        indices: list[int],
        batch: torch.Size,
        action: tuple[TensorSpec, str],
        info_keys: list[str],
    ) -> None:
        self.name = name
        self.indices = indices
        self.batch = batch
        self.action_spec, self.action_kind = action
        self.info_keys = info_keys


def _stack(values: Sequence[Any], batch: torch.Size, device: torch.device) -> Any:
    """Stack per-agent tensors (or dicts of them) along a new agent dim after the batch dim."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(values, dim=1)
    return new_tensordict(
        {key: _stack([v[key] for v in values], batch, device) for key in first},
        batch,
        device,
    )


class VmasWrapper(EnvBase):
    """Wrap a VMAS ``Environment`` (``num_envs`` scenarios simulated at once in torch).

    The rlblocks env has ``batch_size == [num_envs]``; VMAS steps all of them in one call, so
    there is no Python loop over envs in ``step``, and none in ``reset`` except for a partial
    reset (see below).

    **Keys.** Agents are grouped (:attr:`group_map`); each group is a top-level key whose
    entries have an agent dim right after the batch dim, in the order of the group's list:

    * ``(group, "observation")`` ``[num_envs, n_agents, obs_dim]`` (a scenario returning
      dict observations gets one entry per dict key under ``(group, "observation")``);
    * ``(group, "action")``: ``Bounded [num_envs, n_agents, act_dim]`` for continuous actions;
      for discrete ones ``Categorical [num_envs, n_agents]`` (``categorical_actions=True``) or
      ``OneHot [num_envs, n_agents, n]``; VMAS's ``multidiscrete_actions`` give
      ``MultiCategorical``/``MultiOneHot``;
    * ``("next", group, "reward")`` ``[num_envs, n_agents, 1]``;
    * ``(group, "info", name)`` ``[num_envs, n_agents, ...]``: the scenario's info entries
      (under ``"next"`` after a step; a per-env scalar gets a trailing dim of 1). Only entries
      every agent of the group has, with one shape, are kept.
    * ``done``/``terminated``/``truncated`` ``[num_envs, 1]`` at the root: VMAS has one done
      per env, shared by its agents. ``truncated`` is set where VMAS's ``max_steps`` ended the
      episode, ``terminated`` where the scenario's ``done()`` did (both may be set).

    **Groups.** By default every agent is in one group ``"agents"`` when all agents have the
    same observation and action spaces; otherwise agents are grouped by the type in their
    names (``adversary_0`` -> ``"adversary"``, see :class:`~rlblocks.envs.MarlGroupMapType`).
    Pass a :class:`~rlblocks.envs.MarlGroupMapType` or an explicit ``{group: [agent names]}``
    to choose; agents of a group must have spaces of one kind and shape.

    **Resets.** ``reset()`` resets every env in one call. A ``"_reset"`` mask ``[num_envs, 1]``
    resets only those envs: VMAS 1.5 resets one env per ``reset_at(index)`` call, so this
    loops over the envs to reset (and only those; a mask selecting every env is one
    vectorized reset).

    **Seeding.** ``set_seed(s)`` calls VMAS's ``env.seed(s)``. VMAS keeps one random state
    shared by all its environments in the process (swapped in around each of its calls), so
    seeding one VMAS env reseeds the others too.

    Args:
        env: A ``vmas.simulator.environment.Environment`` (from ``vmas.make_env``; not one of
            VMAS's gym/rllib wrappers), not stepped by anyone else while wrapped.
        group_map: How to group the agents (default above).
        categorical_actions: For discrete actions, integer indices (``True``) or one-hot
            vectors.
        device: The env's device; it must be VMAS's (default: VMAS's).
        check_actions: Validate actions in ``step`` (see :class:`~rlblocks.envs.EnvBase`).

    Raises:
        TypeError: ``env`` is not a VMAS ``Environment``.
        ValueError: ``device`` is not the VMAS env's device.
        EnvSpecError: ``group_map`` names an unknown agent, misses one, or stacks agents with
            different spaces.

    Example:
        >>> import vmas
        >>> env = VmasWrapper(vmas.make_env("navigation", num_envs=32, n_agents=3))
        >>> env.group_map
        {'agents': ['agent_0', 'agent_1', 'agent_2']}
        >>> env.rollout(10)["next", "agents", "reward"].shape
        torch.Size([32, 10, 3, 1])
    """

    step_returns_done_flags = True

    def __init__(
        self,
        env: Any,
        *,
        group_map: MarlGroupMapType | Mapping[str, Sequence[str]] | None = None,
        categorical_actions: bool = True,
        device: Any = None,
        check_actions: bool = True,
    ) -> None:
        from vmas.simulator.environment import Environment

        who = type(self).__name__
        if not isinstance(env, Environment):
            raise TypeError(
                f"{who} wraps a vmas.simulator.environment.Environment, got "
                f"{type(env).__name__}; build one with vmas.make_env(scenario, num_envs=...) "
                f"(without wrapper=...), or use VmasEnv(scenario, num_envs=...)"
            )
        vmas_device = torch.device(env.device)
        if device is not None and as_device(device) != vmas_device:
            raise ValueError(
                f"{who}: device={device!r}, but the VMAS env simulates on {vmas_device}; "
                f"build it on that device (vmas.make_env(..., device={str(device)!r})) or "
                f"leave device=None"
            )
        super().__init__(
            device=vmas_device, batch_size=(env.num_envs,), check_actions=check_actions
        )
        self._env = env
        self.categorical_actions = bool(categorical_actions)
        names = [agent.name for agent in env.agents]
        self._by_name = bool(env.dict_spaces)
        obs_spaces = [
            env.observation_space[name if self._by_name else i] for i, name in enumerate(names)
        ]
        act_spaces = [env.get_agent_action_space(agent) for agent in env.agents]
        self.group_map = make_group_map(
            names, group_map, homogeneous=homogeneous(obs_spaces, act_spaces), owner=who
        )
        self._agent_names = names
        _, infos = self._observe_scenario()
        self._declare_specs(names, obs_spaces, act_spaces, infos)

    def _declare_specs(
        self,
        names: list[str],
        obs_spaces: list[Any],
        act_spaces: list[Any],
        infos: list[Mapping[str, torch.Tensor]],
    ) -> None:
        who, batch, device = type(self).__name__, self.batch_size, self.device
        observation, action, reward = {}, {}, {}
        self._groups: list[_Group] = []
        for group, members in self.group_map.items():
            indices = [names.index(a) for a in members]
            agents = torch.Size((*batch, len(members)))
            obs = observation_spec(
                [obs_spaces[i] for i in indices], members, group, batch, device, who
            )
            act = action_spec(
                [act_spaces[i] for i in indices],
                members,
                group,
                batch,
                device,
                who,
                categorical=self.categorical_actions,
            )
            info, info_keys = info_spec([infos[i] for i in indices], batch, device)
            leaves = {OBSERVATION: obs}
            if info_keys:
                leaves[INFO] = info
            observation[group] = Composite(leaves, shape=agents, device=device)
            action[group] = Composite({ACTION: act[0]}, shape=agents, device=device)
            reward[group] = Composite(
                {REWARD: Unbounded(shape=(*agents, 1), device=device)},
                shape=agents,
                device=device,
            )
            self._groups.append(_Group(group, indices, agents, act, info_keys))
        self.full_observation_spec = Composite(observation, shape=batch, device=device)
        self.full_action_spec = Composite(action, shape=batch, device=device)
        self.full_reward_spec = Composite(reward, shape=batch, device=device)

    # ------------------------------------------------------------------ properties
    @property
    def env(self) -> Any:
        """The wrapped VMAS ``Environment``."""
        return self._env

    @property
    def max_steps(self) -> int | None:
        """VMAS's episode length: episodes are truncated after it (``None``: no limit)."""
        return self._env.max_steps

    # ------------------------------------------------------------------ conversions
    def _observe_scenario(self) -> tuple[list[Any], list[Mapping[str, torch.Tensor]]]:
        """The current observations and infos of every agent, as lists in agent order."""
        obs, infos = self._env.get_from_scenario(
            get_observations=True,
            get_infos=True,
            get_rewards=False,
            get_dones=False,
            dict_agent_names=False,
        )
        return obs, infos

    def _output(
        self,
        obs: Sequence[Any],
        infos: Sequence[Mapping[str, torch.Tensor]],
        rewards: Sequence[torch.Tensor] | None = None,
        flags: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> TensorDictBase:
        device = self.device
        data: dict[str, Any] = {}
        for group in self._groups:
            indices, batch = group.indices, group.batch
            entries: dict[str, Any] = {
                OBSERVATION: _stack([obs[i] for i in indices], batch, device)
            }
            if group.info_keys:
                info = {}
                for key in group.info_keys:
                    value = torch.stack([infos[i][key] for i in indices], dim=1)
                    info[key] = value.unsqueeze(-1) if value.ndim == 2 else value
                entries[INFO] = new_tensordict(info, batch, device)
            if rewards is not None:
                reward = torch.stack([rewards[i] for i in indices], dim=1)
                entries[REWARD] = reward.unsqueeze(-1)
            data[group.name] = new_tensordict(entries, batch, device)
        if flags is not None:
            terminated, truncated = flags
            terminated = terminated.reshape(*self.batch_size, 1)
            truncated = truncated.reshape(*self.batch_size, 1)
            data[TERMINATED] = terminated
            data[TRUNCATED] = truncated
            data[DONE] = terminated | truncated
        return new_tensordict(data, self.batch_size, device)

    def _actions(self, tensordict: TensorDictBase) -> list[torch.Tensor]:
        """VMAS's per-agent action list from the groups' stacked actions."""
        actions: list[Any] = [None] * len(self._agent_names)
        for group in self._groups:
            entries = fast_get(tensordict, group.name)
            value = None if entries is None else fast_get(entries, ACTION)
            if value is None:
                raise MissingKeyError(
                    f"{type(self).__name__}.step(): the TensorDict has no action "
                    f"{(group.name, ACTION)!r}; set it with a policy or env.rand_action(td)"
                )
            kind = group.action_kind
            if kind in (ActionKind.ONE_HOT, ActionKind.MULTI_ONE_HOT):
                value = group.action_spec.to_categorical(value)
            if kind in (ActionKind.CATEGORICAL, ActionKind.ONE_HOT):
                # VMAS takes [num_envs, 1] per agent for a Discrete space.
                for j, i in enumerate(group.indices):
                    actions[i] = value[:, j : j + 1]
            else:
                for j, i in enumerate(group.indices):
                    actions[i] = value[:, j]
        return actions

    def _flags(self, dones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(terminated, truncated) from the single done of an env built without
        ``terminated_truncated``."""
        env = self._env
        if env.max_steps is None:
            return dones, torch.zeros_like(dones)
        # VMAS ORs its step limit into done; ask the scenario for the termination alone.
        return env.scenario.done().clone(), env.steps >= env.max_steps

    def _by_agent(self, values: Any) -> list[Any]:
        return [values[name] for name in self._agent_names] if self._by_name else values

    # ------------------------------------------------------------------ EnvBase API
    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}.reset() takes no keyword arguments, got {sorted(kwargs)}"
            )
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        if mask is None or bool(mask.all()):
            self._env.reset(return_observations=False)
        else:
            # VMAS 1.5 has no vectorized partial reset: one reset_at per env to reset.
            for index in mask.reshape(-1).nonzero().reshape(-1).tolist():
                self._env.reset_at(index, return_observations=False)
        obs, infos = self._observe_scenario()
        return self._output(obs, infos)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        env = self._env
        out = env.step(self._actions(tensordict))
        if env.terminated_truncated:
            obs, rewards, terminated, truncated, infos = out
            flags = (terminated, truncated)
        else:
            obs, rewards, dones, infos = out
            flags = self._flags(dones)
        if self._by_name:
            obs, rewards, infos = (
                self._by_agent(obs),
                self._by_agent(rewards),
                self._by_agent(infos),
            )
        return self._output(obs, infos, rewards, flags)

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            seed = secrets.randbelow(_SEED_RANGE)  # VMAS would read None as seed 0
        self._env.seed(seed % _SEED_RANGE)

    def _close(self) -> None:
        viewer = getattr(self._env, "viewer", None)
        if viewer is not None:
            viewer.close()
            self._env.viewer = None


class VmasEnv(VmasWrapper):
    """A VMAS scenario, e.g. ``VmasEnv("navigation", num_envs=64, n_agents=3)``.

    Also made by ``rlblocks.core.make_env("vmas:navigation", num_envs=64, n_agents=3)``;
    :func:`~rlblocks.vmas.list_scenarios` lists the names. See :class:`VmasWrapper` for the
    keys, groups, resets and seeding. VMAS is built with ``terminated_truncated=True``, so
    ``terminated`` and ``truncated`` come from VMAS as they are.

    Args:
        scenario: A scenario name (``"navigation"``, ``"simple_tag"``...) or an instance of
            ``vmas.simulator.scenario.BaseScenario``.
        num_envs: Number of envs simulated together (the env's ``batch_size``).
        continuous_actions: Continuous (``Bounded``) or discrete actions.
        max_steps: Truncate episodes after this many steps (``None``: no limit).
        seed: Seed VMAS's random state before the first reset.
        group_map: How to group the agents (see :class:`VmasWrapper`).
        categorical_actions: For discrete actions, integer indices or one-hot vectors.
        device: Where VMAS simulates, and the env's device (default: torch's default).
        check_actions: Validate actions in ``step``.
        **scenario_kwargs: Passed to ``vmas.make_env``: the scenario's own options
            (``n_agents=3``...) and VMAS's ``dict_spaces``, ``multidiscrete_actions``,
            ``clamp_actions``, ``grad_enabled``.

    Raises:
        UnknownScenarioError: No VMAS scenario has that name; the message suggests close ones.
        ValueError: ``num_envs``, ``max_steps`` or ``seed`` is not a valid int.
        EnvSpecError: ``group_map`` names an unknown agent or misses one.

    Example:
        >>> env = VmasEnv("navigation", num_envs=8, n_agents=2, max_steps=100, seed=0)
        >>> td = env.rollout(100, break_when_any_done=False)
        >>> td["agents", "observation"].shape
        torch.Size([8, 100, 2, 18])
        >>> bool(td["next", "truncated"][:, -1].all())
        True
    """

    def __init__(
        self,
        scenario: Any,
        *,
        num_envs: int,
        continuous_actions: bool = True,
        max_steps: int | None = None,
        seed: int | None = None,
        group_map: MarlGroupMapType | Mapping[str, Sequence[str]] | None = None,
        categorical_actions: bool = True,
        device: Any = None,
        check_actions: bool = True,
        **scenario_kwargs: Any,
    ) -> None:
        who = type(self).__name__
        vmas = import_vmas()
        from vmas.simulator.scenario import BaseScenario

        num_envs = check_int(num_envs, "num_envs", who)
        max_steps = check_int(max_steps, "max_steps", who, allow=(None,))
        seed = check_int(seed, "seed", who, minimum=0, allow=(None,))
        for key in ("terminated_truncated", "wrapper", "wrapper_kwargs"):
            if key in scenario_kwargs:
                raise TypeError(
                    f"{who}: {key!r} is not an option here (the env reads VMAS's terminated "
                    f"and truncated flags itself); build the VMAS env with vmas.make_env and "
                    f"wrap it with VmasWrapper instead"
                )
        if isinstance(scenario, str):
            check_scenario(scenario)
            self.scenario_name = scenario
        elif isinstance(scenario, BaseScenario):
            self.scenario_name = type(scenario).__name__
        else:
            raise TypeError(
                f"{who}: scenario must be a VMAS scenario name (see rlblocks.vmas."
                f"list_scenarios()) or a vmas BaseScenario instance, got {type(scenario).__name__}"
            )
        device = as_device(device)
        try:
            env = vmas.make_env(
                scenario,
                num_envs=num_envs,
                device=device,
                continuous_actions=continuous_actions,
                max_steps=max_steps,
                seed=None if seed is None else seed % _SEED_RANGE,
                terminated_truncated=True,
                **scenario_kwargs,
            )
        except Exception as exc:
            exc.add_note(
                f"(raised by VMAS while building scenario {self.scenario_name!r} with "
                f"num_envs={num_envs}, scenario_kwargs={scenario_kwargs})"
            )
            raise
        super().__init__(
            env,
            group_map=group_map,
            categorical_actions=categorical_actions,
            device=device,
            check_actions=check_actions,
        )

    def __repr__(self) -> str:
        return (
            f"VmasEnv({self.scenario_name!r}, num_envs={self.batch_size[0]}, "
            f"max_steps={self.max_steps}, group_map={self.group_map}, device={self.device})"
        )
