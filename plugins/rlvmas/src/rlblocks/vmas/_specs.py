"""VMAS's per-agent gym spaces as rlblocks specs of agent groups.

Each group stacks its agents along one agent dim, right after the env's batch dim: a group of
``n`` agents whose observation space is ``Box(shape=(d,))`` has the observation spec
``[num_envs, n, d]``. Agents stacked together must have spaces of the same kind and shape;
bounds may differ per agent (they are stacked too).

VMAS builds its spaces with the ``gym`` package (a dependency of ``vmas``), imported here
only when a spec is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from rlblocks.core.specs import (
    Bounded,
    Categorical,
    Composite,
    MultiCategorical,
    MultiOneHot,
    OneHot,
    TensorSpec,
    Unbounded,
)
from rlblocks.envs.errors import EnvSpecError

__all__ = ["homogeneous", "observation_spec", "action_spec", "info_spec", "ActionKind"]


class ActionKind:
    """How a group's action tensor maps to VMAS's per-agent actions."""

    CONTINUOUS = "continuous"  # Bounded [*B, n, d]: agent i gets action[:, i]
    CATEGORICAL = "categorical"  # Categorical [*B, n]: agent i gets action[:, i:i+1]
    ONE_HOT = "one_hot"  # OneHot [*B, n, k]: converted to categorical first
    MULTI_CATEGORICAL = "multi_categorical"  # MultiCategorical [*B, n, m]: action[:, i]
    MULTI_ONE_HOT = "multi_one_hot"  # MultiOneHot [*B, n, sum(nvec)]: converted first


def _torch_dtype(dtype: Any) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def homogeneous(observation_spaces: Sequence[Any], action_spaces: Sequence[Any]) -> bool:
    """Whether every agent has the first agent's observation and action spaces."""
    return all(s == observation_spaces[0] for s in observation_spaces) and all(
        s == action_spaces[0] for s in action_spaces
    )


def _mismatch(
    owner: str, group: str, names: Sequence[str], what: str, spaces: Sequence[Any]
) -> EnvSpecError:
    listed = ", ".join(f"{n}: {s}" for n, s in zip(names, spaces, strict=True))
    return EnvSpecError(
        f"{owner}: group {group!r} stacks agents {list(names)} along one agent dim, but their "
        f"{what} spaces differ ({listed}). Fix: put agents with different spaces in separate "
        f"groups, e.g. group_map=MarlGroupMapType.BY_TYPE or ONE_GROUP_PER_AGENT"
    )


def observation_spec(
    spaces: Sequence[Any],
    names: Sequence[str],
    group: str,
    batch: torch.Size,
    device: torch.device,
    owner: str,
) -> TensorSpec | Composite:
    """The spec of a group's ``"observation"``: ``[*batch, n_agents, *shape]`` (a
    ``Composite`` of such leaves for dict observations)."""
    from gym import spaces as gym_spaces

    agents = (*batch, len(spaces))
    first = spaces[0]
    if isinstance(first, gym_spaces.Dict):
        if not all(
            isinstance(s, gym_spaces.Dict) and list(s.spaces) == list(first.spaces) for s in spaces
        ):
            raise _mismatch(owner, group, names, "observation", spaces)
        return Composite(
            {
                key: observation_spec(
                    [s.spaces[key] for s in spaces], names, group, batch, device, owner
                )
                for key in first.spaces
            },
            shape=agents,
            device=device,
        )
    if not isinstance(first, gym_spaces.Box):
        raise EnvSpecError(
            f"{owner}: agent {names[0]!r} has an observation space {first!r}; only Box and Dict "
            f"observation spaces are supported (VMAS scenarios return tensors or dicts of them)"
        )
    if not all(
        isinstance(s, gym_spaces.Box) and s.shape == first.shape and s.dtype == first.dtype
        for s in spaces
    ):
        raise _mismatch(owner, group, names, "observation", spaces)
    shape = (*agents, *first.shape)
    dtype = _torch_dtype(first.dtype)
    low = np.stack([s.low for s in spaces])
    high = np.stack([s.high for s in spaces])
    if np.all(np.isneginf(low)) and np.all(np.isposinf(high)):
        return Unbounded(shape=shape, dtype=dtype, device=device)
    return Bounded(torch.from_numpy(low), torch.from_numpy(high), shape, dtype, device)


