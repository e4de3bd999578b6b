"""Replay buffers: a storage, a sampler and a writer put together."""

from __future__ import annotations

import functools
import io
import os
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from rlblocks.buffers._checkpoint import (
    KIND,
    META,
    VERSION,
    read_buffer_checkpoint,
)
from rlblocks.buffers._collate import default_collate
from rlblocks.buffers._prefetch import Prefetcher, check_pin_memory, pin_batch
from rlblocks.buffers._rows import to_numpy
from rlblocks.buffers._samplers import RandomSampler, Sampler, empty_error
from rlblocks.buffers._segment_tree import as_index_array
from rlblocks.buffers._storages import ListStorage, Storage
from rlblocks.buffers._writers import RoundRobinWriter, Writer
from rlblocks.buffers.errors import BufferConfigError, CheckpointError, NotShareableError
from rlblocks.core.checkpoint import CheckpointWriter, write_checkpoint
from rlblocks.core.utils import check_int

__all__ = ["ReplayBuffer"]


def _draw_weakly(buffer_ref: weakref.ref, batch_size: int) -> tuple[Any, dict[str, Any], bool]:
    """A prefetched draw; holds the buffer weakly, so queued draws never keep it alive."""
    buffer = buffer_ref()
    if buffer is None:
        raise ReferenceError("the replay buffer was garbage collected")
    return buffer._sample(batch_size)


def _check_component(value: Any, kind: type, name: str) -> None:
    if not isinstance(value, kind):
        raise TypeError(
            f"ReplayBuffer: {name} must be a {kind.__name__} (e.g. from rlblocks.buffers), got "
            f"{type(value).__name__}"
        )


