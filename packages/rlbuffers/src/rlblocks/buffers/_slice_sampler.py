"""Sampling contiguous slices of trajectories (for recurrent policies, n-step returns...)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlblocks.buffers._samplers import Sampler, empty_error
from rlblocks.buffers._storages import Storage
from rlblocks.buffers.errors import BufferConfigError, EmptyBufferError, StorageLayoutError
from rlblocks.core.utils import check_int

__all__ = ["SliceSampler"]

NestedKey = str | tuple[str, ...]


class SliceSampler(Sampler):
    """Samples ``num_slices`` slices of ``slice_len`` consecutive steps of one trajectory each.

    Trajectories are told apart by ``traj_key`` (a trajectory id per step) or by
    ``end_key`` (a flag that is true on the last step of a trajectory, ``("next", "done")``
    by default). Storage order is time order; with a round-robin writer the oldest element
    sits at the write cursor once the storage is full, and no slice crosses that seam.

    A trajectory is picked uniformly among those long enough, then a start uniformly within
    it. The returned index is flat, slice after slice: a batch of ``batch_size`` elements
    reshapes to ``[num_slices, slice_len]``.

    Args:
        num_slices: Slices per batch (``slice_len = batch_size // num_slices``).
        slice_len: Steps per slice (``num_slices = batch_size // slice_len``). Give exactly
            one of the two.
        traj_key: Key of a trajectory id per step.
        end_key: Key of an end-of-trajectory flag per step (used if ``traj_key`` is None).
        strict_length: Only sample trajectories at least ``slice_len`` long. If False, a
            shorter trajectory gives a shorter slice and the batch has fewer elements;
            ``info["slice_lengths"]`` says how long each slice is.
        generator: Random generator; defaults to torch's global one.

    The trajectory boundaries are recomputed (a pass over the stored flags) only after the
    storage has changed.

    Example:
        >>> from rlblocks.core import make_sampler
        >>> sampler = make_sampler("slice", slice_len=8, end_key=("next", "done"))
    """

    def __init__(
        self,
        num_slices: int | None = None,
        slice_len: int | None = None,
        traj_key: NestedKey | None = None,
        end_key: NestedKey | None = None,
        strict_length: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        who = "SliceSampler"
        if (num_slices is None) == (slice_len is None):
            raise ValueError(
                f"{who}: give exactly one of num_slices and slice_len, got num_slices="
                f"{num_slices!r}, slice_len={slice_len!r}"
            )
        if traj_key is not None and end_key is not None:
            raise ValueError(f"{who}: give traj_key or end_key, not both")
        self.num_slices = check_int(
            num_slices, "num_slices", who, allow=(None,), error=BufferConfigError
        )
        self.slice_len = check_int(
            slice_len, "slice_len", who, allow=(None,), error=BufferConfigError
        )
        self.traj_key = traj_key
        self.end_key = ("next", "done") if traj_key is None and end_key is None else end_key
        self.strict_length = bool(strict_length)
        self._generator = generator
        self._cache: tuple[tuple[int, int, int], tuple[np.ndarray, ...]] | None = None

    def __repr__(self) -> str:
        key = (
            f"traj_key={self.traj_key!r}"
            if self.traj_key is not None
            else f"end_key={self.end_key!r}"
        )
        return (
            f"SliceSampler(num_slices={self.num_slices}, slice_len={self.slice_len}, {key}, "
            f"strict_length={self.strict_length})"
        )

    def _shape(self, batch_size: int) -> tuple[int, int]:
        given = self.num_slices if self.num_slices is not None else self.slice_len
        if batch_size % given:
            name = "num_slices" if self.num_slices is not None else "slice_len"
            raise ValueError(
                f"SliceSampler.sample: batch_size {batch_size} is not a multiple of {name} "
                f"{given}. Fix: use a batch_size divisible by {given}."
            )
        other = batch_size // given
        return (given, other) if self.num_slices is not None else (other, given)

    def _trajectories(self, storage: Storage) -> tuple[np.ndarray, ...]:
        """(start, length) of each trajectory in time order, and time order -> position."""
        n = len(storage)
        stamp = (storage.written, n, storage.cursor)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        order = np.arange(n)
        if n == storage.max_size and storage.cursor:
            order = (order + storage.cursor) % n
        key = self.traj_key if self.traj_key is not None else self.end_key
        try:
            column = storage.column(key)
        except KeyError as exc:
            raise StorageLayoutError(
                f"SliceSampler.sample: the storage has no key {key!r} to split trajectories "
                f"on ({exc}). Fix: pass traj_key= or end_key= naming a stored key."
            ) from exc
        values = column.reshape(n, -1).numpy(force=True)[order]
        if self.traj_key is not None:
            boundary = (values[1:] != values[:-1]).any(axis=1)
        else:
            boundary = values[:-1].astype(bool).any(axis=1)
        starts = np.concatenate([[0], np.flatnonzero(boundary) + 1]).astype(np.int64)
        lengths = np.diff(np.append(starts, n))
        result = (starts, lengths, order)
        self._cache = (stamp, result)
        return result

    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if len(storage) == 0:
            raise empty_error("SliceSampler.sample")
        num_slices, slice_len = self._shape(batch_size)
        starts, lengths, order = self._trajectories(storage)
        eligible = lengths >= slice_len if self.strict_length else lengths > 0
        if not eligible.any():
            raise EmptyBufferError(
                f"SliceSampler.sample: no stored trajectory has {slice_len} steps (the longest "
                f"has {int(lengths.max())}). Fix: add longer trajectories, lower slice_len, or "
                f"pass strict_length=False."
            )
        starts, lengths = starts[eligible], lengths[eligible]
        pick = torch.randint(len(starts), (num_slices,), generator=self._generator).numpy()
        start, length = starts[pick], lengths[pick]
        span = np.minimum(length, slice_len)
        draw = torch.rand(num_slices, dtype=torch.float64, generator=self._generator).numpy()
        first = start + np.floor(draw * (length - span + 1)).astype(np.int64)
        if (span == slice_len).all():
            steps = first[:, None] + np.arange(slice_len)
        else:
            offsets = np.arange(int(span.sum())) - np.repeat(np.cumsum(span) - span, span)
            steps = np.repeat(first, span) + offsets
        index = torch.from_numpy(order[steps.reshape(-1)])
        return index, {"slice_lengths": torch.from_numpy(span.astype(np.int64))}
