"""Element storage as rows of bytes: one ``[max_size, row_bytes]`` uint8 tensor per storage.

Every field of a :class:`~rlblocks.buffers._layout.Layout` is a strided view into that one
tensor, so writing a batch is one slice assignment per field, and sampling a batch gathers
whole rows at once: one random memory access per sampled element instead of one per field.
That gather is most of the cost of ``sample()`` for small transitions, and it keeps the cost
nearly flat in capacity (a 10M-row memory-mapped storage is no slower per row than a 100k one
once the rows are in the page cache).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlblocks.buffers._layout import Batch, Layout, numpy_dtype

__all__ = ["Rows", "to_numpy"]


def to_numpy(leaf: Any) -> np.ndarray:
    """A numpy view of a CPU tensor (a copy for other devices), or the array itself."""
    if isinstance(leaf, np.ndarray):
        return leaf
    if leaf.requires_grad or leaf.device.type != "cpu":
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
        n = rows.shape[0]
        self._views = [
            rows[:, f.offset : f.offset + f.nbytes].view(f.dtype).view(n, *f.shape)
            for f in layout.fields
        ]
        self._np_rows: np.ndarray | None = None
        self._np_views: list[np.ndarray | None] = [None] * len(layout.fields)
        self._orders: dict[int, np.ndarray] = {}
        # gather() reorders the bytes of sampled rows dtype after dtype and field after field,
        # so that each dtype is viewed once and each field is one contiguous slice of it:
        # (group byte range per element, numpy dtype, torch dtype, fields), each field being
        # (position, element range within the group per element, shape, keep numpy).
        self._groups: list[tuple[int, int, Any, torch.dtype, list[tuple]]] = []
        self._byte_ranges: list[tuple[int, int]] = []
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, f in enumerate(layout.fields):
            by_dtype.setdefault(f.dtype, []).append(i)
        start = 0
        for dtype, positions in by_dtype.items():
            items, elements = [], 0
            for i in positions:
                f = layout.fields[i]
                count = f.nbytes // dtype.itemsize
                items.append((i, elements, elements + count, f.shape, f.from_numpy))
                elements += count
                self._byte_ranges.append((f.offset, f.offset + f.nbytes))
            stop = start + elements * dtype.itemsize
            self._groups.append((start, stop, numpy_dtype(dtype), dtype, items))
            start = stop
        if rows.device.type == "cpu":
            self._np_rows = rows.numpy()
            for i, f in enumerate(layout.fields):
                dt = numpy_dtype(f.dtype)
                if dt is not None:
                    view = self._np_rows[:, f.offset : f.offset + f.nbytes].view(dt)
                    self._np_views[i] = view.reshape(n, *f.shape)

    def _field_order(self, count: int) -> np.ndarray:
        """Byte positions in ``count`` gathered rows, field after field (cached per count)."""
        order = self._orders.get(count)
        if order is None:
            row = self.rows.shape[1]
            base = np.arange(count, dtype=np.int64)[:, None] * row
            order = np.concatenate(
                [(base + np.arange(start, stop)).reshape(-1) for start, stop in self._byte_ranges]
            )
            if len(self._orders) >= 4:  # batch sizes rarely vary; keep a few
                self._orders.clear()
            self._orders[count] = order
        return order

    @property
    def max_size(self) -> int:
        return self.rows.shape[0]

    def write(self, where: slice | np.ndarray, batch: Batch) -> None:
        """Write ``batch`` at rows ``where`` (a slice, or row indices without duplicates)."""
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

        CPU storages gather whole rows with one numpy ``take`` and cut the fields out of the
        result; other devices use ``index_select`` on the row tensor. Fields that came from
        numpy arrays stay numpy arrays; the rest are tensors.
        """
        count = index.shape[0]
        out: list[Any] = [None] * len(self.layout.fields)
        if self._np_rows is not None:
            # Two takes: the sampled rows, then their bytes reordered field by field, so that
            # each field is one contiguous slice (ten strided copies would cost twice as much).
            rows = self._np_rows.take(index.numpy(), axis=0)
            ordered = rows.reshape(-1).take(self._field_order(count))
            from_numpy = torch.from_numpy
            for start, stop, np_dtype, dtype, items in self._groups:
                chunk = ordered[start * count : stop * count]
                if np_dtype is None:  # no numpy twin (bfloat16...): view it in torch
                    typed = from_numpy(chunk).view(dtype)
                    for i, lo, hi, shape, _ in items:
                        out[i] = typed[lo * count : hi * count].view(count, *shape)
                    continue
                typed = chunk.view(np_dtype)
                for i, lo, hi, shape, keep_numpy in items:
                    value = typed[lo * count : hi * count].reshape(count, *shape)
                    out[i] = value if keep_numpy else from_numpy(value)
            return out
        rows = torch.index_select(self.rows, 0, index.to(self.device))
        for i, f in enumerate(self.layout.fields):
            value = rows[:, f.offset : f.offset + f.nbytes].contiguous()
            value = value.view(f.dtype).view(count, *f.shape)
            out[i] = value.cpu().numpy() if f.from_numpy else value
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
