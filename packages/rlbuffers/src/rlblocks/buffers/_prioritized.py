"""Prioritized experience replay (Schaul et al., 2016) on pluggable segment trees.

Element ``i`` is drawn with probability ``p_i / sum_j p_j`` where ``p_i = (priority_i +
eps) ** alpha``, and comes with the importance weight ``(p_i / p_min) ** -beta`` (the
usual ``(N * P(i)) ** -beta`` normalized by its maximum, which simplifies to this).

The segment trees come from the active provider (``rlblocks.core.segment_tree_provider``):
the compiled rlblocks-kernel when installed, else the numpy fallback. Both keep the same
tree, bit for bit, and the uniform draws come from torch's generator, so one seed gives the
same samples with either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rlblocks.buffers._rows import to_numpy
from rlblocks.buffers._samplers import Sampler, empty_error
from rlblocks.buffers._segment_tree import NUMPY_PROVIDER, as_index_array
from rlblocks.buffers._storages import Storage
from rlblocks.buffers.errors import (
    BufferConfigError,
    CheckpointError,
    EmptyBufferError,
    PriorityError,
)
from rlblocks.core import (
    SegmentTreeProvider,
    active_segment_tree_provider,
    list_segment_tree_providers,
    segment_tree_provider,
)
from rlblocks.core.utils import check_int

__all__ = ["PrioritizedSampler", "check_priorities", "resolve_segment_tree"]


def resolve_segment_tree(name: str | None) -> tuple[str, SegmentTreeProvider]:
    """The provider called ``name``, or the active one; numpy if none is registered.

    No provider is registered only when plugin autoload is off
    (``RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD=1``); prioritized sampling still works then.
    """
    if name is None:
        if not list_segment_tree_providers():
            return "numpy", NUMPY_PROVIDER
        name = active_segment_tree_provider()
    return name, segment_tree_provider(name)


def check_priorities(priority: Any, count: int, who: str) -> np.ndarray:
    """``priority`` as a float64 array of ``count`` values, all finite and >= 0.

    A single value is broadcast to every index.

    Raises:
        PriorityError: Wrong number of values, or a negative, NaN or infinite one.
    """
    return _checked_priorities(priority, count, who)[0]


def _checked_priorities(priority: Any, count: int, who: str) -> tuple[np.ndarray, float]:
    """:func:`check_priorities`, and the largest value (0.0 if there is none)."""
    if isinstance(priority, torch.Tensor):
        priority = to_numpy(priority)
    try:
        values = np.asarray(priority, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise PriorityError(f"{who}: priorities must be numbers, got {priority!r}") from exc
    if values.size == 1 and count != 1:
        values = np.broadcast_to(values, (count,))
    if values.size != count:
        raise PriorityError(
            f"{who}: got {values.size} priorities for {count} indices. Fix: give one priority "
            f"per index (or one for all)."
        )
    if not count:
        return values, 0.0
    # min() is NaN if any value is, so these two reductions catch NaN, < 0 and +-inf.
    largest = float(values.max())
    if not (values.min() >= 0 and largest < math.inf):
        bad = values[~(np.isfinite(values) & (values >= 0))][0]
        raise PriorityError(
            f"{who}: priorities must be finite and >= 0, got {bad} (first bad value). Fix: "
            f"pass e.g. the absolute TD error, and check the loss for NaN/inf."
        )
    return values, largest


def _check_float(value: Any, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{who}: {name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{who}: {name} must be finite and >= 0, got {value!r}")
    return float(value)


class PrioritizedSampler(Sampler):
    """Proportional prioritized sampling with importance weights.

    New elements get the highest priority seen so far (1.0 at first), so each is likely
    sampled at least once before its priority is updated.

    Args:
        max_capacity: Number of positions the trees cover (at least the storage's max_size).
        alpha: Prioritization exponent (0 = uniform).
        beta: Importance-weight exponent (0 = no correction, 1 = full correction); can be
            changed later (annealing) through :attr:`beta`.
        eps: Added to every priority, so that no element has probability zero.
        segment_tree: Name of the segment-tree provider ("kernel", "numpy", ...); defaults
            to the active one (see ``rlblocks.core.active_segment_tree_provider``).
        generator: Random generator; defaults to torch's global one.

    Example:
        >>> from rlblocks.core import make_sampler
        >>> sampler = make_sampler("prioritized", max_capacity=1000, alpha=0.6, beta=0.4)
        >>> sampler.segment_tree in ("kernel", "numpy")
        True
    """

    def __init__(
        self,
        max_capacity: int,
        alpha: float,
        beta: float,
        eps: float = 1e-8,
        *,
        segment_tree: str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        who = "PrioritizedSampler"
        self._capacity = check_int(max_capacity, "max_capacity", who, error=BufferConfigError)
        self._alpha = _check_float(alpha, "alpha", who)
        self._beta = _check_float(beta, "beta", who)
        self._eps = _check_float(eps, "eps", who)
        self._generator = generator
        # True when no leaf (priority + eps) ** alpha can be zero (nor underflow to zero).
        self._leaves_positive = self._eps > 0 and self._eps**self._alpha > 0
        self._provider_name, self._provider = resolve_segment_tree(segment_tree)
        self._reset()

    def _reset(self) -> None:
        self._sum = self._provider.sum_tree(self._capacity)
        self._min = self._provider.min_tree(self._capacity)
        self._max_leaf = 1.0
        self._high = 0  # one past the highest position ever given a priority
        self._seen = 0  # rows written to the storage that this sampler has accounted for

    def __repr__(self) -> str:
        return (
            f"PrioritizedSampler(max_capacity={self._capacity}, alpha={self._alpha}, "
            f"beta={self._beta}, eps={self._eps}, segment_tree={self._provider_name!r})"
        )

    @property
    def segment_tree(self) -> str:
        """Name of the segment-tree provider in use ("kernel", "numpy", ...)."""
        return self._provider_name

    @property
    def max_capacity(self) -> int:
        return self._capacity

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def eps(self) -> float:
        return self._eps

    @property
    def beta(self) -> float:
        """Importance-weight exponent; assign to anneal it."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        self._beta = _check_float(value, "beta", "PrioritizedSampler.beta")

    def check_storage(self, storage: Storage, who: str) -> None:
        if storage.max_size > self._capacity:
            raise ValueError(
                f"{who}: PrioritizedSampler(max_capacity={self._capacity}) cannot cover a "
                f"storage of max_size {storage.max_size}. Fix: max_capacity >= "
                f"{storage.max_size}."
            )

    def _set_leaves(self, index: np.ndarray, leaves: np.ndarray, top: int | None) -> None:
        """Write ``leaves`` at ``index`` in both trees.

        ``top`` is the largest entry of ``index``, or None when every entry is known to lie
        below :attr:`_high` already.
        """
        self._sum.update(index, leaves)
        # Zero-priority elements are never drawn; keeping them out of the min-tree keeps the
        # smallest drawable priority, and so the weights, finite.
        self._min.update(
            index, leaves if self._leaves_positive else np.where(leaves > 0, leaves, np.inf)
        )
        if top is not None:
            self._high = max(self._high, top + 1)

    def extend(self, index: torch.Tensor) -> None:
        if index.numel():
            idx = index.numpy()
            self._set_leaves(idx, np.full(idx.shape, self._max_leaf), int(idx.max()))
        self._seen += index.numel()

    def sync(self, storage: Storage) -> None:
        written = storage.written
        if written == self._seen:
            return
        if written < self._seen:  # the storage was emptied by another process
            self._reset()
        count = min(written - self._seen, storage.max_size)
        if count:
            idx = (storage.cursor - count + np.arange(count)) % storage.max_size
            self._set_leaves(idx, np.full(count, self._max_leaf), int(idx.max()))
        self._seen = written

    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if len(storage) == 0:
            raise empty_error("PrioritizedSampler.sample")
        total = self._sum.total()
        if not total > 0:
            raise EmptyBufferError(
                "PrioritizedSampler.sample: every stored element has priority 0 (with "
                "eps=0), so none can be drawn. Fix: use eps > 0 or update_priority()."
            )
        draws = torch.rand(batch_size, dtype=torch.float64, generator=self._generator)
        index = self._sum.find_prefixsum_idx(draws.numpy() * total)
        # float32 is the weights' dtype, and its pow is twice as fast as float64's.
        ratio = (self._sum[index] / self._min.query(0, self._capacity)).astype(np.float32)
        weight = np.power(ratio, np.float32(-self._beta))
        return torch.from_numpy(index), {"_weight": torch.from_numpy(weight)}

    def update_priority(self, index: Any, priority: Any, *, limit: int | None = None) -> None:
        """Set the priorities of positions ``index`` (``priority`` is pre-``alpha``).

        Args:
            index: Positions (integers).
            priority: One priority per position, or one for all.
            limit: Positions must be below it (a buffer passes its length); defaults to
                ``max_capacity``.

        Raises:
            PriorityError: A priority is negative, NaN or infinite, or there are not as many
                as indices. Nothing is updated then.
            BufferIndexError: A position is not below ``limit``.
        """
        who = "update_priority"
        if isinstance(index, torch.Tensor):
            index = to_numpy(index)
        limit = self._capacity if limit is None else limit
        idx = as_index_array(index, limit, who)
        values, largest = _checked_priorities(priority, idx.size, who)
        if not idx.size:
            return
        leaves = np.power(values + self._eps, self._alpha)
        # Positions below limit <= _high cannot raise _high: no need to look for the top one.
        self._set_leaves(idx, leaves, int(idx.max()) if limit > self._high else None)
        # x -> (x + eps) ** alpha does not decrease, so the largest leaf is the largest value's.
        self._max_leaf = max(self._max_leaf, (largest + self._eps) ** self._alpha)

    def priorities(self, index: Any) -> np.ndarray:
        """The leaf values ``(priority + eps) ** alpha`` at ``index``."""
        if isinstance(index, torch.Tensor):
            index = to_numpy(index)
        return self._sum[as_index_array(index, self._capacity, "PrioritizedSampler.priorities")]

    def empty(self) -> None:
        self._reset()

    def state_dict(self) -> dict[str, Any]:
        positions = np.arange(self._high)
        return {
            "max_capacity": self._capacity,
            "alpha": self._alpha,
            "beta": self._beta,
            "eps": self._eps,
            "max_leaf": self._max_leaf,
            "seen": self._seen,
            "sum_leaves": torch.from_numpy(np.asarray(self._sum[positions], dtype=np.float64)),
            "min_leaves": torch.from_numpy(np.asarray(self._min[positions], dtype=np.float64)),
        }

    def stage_state(self, state: dict[str, Any], who: str, length: int) -> Callable[[], None]:
        super().stage_state(state, who, length)
        try:
            alpha, eps = float(state["alpha"]), float(state["eps"])
            beta, max_leaf, seen = (
                float(state["beta"]),
                float(state["max_leaf"]),
                int(state["seen"]),
            )
            sum_leaves, min_leaves = state["sum_leaves"], state["min_leaves"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{who}: the prioritized sampler state is malformed") from exc
        if (alpha, eps) != (self._alpha, self._eps):
            raise CheckpointError(
                f"{who}: the checkpoint was made with alpha={alpha}, eps={eps}; this sampler "
                f"has alpha={self._alpha}, eps={self._eps}. Fix: build the buffer with the "
                f"checkpoint's alpha and eps."
            )
        ok = (
            isinstance(sum_leaves, torch.Tensor)
            and isinstance(min_leaves, torch.Tensor)
            and sum_leaves.shape == min_leaves.shape
            and sum_leaves.ndim == 1
            and len(sum_leaves) <= self._capacity
        )
        if not ok:
            raise CheckpointError(f"{who}: the saved priorities are malformed")
        sums = sum_leaves.to(torch.float64).numpy()
        mins = min_leaves.to(torch.float64).numpy()
        if not (np.isfinite(sums).all() and (sums >= 0).all() and not np.isnan(mins).any()):
            raise CheckpointError(f"{who}: the saved priorities hold negative, NaN or inf values")
        if not (math.isfinite(beta) and beta >= 0 and math.isfinite(max_leaf) and seen >= 0):
            raise CheckpointError(f"{who}: the prioritized sampler state is malformed")
        sums, mins = sums.copy(), mins.copy()

        def commit() -> None:
            self._reset()
            positions = np.arange(len(sums))
            self._sum.update(positions, sums)
            self._min.update(positions, mins)
            self._high = len(sums)
            self._beta, self._max_leaf, self._seen = beta, max_leaf, seen

        return commit
