"""Agent groups: how a multi-agent env lays its agents out in TensorDicts.

Agents are grouped under a top-level key (the *group*), with an agent dim right after the
env's batch dims: ``("agents", "observation")`` is ``[*batch, n_agents, obs_dim]``,
``("next", "agents", "reward")`` is ``[*batch, n_agents, 1]``. An env's
:attr:`~rlblocks.envs.EnvBase.group_map` says which agents each group holds, in the order of
the agent dim. The env-level ``done``/``terminated``/``truncated`` ``[*batch, 1]`` are always
at the root: the episode is over when every agent is done (:func:`all_agents_done`). Envs
whose agents finish at different times also write per-agent flags under each group.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence

import torch

from rlblocks.core import ACTION, DONE, NEXT, OBSERVATION, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.envs.errors import EnvSpecError

__all__ = [
    "MarlGroupMapType",
    "check_group_map",
    "make_group_map",
    "all_agents_done",
]

# Root keys a group may not be named after: they hold the env-level entries.
_RESERVED = {NEXT, DONE, TERMINATED, TRUNCATED, REWARD, RESET, ACTION, OBSERVATION}
_INDEX_SUFFIX = re.compile(r"^(.*?)[_\-]?(\d+)$")


class MarlGroupMapType(enum.Enum):
    """Ready-made ways to group agents.

    * ``ALL_IN_ONE_GROUP``: one group ``"agents"`` with every agent (needs agents with the
      same observation and action specs: they share one stacked entry).
    * ``ONE_GROUP_PER_AGENT``: each agent is its own group, named after it (agents may
      differ in every spec).
    * ``BY_TYPE``: agents named ``<type>_<index>`` (``"adversary_0"``, ``"agent_1"``) are
      grouped by ``<type>``; a name without an index is its own type.
    """

    ALL_IN_ONE_GROUP = "all_in_one_group"
    ONE_GROUP_PER_AGENT = "one_group_per_agent"
    BY_TYPE = "by_type"

    def get_group_map(self, agent_names: Sequence[str]) -> dict[str, list[str]]:
        """The group map of ``agent_names`` (in their order) under this policy."""
        names = list(agent_names)
        if self is MarlGroupMapType.ALL_IN_ONE_GROUP:
            return {"agents": names}
        if self is MarlGroupMapType.ONE_GROUP_PER_AGENT:
            return {name: [name] for name in names}
        groups: dict[str, list[str]] = {}
        for name in names:
            match = _INDEX_SUFFIX.match(name)
            kind = match.group(1) if match and match.group(1) else name
            groups.setdefault(kind, []).append(name)
        return groups


def check_group_map(
    group_map: Mapping[str, Sequence[str]], agent_names: Sequence[str], owner: str = "env"
) -> dict[str, list[str]]:
    """Validate a group map against the env's agents; returns it as ``{str: [str]}``.

    Every agent must be in exactly one group, every group must name known agents only and
    at least one, and no group may take a name the root entries use (``"next"``,
    ``"done"``...).

    Raises:
        EnvSpecError: The map breaks one of these rules; the message names the group, the
            agent and the env's agents.
    """
    if not isinstance(group_map, Mapping):
        raise EnvSpecError(
            f"{owner}: group_map must be a MarlGroupMapType or a mapping "
            f"{{group: [agent names]}}, got {type(group_map).__name__}"
        )
    known = list(agent_names)
    seen: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for group, members in group_map.items():
        if not isinstance(group, str) or not group or group in _RESERVED:
            raise EnvSpecError(
                f"{owner}: group name {group!r} is not allowed; use a non-empty string other "
                f"than {sorted(_RESERVED)}"
            )
        if isinstance(members, str) or not isinstance(members, Sequence) or not members:
            raise EnvSpecError(
                f"{owner}: group {group!r} must list one or more agent names, got {members!r}"
            )
        for agent in members:
            if agent not in known:
                raise EnvSpecError(
                    f"{owner}: group {group!r} names agent {agent!r}, which the env does not "
                    f"have; its agents are {known}"
                )
            if agent in seen:
                raise EnvSpecError(
                    f"{owner}: agent {agent!r} is in groups {seen[agent]!r} and {group!r}; "
                    f"put each agent in exactly one group"
                )
            seen[agent] = group
        out[group] = list(members)
    missing = [a for a in known if a not in seen]
    if missing:
        raise EnvSpecError(
            f"{owner}: agents {missing} are in no group of group_map {out}; add them to a group"
        )
    return out


def make_group_map(
    agent_names: Sequence[str],
    group_map: MarlGroupMapType | Mapping[str, Sequence[str]] | None = None,
    *,
    homogeneous: bool = True,
    owner: str = "env",
) -> dict[str, list[str]]:
    """Resolve a backend's ``group_map`` argument.

    Args:
        agent_names: The env's agents, in order.
        group_map: ``None`` for the default (all agents in one group ``"agents"`` when
            ``homogeneous``, else :attr:`MarlGroupMapType.BY_TYPE`), a
            :class:`MarlGroupMapType`, or an explicit ``{group: [agent names]}``.
        homogeneous: Whether every agent has the same observation and action specs.
        owner: Named in error messages.

    Returns:
        ``{group: [agent names]}``, checked with :func:`check_group_map`.

    Raises:
        EnvSpecError: The map is invalid.
    """
    if group_map is None:
        kind = MarlGroupMapType.ALL_IN_ONE_GROUP if homogeneous else MarlGroupMapType.BY_TYPE
        group_map = kind.get_group_map(agent_names)
    elif isinstance(group_map, MarlGroupMapType):
        group_map = group_map.get_group_map(agent_names)
    elif isinstance(group_map, str):
        try:
            group_map = MarlGroupMapType(group_map).get_group_map(agent_names)
        except ValueError:
            raise EnvSpecError(
                f"{owner}: unknown group_map {group_map!r}; use one of "
                f"{[m.value for m in MarlGroupMapType]} or a mapping {{group: [agent names]}}"
            ) from None
    return check_group_map(group_map, agent_names, owner)


def all_agents_done(flags: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """The env-level flag ``[*batch, 1]`` from per-agent flags ``[*batch, n_agents, 1]``:
    set where every agent's flag is set (the episode is over when all agents are done)."""
    if flags.ndim <= batch_dims + 1:
        return flags
    return flags.flatten(batch_dims).all(-1, keepdim=True)
