"""Exploration mode: whether policies sample (explore) or act deterministically.

rlblocks does not keep its own switch: it reuses tensordict's interaction type, so
``tensordict.nn`` probabilistic modules and rlblocks exploration modules agree.
"""

from __future__ import annotations

from tensordict.nn import InteractionType as ExplorationType
from tensordict.nn import interaction_type as _interaction_type
from tensordict.nn import set_interaction_type as set_exploration_type

__all__ = [
    "ExplorationType",
    "set_exploration_type",
    "exploration_type",
    "DEFAULT_EXPLORATION_TYPE",
]

DEFAULT_EXPLORATION_TYPE = ExplorationType.RANDOM
"""What :func:`exploration_type` reports when nothing was set: policies explore by default."""


def exploration_type() -> ExplorationType:
    """Return the exploration type in force.

    Inside ``with set_exploration_type(ExplorationType.DETERMINISTIC):`` this returns
    ``DETERMINISTIC``; outside any such block it returns :data:`DEFAULT_EXPLORATION_TYPE`.

    Example:
        >>> with set_exploration_type(ExplorationType.MODE):
        ...     assert exploration_type() is ExplorationType.MODE
    """
    current = _interaction_type()
    return DEFAULT_EXPLORATION_TYPE if current is None else current
