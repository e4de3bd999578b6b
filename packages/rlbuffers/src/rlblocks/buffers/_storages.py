"""Storages: where a replay buffer keeps its elements.

A storage holds up to ``max_size`` elements at positions ``0 .. max_size - 1``. It does not
decide where an element goes (that is the writer's job) nor which ones are sampled (the
sampler's); it checks data (:meth:`Storage.prepare`), writes it at positions it is told
(:meth:`Storage.write`), and reads positions back (:meth:`Storage.get`).
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree
from tensordict import is_tensor_collection

from rlblocks.buffers._sharing import CURSOR, LEN, WRITTEN, ProcessLock, new_counters
from rlblocks.buffers.errors import (
    BufferConfigError,
    CheckpointError,
    ReplayBufferError,
    StorageLayoutError,
)
from rlblocks.core.checkpoint import CheckpointWriter
from rlblocks.core.utils import check_int

__all__ = ["ListStorage", "Storage"]


class Storage(ABC):
    """Base class of storages.

    Args:
        max_size: Maximum number of elements held.

    Subclasses implement :meth:`prepare`, :meth:`write`, :meth:`get` and persistence.
    """

    #: True if :meth:`get` builds the final batch itself (and can add extra keys to it).
    assembles: bool = False
    #: Which storages can load each other's checkpoints ("items" or "rows").
    checkpoint_kind: str = "items"

    def __init__(self, max_size: int) -> None:
        self._max_size = check_int(
            max_size, "max_size", type(self).__name__, error=BufferConfigError
        )
        self._counters = new_counters()
        self._lock = ProcessLock(None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_size={self._max_size}, len={len(self)})"

    @property
    def max_size(self) -> int:
        """Maximum number of elements held."""
        return self._max_size

    def __len__(self) -> int:
        return int(self._counters[LEN])

    @property
    def cursor(self) -> int:
        """Where a round-robin writer writes next."""
        return int(self._counters[CURSOR])

    @property
    def written(self) -> int:
        """Rows written since the storage was created or emptied (counts overwrites)."""
        return int(self._counters[WRITTEN])

    @property
    def shared(self) -> bool:
        """True if several processes can write into this storage."""
        return False

    def lock(self) -> ProcessLock:
        """The lock that serializes writes and reads (across processes when shared)."""
        return self._lock

    def advance(self, rows: int, cursor: int | None = None, length: int | None = None) -> None:
        """Record that ``rows`` rows were written; set the cursor and fill level."""
        c = self._counters
        c[WRITTEN] += rows
        if cursor is not None:
            c[CURSOR] = cursor
        c[LEN] = min(int(c[LEN]) + rows, self._max_size) if length is None else length

    @abstractmethod
    def prepare(
        self, data: Any, *, batched: bool, ignore: frozenset = frozenset(), who: str = ""
    ) -> Any:
        """Check ``data`` and return it in the form :meth:`write` takes (with ``.n``).

        Args:
            data: One element (``batched=False``) or a batch of elements.
            batched: Whether the first dimension of ``data`` runs over elements.
            ignore: Top-level keys of TensorDicts not to store (``"index"``, ``"_weight"``).
            who: Shown first in error messages (e.g. ``"ReplayBuffer.extend"``).

        Raises:
            StorageLayoutError: ``data`` does not fit the storage; nothing was written.
        """

    @abstractmethod
    def write(self, where: slice | np.ndarray, batch: Any) -> None:
        """Write a prepared batch at positions ``where`` (a slice or distinct indices)."""

    @abstractmethod
    def get(self, index: torch.Tensor) -> Any:
        """The elements at positions ``index`` (1-D int64 tensor)."""

    def column(self, key: str | tuple[str, ...]) -> torch.Tensor:
        """The values of ``key`` for the stored elements ``[0, len)``, position by position."""
        raise ReplayBufferError(f"{type(self).__name__} cannot read a column by key")

    def empty(self) -> None:
        """Forget every element (the memory is kept for reuse)."""
        self._counters[:] = 0

    # -- persistence -----------------------------------------------------------------------

    def _counters_state(self) -> dict[str, int]:
        return {"len": len(self), "cursor": self.cursor, "written": self.written}

    def _check_counters(self, state: Any, who: str) -> np.ndarray:
        try:
            counters = np.array(
                [int(state["len"]), int(state["cursor"]), int(state["written"])], np.int64
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{who}: storage counters are malformed ({exc!r})") from exc
        length, cursor, written = counters.tolist()
        if not (0 <= length <= self._max_size and 0 <= cursor < self._max_size):
            raise CheckpointError(
                f"{who}: the saved storage holds {length} elements with cursor {cursor}, "
                f"which does not fit this storage's max_size {self._max_size}."
            )
        if written < length:
            raise CheckpointError(f"{who}: storage counters are inconsistent ({state})")
        return counters

    def _check_max_size(self, saved: Any, who: str) -> None:
        if saved != self._max_size:
            name = type(self).__name__
            raise CheckpointError(
                f"{who}: the saved storage has capacity max_size={saved!r}, this buffer's "
                f"{name} has max_size={self._max_size}; a checkpoint loads only into a "
                f"storage of the same capacity. Fix: build the buffer with "
                f"{name}(max_size={saved!r}) to load it. The buffer is unchanged."
            )

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """A copy of the stored elements and counters, for ``torch.save``."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the content by ``state``; on error the storage is unchanged."""
        self.stage_state(state, who=f"{type(self).__name__}.load_state_dict")()

    @abstractmethod
    def stage_state(self, state: dict[str, Any], who: str) -> Callable[[], None]:
        """Check ``state`` and prepare it; the returned function swaps it in and cannot fail."""

    @abstractmethod
    def dump(self, writer: CheckpointWriter) -> dict[str, Any]:
        """Write the content's files with ``writer``; return the storage's metadata."""

    @abstractmethod
    def stage_files(self, folder: Path, meta: dict[str, Any], who: str) -> Callable[[], None]:
        """Like :meth:`stage_state`, from a checked checkpoint folder."""


