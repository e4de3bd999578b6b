"""Specs of several categorical variables: :class:`MultiCategorical` and :class:`MultiOneHot`."""

from __future__ import annotations

from typing import Any

import torch

from rlblocks.core._specs_base import (
    DeviceLike,
    ShapeLike,
    as_device,
    as_size,
    check_dtype,
    first_bad_index,
    fmt_number,
    value_range,
)
from rlblocks.core._specs_discrete import (
    DiscreteSpec,
    check_fits,
    check_last_dim,
    check_nvec,
    round_into,
)

__all__ = ["MultiCategorical", "MultiOneHot"]


class MultiCategorical(DiscreteSpec):
    """Several categorical variables along the last dim; entry ``i`` is in ``[0, nvec[i])``.

    Args:
        nvec: Category counts, one per entry of the last dim (sequence or 1-D tensor).
        shape: The value shape (default: ``(len(nvec),)``); its last dim must be
            ``len(nvec)``.
        dtype: An integer dtype able to hold ``max(nvec) - 1``.
        device: The device of created values.

    Raises:
        SpecError: If an entry of ``nvec`` is not a positive int, the shape does not end with
            ``len(nvec)`` or ``dtype`` is not an integer dtype.

    Example:
        >>> spec = MultiCategorical([3, 2])
        >>> spec.to_one_hot(torch.tensor([2, 0]))
        tensor([False, False,  True,  True, False])
    """

    _device_tensors = ("_nvec", "_offsets")
    _eq_attrs = ("_nvec_tuple",)

    def __init__(
        self,
        nvec: Any,
        shape: ShapeLike | None = None,
        dtype: torch.dtype = torch.int64,
        device: DeviceLike = None,
    ) -> None:
        nvec_tuple = check_nvec(nvec, "MultiCategorical")
        full = as_size((len(nvec_tuple),) if shape is None else shape)
        check_last_dim(full, len(nvec_tuple), "MultiCategorical", "len(nvec)")
        dtype = check_dtype(dtype, "MultiCategorical", "i")
        check_fits(dtype, max(nvec_tuple) - 1, "MultiCategorical")
        device = as_device(device)
        super().__init__(full, dtype, device)
        self._nvec_tuple = nvec_tuple
        self._nvec = torch.tensor(nvec_tuple, dtype=torch.int64, device=device)
        # Start of each variable's block in the one-hot encoding.
        self._offsets = self._nvec.cumsum(0) - self._nvec
        # With equal counts, is_in compares one min/max pair like Categorical.
        self._uniform_n = nvec_tuple[0] if len(set(nvec_tuple)) == 1 else None

    @property
    def nvec(self) -> torch.Tensor:
        """Category counts as an int64 tensor of shape ``(len(nvec),)`` (do not modify)."""
        return self._nvec

    def rand(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        # Modulo of a 62-bit draw: per-entry ranges in one op, bias below 2**-30.
        draw = torch.randint(0, 2**62, full, dtype=torch.int64, device=self._device)
        return torch.remainder(draw, self._nvec).to(self._dtype)

    def zero(self, shape: ShapeLike = ()) -> torch.Tensor:
        return torch.zeros(self._full_shape(shape), dtype=self._dtype, device=self._device)

    def _values_ok(self, x: torch.Tensor) -> bool:
        if x.numel() == 0:
            return True
        if self._uniform_n is not None:
            lo, hi = torch.aminmax(x)
            return bool(lo.item() >= 0 and hi.item() < self._uniform_n)
        return bool(((x >= 0) & (x < self._nvec.to(x.device))).all())

    def _values_problem(self, x: torch.Tensor) -> str:
        if self._uniform_n is not None:
            return f"expected integers in [0, {self._uniform_n}), {value_range(x)}"
        nvec = self._nvec.to(x.device)
        idx = first_bad_index(~((x >= 0) & (x < nvec)))
        return (
            f"expected entry i of the last dim in [0, nvec[i]) with nvec={list(self._nvec_tuple)}"
            f", {value_range(x)}; first violation x[{', '.join(map(str, idx))}] = "
            f"{fmt_number(x[idx].item())} outside [0, {self._nvec_tuple[idx[-1]]})"
        )

    def _project_values(self, x: torch.Tensor) -> torch.Tensor:
        return round_into(x, self._nvec.to(x.device) - 1).to(self._dtype)

    def _params(self) -> list[tuple[str, str]]:
        return [("nvec", str(list(self._nvec_tuple)))]

    def to_one_hot(self, x: torch.Tensor) -> torch.Tensor:
        """Encode each variable as a one-hot block and concatenate the blocks.

        Args:
            x: Valid integer values of this spec, shape ``[*batch, *self.shape]``.

        Returns:
            A bool tensor of shape ``[*x.shape[:-1], sum(nvec)]``.

        Raises:
            SpecError: If ``x`` is not a valid value (any integer dtype is accepted).
        """
        self._check_convertible(x, "to_one_hot", integer=True)
        out = torch.zeros(*x.shape[:-1], sum(self._nvec_tuple), dtype=torch.bool, device=x.device)
        return out.scatter_(-1, x.to(torch.int64) + self._offsets.to(x.device), True)

    def to_one_hot_spec(self) -> MultiOneHot:
        """Return the :class:`MultiOneHot` spec of ``to_one_hot``'s output."""
        shape = (*self._shape[:-1], sum(self._nvec_tuple))
        return MultiOneHot(self._nvec_tuple, shape=shape, device=self._device)


class MultiOneHot(DiscreteSpec):
    """Concatenated one-hot blocks of sizes ``nvec`` along the last dim.

    Args:
        nvec: Block sizes (sequence or 1-D tensor).
        shape: The value shape (default: ``(sum(nvec),)``); its last dim must be
            ``sum(nvec)``.
        dtype: A bool, integer or floating dtype.
        device: The device of created values.

    Raises:
        SpecError: If an entry of ``nvec`` is not a positive int, the shape does not end with
            ``sum(nvec)`` or ``dtype`` is complex.

    Example:
        >>> spec = MultiOneHot([3, 2])
        >>> spec.to_categorical(torch.tensor([False, False, True, True, False]))
        tensor([2, 0])
    """

    _device_tensors = ("_nvec", "_block", "_gather", "_pad", "_offsets", "_zero_row")
    _eq_attrs = ("_nvec_tuple",)

    def __init__(
        self,
        nvec: Any,
        shape: ShapeLike | None = None,
        dtype: torch.dtype = torch.bool,
        device: DeviceLike = None,
    ) -> None:
        nvec_tuple = check_nvec(nvec, "MultiOneHot")
        total = sum(nvec_tuple)
        full = as_size((total,) if shape is None else shape)
        check_last_dim(full, total, "MultiOneHot", "sum(nvec)")
        device = as_device(device)
        super().__init__(full, check_dtype(dtype, "MultiOneHot", "fib"), device)
        self._nvec_tuple = nvec_tuple
        self._nvec = torch.tensor(nvec_tuple, dtype=torch.int64, device=device)
        self._offsets = self._nvec.cumsum(0) - self._nvec
        # Block id of every position of the last dim, for per-block sums with index_add.
        self._block = torch.repeat_interleave(
            torch.arange(len(nvec_tuple), device=device), self._nvec
        )
        # A [blocks, max_n] gather map turns the ragged blocks into a padded matrix so that
        # one argmax decodes all blocks; _pad marks the padding.
        cols = torch.arange(max(nvec_tuple), device=device)
        self._pad = cols >= self._nvec.unsqueeze(-1)
        self._gather = (self._offsets.unsqueeze(-1) + cols).clamp(max=total - 1)
        self._zero_row = torch.zeros(total, dtype=dtype, device=device)
        self._zero_row[self._offsets] = 1

    @property
    def nvec(self) -> torch.Tensor:
        """Block sizes as an int64 tensor (do not modify)."""
        return self._nvec

    def rand(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        draw = torch.randint(
            0, 2**62, (*full[:-1], len(self._nvec_tuple)), dtype=torch.int64, device=self._device
        )
        return self._encode(torch.remainder(draw, self._nvec))

    def zero(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        return self._zero_row.expand(full).clone(memory_format=torch.contiguous_format)

    def _encode(self, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*idx.shape[:-1], self._shape[-1], dtype=self._dtype, device=idx.device)
        return out.scatter_(-1, idx + self._offsets.to(idx.device), 1)

    def _decode(self, x: torch.Tensor) -> torch.Tensor:
        values = x.to(torch.float64) if not x.dtype.is_complex else x.real.to(torch.float64)
        padded = values[..., self._gather.to(x.device)]
        padded = padded.masked_fill(self._pad.to(x.device), float("-inf"))
        # A block of only -inf would argmax into the padding; clamp back into the block.
        return padded.argmax(-1).minimum(self._nvec.to(x.device) - 1)

    def _blocks_ok(self, x: torch.Tensor) -> torch.Tensor:
        """Per-block flag, shape ``[..., len(nvec)]``: exactly one 1, the rest 0."""
        block = self._block.to(x.device)
        shape = (*x.shape[:-1], len(self._nvec_tuple))
        nonzero = torch.zeros(shape, dtype=torch.int64, device=x.device)
        nonzero.index_add_(-1, block, (x != 0).to(torch.int64))
        if x.dtype == torch.bool:
            return nonzero == 1
        acc = torch.float64 if x.dtype.is_floating_point else torch.int64
        sums = torch.zeros(shape, dtype=acc, device=x.device).index_add_(-1, block, x.to(acc))
        return (nonzero == 1) & (sums == 1)

    def _values_ok(self, x: torch.Tensor) -> bool:
        return bool(self._blocks_ok(x).all())

    def _values_problem(self, x: torch.Tensor) -> str:
        bad = ~self._blocks_ok(x)
        idx = first_bad_index(bad)
        start = int(self._offsets[idx[-1]])
        block = x[idx[:-1]][start : start + self._nvec_tuple[idx[-1]]]
        shown = block.to(torch.float64 if x.dtype.is_floating_point else torch.int64).tolist()
        return (
            f"expected {len(self._nvec_tuple)} one-hot blocks of sizes {list(self._nvec_tuple)} "
            f"(exactly one 1 per block), got {int(bad.sum())} invalid block(s), the first is "
            f"block {idx[-1]} at index {list(idx[:-1])}: {shown} "
            f"(fix: spec.project(x) takes the argmax of each block)"
        )

    def _project_values(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode(self._decode(x))

    def _params(self) -> list[tuple[str, str]]:
        return [("nvec", str(list(self._nvec_tuple)))]

    def to_categorical(self, x: torch.Tensor) -> torch.Tensor:
        """Decode each one-hot block into its category index.

        Args:
            x: Valid values of this spec (any bool/integer/float dtype).

        Returns:
            An int64 tensor of shape ``[*x.shape[:-1], len(nvec)]``.

        Raises:
            SpecError: If a block of ``x`` is not one-hot.
        """
        self._check_convertible(x, "to_categorical", integer=False)
        return self._decode(x)

    def to_categorical_spec(self) -> MultiCategorical:
        """Return the :class:`MultiCategorical` spec of ``to_categorical``'s output."""
        shape = (*self._shape[:-1], len(self._nvec_tuple))
        return MultiCategorical(self._nvec_tuple, shape=shape, device=self._device)
