"""One agent group of a PettingZoo env: its specs, and PettingZoo's per-agent dicts <->
the group's stacked arrays.

PettingZoo speaks in dicts keyed by agent name (``{"agent_0": obs, ...}``); a group stacks
its agents along an agent dim in the order of the group map. A :class:`GroupLayout` keeps
the group's latest observation arrays and per-agent flags in numpy (rows of agents that
left the episode keep their last values), and turns them into the tensors of one step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core import ACTION, DONE, OBSERVATION, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.fast_td import fast_get, new_tensordict
from rlblocks.core.specs import Binary, Composite, OneHot, TensorSpec, Unbounded
from rlblocks.envs import SpaceLayout
from rlblocks.envs import SpaceLeaf as Leaf
from rlblocks.envs.errors import EnvSpecError, InvalidActionError

__all__ = ["GroupLayout", "ACTION_MASK", "MASK"]

ACTION_MASK = "action_mask"
"""Key (under a group) of the legal actions of each agent, bool ``[n_agents, n_actions]``."""
MASK = "mask"
"""Key (under a group) of which agents act at the next step, bool ``[n_agents]``."""

_FLAGS = (DONE, TERMINATED, TRUNCATED)
# Keys a group holds besides its observations: an observation may not take them.
_GROUP_KEYS = {ACTION, REWARD, MASK, *_FLAGS}


class _ObsLeaf:
    """One array of an agent's observation, stacked over the group's agents."""

    __slots__ = ("direct", "dtype", "from_info", "key", "leaf", "shape")

    def __init__(self, key: Any, leaf: Leaf | None, dtype: np.dtype, shape: tuple[int, ...]):
        self.key = key
        self.leaf = leaf  # how to find the array in a gym value; None: info["action_mask"]
        self.from_info = leaf is None
        # A plain array at the top of the observation: no extraction per agent.
        self.direct = leaf is not None and not leaf.path and leaf.start is None
        self.dtype = dtype
        self.shape = shape

    def stack(self, values: Sequence[Any]) -> np.ndarray:
        if not self.direct:
            values = [self.leaf.extract(v) for v in values]  # type: ignore[union-attr]
        return np.array(values, dtype=self.dtype)  # cheaper than np.stack for a few rows

    def value(self, observation: Any) -> Any:
        return observation if self.direct else self.leaf.extract(observation)  # type: ignore[union-attr]


class GroupLayout:
    """Specs and conversions of one group of agents that share their spaces.

    Args:
        name: The group's key.
        agents: Its agents, in the order of the agent dim.
        observation_space: The (shared) gymnasium observation space of the agents.
        action_space: The (shared) gymnasium action space of the agents.
        info_mask_size: Number of actions when the env gives ``info["action_mask"]`` (and
            the observation has no ``"action_mask"`` entry), else ``None``.
        categorical_actions: Discrete actions as indices (``Categorical``), else one-hot.
        use_mask: Write ``(group, "mask")``.
        device: Device of the specs.
        owner: Named in error messages.
    """

    def __init__(
        self,
        name: str,
        agents: Sequence[str],
        observation_space: Any,
        action_space: Any,
        *,
        info_mask_size: int | None,
        categorical_actions: bool,
        use_mask: bool,
        device: torch.device,
        owner: str,
    ) -> None:
        from gymnasium import spaces

        self.name = name
        self.agents = list(agents)
        self.n = n = len(self.agents)
        self.owner = owner
        self.use_mask = use_mask
        observation = SpaceLayout(observation_space, OBSERVATION, (n,), device, dict_at_root=True)
        self.leaves: list[_ObsLeaf] = []
        obs_specs: dict[Any, TensorSpec] = {}
        for leaf in observation.leaves:
            top = leaf.key if isinstance(leaf.key, str) else leaf.key[0]
            if top in _GROUP_KEYS:
                raise EnvSpecError(
                    f"{owner}: the observations of group {name!r} have an entry {top!r}, the "
                    f"key of the group's {top}; rlblocks cannot hold both. Rename that "
                    f"observation entry with a PettingZoo wrapper"
                )
            spec, dtype = leaf.spec, leaf.np_dtype
            if leaf.key == ACTION_MASK:  # the classic games: Box(0, 1, (n_actions,), int8)
                spec, dtype = Binary(shape=leaf.spec.shape, device=device), np.dtype(bool)
            obs_specs[leaf.key] = spec
            self.leaves.append(_ObsLeaf(leaf.key, leaf, dtype, leaf.shape))
        if info_mask_size is not None and ACTION_MASK not in obs_specs:
            obs_specs[ACTION_MASK] = Binary(shape=(n, info_mask_size), device=device)
            self.leaves.append(_ObsLeaf(ACTION_MASK, None, np.dtype(bool), (info_mask_size,)))
        self.has_action_mask = ACTION_MASK in obs_specs
        self.nested = any(not isinstance(k, str) for k in obs_specs)
        if use_mask:
            obs_specs[MASK] = Binary(shape=(n,), device=device)
        self.observation_spec = Composite(obs_specs, shape=(n,), device=device)

        # Actions: Discrete spaces are read as indices (the common case, kept fast); any
        # other space goes through SpaceLayout's conversion, agent by agent.
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.categorical = categorical_actions or not self.discrete
        self.action_start = int(action_space.start) if self.discrete else 0
        self.num_actions = int(action_space.n) if self.discrete else None
        self._action_layout = SpaceLayout(action_space, ACTION, (n,), device, dict_at_root=False)
        action_spec = self._action_layout.spec
        if self.discrete and not categorical_actions:
            k = int(action_space.n)
            one_hot = OneHot(k, shape=(n, k), device=device)
            action_spec = Composite({ACTION: one_hot}, shape=(n,), device=device)
        self.action_spec = action_spec
        self.action_keys = self._action_layout.keys
        self.reward_spec = Composite(
            {REWARD: Unbounded(shape=(n, 1), device=device)}, shape=(n,), device=device
        )
        self.done_spec = Composite(
            {k: Binary(shape=(n, 1), device=device) for k in _FLAGS}, shape=(n,), device=device
        )
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the last episode: zero observations, no agent done."""
        self.arrays = {
            leaf.key: np.zeros((self.n, *leaf.shape), dtype=leaf.dtype) for leaf in self.leaves
        }
        self.terminated = np.zeros(self.n, dtype=bool)
        self.truncated = np.zeros(self.n, dtype=bool)
        self.done = np.zeros(self.n, dtype=bool)
        self.any_done = False

    @property
    def action_mask(self) -> np.ndarray | None:
        """The latest legal actions, bool ``[n_agents, n_actions]`` (``None`` without masks)."""
        return self.arrays.get(ACTION_MASK) if self.has_action_mask else None

    def observe(
        self,
        observations: Mapping[str, Any],
        infos: Mapping[str, Any],
        done_before: np.ndarray | None = None,
    ) -> None:
        """Store the observations of the agents in ``observations`` (and their info masks).

        Rows of agents that are absent, or that were done before this step (``done_before``,
        by default the flags :meth:`update_flags` has not yet updated), keep their last
        values: an agent that left the episode shows its final observation.
        """
        agents = self.agents
        done = self.done if done_before is None else done_before
        if not (self.any_done if done_before is None else done.any()):
            try:
                values = [observations[a] for a in agents]
            except KeyError:
                values = None
            if values is not None:  # every agent observed: one np.stack per entry
                for leaf in self.leaves:
                    if not leaf.from_info:
                        self.arrays[leaf.key] = leaf.stack(values)
                        continue
                    masks = [infos.get(a, {}).get(ACTION_MASK) for a in agents]
                    if all(m is not None for m in masks):
                        self.arrays[leaf.key] = np.array(masks, dtype=bool)
                    else:  # keep the last mask of agents whose info has none this time
                        array = self.arrays[leaf.key].copy()
                        for i, m in enumerate(masks):
                            if m is not None:
                                array[i] = m
                        self.arrays[leaf.key] = array
                return
        rows = [(i, a) for i, a in enumerate(agents) if a in observations and not done[i]]
        if not rows:
            return
        for leaf in self.leaves:
            array = self.arrays[leaf.key].copy()  # emitted arrays are never written again
            for i, agent in rows:
                if leaf.from_info:
                    mask = infos.get(agent, {}).get(ACTION_MASK)
                    if mask is not None:
                        array[i] = mask
                else:
                    array[i] = leaf.value(observations[agent])
            self.arrays[leaf.key] = array

    def update_flags(
        self,
        terminations: Mapping[str, bool],
        truncations: Mapping[str, bool],
        none_set: bool = False,
    ) -> np.ndarray:
        """Record this step's flags (an agent's flags stay set once set); returns the rows
        that were done before the step. ``none_set``: no flag of the env is set (a cheap
        test the caller made once for every group)."""
        n, agents = self.n, self.agents
        before = self.done
        if none_set and not self.any_done:
            # The common step: fresh arrays (emitted ones are never written again).
            self.terminated = np.zeros(n, dtype=bool)
            self.truncated = np.zeros(n, dtype=bool)
            self.done = np.zeros(n, dtype=bool)
            return before
        self.terminated = self.terminated | np.fromiter(
            (terminations.get(a, False) for a in agents), dtype=bool, count=n
        )
        self.truncated = self.truncated | np.fromiter(
            (truncations.get(a, False) for a in agents), dtype=bool, count=n
        )
        self.done = self.terminated | self.truncated
        self.any_done = bool(self.done.any())
        return before

    def rewards(self, rewards: Mapping[str, float], done_before: np.ndarray) -> torch.Tensor:
        """The agents' rewards ``[n_agents, 1]`` (float32); 0 for agents absent or done before."""
        reward = np.fromiter((rewards.get(a, 0.0) for a in self.agents), np.float32, self.n)
        if done_before.any():
            reward[done_before] = 0.0
        return torch.from_numpy(reward.reshape(self.n, 1))

    # ------------------------------------------------------------------ output
    def tensordict(
        self, mask: np.ndarray | None, reward: torch.Tensor | None = None
    ) -> TensorDictBase:
        """The group's TensorDict ``[n_agents]``: observations, flags, mask and reward."""
        n = self.n
        data: dict[Any, torch.Tensor] = {
            key: torch.from_numpy(array) for key, array in self.arrays.items()
        }
        data[TERMINATED] = torch.from_numpy(self.terminated.reshape(n, 1))
        data[TRUNCATED] = torch.from_numpy(self.truncated.reshape(n, 1))
        data[DONE] = torch.from_numpy(self.done.reshape(n, 1))
        if mask is not None:
            data[MASK] = torch.from_numpy(mask)
        if reward is not None:
            data[REWARD] = reward
        if self.nested:
            return TensorDict(data, batch_size=(n,))
        return new_tensordict(data, torch.Size((n,)), torch.device("cpu"))

    # ------------------------------------------------------------------ actions
    def actions(self, group: TensorDictBase) -> list[Any]:
        """Every agent's action in PettingZoo's form, in agent order."""
        if self.discrete:
            index = fast_get(group, ACTION)
            if not self.categorical:
                index = index.to(torch.float32).argmax(-1)  # one-hot may be bool
            values = index.tolist()
            start = self.action_start
            return [v + start for v in values] if start else values
        arrays = [_numpy(group.get(key)) for key in self.action_keys]
        to_gym = self._action_layout.to_gym
        return [to_gym([a[i] for a in arrays]) for i in range(self.n)]

    def action(self, group: TensorDictBase, row: int) -> Any:
        """One agent's action in PettingZoo's form (the AEC API's acting agent)."""
        if self.discrete:
            value = group.get(ACTION)[row]
            index = int(value if self.categorical else value.to(torch.float32).argmax(-1))
            return index + self.action_start
        arrays = [_numpy(group.get(key)) for key in self.action_keys]
        return self._action_layout.to_gym([a[row] for a in arrays])

    def check_legal(self, rows: Sequence[int], actions: Sequence[Any]) -> None:
        """Raise unless each agent of ``rows`` takes an action its action mask allows.

        Raises:
            InvalidActionError: Names the group, the agent, the action and the legal actions.
        """
        masks = self.action_mask
        if masks is None or not self.discrete:
            return
        start, k = self.action_start, masks.shape[-1]
        for row, action in zip(rows, actions):
            index = action - start
            if 0 <= index < k and masks[row, index]:
                continue
            legal = [int(i) + start for i in np.flatnonzero(masks[row])]
            raise InvalidActionError(
                f"{self.owner}.step(): agent {self.agents[row]!r} (group {self.name!r}, row "
                f"{row}) took action {action}, which its action mask forbids; legal actions: "
                f"{legal}. Nothing was stepped. Fix: sample from the legal actions in "
                f"({self.name!r}, {ACTION_MASK!r}) (e.g. a masked categorical distribution)"
            )


def _numpy(value: torch.Tensor) -> np.ndarray:
    if value.requires_grad or value.device.type != "cpu":
        return value.numpy(force=True)
    return value.numpy()
