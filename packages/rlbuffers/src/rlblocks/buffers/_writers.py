"""Writers: where in the storage new elements go."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rlblocks.buffers._storages import Storage
from rlblocks.buffers.errors import (
    CheckpointError,
    PriorityError,
    ReplayBufferError,
    StorageLayoutError,
)

__all__ = ["RoundRobinWriter", "TensorDictMaxValueWriter", "Writer"]


class Writer:
    """Base class of writers.

    A writer is bound to one storage (:meth:`register_storage`). :meth:`extend` takes a
    batch prepared (and checked) by that storage, writes it and returns, for every element
    of the batch, the position it went to, or -1 if it was not kept.
    """

    #: False if the writer keeps state of its own that other processes would not see.
    shareable: bool = True

    def __init__(self) -> None:
        self._storage: Storage | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def register_storage(self, storage: Storage) -> None:
        """Bind this writer to ``storage``."""
        self._storage = storage

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            raise ReplayBufferError(
                f"{type(self).__name__} has no storage; give it to a ReplayBuffer (or call "
                f"register_storage) first."
            )
        return self._storage

    def extend(self, batch: Any) -> torch.Tensor:
        """Write ``batch``; return the position of each element (-1 where not kept)."""
        raise NotImplementedError

    def empty(self) -> None:
        """Forget the writer's own state (the storage is emptied separately)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def stage_state(self, state: dict[str, Any], who: str, length: int) -> Callable[[], None]:
        """Check ``state`` for a storage of ``length`` elements; return its commit function."""
        if not isinstance(state, dict):
            raise CheckpointError(f"{who}: a writer state must be a dict, got {type(state)}")
        return lambda: None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage_state(state, f"{type(self).__name__}.load_state_dict", len(self.storage))()


class RoundRobinWriter(Writer):
    """Writes at the cursor and wraps around, overwriting the oldest elements first.

    The cursor lives in the storage (shared with other processes when the storage is).
    A batch larger than the storage keeps only its last ``max_size`` elements.

    Example:
        >>> from rlblocks.buffers import ListStorage, ReplayBuffer, RoundRobinWriter
        >>> rb = ReplayBuffer(storage=ListStorage(3), writer=RoundRobinWriter())
        >>> rb.extend([1, 2]).tolist(), rb.extend([3, 4]).tolist()
        ([0, 1], [2, 0])
    """

    def extend(self, batch: Any) -> torch.Tensor:
        storage = self.storage
        size, n, cursor = storage.max_size, batch.n, storage.cursor
        if n == 0:
            return torch.empty(0, dtype=torch.int64)
        keep = min(n, size)
        dropped = n - keep
        if dropped:
            batch = batch.select(slice(dropped, None))
        start = (cursor + dropped) % size
        stop = start + keep
        if stop <= size:
            storage.write(slice(start, stop), batch)
        else:
            split = size - start
            storage.write(slice(start, size), batch.select(slice(0, split)))
            storage.write(slice(0, stop - size), batch.select(slice(split, None)))
        storage.advance(keep, cursor=(cursor + n) % size)
        index = torch.arange(cursor, cursor + n) % size
        if dropped:
            index[:dropped] = -1
        return index


_REDUCTIONS = {
    "sum": lambda x: x.sum(-1),
    "max": lambda x: x.amax(-1),
    "min": lambda x: x.amin(-1),
    "mean": lambda x: x.mean(-1),
}


