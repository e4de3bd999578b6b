"""PettingZoo envs as rlblocks envs: :class:`PettingZooWrapper` and :class:`PettingZooEnv`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase

from rlblocks.core import ACTION, DONE, NEXT, TERMINATED, TRUNCATED
from rlblocks.core.fast_td import fast_get, new_tensordict, top_items
from rlblocks.core.specs import Binary, Composite
from rlblocks.envs import EnvBase, MarlGroupMapType, SpaceLayout, all_agents_done, make_group_map
from rlblocks.envs.errors import EnvSpecError, InvalidActionError
from rlblocks.pettingzoo._groups import ACTION_MASK, GroupLayout
from rlblocks.pettingzoo._tasks import import_pettingzoo, resolve_task
from rlblocks.pettingzoo.errors import EpisodeOverError, PettingZooError

__all__ = ["PettingZooWrapper", "PettingZooEnv", "STATE"]

STATE = "state"
"""Root key of the env's global state (``env.state()``), with ``return_state=True``."""

_CPU = torch.device("cpu")
_SCALAR = torch.Size([])
_TRUE = np.ones(1, dtype=bool)
_FALSE = np.zeros(1, dtype=bool)


class PettingZooWrapper(EnvBase):
    """Wrap a PettingZoo env (``ParallelEnv`` or ``AECEnv``) as a multi-agent rlblocks env.

    Agents are grouped (``group_map``) and each group's entries are stacked along an agent
    dim, in the order of :attr:`group_map`. For a group ``g`` of ``n`` agents:

    * ``(g, "observation")`` ``[n, *obs]``: a Box observation. A Dict observation puts its
      entries under the group by name, so the classic games give ``(g, "observation")``
      and ``(g, "action_mask")``.
    * ``(g, "action_mask")`` bool ``[n, n_actions]``: legal actions, when observations hold
      an ``"action_mask"`` entry or the env's infos do (checked once, at construction).
    * ``(g, "action")``: ``[n]`` indices for Discrete spaces (``[n, n_actions]`` one-hot
      with ``categorical_actions=False``), ``[n, *shape]`` for Box spaces.
    * ``("next", g, "reward")`` ``[n, 1]``: each agent's reward for the step.
    * ``(g, "done" | "terminated" | "truncated")`` ``[n, 1]``: per agent; once set they stay
      set until the next reset.
    * ``(g, "mask")`` bool ``[n]`` (with ``use_mask``): which agents act at the next step,
      i.e. whose action the next ``step`` applies.
    * ``"done"``/``"terminated"``/``"truncated"`` ``[1]`` at the root: the episode is over
      when every agent is done (:func:`~rlblocks.envs.all_agents_done`), or when any is with
      ``done_on_any=True``. It is ``terminated`` when every agent (any agent) terminated,
      otherwise ``truncated``.
    * ``"state"`` (with ``return_state=True``): ``env.state()``, the global state.

    **Parallel API**: every agent still in the episode acts at each step. **AEC API**
    (turn-based): each ``step`` applies the action of the one agent on turn
    (``env.agent_selection``, the one row set in ``(g, "mask")``) and ignores the other
    rows; agents that are done are then stepped out of the episode with ``None`` actions
    (PettingZoo's "dead steps") until a live agent is on turn. ``("next", g, "reward")``
    holds ``env.rewards`` after the move, what every agent received from it: an agent's
    rewards summed between two of its turns are PettingZoo's ``_cumulative_rewards`` that
    ``env.last()`` reports. After a move every live agent is observed again.

    **Agents that leave early** (PettingZoo removes them from ``env.agents``) keep their
    rows: done flags set, reward 0, observation (and action mask) frozen at their value at
    the step the agent left, ``mask`` ``False``. Their actions are ignored.

    **Illegal actions**: an action its agent's action mask forbids raises
    :class:`~rlblocks.envs.errors.InvalidActionError` naming the group, the agent, the action
    and the legal ones, before PettingZoo is stepped (always, whatever ``check_actions``
    says: the games would otherwise end the episode or corrupt their state).
    :meth:`rand_action` draws legal actions.

    Args:
        env: A ``pettingzoo.ParallelEnv`` or ``pettingzoo.AECEnv``. It is reset once here
            (to read its infos for action masks).
        return_state: Add ``"state"`` from ``env.state()`` (needs ``env.state_space``).
        group_map: ``None`` (all agents in one group ``"agents"`` when they share their
            spaces, else grouped by type: ``"adversary_0"`` -> ``"adversary"``), a
            :class:`~rlblocks.envs.MarlGroupMapType`, or ``{group: [agent names]}``.
            Agents in one group must share their observation and action spaces.
        use_mask: Write ``(g, "mask")``. ``None``: on for the AEC API (which requires it),
            off for the parallel API (the per-agent done flags say who left).
        categorical_actions: Discrete actions as indices; ``False`` uses one-hot actions.
        done_on_any: End the episode when any agent is done; ``None``/``False`` when all are.
        device: Device of the returned tensors.
        check_actions: Validate actions against the specs in ``step`` (see
            :class:`~rlblocks.envs.EnvBase`).

    Raises:
        TypeError: ``env`` is not a PettingZoo env.
        ValueError: ``use_mask=False`` with an AEC env.
        EnvSpecError: The group map names an unknown agent, leaves one out, or groups agents
            whose spaces differ.

    Example:
        >>> from mpe2 import simple_spread_v3
        >>> env = PettingZooWrapper(simple_spread_v3.parallel_env(N=3))
        >>> env.group_map
        {'agents': ['agent_0', 'agent_1', 'agent_2']}
        >>> env.rollout(10)["next", "agents", "reward"].shape
        torch.Size([10, 3, 1])
    """

    step_returns_done_flags = True

    def __init__(
        self,
        env: Any,
        *,
        return_state: bool = False,
        group_map: MarlGroupMapType | Mapping[str, Sequence[str]] | None = None,
        use_mask: bool | None = None,
        categorical_actions: bool = True,
        done_on_any: bool | None = None,
        device: Any = None,
        check_actions: bool = True,
    ) -> None:
        pz = import_pettingzoo(type(self).__name__)
        owner = type(self).__name__
        if isinstance(env, pz.ParallelEnv):
            parallel = True
        elif isinstance(env, pz.AECEnv):
            parallel = False
        else:
            raise TypeError(
                f"{owner} wraps a pettingzoo.ParallelEnv or pettingzoo.AECEnv, got "
                f"{type(env).__name__}; build one with e.g. "
                f"mpe2.simple_spread_v3.parallel_env(), or use PettingZooEnv(task)"
            )
        if use_mask is None:
            use_mask = not parallel
        elif not use_mask and not parallel:
            raise ValueError(
                f"{owner}: use_mask=False is not possible with an AEC (turn-based) env: "
                f"(group, 'mask') is how it tells which agent is on turn; leave use_mask unset"
            )
        super().__init__(device=device, batch_size=(), check_actions=check_actions)
        self._env = env
        self.parallel = parallel
        self.use_mask = bool(use_mask)
        self.done_on_any = bool(done_on_any)
        self.categorical_actions = bool(categorical_actions)
        self.return_state = bool(return_state)
        self._pending_seed: int | None = None
        self._episode_over = True

        agents = list(env.possible_agents)
        obs_spaces = {a: env.observation_space(a) for a in agents}
        act_spaces = {a: env.action_space(a) for a in agents}
        first = agents[0]
        homogeneous = all(
            obs_spaces[a] == obs_spaces[first] and act_spaces[a] == act_spaces[first]
            for a in agents
        )
        groups = make_group_map(agents, group_map, homogeneous=homogeneous, owner=owner)
        if self.return_state and STATE in groups:
            raise EnvSpecError(
                f"{owner}: a group is named {STATE!r}, the key of the global state "
                f"(return_state=True); name the group otherwise"
            )
        info_masks = self._probe_info_masks()
        self._layouts: list[GroupLayout] = []
        for name, members in groups.items():
            _check_shared_spaces(owner, name, members, obs_spaces, act_spaces)
            self._layouts.append(
                GroupLayout(
                    name,
                    members,
                    obs_spaces[members[0]],
                    act_spaces[members[0]],
                    info_mask_size=info_masks.get(members[0]),
                    categorical_actions=self.categorical_actions,
                    use_mask=self.use_mask,
                    device=self.device,
                    owner=owner,
                )
            )
        self.group_map = groups
        self._group_names = frozenset(groups)
        self._where = {a: (lay, i) for lay in self._layouts for i, a in enumerate(lay.agents)}
        self._masked = [lay for lay in self._layouts if lay.has_action_mask and lay.discrete]
        self._num_agents = len(agents)
        self._single = self._layouts[0] if len(self._layouts) == 1 else None
        self._state_layout: SpaceLayout | None = None
        self._declare_specs()

    def _probe_info_masks(self) -> dict[str, int]:
        """Reset once and return ``{agent: n_actions}`` for agents whose info holds a mask."""
        env = self._env
        if self.parallel:
            _, infos = env.reset()
        else:
            env.reset()
            infos = env.infos
        sizes = {}
        for agent, info in (infos or {}).items():
            mask = info.get(ACTION_MASK) if isinstance(info, Mapping) else None
            if mask is not None:
                sizes[agent] = int(np.asarray(mask).shape[-1])
        return sizes

    def _declare_specs(self) -> None:
        device = self.device
        observation: dict[str, Any] = {lay.name: lay.observation_spec for lay in self._layouts}
        if self.return_state:
            space = getattr(self._env, "state_space", None)
            if space is None:
                raise PettingZooError(
                    f"{type(self).__name__}: return_state=True, but the env "
                    f"{type(self._env).__name__} has no state_space (no global state); "
                    f"leave return_state off"
                )
            self._state_layout = SpaceLayout(space, STATE, (), device, dict_at_root=False)
            observation.update(self._state_layout.spec.items())
        self.full_observation_spec = Composite(observation, shape=(), device=device)
        self.full_action_spec = Composite(
            {lay.name: lay.action_spec for lay in self._layouts}, shape=(), device=device
        )
        self.full_reward_spec = Composite(
            {lay.name: lay.reward_spec for lay in self._layouts}, shape=(), device=device
        )
        done: dict[str, Any] = {lay.name: lay.done_spec for lay in self._layouts}
        done.update({k: Binary(shape=(1,), device=device) for k in (DONE, TERMINATED, TRUNCATED)})
        self.full_done_spec = Composite(done, shape=(), device=device)

    # ------------------------------------------------------------------ properties
    @property
    def env(self) -> Any:
        """The wrapped PettingZoo env."""
        return self._env

    # ------------------------------------------------------------------ EnvBase API
    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self._pending_seed = seed  # PettingZoo seeds through reset(seed=...)

    def _reset(
        self, tensordict: TensorDictBase | None, options: dict | None = None, **kwargs: Any
    ) -> TensorDictBase:
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}.reset() got unexpected arguments {sorted(kwargs)}; "
                f"PettingZoo's reset takes only seed= and options="
            )
        env = self._env
        seed, self._pending_seed = self._pending_seed, None
        if self.parallel:
            observations, infos = env.reset(seed=seed, options=options)
        else:
            env.reset(seed=seed, options=options)
            observations = {a: env.observe(a) for a in env.agents}
            infos = env.infos
        for lay in self._layouts:
            lay.reset()
            lay.observe(observations, infos)
        self._episode_over = False
        return self._output(None, False, False)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._episode_over:
            raise EpisodeOverError(
                f"{type(self).__name__}.step(): the episode is over (or was never started); "
                f"call reset() first (rollout, step_and_maybe_reset and the collectors do)"
            )
        self._reject_stray_actions(tensordict)  # before the env is stepped
        step = self._step_parallel if self.parallel else self._step_aec
        rewards = step(tensordict)
        over, terminated = self._episode_end()
        self._episode_over = over
        return self._output(rewards, over, terminated)

    def _step_parallel(self, tensordict: TensorDictBase) -> list[torch.Tensor]:
        env = self._env
        live = env.agents
        everyone = len(live) == self._num_agents
        actions: dict[str, Any] = {}
        for lay in self._layouts:
            values = lay.actions(_group(tensordict, lay.name))
            if everyone and not lay.any_done:
                rows: Sequence[int] = range(lay.n)
            else:
                rows = [i for i, a in enumerate(lay.agents) if a in live and not lay.done[i]]
            if lay.has_action_mask:
                lay.check_legal(rows, [values[i] for i in rows])
            agents = lay.agents
            actions.update((agents[i], values[i]) for i in rows)
        observations, rewards, terminations, truncations, infos = env.step(actions)
        none_set = not any(terminations.values()) and not any(truncations.values())
        out = []
        for lay in self._layouts:
            lay.observe(observations, infos)
            before = lay.update_flags(terminations, truncations, none_set)
            out.append(lay.rewards(rewards, before))
        return out

    def _step_aec(self, tensordict: TensorDictBase) -> list[torch.Tensor]:
        env = self._env
        lay, row = self._where[env.agent_selection]
        action = lay.action(_group(tensordict, lay.name), row)
        if lay.has_action_mask:
            lay.check_legal([row], [action])
        env.step(action)
        # Copies: the dead steps below delete the entries of the agents they remove.
        terminations, truncations = dict(env.terminations), dict(env.truncations)
        rewards, infos = dict(env.rewards), dict(env.infos)
        befores = [layout.update_flags(terminations, truncations) for layout in self._layouts]
        observations: dict[str, Any] = {}
        if not self._episode_end()[0]:
            dying = [a for a in env.agents if terminations.get(a) or truncations.get(a)]
            for agent in dying:  # their final observation, before PettingZoo removes them
                observations[agent] = env.observe(agent)
            for _ in range(len(dying)):
                agent = env.agent_selection
                if not (env.terminations.get(agent) or env.truncations.get(agent)):
                    break
                env.step(None)  # PettingZoo's dead step: the agent leaves env.agents
        for agent in env.agents:
            if agent not in observations:
                observations[agent] = env.observe(agent)
        infos.update(env.infos)
        out = []
        for layout, before in zip(self._layouts, befores):
            layout.observe(observations, infos, before)
            out.append(layout.rewards(rewards, before))
        return out

    def _episode_end(self) -> tuple[bool, bool]:
        """``(over, terminated)`` from the agents' flags."""
        everyone_left = not self._env.agents  # also agents that never joined
        if not everyone_left and not any(lay.any_done for lay in self._layouts):
            return False, False  # the common step, decided without touching the flags
        single = self._single
        if single is not None:
            done, terminated = single.done, single.terminated
        else:
            done = np.concatenate([lay.done for lay in self._layouts])
            terminated = np.concatenate([lay.terminated for lay in self._layouts])
        if self.done_on_any:
            over, term = bool(done.any()), bool(terminated.any())
        else:
            over = bool(all_agents_done(torch.from_numpy(done[:, None]), 0))
            term = bool(all_agents_done(torch.from_numpy(terminated[:, None]), 0))
        over = over or everyone_left
        return over, term and over

    def _acting(self, lay: GroupLayout, over: bool) -> np.ndarray:
        """Which agents of ``lay`` act at the next step (``(g, "mask")``)."""
        if over:
            return np.zeros(lay.n, dtype=bool)
        if not self.parallel:
            mask = np.zeros(lay.n, dtype=bool)
            where = self._where.get(self._env.agent_selection)
            if where is not None and where[0] is lay and not lay.done[where[1]]:
                mask[where[1]] = True
            return mask
        live = self._env.agents
        if len(live) == self._num_agents and not lay.any_done:
            return np.ones(lay.n, dtype=bool)
        return np.fromiter((a in live for a in lay.agents), bool, lay.n) & ~lay.done

    def _output(
        self, rewards: list[torch.Tensor] | None, over: bool, terminated: bool
    ) -> TensorDictBase:
        data: dict[str, Any] = {}
        for i, lay in enumerate(self._layouts):
            mask = self._acting(lay, over) if self.use_mask else None
            data[lay.name] = lay.tensordict(mask, None if rewards is None else rewards[i])
        if self._state_layout is not None:
            data.update(self._state_layout.to_tensors(self._env.state()))
        data[DONE] = done = torch.from_numpy((_TRUE if over else _FALSE).copy())
        self._record_done(done, over)  # any_done() then reads no tensor
        data[TERMINATED] = torch.from_numpy((_TRUE if terminated else _FALSE).copy())
        data[TRUNCATED] = torch.from_numpy((_TRUE if over and not terminated else _FALSE).copy())
        out = new_tensordict(data, _SCALAR, _CPU)
        return out if self.device == _CPU else out.to(self.device)

    def _close(self) -> None:
        self._env.close()

    # ------------------------------------------------------------------ actions
    def rand_action(self, tensordict: TensorDictBase | None = None) -> TensorDictBase:
        """Write uniformly random actions; Discrete ones are drawn among the legal actions.

        The legal actions are read from ``(g, "action_mask")`` in ``tensordict`` (the env's
        latest masks when it has none). Agents with no legal action (not on turn in a
        classic game) get any action: it is not applied.
        """
        tensordict = super().rand_action(tensordict)
        for lay in self._masked:
            group = tensordict.get(lay.name)
            mask = group.get(ACTION_MASK, None)
            if mask is None:
                mask = torch.from_numpy(lay.action_mask.copy()).to(self.device)  # type: ignore[union-attr]
            weights = mask.reshape(-1, mask.shape[-1]).to(torch.float32)
            weights[weights.sum(-1) == 0] = 1.0
            index = torch.multinomial(weights, 1).reshape(mask.shape[:-1])
            if not lay.categorical:
                index = torch.nn.functional.one_hot(index, mask.shape[-1]).to(torch.bool)
            group.set(ACTION, index)
        return tensordict

    def _reject_stray_actions(self, tensordict: TensorDictBase) -> None:
        """Raise if a sub-TensorDict other than a group holds an action (an agent's action
        written under its own name, or under a group this env does not have)."""
        for key, value in top_items(tensordict):
            if key == NEXT or key in self._group_names or not isinstance(value, TensorDictBase):
                continue
            if ACTION in value.keys():
                raise self._stray_action(key)

    def _stray_action(self, key: str) -> InvalidActionError:
        owner, groups = type(self).__name__, self.group_map
        where = self._where.get(key)
        if where is not None:
            lay, row = where
            shape = list(lay.action_spec[ACTION].shape)
            return InvalidActionError(
                f"{owner}.step(): got an action under ({key!r}, {ACTION!r}), but {key!r} is an "
                f"agent (row {row} of group {lay.name!r}), not a group. Fix: write group "
                f"{lay.name!r}'s actions together as ({lay.name!r}, {ACTION!r}) of shape {shape}"
            )
        return InvalidActionError(
            f"{owner}.step(): got an action under ({key!r}, {ACTION!r}), but the env has no "
            f"group {key!r} and no agent of that name; its groups are {groups}. Fix: write "
            f"each group's actions as (group, {ACTION!r})"
        )

    def __repr__(self) -> str:
        api = "parallel" if self.parallel else "AEC"
        return f"{type(self).__name__}({api}, group_map={self.group_map}, device={self.device})"


