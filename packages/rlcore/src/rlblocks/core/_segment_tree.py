"""The segment-tree contract shared by prioritized samplers and their implementations.

rlblocks-core only defines the contract. rlblocks-buffers registers a vectorized numpy
implementation (the fallback) and rlblocks-kernel a compiled one with a higher priority;
prioritized samplers ask :func:`rlblocks.core.segment_tree_provider` for whichever is active.
All arrays are numpy arrays: indices ``int64``, values ``float64``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["SumSegmentTree", "MinSegmentTree", "SegmentTreeProvider"]


@runtime_checkable
class SumSegmentTree(Protocol):
    """A fixed-capacity array of non-negative floats with O(log n) sums and prefix search."""

    @property
    def capacity(self) -> int:
        """Number of leaves."""
        ...

    def update(self, index: np.ndarray, value: np.ndarray) -> None:
        """Set ``leaf[index[i]] = value[i]`` for all ``i`` (a later duplicate index wins)."""
        ...

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        """Return the leaf values at ``index``."""
        ...

    def query(self, start: int, end: int) -> float:
        """Return the sum of leaves ``[start, end)``."""
        ...

    def total(self) -> float:
        """Return the sum of all leaves."""
        ...

    def find_prefixsum_idx(self, prefix: np.ndarray) -> np.ndarray:
        """For each ``p`` return the smallest ``i`` with ``sum(leaf[: i + 1]) > p``.

        ``p`` is expected in ``[0, total())``; larger values return the last non-zero leaf.
        """
        ...


@runtime_checkable
class MinSegmentTree(Protocol):
    """A fixed-capacity array of floats with O(log n) range minimum."""

    @property
    def capacity(self) -> int:
        """Number of leaves."""
        ...

    def update(self, index: np.ndarray, value: np.ndarray) -> None:
        """Set ``leaf[index[i]] = value[i]`` for all ``i`` (a later duplicate index wins)."""
        ...

    def __getitem__(self, index: np.ndarray) -> np.ndarray:
        """Return the leaf values at ``index``."""
        ...

    def query(self, start: int, end: int) -> float:
        """Return the minimum of leaves ``[start, end)`` (``inf`` for an empty range)."""
        ...


@dataclass(frozen=True)
class SegmentTreeProvider:
    """One segment-tree implementation, as registered by a plugin.

    Args:
        sum_tree: ``sum_tree(capacity)`` builds an empty (all-zero) :class:`SumSegmentTree`.
        min_tree: ``min_tree(capacity)`` builds an empty (all-``inf``) :class:`MinSegmentTree`.
        priority: The provider with the highest priority is active by default.
        description: One line shown by ``rlblocks plugins``.

    Example:
        >>> provider = SegmentTreeProvider(NumpySumTree, NumpyMinTree, priority=0,
        ...                                description="vectorized numpy")
    """

    sum_tree: Callable[[int], SumSegmentTree]
    min_tree: Callable[[int], MinSegmentTree]
    priority: int = 0
    description: str = ""