def action_spec(
    spaces: Sequence[Any],
    names: Sequence[str],
    group: str,
    batch: torch.Size,
    device: torch.device,
    owner: str,
    *,
    categorical: bool,
) -> tuple[TensorSpec, str]:
    """The spec of a group's ``"action"`` and its :class:`ActionKind`.

    ``Box`` -> ``Bounded [*batch, n, d]``; ``Discrete(k)`` -> ``Categorical(k) [*batch, n]``
    (``OneHot(k) [*batch, n, k]`` unless ``categorical``); ``MultiDiscrete(nvec)`` ->
    ``MultiCategorical [*batch, n, len(nvec)]`` (``MultiOneHot``).
    """
    from gym import spaces as gym_spaces

    agents = (*batch, len(spaces))
    first = spaces[0]
    kind = type(first)
    same = all(type(s) is kind for s in spaces)
    if same and isinstance(first, gym_spaces.Box):
        if not all(s.shape == first.shape for s in spaces):
            raise _mismatch(owner, group, names, "action", spaces)
        low = torch.from_numpy(np.stack([s.low for s in spaces]))
        high = torch.from_numpy(np.stack([s.high for s in spaces]))
        spec = Bounded(low, high, (*agents, *first.shape), _torch_dtype(first.dtype), device)
        return spec, ActionKind.CONTINUOUS
    if same and isinstance(first, gym_spaces.Discrete):
        if not all(s.n == first.n for s in spaces):
            raise _mismatch(owner, group, names, "action", spaces)
        n = int(first.n)
        if categorical:
            return Categorical(n, shape=agents, device=device), ActionKind.CATEGORICAL
        return OneHot(n, shape=(*agents, n), device=device), ActionKind.ONE_HOT
    if same and isinstance(first, gym_spaces.MultiDiscrete):
        if not all(np.array_equal(s.nvec, first.nvec) for s in spaces):
            raise _mismatch(owner, group, names, "action", spaces)
        nvec = [int(k) for k in first.nvec]
        if categorical:
            spec = MultiCategorical(nvec, shape=(*agents, len(nvec)), device=device)
            return spec, ActionKind.MULTI_CATEGORICAL
        spec = MultiOneHot(nvec, shape=(*agents, sum(nvec)), device=device)
        return spec, ActionKind.MULTI_ONE_HOT
    if not same:
        raise _mismatch(owner, group, names, "action", spaces)
    raise EnvSpecError(
        f"{owner}: agent {names[0]!r} has an action space {first!r}; supported are Box, "
        f"Discrete and MultiDiscrete"
    )


def info_spec(
    infos: Sequence[Mapping[str, torch.Tensor]],
    batch: torch.Size,
    device: torch.device,
) -> tuple[Composite, list[str]]:
    """The spec of a group's ``"info"`` entries, from one sample of each agent's info dict.

    An entry is kept when every agent of the group has it, with the same shape and dtype.
    VMAS's per-env scalars (``[num_envs]``) get a trailing dim, like rewards: the group entry
    is ``[*batch, n_agents, 1]``.

    Returns:
        The Composite (shape ``[*batch, n_agents]``) and the kept names, in order.
    """
    agents = (*batch, len(infos))
    leaves: dict[str, TensorSpec] = {}
    for key, value in infos[0].items():
        if not isinstance(value, torch.Tensor):
            continue
        if not all(
            isinstance(i.get(key), torch.Tensor)
            and i[key].shape == value.shape
            and i[key].dtype == value.dtype
            for i in infos
        ):
            continue
        per_agent = tuple(value.shape[len(batch) :]) or (1,)
        leaves[key] = Unbounded(shape=(*agents, *per_agent), dtype=value.dtype, device=device)
    return Composite(leaves, shape=agents, device=device), list(leaves)
