"""Tensor storages: preallocated rows for TensorDicts, tensors, arrays and pytrees of them.

Both storages are lazy: the layout (keys, shapes, dtypes) and the memory come from the first
write, or from :meth:`TensorStorage.initialize`. Every later write is checked against that
layout once per call; data that does not match raises before anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import MemoryMappedTensor

from rlblocks.buffers._layout import Batch, Layout, infer_layout, numpy_dtype
from rlblocks.buffers._rows import Rows, stage_batch
from rlblocks.buffers._sharing import LEN, ProcessLock
from rlblocks.buffers._storages import Storage
from rlblocks.buffers.errors import (
    CheckpointError,
    DiskFullError,
    EmptyBufferError,
    NotShareableError,
    ReplayBufferError,
    StorageLayoutError,
)
from rlblocks.core.checkpoint import CheckpointWriter

__all__ = ["LazyMemmapStorage", "LazyTensorStorage", "TensorStorage"]

_CHUNK_ROWS_BYTES = 1 << 24


class TensorStorage(Storage):
    """Base class of the tensor storages: elements packed as rows of one uint8 tensor.

    See :class:`LazyTensorStorage` and :class:`LazyMemmapStorage`.
    """

    assembles = True
    checkpoint_kind = "rows"

    def __init__(self, max_size: int, device: torch.device | str | None = None) -> None:
        super().__init__(max_size)
        self._device = torch.device(device) if device is not None else None
        self._layout: Layout | None = None
        self._rows: Rows | None = None

    def __repr__(self) -> str:
        layout = self._layout.describe() if self._layout is not None else "not initialized"
        return f"{type(self).__name__}(max_size={self._max_size}, len={len(self)}, {layout})"

    @property
    def layout(self) -> Layout | None:
        """The fields of one element, or None before the first write."""
        self._refresh()
        return self._layout

    @property
    def device(self) -> torch.device | None:
        """Where the data lives (None until the first write if no device was given)."""
        return self._rows.device if self._rows is not None else self._device

    @property
    def initialized(self) -> bool:
        """True once the layout is fixed and the memory allocated."""
        self._refresh()
        return self._rows is not None

    # -- hooks for subclasses ----------------------------------------------------------

    def _refresh(self) -> None:
        """Pick up a layout another process fixed (memory-mapped storages)."""

    def _allocate(self, layout: Layout, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def _commit_rows(self, layout: Layout | None, rows: torch.Tensor | None) -> None:
        self._layout = layout
        self._rows = Rows(layout, rows) if layout is not None else None

    def _discard(self, rows: torch.Tensor) -> None:
        """Free rows allocated for a state that was not committed."""

    # -- data ------------------------------------------------------------------------------

    def prepare(
        self, data: Any, *, batched: bool, ignore: frozenset = frozenset(), who: str = ""
    ) -> Batch:
        who = who or type(self).__name__
        self._refresh()
        if self._rows is not None:
            return self._rows.stage(self._layout.prepare(data, batched, ignore, who), who)
        batch = infer_layout(data, batched, ignore, who).prepare(data, batched, ignore, who)
        device = self._pick_device(batch)
        on_cpu = device.type == "cpu"
        numpy_fields = [on_cpu and numpy_dtype(f.dtype) is not None for f in batch.layout.fields]
        return stage_batch(batch, device, numpy_fields, who)

    def initialize(self, example: Any, *, batched: bool = False) -> None:
        """Fix the layout from ``example`` and allocate the memory, storing nothing.

        Needed before a ``shared=True`` storage is sent to other processes, if nothing was
        written yet.

        Raises:
            StorageLayoutError: ``example`` holds no tensor, or differs from a layout that
                is already fixed.
        """
        with self._lock:
            batch = self.prepare(example, batched=batched, who=f"{type(self).__name__}.initialize")
            if self._rows is None:
                self._commit_rows(
                    batch.layout, self._allocate(batch.layout, self._pick_device(batch))
                )

    def _pick_device(self, batch: Batch) -> torch.device:
        if self._device is not None:
            return self._device
        first = batch.leaves[0]
        return first.device if isinstance(first, torch.Tensor) else torch.device("cpu")

    def write(self, where: slice | np.ndarray, batch: Batch) -> None:
        if self._rows is None:
            self._commit_rows(batch.layout, self._allocate(batch.layout, self._pick_device(batch)))
        elif batch.layout is not self._layout and batch.layout != self._layout:
            raise StorageLayoutError(
                f"{type(self).__name__}: the data was checked against another layout than "
                f"the storage's ({self._layout.describe()}); nothing was written."
            )
        if batch.n:
            self._rows.write(where, batch)

    def get(self, index: torch.Tensor, extras: dict[str, torch.Tensor] | None = None) -> Any:
        """The elements at ``index``, as one TensorDict (with ``extras`` as keys) or pytree."""
        self._refresh()
        if self._rows is None:
            raise EmptyBufferError(f"{type(self).__name__}: nothing was written yet")
        rows = self._rows
        leaves = rows.gather(index)
        if extras and not rows.on_cpu:
            extras = {k: v.to(rows.device) for k, v in extras.items()}
        return self._layout.assemble(leaves, index.shape[0], rows.device, extras or {})

    def column(self, key: str | tuple[str, ...]) -> torch.Tensor:
        self._refresh()
        if self._layout is None:
            raise EmptyBufferError(f"{type(self).__name__}: nothing was written yet")
        return self._rows.column(self._layout.position(key), len(self))

    # -- persistence ---------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "type": type(self).__name__,
            "kind": self.checkpoint_kind,
            "max_size": self._max_size,
            "layout": self._layout.to_json() if self._layout is not None else None,
            **self._counters_state(),
        }

    def state_dict(self) -> dict[str, Any]:
        self._refresh()
        rows = None
        if self._rows is not None:
            rows = self._rows.rows[: len(self)].to("cpu", copy=True)
        return {**self._meta(), "rows": rows}

    def _stage(
        self, meta: dict[str, Any], who: str, fill: Callable[[Rows, int], None]
    ) -> Callable[[], None]:
        self._check_max_size(meta.get("max_size"), who)
        counters = self._check_counters(meta, who)
        if meta.get("layout") is None:
            if counters[LEN]:
                raise CheckpointError(f"{who}: the saved storage has elements but no layout")

            def commit_empty() -> None:
                self._commit_rows(None, None)
                self._counters[:] = counters

            return commit_empty
        try:
            layout = Layout.from_json(meta["layout"])
        except ValueError as exc:
            raise CheckpointError(f"{who}: {exc}") from exc
        device = self.device or torch.device("cpu")
        rows = self._allocate(layout, device)
        try:
            fill(Rows(layout, rows), int(counters[LEN]))
        except BaseException:
            self._discard(rows)
            raise

        def commit() -> None:
            self._commit_rows(layout, rows)
            self._counters[:] = counters

        return commit

    def stage_state(self, state: dict[str, Any], who: str) -> Callable[[], None]:
        if not isinstance(state, dict):
            raise CheckpointError(f"{who}: a storage state must be a dict, got {type(state)}")

        def fill(rows: Rows, count: int) -> None:
            saved = state.get("rows")
            row_bytes = rows.layout.row_bytes
            if (
                not isinstance(saved, torch.Tensor)
                or saved.dtype != torch.uint8
                or tuple(saved.shape) != (count, row_bytes)
            ):
                raise CheckpointError(
                    f"{who}: saved rows should be a uint8 tensor of shape [{count}, {row_bytes}]"
                    f", got {getattr(saved, 'shape', type(saved).__name__)}"
                )
            rows.copy_rows_from(saved, count)

        return self._stage(state, who, fill)

    def dump(self, writer: CheckpointWriter) -> dict[str, Any]:
        self._refresh()
        if self._rows is not None:
            rows = self._rows.rows
            count = len(self)
            step = max(1, _CHUNK_ROWS_BYTES // rows.shape[1])
            writer.write(
                "rows.bin",
                (
                    memoryview(rows[start : min(start + step, count)].cpu().numpy()).cast("B")
                    for start in range(0, count, step)
                ),
            )
        return self._meta()

    def stage_files(self, folder: Path, meta: dict[str, Any], who: str) -> Callable[[], None]:
        def fill(rows: Rows, count: int) -> None:
            row_bytes = rows.layout.row_bytes
            path = folder / "rows.bin"
            size = path.stat().st_size if path.is_file() else -1
            if size != count * row_bytes:
                raise CheckpointError(
                    f"{who}: rows.bin has {size} bytes, expected {count} rows of {row_bytes} "
                    f"bytes; the checkpoint is corrupt."
                )
            if count:
                saved = np.memmap(path, dtype=np.uint8, mode="r", shape=(count, row_bytes))
                step = max(1, _CHUNK_ROWS_BYTES // row_bytes)
                for start in range(0, count, step):
                    stop = min(start + step, count)
                    rows.rows[start:stop].copy_(torch.from_numpy(np.array(saved[start:stop])))
                del saved

        return self._stage(meta, who, fill)


class LazyTensorStorage(TensorStorage):
    """A preallocated tensor storage in RAM (or on ``device``), laid out at the first write.

    Holds TensorDicts (any nesting, any trailing batch dims), tensors, numpy arrays, and
    dicts/tuples of them. Sampled TensorDict batches are one dense TensorDict; numpy leaves
    come back as numpy arrays.

    Args:
        max_size: Maximum number of elements held.
        device: Where to keep the data. Defaults to the device of the first data written.
        shared: Keep the data and counters in shared memory so that worker processes can
            extend the buffer (see the package README). CPU only.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from rlblocks.buffers import LazyTensorStorage, TensorDictReplayBuffer
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(1000), batch_size=4)
        >>> _ = rb.extend(TensorDict({"obs": torch.randn(10, 3)}, batch_size=[10]))
        >>> rb.sample()["obs"].shape
        torch.Size([4, 3])
    """

    def __init__(
        self, max_size: int, device: torch.device | str | None = None, *, shared: bool = False
    ) -> None:
        super().__init__(max_size, device)
        self._shared = bool(shared)
        self._counter_tensor = torch.from_numpy(self._counters)
        if self._shared:
            if self._device is not None and self._device.type != "cpu":
                raise ValueError(
                    f"LazyTensorStorage: shared=True needs device='cpu', got {self._device}; "
                    f"share a CPU storage and move sampled batches to the device instead."
                )
            self._device = torch.device("cpu")
            self._counter_tensor = self._counter_tensor.clone().share_memory_()
            self._counters = self._counter_tensor.numpy()
            fd, lock_path = tempfile.mkstemp(prefix="rlblocks-buffer-", suffix=".lock")
            os.close(fd)
            self._lock = ProcessLock(lock_path)
            weakref.finalize(self, _unlink, lock_path, os.getpid())

    @property
    def shared(self) -> bool:
        return self._shared

    def _allocate(self, layout: Layout, device: torch.device) -> torch.Tensor:
        rows = torch.empty((self._max_size, layout.row_bytes), dtype=torch.uint8, device=device)
        return rows.share_memory_() if self._shared else rows

    def __getstate__(self) -> dict[str, Any]:
        if self._shared and self._rows is None:
            raise NotShareableError(
                "LazyTensorStorage(shared=True) was sent to another process before its "
                "layout was known, so the processes would not share memory. Fix: extend the "
                "buffer once, or call storage.initialize(example), before starting workers."
            )
        return {
            "max_size": self._max_size,
            "device": self._device,
            "shared": self._shared,
            "layout": self._layout,
            "rows": self._rows.rows if self._rows is not None else None,
            "counters": self._counter_tensor if self._shared else self._counters.copy(),
            "lock": self._lock,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._max_size = state["max_size"]
        self._device = state["device"]
        self._shared = state["shared"]
        counters = state["counters"]
        self._counter_tensor = counters if isinstance(counters, torch.Tensor) else None
        self._counters = counters.numpy() if isinstance(counters, torch.Tensor) else counters
        if self._counter_tensor is None:
            self._counter_tensor = torch.from_numpy(self._counters)
        self._lock = state["lock"]
        self._commit_rows(state["layout"], state["rows"])


def _unlink(path: str, pid: int) -> None:
    if os.getpid() == pid:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _rmtree(path: str, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


_ZERO_CHUNK = 1 << 22


def _create_reserved(path: Path, size: int, what: str) -> None:
    """Create the file ``path`` of ``size`` bytes with every block allocated on disk.

    A memory map over a sparse file finds a full disk only when a write first touches a
    missing block, and then as SIGBUS, which kills the process. Reserving the blocks up
    front turns that into an error here, before anything is stored.

    Raises:
        DiskFullError: The file system has no room for the file (it is removed).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            _reserve_blocks(fd, size)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            free = shutil.disk_usage(path.parent).free
            raise DiskFullError(
                f"LazyMemmapStorage: the file {str(path)!r} needs {size:,} bytes ({what} "
                f"bytes) but its file system has {free:,} bytes free ({exc.strerror}). "
                f"Nothing was written. Fix: free disk space, pass a scratch_dir on a larger "
                f"disk, or use a smaller max_size."
            ) from exc
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def _reserve_blocks(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of the file ``fd``: fallocate, else by writing zeros."""
    fallocate = getattr(os, "posix_fallocate", None)  # not on macOS or Windows
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
            return
        except OSError as exc:
            # The file system cannot preallocate (some network and FUSE ones): write zeros.
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    zeros = memoryview(bytes(min(size, _ZERO_CHUNK)))
    os.lseek(fd, 0, os.SEEK_SET)
    written = 0
    while written < size:
        written += os.write(fd, zeros[: min(len(zeros), size - written)])


_STORAGE_FILE = "storage.json"
_COUNTERS_FILE = "counters.memmap"
_STORAGE_FORMAT = "rlblocks-memmap-storage"


class LazyMemmapStorage(TensorStorage):
    """A tensor storage in memory-mapped files: larger than RAM, persistent and shareable.

    The rows live in one :class:`tensordict.MemoryMappedTensor` file in ``scratch_dir``, next
    to the fill level and write cursor (also memory-mapped) and the layout
    (``storage.json``). Any process that unpickles the storage, or calls
    :meth:`LazyMemmapStorage.open` on the folder, sees the same elements, and writes from
    several processes are serialized by a lock file.

    Args:
        max_size: Maximum number of elements held.
        scratch_dir: Folder for the files. Defaults to a new temporary folder, removed when
            this storage object is garbage collected. A given folder is kept.
        existsok: Reopen the storage already in ``scratch_dir`` (after a restart, say)
            instead of raising.

    Raises:
        ReplayBufferError: ``scratch_dir`` already holds a storage and ``existsok`` is
            False, or it holds one of another ``max_size``.

    Example:
        >>> import torch
        >>> from rlblocks.buffers import LazyMemmapStorage, ReplayBuffer
        >>> rb = ReplayBuffer(storage=LazyMemmapStorage(1_000_000), batch_size=256)
        >>> _ = rb.extend(torch.randn(1000, 4))
        >>> rb.sample().shape
        torch.Size([256, 4])
    """

    def __init__(
        self, max_size: int, scratch_dir: str | os.PathLike | None = None, *, existsok: bool = False
    ) -> None:
        super().__init__(max_size, device="cpu")
        if scratch_dir is None:
            folder = Path(tempfile.mkdtemp(prefix="rlblocks-memmap-"))
            weakref.finalize(self, _rmtree, str(folder), os.getpid())
        else:
            folder = Path(scratch_dir)
            folder.mkdir(parents=True, exist_ok=True)
        self._dir = folder
        self._lock = ProcessLock(str(folder / "lock"))
        self._rows_file: str | None = None
        self._staged_files: dict[int, str] = {}
        with self._lock:
            info = self._read_info()
            if info is None:
                MemoryMappedTensor.from_tensor(
                    torch.zeros(3, dtype=torch.int64),
                    filename=folder / _COUNTERS_FILE,
                    existsok=True,
                )
                self._write_info(None, None)
            elif not existsok:
                raise ReplayBufferError(
                    f"LazyMemmapStorage: {str(folder)!r} already holds a storage of "
                    f"{info['max_size']} elements. Fix: pass existsok=True to reopen it, use "
                    f"LazyMemmapStorage.open(path), or choose another scratch_dir."
                )
            elif info["max_size"] != self._max_size:
                raise ReplayBufferError(
                    f"LazyMemmapStorage: {str(folder)!r} holds a storage of max_size "
                    f"{info['max_size']}, not {self._max_size}. Fix: pass max_size="
                    f"{info['max_size']} or use LazyMemmapStorage.open(path)."
                )
            self._open()

    @classmethod
    def open(cls, scratch_dir: str | os.PathLike) -> LazyMemmapStorage:
        """Open the storage in ``scratch_dir`` (written by this or another process).

        Raises:
            ReplayBufferError: The folder holds no storage.
        """
        path = Path(scratch_dir) / _STORAGE_FILE
        if not path.is_file():
            raise ReplayBufferError(
                f"LazyMemmapStorage.open: {str(scratch_dir)!r} holds no storage ({_STORAGE_FILE} "
                f"is missing). Fix: pass the scratch_dir of an existing LazyMemmapStorage."
            )
        return cls(json.loads(path.read_text())["max_size"], scratch_dir, existsok=True)

    @property
    def scratch_dir(self) -> Path:
        """The folder holding the files."""
        return self._dir

    @property
    def shared(self) -> bool:
        return True

    def _read_info(self) -> dict[str, Any] | None:
        path = self._dir / _STORAGE_FILE
        if not path.is_file():
            return None
        info = json.loads(path.read_text())
        if info.get("format") != _STORAGE_FORMAT:
            raise ReplayBufferError(f"LazyMemmapStorage: {str(path)!r} is not a storage file")
        return info

    def _write_info(self, layout: Layout | None, rows_file: str | None) -> None:
        info = {
            "format": _STORAGE_FORMAT,
            "max_size": self._max_size,
            "layout": layout.to_json() if layout is not None else None,
            "rows_file": rows_file,
        }
        tmp = self._dir / f".{_STORAGE_FILE}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self._dir / _STORAGE_FILE)

    def _open(self) -> None:
        counters = MemoryMappedTensor.from_filename(
            self._dir / _COUNTERS_FILE, dtype=torch.int64, shape=(3,)
        )
        self._counter_file = counters
        self._counters = counters.as_subclass(torch.Tensor).numpy()
        self._layout = None
        self._rows = None
        self._rows_file = None
        self._refresh()

    def _refresh(self) -> None:
        if self._rows is not None:
            return
        info = self._read_info()
        if info is None or info["layout"] is None:
            return
        layout = Layout.from_json(info["layout"])
        rows = MemoryMappedTensor.from_filename(
            self._dir / info["rows_file"],
            dtype=torch.uint8,
            shape=(self._max_size, layout.row_bytes),
        )
        self._rows_file = info["rows_file"]
        TensorStorage._commit_rows(self, layout, rows.as_subclass(torch.Tensor))

    def _allocate(self, layout: Layout, device: torch.device) -> torch.Tensor:
        name = f"rows-{uuid.uuid4().hex}.memmap"
        shape = (self._max_size, layout.row_bytes)
        _create_reserved(
            self._dir / name, shape[0] * shape[1], f"{shape[0]:,} rows of {shape[1]:,}"
        )
        rows = MemoryMappedTensor.from_filename(self._dir / name, dtype=torch.uint8, shape=shape)
        plain = rows.as_subclass(torch.Tensor)
        self._staged_files[id(plain)] = name
        return plain

    def _discard(self, rows: torch.Tensor) -> None:
        name = self._staged_files.pop(id(rows), None)
        if name is not None:
            (self._dir / name).unlink(missing_ok=True)

    def _commit_rows(self, layout: Layout | None, rows: torch.Tensor | None) -> None:
        old = self._rows_file
        name = self._staged_files.pop(id(rows), None) if rows is not None else None
        self._write_info(layout, name)
        self._rows_file = name
        super()._commit_rows(layout, rows)
        if old is not None and old != name:
            (self._dir / old).unlink(missing_ok=True)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_size": self._max_size, "dir": str(self._dir)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        TensorStorage.__init__(self, state["max_size"], device="cpu")
        self._dir = Path(state["dir"])
        self._lock = ProcessLock(str(self._dir / "lock"))
        self._staged_files = {}
        self._open()
