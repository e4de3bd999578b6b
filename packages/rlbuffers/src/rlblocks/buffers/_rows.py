"""Element storage as rows of bytes: one ``[max_size, row_bytes]`` uint8 tensor per storage.

Every field of a :class:`~rlblocks.buffers._layout.Layout` is a strided view into that one
tensor, so writing a batch is one slice assignment per field, and sampling a batch gathers
whole rows at once: one random memory access per sampled element instead of one per field.
That gather is most of the cost of ``sample()`` for small transitions, and it keeps the cost
nearly flat in capacity (a 10M-row memory-mapped storage is no slower per row than a 100k one
once the rows are in the page cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlblocks.buffers._layout import Batch, Field, Layout, numpy_dtype
from rlblocks.buffers.errors import StorageLayoutError

__all__ = ["Rows", "stage_batch", "to_numpy"]

_CONVERSION_ERRORS = (RuntimeError, TypeError, ValueError, NotImplementedError)


def to_numpy(leaf: Any) -> np.ndarray:
    """A numpy view of a CPU tensor (a copy for other devices), or the array itself."""
    if isinstance(leaf, np.ndarray):
        return leaf
    if leaf.requires_grad or not leaf.is_cpu:
        return leaf.numpy(force=True)
    return leaf.numpy()


class Rows:
    """Field-by-field access to a ``[max_size, row_bytes]`` uint8 tensor.

    Args:
        layout: The fields packed in each row.
        rows: The tensor (any device). CPU rows are read and written through numpy views,
            which cost a fraction of the equivalent torch calls for small batches.
    """

    def __init__(self, layout: Layout, rows: torch.Tensor) -> None:
        self.layout = layout
        self.rows = rows
        self.device = rows.device
        # Asked on every sample: cheaper as a stored flag than as `device.type` each time.
        self.on_cpu = rows.is_cpu
        n = rows.shape[0]
        self._views = [
            rows[:, f.offset : f.offset + f.nbytes].view(f.dtype).view(n, *f.shape)
            for f in layout.fields
        ]
        self._np_rows: np.ndarray | None = None
        self._np_views: list[np.ndarray | None] = [None] * len(layout.fields)
        self._plans: dict[int, _GatherPlan] = {}
        if self.on_cpu:
            self._np_rows = rows.numpy()
            for i, f in enumerate(layout.fields):
                dt = numpy_dtype(f.dtype)
                if dt is not None:
                    view = self._np_rows[:, f.offset : f.offset + f.nbytes].view(dt)
                    self._np_views[i] = view.reshape(n, *f.shape)
        self._numpy_fields = [view is not None for view in self._np_views]

    def _plan(self, count: int) -> _GatherPlan:
        """How :meth:`gather` cuts ``count`` gathered rows into fields (cached per count)."""
        plan = self._plans.get(count)
        if plan is None:
            if len(self._plans) >= 4:  # batch sizes rarely vary; keep a few
                self._plans.clear()
            plan = self._plans[count] = _GatherPlan(self.layout, count)
        return plan

    @property
    def max_size(self) -> int:
        return self.rows.shape[0]

    def stage(self, batch: Batch, who: str) -> Batch:
        """``batch`` in the form :meth:`write` copies from (see :func:`stage_batch`)."""
        return stage_batch(batch, self.device, self._numpy_fields, who)

    def write(self, where: slice | np.ndarray, batch: Batch) -> None:
        """Write a staged ``batch`` at rows ``where`` (a slice, or distinct row indices)."""
        t_where = None
        for view, np_view, leaf in zip(self._views, self._np_views, batch.leaves):
            if np_view is not None:
                np_view[where] = to_numpy(leaf)
                continue
            if isinstance(leaf, np.ndarray):
                leaf = torch.from_numpy(leaf)
            if isinstance(where, slice):
                view[where].copy_(leaf)
            else:
                if t_where is None:
                    t_where = torch.from_numpy(where).to(self.device)
                view.index_copy_(0, t_where, leaf.to(self.device))

    def gather(self, index: torch.Tensor) -> list[Any]:
        """The fields of rows ``index`` (1-D int64), one contiguous array per field.

        CPU storages gather whole rows with one numpy ``take``, then copy each run of
        same-size fields out of them (see :class:`_GatherPlan`); other devices use
        ``index_select`` on the row tensor. Fields that came from numpy arrays stay numpy
        arrays; the rest are tensors.
        """
        if self._np_rows is not None:
            rows = self._np_rows.take(index.numpy(), axis=0)
            plan = self._plan(index.shape[0])
            out = np.empty(plan.nbytes, np.uint8)
            array = np.ndarray
            for shape, dtype, src_offset, src_strides, dst_offset in plan.copies:
                array(shape, dtype, out, dst_offset)[...] = array(
                    shape, dtype, rows, src_offset, src_strides
                )
            from_numpy = torch.from_numpy
            leaves = []
            for shape, dtype, offset, keep_numpy, cast in plan.fields:
                value = array(shape, dtype, out, offset)
                if not keep_numpy:
                    value = from_numpy(value) if cast is None else from_numpy(value).view(cast)
                leaves.append(value)
            return leaves
        count = index.shape[0]
        rows = torch.index_select(self.rows, 0, index.to(self.device))
        out: list[Any] = []
        for f in self.layout.fields:
            value = rows[:, f.offset : f.offset + f.nbytes].contiguous()
            value = value.view(f.dtype).view(count, *f.shape)
            out.append(value.cpu().numpy() if f.from_numpy else value)
        return out

    def column(self, position: int, length: int) -> torch.Tensor:
        """A view of field ``position`` over rows ``[0, length)``."""
        return self._views[position][:length]

    def copy_rows_from(self, source: np.ndarray | torch.Tensor, count: int) -> None:
        """Overwrite rows ``[0, count)`` with ``source`` (``[count, row_bytes]`` uint8)."""
        if self._np_rows is not None:
            self._np_rows[:count] = to_numpy(source)[:count]
        else:
            src = torch.as_tensor(source)[:count]
            self.rows[:count].copy_(src)


def stage_batch(
    batch: Batch, device: torch.device, numpy_fields: Sequence[bool], who: str
) -> Batch:
    """``batch`` with every leaf in the form a write into rows on ``device`` copies from.

    Leaves written through a numpy view (``numpy_fields``) become numpy arrays, the others
    dense tensors on ``device``. Every conversion that can fail (a sparse or ``meta``
    tensor, a device that cannot be copied from) fails here, before the first byte of any
    field is written, so a refused batch leaves the storage as it was. Conjugate and
    negative views are resolved (copied) rather than refused.

    Raises:
        StorageLayoutError: A leaf cannot be copied into the storage; the message names
            its key.
    """
    leaves = []
    for f, to_np, leaf in zip(batch.layout.fields, numpy_fields, batch.leaves):
        try:
            # The common case costs what the write itself used to: one .numpy() per leaf.
            leaves.append(to_numpy(leaf) if to_np else _dense_on(leaf, device))
        except _CONVERSION_ERRORS as exc:
            leaves.append(_resolve(leaf, f, device, to_np, who, exc))
    return Batch(batch.n, leaves, batch.layout)


def _dense_on(leaf: Any, device: torch.device) -> torch.Tensor:
    if isinstance(leaf, np.ndarray):
        leaf = torch.from_numpy(leaf)
    if leaf.layout is not torch.strided or leaf.is_meta:
        raise TypeError(f"a {leaf.layout} tensor on {leaf.device} holds no dense data")
    return leaf.to(device).resolve_conj().resolve_neg()


def _resolve(
    leaf: Any, f: Field, device: torch.device, to_np: bool, who: str, exc: Exception
) -> Any:
    """The staged form of a leaf whose plain conversion failed, or a clear error."""
    if isinstance(leaf, torch.Tensor):
        if leaf.layout is not torch.strided:
            raise StorageLayoutError(
                f"{who}: leaf {f.name} is a {leaf.layout} tensor; tensor storages copy dense "
                f"data. Nothing was written. Fix: pass it dense (tensor.to_dense())."
            ) from exc
        if leaf.is_meta:
            raise StorageLayoutError(
                f"{who}: leaf {f.name} is on the 'meta' device, which holds no data to "
                f"store. Nothing was written. Fix: give the tensor with its data."
            ) from exc
        if leaf.is_conj() or leaf.is_neg():
            leaf = leaf.resolve_conj().resolve_neg()
            try:
                return to_numpy(leaf) if to_np else _dense_on(leaf, device)
            except _CONVERSION_ERRORS as again:
                exc = again
    raise _cannot_copy(who, f, device, exc) from exc


def _cannot_copy(who: str, f: Field, device: torch.device, exc: BaseException) -> Exception:
    return StorageLayoutError(
        f"{who}: leaf {f.name} cannot be copied into the storage on {device} "
        f"({type(exc).__name__}: {exc}). Nothing was written. Fix: pass a dense tensor or "
        f"numpy array that can be copied to {device}."
    )


class _GatherPlan:
    """Where each field of ``count`` gathered rows goes in one output buffer, and how.

    The output holds each field as a contiguous ``[count, *shape]`` block. Fields of equal
    byte size that sit next to each other in a row form a run, copied out of the gathered
    rows in one numpy assignment: a ``[fields, count]`` array of opaque ``nbytes``-sized
    items (``V16`` for a float32[4] observation), read with the row's stride. A CartPole
    transition of ten fields is four such copies, each one tight loop in numpy.

    Attributes:
        nbytes: Size of the output buffer.
        copies: ``(shape, item dtype, offset in a gathered row, strides, output offset)``
            of each run.
        fields: ``(shape, numpy dtype, output offset, keep numpy, torch dtype to view as)``
            of each field, in layout order; the last is None unless the field's dtype has no
            numpy twin (bfloat16...), which is then read as unsigned integers of its size.
    """

    def __init__(self, layout: Layout, count: int) -> None:
        runs: list[list[Field]] = []
        for f in sorted(layout.fields, key=lambda f: f.offset):
            last = runs[-1][-1] if runs else None
            if (
                last is not None
                and last.nbytes == f.nbytes
                and last.offset + last.nbytes == f.offset
            ):
                runs[-1].append(f)
            else:
                runs.append([f])
        # Runs of larger items first, so that every field of the output is aligned.
        runs.sort(key=lambda run: -max(f.dtype.itemsize for f in run))
        copies, where, offset = [], {}, 0
        for run in runs:
            size = run[0].nbytes
            item = np.dtype(f"V{size}")  # raw bytes: any dtype, copied bit for bit
            copies.append(
                ((len(run), count), item, run[0].offset, (size, layout.row_bytes), offset)
            )
            for f in run:
                where[f.offset] = offset
                offset += count * size
        self.nbytes = offset
        self.copies = tuple(copies)
        fields = []
        for f in layout.fields:
            dtype = numpy_dtype(f.dtype)
            cast = None
            if dtype is None:
                dtype, cast = np.dtype(f"u{f.dtype.itemsize}"), f.dtype
            fields.append(((count, *f.shape), dtype, where[f.offset], f.from_numpy, cast))
        self.fields = tuple(fields)