class PettingZooEnv(PettingZooWrapper):
    """Build a PettingZoo task by id and wrap it (see :class:`PettingZooWrapper`).

    Args:
        task: ``"<package>.<module>"``: ``"mpe2.simple_spread_v3"``,
            ``"classic.tictactoe_v3"``... (see :func:`~rlblocks.pettingzoo.list_tasks`).
        parallel: ``True`` for the parallel API, ``False`` for the AEC API; ``None`` (the
            default) takes the parallel API where the task has one.
        return_state: As for :class:`PettingZooWrapper`.
        group_map: As for :class:`PettingZooWrapper`.
        use_mask: As for :class:`PettingZooWrapper`.
        categorical_actions: As for :class:`PettingZooWrapper`.
        seed: Seed of the first reset (``set_seed``).
        done_on_any: As for :class:`PettingZooWrapper`.
        device: Device of the returned tensors.
        check_actions: As for :class:`PettingZooWrapper`.
        **task_kwargs: Passed to the task's constructor (``N=3``, ``max_cycles=25``...).

    Raises:
        UnknownTaskError: No task has this id (the message suggests close ids).
        UnsupportedEnvOperationError: ``parallel=True`` for a task with only the AEC API.

    Example:
        >>> env = PettingZooEnv("classic.tictactoe_v3")
        >>> env.group_map
        {'agents': ['player_1', 'player_2']}
        >>> td = env.reset()
        >>> td["agents", "mask"]  # player_1 is on turn
        tensor([ True, False])
    """

    def __init__(
        self,
        task: str,
        parallel: bool | None = None,
        *,
        return_state: bool = False,
        group_map: MarlGroupMapType | Mapping[str, Sequence[str]] | None = None,
        use_mask: bool | None = None,
        categorical_actions: bool = True,
        seed: int | None = None,
        done_on_any: bool | None = None,
        device: Any = None,
        check_actions: bool = True,
        **task_kwargs: Any,
    ) -> None:
        make, is_parallel = resolve_task(task, parallel)
        try:
            env = make(**task_kwargs)
        except Exception as err:
            err.add_note(
                f"(raised by rlblocks PettingZooEnv({task!r}, parallel={is_parallel}, "
                f"task_kwargs={task_kwargs}))"
            )
            raise
        self.task = task
        super().__init__(
            env,
            return_state=return_state,
            group_map=group_map,
            use_mask=use_mask,
            categorical_actions=categorical_actions,
            done_on_any=done_on_any,
            device=device,
            check_actions=check_actions,
        )
        if seed is not None:
            self.set_seed(seed)

    def __repr__(self) -> str:
        return (
            f"PettingZooEnv({self.task!r}, parallel={self.parallel}, "
            f"group_map={self.group_map}, device={self.device})"
        )


def _group(tensordict: TensorDictBase, name: str) -> TensorDictBase:
    group = fast_get(tensordict, name)
    if group is None:
        group = tensordict.get(name)  # raises the KeyError naming the group
    return group


def _check_shared_spaces(
    owner: str,
    group: str,
    members: Sequence[str],
    obs_spaces: Mapping[str, Any],
    act_spaces: Mapping[str, Any],
) -> None:
    """Agents of one group are stacked, so they must share their spaces."""
    first = members[0]
    for agent in members[1:]:
        for what, spaces in (("observation", obs_spaces), ("action", act_spaces)):
            if spaces[agent] != spaces[first]:
                raise EnvSpecError(
                    f"{owner}: group {group!r} stacks agents {first!r} and {agent!r}, whose "
                    f"{what} spaces differ ({spaces[first]} vs {spaces[agent]}). Fix: put "
                    f"them in different groups, e.g. group_map=MarlGroupMapType.BY_TYPE or "
                    f"ONE_GROUP_PER_AGENT"
                )