# -- ListStorage -----------------------------------------------------------------------------


@dataclass
class ItemBatch:
    """A batch of arbitrary Python objects, as :class:`ListStorage` prepares it."""

    items: list[Any]

    @property
    def n(self) -> int:
        return len(self.items)

    def select(self, rows: np.ndarray | slice) -> ItemBatch:
        if isinstance(rows, slice):
            return ItemBatch(self.items[rows])
        return ItemBatch([self.items[i] for i in rows.tolist()])

    def column(self, key: str | tuple[str, ...]) -> torch.Tensor:
        return torch.stack([torch.as_tensor(_get_key(item, key)) for item in self.items])


def _get_key(item: Any, key: str | tuple[str, ...]) -> Any:
    if is_tensor_collection(item):
        return item.get(key)
    for part in (key,) if isinstance(key, str) else key:
        item = item[part]
    return item


def split_batch(data: Any, who: str) -> list[Any]:
    """Split a batch into a list of elements (for storages of arbitrary objects).

    A list or tuple is a sequence of elements; a TensorDict, tensor or array is split along
    its first dimension; a dict (or namedtuple) of arrays is split leaf by leaf.

    Raises:
        StorageLayoutError: ``data`` cannot be read as a batch.
    """
    if is_tensor_collection(data) or isinstance(data, torch.Tensor):
        dims = data.ndim if isinstance(data, torch.Tensor) else data.batch_dims
        if dims == 0:
            raise StorageLayoutError(
                f"{who}: extend needs a batch, but the {type(data).__name__} has no batch "
                f"dimension. Fix: use add() for one element."
            )
        return list(data.unbind(0))
    if isinstance(data, np.ndarray):
        if data.ndim == 0:
            raise StorageLayoutError(f"{who}: extend needs a batch, got a 0-d array. Use add().")
        return list(data)
    if type(data) in (list, tuple):
        return list(data)
    if isinstance(data, (Mapping, tuple)):
        leaves, spec = pytree.tree_flatten(data)
        sizes = {
            len(leaf) if isinstance(leaf, (torch.Tensor, np.ndarray)) else -1 for leaf in leaves
        }
        if len(sizes) != 1 or -1 in sizes or (leaves and leaves[0].ndim == 0):
            raise StorageLayoutError(
                f"{who}: a {type(data).__name__} given to extend must hold arrays that share "
                f"their first dimension (a batch); got leaves of lengths {sorted(sizes)}. "
                f"Fix: pass a list of elements instead."
            )
        (n,) = sizes
        return [pytree.tree_unflatten([leaf[i] for leaf in leaves], spec) for i in range(n)]
    if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        return list(data)
    raise StorageLayoutError(
        f"{who}: extend needs a sequence or a batch of elements, got {type(data).__name__}. "
        f"Fix: use add() for one element."
    )


