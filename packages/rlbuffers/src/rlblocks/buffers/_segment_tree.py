"""Vectorized numpy sum- and min-segment trees: the fallback segment-tree provider.

The tree is a binary heap in one ``float64`` array: node ``i`` has children ``2i`` and
``2i + 1``, the root is node 1 and the leaves start at ``size`` (the capacity rounded up to a
power of two, padded with the neutral element). Every inner node is exactly ``left + right``
(or ``min(left, right)``), so the whole tree is a pure function of its leaves. The compiled
rlblocks-kernel stores the same tree in another layout (every third level, 8 children per
cache line, the two levels between recomputed on the fly) but with the same values and the
same comparisons in the descent; that is what makes both providers sample identically for
one seed.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from rlblocks.buffers.errors import BufferIndexError
from rlblocks.core import SegmentTreeProvider

__all__ = ["NUMPY_PROVIDER", "NumpyMinSegmentTree", "NumpySumSegmentTree", "as_index_array"]

# Past this fraction of the leaves, rebuilding every level costs less than walking up from
# each updated leaf.
_REBUILD_FRACTION = 8


def as_index_array(index: object, capacity: int, what: str = "segment tree") -> np.ndarray:
    """Return ``index`` as a 1-D ``int64`` array, checking it lies in ``[0, capacity)``.

    Raises:
        BufferIndexError: An index is negative or not below ``capacity``.
        TypeError: ``index`` does not hold integers.
    """
    idx = np.asarray(index)
    if idx.dtype.kind not in "iu":
        if idx.size == 0:
            return np.empty(0, dtype=np.int64)
        raise TypeError(f"{what}: indices must be integers, got an array of dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False).reshape(-1)
    # Read as unsigned, a negative index is above any capacity: one reduction checks both ends.
    if idx.size and idx.view(np.uint64).max() >= capacity:
        bad = idx[(idx < 0) | (idx >= capacity)][0]
        raise BufferIndexError(
            f"{what}: index {int(bad)} is out of range; valid indices are 0 to {capacity - 1} "
            f"(size {capacity})"
        )
    return idx


def _last_wins(idx: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # numpy does not promise which duplicate a fancy assignment keeps; make "later wins" explicit.
    if idx.size < 2:
        return idx, value
    unique, first_from_end = np.unique(idx[::-1], return_index=True)
    if unique.size == idx.size:
        return idx, value
    return unique, value[::-1][first_from_end]


class _NumpyTree:
    _fill: ClassVar[float]

    def __init__(self, capacity: int) -> None:
        capacity = int(capacity)
        if capacity < 1:
            raise ValueError(f"{type(self).__name__}: capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._size = 1 << (capacity - 1).bit_length()
        self._depth = self._size.bit_length() - 1
        self._tree = np.full(2 * self._size, self._fill, dtype=np.float64)
        # Row ``i`` of ``_pairs`` is (node 2i, node 2i + 1): the children of node ``i``.
        self._pairs = self._tree.reshape(-1, 2)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_pairs"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pairs = self._tree.reshape(-1, 2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self._capacity})"

    @property
    def capacity(self) -> int:
        """Number of leaves."""
        return self._capacity

    def _combine_pairs(self, pairs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _combine(self, a: float, b: float) -> float:
        raise NotImplementedError

    def update(self, index: np.ndarray, value: np.ndarray | float) -> None:
        """Set ``leaf[index[i]] = value[i]`` for all ``i``; a later duplicate index wins."""
        idx = as_index_array(index, self._capacity, type(self).__name__)
        val = np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1), idx.shape)
        if idx.size == 0:
            return
        idx, val = _last_wins(idx, val)
        tree, size, pairs = self._tree, self._size, self._pairs
        tree[idx + size] = val
        if idx.size * _REBUILD_FRACTION >= size:
            for level in range(self._depth - 1, -1, -1):
                lo = 1 << level
                tree[lo : 2 * lo] = self._combine_pairs(pairs[lo : 2 * lo])
            return
        nodes = idx + size
        for _ in range(self._depth):
            nodes >>= 1
            tree[nodes] = self._combine_pairs(pairs.take(nodes, axis=0))

    def __getitem__(self, index: np.ndarray | int) -> np.ndarray:
        """Return the leaf values at ``index`` (a copy)."""
        shape = np.shape(index)
        idx = as_index_array(index, self._capacity, type(self).__name__)
        return self._tree.take(idx + self._size).reshape(shape)

    def leaves(self) -> np.ndarray:
        """Return a copy of all ``capacity`` leaves."""
        return self._tree[self._size : self._size + self._capacity].copy()

    def query(self, start: int, end: int) -> float:
        """Combine leaves ``[start, end)``: their sum, or their minimum."""
        start, end = int(start), int(end)
        if not 0 <= start <= end <= self._capacity:
            raise BufferIndexError(
                f"{type(self).__name__}.query: range [{start}, {end}) is not inside "
                f"[0, {self._capacity})"
            )
        if start == 0 and end == self._capacity:
            # Padding leaves hold the neutral element, so the root covers exactly this range.
            return float(self._tree[1])
        result = self._fill
        lo, hi = start + self._size, end + self._size
        tree = self._tree
        while lo < hi:
            if lo & 1:
                result = self._combine(result, tree[lo])
                lo += 1
            if hi & 1:
                hi -= 1
                result = self._combine(result, tree[hi])
            lo >>= 1
            hi >>= 1
        return float(result)


class NumpySumSegmentTree(_NumpyTree):
    """Sum-tree over ``capacity`` non-negative leaves, all zero at first.

    Example:
        >>> tree = NumpySumSegmentTree(4)
        >>> tree.update(np.array([0, 2]), np.array([1.0, 3.0]))
        >>> tree.total(), tree.find_prefixsum_idx(np.array([0.5, 1.5])).tolist()
        (4.0, [0, 2])
    """

    _fill = 0.0

    def _combine_pairs(self, pairs: np.ndarray) -> np.ndarray:
        return pairs[:, 0] + pairs[:, 1]

    def _combine(self, a: float, b: float) -> float:
        return a + b

    def total(self) -> float:
        """Return the sum of all leaves."""
        return float(self._tree[1])

    def find_prefixsum_idx(self, prefix: np.ndarray | float) -> np.ndarray:
        """For each ``p``, the smallest ``i`` with ``sum(leaf[: i + 1]) > p``.

        Values at or past :meth:`total` give the last non-zero leaf. The descent never enters
        a subtree whose sum is zero, so a zero leaf is never returned while ``total() > 0``.
        """
        p = np.array(prefix, dtype=np.float64, copy=True)
        shape = p.shape
        p = p.reshape(-1)
        node = np.ones(p.shape, dtype=np.int64)
        pairs = self._pairs
        for _ in range(self._depth):
            children = pairs.take(node, axis=0)
            left = children[:, 0]
            go_right = (left <= p) & (children[:, 1] > 0)
            np.subtract(p, left, out=p, where=go_right)
            node <<= 1
            node += go_right
        return (node - self._size).reshape(shape)


class NumpyMinSegmentTree(_NumpyTree):
    """Min-tree over ``capacity`` leaves, all ``inf`` at first.

    Example:
        >>> tree = NumpyMinSegmentTree(4)
        >>> tree.update(np.array([1, 3]), np.array([2.0, 0.5]))
        >>> tree.query(0, 4), tree.query(0, 2)
        (0.5, 2.0)
    """

    _fill = float("inf")

    def _combine_pairs(self, pairs: np.ndarray) -> np.ndarray:
        return np.minimum(pairs[:, 0], pairs[:, 1])

    def _combine(self, a: float, b: float) -> float:
        return min(a, b)


NUMPY_PROVIDER = SegmentTreeProvider(
    sum_tree=NumpySumSegmentTree,
    min_tree=NumpyMinSegmentTree,
    priority=0,
    description="vectorized numpy segment trees (rlblocks-buffers' fallback)",
)