class ReplayBuffer:
    """A replay buffer for any data: tensors, numpy arrays, dicts, pytrees, Python objects.

    Args:
        storage: Where elements are kept. Defaults to ``ListStorage(1000)``.
        sampler: Which elements a batch holds. Defaults to :class:`RandomSampler`.
        writer: Where new elements go. Defaults to :class:`RoundRobinWriter`.
        batch_size: Default batch size of :meth:`sample` and of iteration.
        collate_fn: Turns what the storage returns into a batch. Defaults to stacking
            elements for a ListStorage (tensors, arrays, dicts and tuples of them) and to
            nothing for tensor storages (which return batches already).
        prefetch: Keep up to this many batches of ``batch_size`` sampled ahead by a
            background thread (``None`` or ``0``: none), which :meth:`sample` and iteration
            hand out in the order they were drawn. A prefetched batch is drawn from the
            buffer as it was when the thread drew it: it may miss elements added since,
            hold elements overwritten since (its ``"index"`` then points at their
            replacements), and carry priorities and importance weights from before later
            :meth:`update_priority` calls; the next ``prefetch`` batches after a change
            may be such stale ones. :meth:`empty`, loading and :meth:`shutdown` discard
            prefetched batches. The thread ends with :meth:`shutdown`, :meth:`empty` or
            when the buffer is garbage collected.
        transform: Applied to every sampled batch.
        pin_memory: Put the tensors of sampled batches in pinned (page-locked) memory, for
            fast asynchronous copies to an accelerator (with ``prefetch``, pinning happens
            in the background thread). Without an accelerator, the constructor warns and
            batches are not pinned (torch cannot pin memory then; TorchRL raises when
            sampling).

    Example:
        >>> import torch
        >>> from rlblocks.buffers import LazyTensorStorage, ReplayBuffer
        >>> rb = ReplayBuffer(storage=LazyTensorStorage(100), batch_size=8)
        >>> _ = rb.extend({"obs": torch.randn(10, 4), "reward": torch.zeros(10)})
        >>> rb.sample()["obs"].shape
        torch.Size([8, 4])

    Raises:
        BufferConfigError: ``batch_size``, ``prefetch`` or ``pin_memory`` is invalid, or
            ``prefetch`` is given without ``batch_size``.
    """

    #: Top-level TensorDict keys that the buffer itself adds to samples and never stores.
    _ignore: frozenset = frozenset()

    def __init__(
        self,
        storage: Storage | None = None,
        sampler: Sampler | None = None,
        writer: Writer | None = None,
        batch_size: int | None = None,
        collate_fn: Callable[[Any], Any] | None = None,
        prefetch: int | None = None,
        transform: Callable[[Any], Any] | None = None,
        *,
        pin_memory: bool = False,
    ) -> None:
        storage = storage if storage is not None else self._default_storage()
        sampler = sampler if sampler is not None else RandomSampler()
        writer = writer if writer is not None else RoundRobinWriter()
        _check_component(storage, Storage, "storage")
        _check_component(sampler, Sampler, "sampler")
        _check_component(writer, Writer, "writer")
        who = type(self).__name__
        sampler.check_storage(storage, who)
        writer.register_storage(storage)
        self._storage, self._sampler, self._writer = storage, sampler, writer
        self._batch_size = check_int(
            batch_size, "batch_size", who, allow=(None,), error=BufferConfigError
        )
        # 0 turns prefetching off, as in TorchRL.
        prefetch = check_int(
            prefetch, "prefetch", who, minimum=0, allow=(None,), error=BufferConfigError
        )
        if prefetch and self._batch_size is None:
            raise BufferConfigError(
                f"{who}: prefetch={prefetch} needs a batch_size to sample ahead with. Fix: "
                f"pass batch_size=..., or prefetch=None."
            )
        self._prefetcher = Prefetcher(prefetch, "rlblocks-prefetch") if prefetch else None
        self._pin_memory = check_pin_memory(pin_memory, who)
        if collate_fn is None and not storage.assembles:
            collate_fn = default_collate
        self._collate_fn = collate_fn
        self._transform = transform

    def _default_storage(self) -> Storage:
        return ListStorage(1000)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(storage={self._storage!r}, sampler={self._sampler!r}, "
            f"writer={self._writer!r}, batch_size={self._batch_size})"
        )

    def __len__(self) -> int:
        return len(self._storage)

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def sampler(self) -> Sampler:
        return self._sampler

    @property
    def writer(self) -> Writer:
        return self._writer

    @property
    def batch_size(self) -> int | None:
        return self._batch_size

    @property
    def prefetch(self) -> int | None:
        """How many batches are sampled ahead (``None``: no prefetching)."""
        return None if self._prefetcher is None else self._prefetcher.depth

    @property
    def pin_memory(self) -> bool:
        """Whether sampled batches are pinned (False without an accelerator)."""
        return self._pin_memory

    # -- writing ---------------------------------------------------------------------------

    def add(self, data: Any) -> int:
        """Store one element; return its position (-1 if the writer did not keep it).

        Raises:
            StorageLayoutError: ``data`` does not match the storage; nothing is written.
        """
        return int(self._write(data, batched=False, who=f"{type(self).__name__}.add")[0])

    def extend(self, data: Any) -> torch.Tensor:
        """Store a batch of elements (first dimension, or a list of elements).

        Returns:
            The position of each element, -1 for those not kept (a batch larger than the
            storage, or elements a max-value writer rejected).

        Raises:
            StorageLayoutError: Keys, shapes or dtypes do not match the storage; the error
                names the key, what is stored and what was given. Nothing is written.
        """
        return self._write(data, batched=True, who=f"{type(self).__name__}.extend")

    def _write(self, data: Any, batched: bool, who: str) -> torch.Tensor:
        storage = self._storage
        with storage.lock():
            batch = storage.prepare(data, batched=batched, ignore=self._ignore, who=who)
            priorities = self._priorities_of(data, batch, who)
            self._sampler.sync(storage)
            index = self._writer.extend(batch)
            kept = index
            if index.numel() and int(index.min()) < 0:
                kept = index[index >= 0]
                if priorities is not None:
                    priorities = priorities[index.numpy() >= 0]
            self._sampler.extend(kept)
            if priorities is not None and kept.numel():
                self._sampler.update_priority(kept, priorities)
        return index

    def _priorities_of(self, data: Any, batch: Any, who: str) -> np.ndarray | None:
        """Priorities given with the data (prioritized TensorDict buffers), checked."""
        return None

    # -- sampling --------------------------------------------------------------------------

    def _resolve_batch_size(self, batch_size: int | None, who: str) -> int:
        if batch_size is None:
            if self._batch_size is None:
                raise BufferConfigError(
                    f"{who}: no batch_size; pass sample(batch_size=...) or build the buffer "
                    f"with batch_size=..."
                )
            return self._batch_size
        return check_int(batch_size, "batch_size", who, error=BufferConfigError)

    def sample(self, batch_size: int | None = None, return_info: bool = False) -> Any:
        """Draw a batch.

        Args:
            batch_size: Defaults to the buffer's ``batch_size``.
            return_info: Also return the ``info`` dict (``"index"``, and ``"_weight"`` for
                prioritized sampling).

        Returns:
            The batch, or ``(batch, info)``. With ``prefetch``, a batch of the buffer's
            ``batch_size`` comes from the prefetched ones (see the class docstring for how
            stale it may be); another size is drawn now.

        Raises:
            EmptyBufferError: The buffer is empty.
        """
        who = f"{type(self).__name__}.sample"
        batch_size = self._resolve_batch_size(batch_size, who)
        data, info, _ = self._next_batch(batch_size)
        return (data, info) if return_info else data

    def _next_batch(self, batch_size: int) -> tuple[Any, dict[str, Any], bool]:
        """The next batch: prefetched when it can be, else drawn now."""
        if self._prefetcher is not None and batch_size == self._batch_size:
            return self._prefetcher.next(
                functools.partial(_draw_weakly, weakref.ref(self), batch_size)
            )
        return self._sample(batch_size)

    def _sample(self, batch_size: int) -> tuple[Any, dict[str, Any], bool]:
        """Draw a batch: ``(data, info, ran_out)``, ``ran_out`` as the sampler says after it.

        Runs in the prefetch thread too: everything it reads is read under the lock.
        """
        storage = self._storage
        with storage.lock():
            if len(storage) == 0:
                raise empty_error(f"{type(self).__name__}.sample")
            self._sampler.sync(storage)
            index, info = self._sampler.sample(storage, batch_size)
            info["index"] = index
            data = self._fetch(index, info)
            ran_out = self._sampler.ran_out
        if self._transform is not None:
            data = self._transform(data)
        if self._pin_memory:
            data = pin_batch(data)
        return data, info, ran_out

    def _fetch(self, index: torch.Tensor, info: dict[str, Any]) -> Any:
        data = self._storage.get(index)
        return data if self._collate_fn is None else self._collate_fn(data)

    def _drop_prefetched(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.drop()

    def __iter__(self) -> Iterator[Any]:
        """Batches of ``batch_size``: one epoch for samplers with epochs, else
        ``len(self) // batch_size`` batches (at least one); nothing if the buffer is empty.

        With ``prefetch``, batches come from the prefetched ones; an epoch ends after the
        batch its sampler ran out with, and batches prefetched beyond it start the next one.
        """
        batch_size = self._resolve_batch_size(None, f"iter({type(self).__name__})")
        if len(self) == 0:
            return
        if self._sampler.has_epochs:
            while True:
                data, _, ran_out = self._next_batch(batch_size)
                yield data
                if ran_out:
                    return
        for _ in range(max(1, len(self) // batch_size)):
            yield self._next_batch(batch_size)[0]

    def __getitem__(self, index: int | slice | torch.Tensor | np.ndarray) -> Any:
        """The stored elements at ``index`` (positions in ``[0, len)``), collated."""
        n = len(self)
        if isinstance(index, slice):
            positions = np.arange(n)[index]
        else:
            if isinstance(index, torch.Tensor):
                index = to_numpy(index)
            positions = np.asarray(index)
            if positions.ndim == 0 and positions.dtype.kind in "iu" and positions < 0:
                positions = positions + n
        idx = torch.from_numpy(as_index_array(positions, n, f"{type(self).__name__}[...]"))
        with self._storage.lock():
            data = self._fetch(idx, {"index": idx})
        if isinstance(index, (int, np.integer)):
            return data[0]
        return data

    # -- priorities ------------------------------------------------------------------------

    def update_priority(self, index: Any, priority: Any) -> None:
        """Set the priorities of the elements at ``index`` (prioritized samplers only).

        Raises:
            PriorityError: A priority is negative, NaN or infinite; nothing is updated.
            BufferIndexError: An index is not a stored position.
            ReplayBufferError: The sampler has no priorities.
        """
        with self._storage.lock():
            self._sampler.update_priority(index, priority, limit=len(self))

    # -- lifetime --------------------------------------------------------------------------

    def empty(self) -> None:
        """Remove every element (and forget priorities and the writer's state).

        Prefetched batches are discarded and the prefetch thread ends (the next
        :meth:`sample` starts another).
        """
        # Stop prefetching first: a draw in progress needs the lock to finish.
        self.shutdown()
        with self._storage.lock():
            self._storage.empty()
            self._sampler.empty()
            self._writer.empty()

    def shutdown(self) -> None:
        """End the prefetch thread and discard prefetched batches; idempotent.

        The content is kept and the buffer stays usable: a later :meth:`sample` starts a
        new thread. Garbage collection does the same for a buffer that is dropped.
        """
        if self._prefetcher is not None:
            self._prefetcher.stop()

    def __getstate__(self) -> dict[str, Any]:
        if self._storage.shared and not self._writer.shareable:
            raise NotShareableError(
                f"{type(self).__name__}: {type(self._writer).__name__} keeps its state in "
                f"this process, so it cannot write into a shared storage from another one. "
                f"Fix: use RoundRobinWriter for buffers extended by several processes."
            )
        state = self.__dict__.copy()
        if self._prefetcher is not None:  # threads do not travel: the copy starts its own
            state["_prefetcher"] = Prefetcher(self._prefetcher.depth, self._prefetcher.name)
        return state

    # -- persistence -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The whole content (elements, priorities, writer state), for ``torch.save``."""
        with self._storage.lock():
            return {
                "storage": self._storage.state_dict(),
                "sampler": self._sampler.state_dict(),
                "writer": self._writer.state_dict(),
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the content by ``state``; on any error the buffer is unchanged.

        Raises:
            CheckpointError: ``state`` is malformed or does not fit this buffer.
        """
        who = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict) or not {"storage", "sampler", "writer"} <= set(state):
            raise CheckpointError(f"{who}: expected a dict with storage, sampler and writer")
        self._load(
            who,
            state["storage"],
            lambda: self._storage.stage_state(state["storage"], who),
            state["sampler"],
            state["writer"],
        )

    def _load(
        self,
        who: str,
        storage_state: Any,
        stage_storage: Callable[[], Callable[[], None]],
        sampler_state: Any,
        writer_state: Any,
    ) -> None:
        if not isinstance(storage_state, dict):
            raise CheckpointError(f"{who}: the saved storage state is not a dict")
        # The capacity first: a checkpoint of a larger buffer would otherwise be refused for
        # its length, which does not say what to change.
        self._storage._check_max_size(storage_state.get("max_size"), who)
        length = storage_state.get("len")
        if not isinstance(length, int) or not 0 <= length <= self._storage.max_size:
            raise CheckpointError(
                f"{who}: the saved storage holds {length!r} elements, which is not a count "
                f"between 0 and its max_size {self._storage.max_size}; the state is corrupt."
            )
        self._drop_prefetched()  # before the lock, which prefetched draws need to finish
        with self._storage.lock():
            # Cheap checks first; the storage allocates, so it comes last.
            commits = [
                self._sampler.stage_state(sampler_state, who, length),
                self._writer.stage_state(writer_state, who, length),
            ]
            commits.append(stage_storage())
            for commit in commits:
                commit()

    def dumps(self, path: str | os.PathLike) -> None:
        """Save the buffer to the folder ``path``; ``path`` always holds a complete checkpoint.

        Every file is listed with its size and CRC-32 in a checksummed manifest
        (:mod:`rlblocks.core.checkpoint`). A new checkpoint appears at ``path`` only once
        complete; an existing one is replaced by writing the new version beside it and then
        switching a pointer atomically, so an interrupted ``dumps`` (an exception, a full
        disk, a killed process) leaves the previous checkpoint loadable.

        Raises:
            CheckpointError: ``path`` exists and is not a replay-buffer checkpoint (it is
                never overwritten then).
        """
        who = f"{type(self).__name__}.dumps"
        with self._storage.lock():
            write_checkpoint(
                path,
                self._dump_into,
                kind=KIND,
                who=who,
                error=CheckpointError,
            )

    def _dump_into(self, writer: CheckpointWriter) -> None:
        storage_meta = self._storage.dump(writer)
        components = io.BytesIO()
        torch.save(
            {"sampler": self._sampler.state_dict(), "writer": self._writer.state_dict()},
            components,
        )
        writer.write_bytes("components.pt", components.getbuffer())
        writer.write_json(
            META,
            {
                "version": VERSION,
                "buffer": type(self).__name__,
                "storage": storage_meta,
                "sampler": type(self._sampler).__name__,
                "writer": type(self._writer).__name__,
            },
        )

    def loads(self, path: str | os.PathLike) -> None:
        """Load a folder written by :meth:`dumps`; on any error the buffer is unchanged.

        The whole checkpoint (manifest, metadata, every file's size and CRC-32) is verified
        before anything is replaced.

        Raises:
            CheckpointError: The checkpoint is missing, partial or corrupt, or was made by a
                buffer of another capacity or with another kind of storage, sampler or writer.
        """
        who = f"{type(self).__name__}.loads"
        folder, meta = read_buffer_checkpoint(path, who)
        storage_meta = meta.get("storage")
        if not isinstance(storage_meta, dict):
            raise CheckpointError(f"{who}: the checkpoint describes no storage")
        for kind, component in (("sampler", self._sampler), ("writer", self._writer)):
            if meta.get(kind) != type(component).__name__:
                raise CheckpointError(
                    f"{who}: the checkpoint was made with {kind} {meta.get(kind)!r}; this "
                    f"buffer has {type(component).__name__}. The buffer is unchanged."
                )
        if storage_meta.get("kind") != self._storage.checkpoint_kind:
            raise CheckpointError(
                f"{who}: the checkpoint holds a {storage_meta.get('type')!r}; this buffer's "
                f"{type(self._storage).__name__} cannot load it. The buffer is unchanged."
            )
        try:
            components = torch.load(folder / "components.pt", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{who}: components.pt cannot be read ({exc!r})") from exc
        if not isinstance(components, dict):
            raise CheckpointError(f"{who}: components.pt is malformed")
        self._load(
            who,
            storage_meta,
            lambda: self._storage.stage_files(folder, storage_meta, who),
            components.get("sampler"),
            components.get("writer"),
        )