class ListStorage(Storage):
    """Keeps any Python objects (tensors, arrays, dicts, TensorDicts, strings...) in a list.

    Nothing is checked: each element is stored as given (not copied). Sampled elements are
    collated by the buffer's ``collate_fn``.

    Args:
        max_size: Maximum number of elements held. Defaults to 1000.

    Example:
        >>> from rlblocks.buffers import ListStorage, ReplayBuffer
        >>> rb = ReplayBuffer(storage=ListStorage(100), batch_size=2)
        >>> rb.extend(["a", "b", "c"]).tolist()
        [0, 1, 2]
        >>> len(rb.sample())
        2
    """

    def __init__(self, max_size: int = 1000) -> None:
        super().__init__(max_size)
        self._items: list[Any] = []

    def prepare(
        self, data: Any, *, batched: bool, ignore: frozenset = frozenset(), who: str = ""
    ) -> ItemBatch:
        return ItemBatch(split_batch(data, who or "ListStorage") if batched else [data])

    def write(self, where: slice | np.ndarray, batch: ItemBatch) -> None:
        items = self._items
        stop = where.stop if isinstance(where, slice) else int(where.max(initial=-1)) + 1
        if len(items) < stop:
            items.extend([None] * (stop - len(items)))
        if isinstance(where, slice):
            items[where] = batch.items
        else:
            for pos, item in zip(where.tolist(), batch.items):
                items[pos] = item

    def get(self, index: torch.Tensor) -> list[Any]:
        items = self._items
        return [items[i] for i in index.tolist()]

    def column(self, key: str | tuple[str, ...]) -> torch.Tensor:
        return ItemBatch(self._items[: len(self)]).column(key)

    def empty(self) -> None:
        super().empty()
        self._items = []

    def state_dict(self) -> dict[str, Any]:
        return {
            "max_size": self._max_size,
            "items": list(self._items[: len(self)]),
            **self._counters_state(),
        }

    def stage_state(self, state: dict[str, Any], who: str) -> Callable[[], None]:
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{who}: a ListStorage state must be a dict, got {state!r}")
        self._check_max_size(state.get("max_size"), who)
        counters = self._check_counters(state, who)
        items = state.get("items")
        if not isinstance(items, list) or len(items) != counters[LEN]:
            raise CheckpointError(
                f"{who}: the saved ListStorage should hold {counters[LEN]} items, got "
                f"{type(items).__name__} of {len(items) if isinstance(items, list) else '?'}"
            )
        items = list(items)

        def commit() -> None:
            self._items = items
            self._counters[:] = counters

        return commit

    def dump(self, writer: CheckpointWriter) -> dict[str, Any]:
        writer.write("items.pkl", [pickle.dumps(self._items[: len(self)], protocol=5)])
        return {
            "type": type(self).__name__,
            "kind": self.checkpoint_kind,
            "max_size": self._max_size,
            **self._counters_state(),
        }

    def stage_files(self, folder: Path, meta: dict[str, Any], who: str) -> Callable[[], None]:
        try:
            # Like torch.load: a checkpoint of arbitrary objects is a pickle. Load only
            # checkpoints you trust.
            items = pickle.loads((folder / "items.pkl").read_bytes())
        except Exception as exc:
            raise CheckpointError(f"{who}: items.pkl cannot be unpickled ({exc!r})") from exc
        return self.stage_state({**meta, "items": items}, who)