class TensorDictMaxValueWriter(Writer):
    """Keeps the ``max_size`` elements with the highest ``rank_key`` value (a top-k).

    While the storage has room every element is written; once full, an element replaces
    the lowest-ranked one if it ranks higher, and is dropped otherwise.

    Args:
        rank_key: Key of the rank value (e.g. an episode return).
        reduction: How a rank with more than one value per element becomes one number:
            "sum", "max", "min" or "mean".

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from rlblocks.buffers import (LazyTensorStorage, TensorDictMaxValueWriter,
        ...                               TensorDictReplayBuffer)
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(2),
        ...                             writer=TensorDictMaxValueWriter(rank_key="ret"))
        >>> rb.extend(TensorDict({"ret": torch.tensor([1.0, 5.0, 3.0])}, [3])).tolist()
        [-1, 1, 0]
    """

    shareable = False

    def __init__(self, rank_key: str | tuple[str, ...], reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"TensorDictMaxValueWriter: reduction must be one of {sorted(_REDUCTIONS)}, "
                f"got {reduction!r}"
            )
        self.rank_key = rank_key
        self.reduction = reduction
        self._heap: list[tuple[float, int]] = []  # (rank, position), lowest rank first
        self._ranks = np.zeros(0, dtype=np.float64)  # rank per position

    def __repr__(self) -> str:
        return f"TensorDictMaxValueWriter(rank_key={self.rank_key!r}, reduction={self.reduction!r})"

    def register_storage(self, storage: Storage) -> None:
        super().register_storage(storage)
        self._ranks = np.zeros(storage.max_size, dtype=np.float64)

    def _rank(self, batch: Any) -> np.ndarray:
        who = "TensorDictMaxValueWriter.extend"
        try:
            column = batch.column(self.rank_key)
        except (KeyError, TypeError, IndexError) as exc:
            raise StorageLayoutError(
                f"{who}: the data has no rank key {self.rank_key!r} ({exc}). Nothing was "
                f"written. Fix: add the key, or build the writer with the right rank_key."
            ) from exc
        values = _REDUCTIONS[self.reduction](column.reshape(batch.n, -1).to(torch.float64)).numpy(
            force=True
        )
        if np.isnan(values).any():
            raise PriorityError(f"{who}: rank values of {self.rank_key!r} must not be NaN")
        return values

    def extend(self, batch: Any) -> torch.Tensor:
        storage = self.storage
        ranks = self._rank(batch)
        size, heap = storage.max_size, self._heap
        positions = np.full(batch.n, -1, dtype=np.int64)
        for i, rank in enumerate(ranks.tolist()):
            if len(heap) < size:
                positions[i] = len(heap)
                heapq.heappush(heap, (rank, len(heap)))
            elif rank > heap[0][0]:
                positions[i] = heap[0][1]
                heapq.heapreplace(heap, (rank, heap[0][1]))
        # A later element of the same batch may have replaced an earlier one: last one wins.
        rows = np.flatnonzero(positions >= 0)
        unique, last = np.unique(positions[rows][::-1], return_index=True)
        rows = rows[::-1][last]
        positions[:] = -1
        positions[rows] = unique
        if rows.size:
            storage.write(unique, batch.select(rows))
            self._ranks[unique] = ranks[rows]
        storage.advance(int(rows.size), length=len(heap))
        return torch.from_numpy(positions)

    def empty(self) -> None:
        self._heap = []
        self._ranks[:] = 0

    def state_dict(self) -> dict[str, Any]:
        return {"ranks": torch.from_numpy(self._ranks[: len(self._heap)].copy())}

    def stage_state(self, state: dict[str, Any], who: str, length: int) -> Callable[[], None]:
        super().stage_state(state, who, length)
        ranks = state.get("ranks")
        if not isinstance(ranks, torch.Tensor) or ranks.ndim != 1 or len(ranks) != length:
            raise CheckpointError(
                f"{who}: the writer's ranks should be a 1-D tensor of {length} values, got "
                f"{getattr(ranks, 'shape', type(ranks).__name__)}"
            )
        values = ranks.to(torch.float64).numpy().copy()
        if np.isnan(values).any():
            raise CheckpointError(f"{who}: the writer's ranks hold NaN")

        def commit() -> None:
            self._ranks[:] = 0
            self._ranks[: len(values)] = values
            self._heap = [(float(r), i) for i, r in enumerate(values.tolist())]
            heapq.heapify(self._heap)

        return commit
