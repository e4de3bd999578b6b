"""Box-like specs: :class:`Unbounded` and :class:`Bounded`."""

from __future__ import annotations

import math
from typing import Any

import torch

from rlblocks.core._specs_base import (
    DeviceLike,
    ShapeLike,
    TensorSpec,
    as_device,
    as_size,
    check_dtype,
    first_bad_index,
    fmt_number,
    fmt_tensor,
    is_integer_dtype,
    value_range,
)
from rlblocks.core.errors import SpecError

__all__ = ["Unbounded", "Bounded"]

# Unbounded integer specs sample from this symmetric range (clipped to the dtype's range):
# wide enough to exercise code, narrow enough that sums of a few samples do not overflow.
_INT_RAND_LIMIT = 2**31 - 1


def _int_limits(dtype: torch.dtype) -> tuple[int, int]:
    info = torch.iinfo(dtype)
    return max(info.min, -_INT_RAND_LIMIT), min(info.max, _INT_RAND_LIMIT)


def _randint_between(
    low: torch.Tensor, high: torch.Tensor, shape: torch.Size, device: torch.device
) -> torch.Tensor:
    """Uniform integers in ``[low, high]`` (inclusive, per element) as int64."""
    span = high.to(torch.int64) - low.to(torch.int64) + 1
    # Modulo of a 62-bit draw: exact integers, bias below 2**-30 for spans under 2**32.
    draw = torch.randint(0, 2**62, shape, dtype=torch.int64, device=device)
    return low.to(torch.int64) + torch.remainder(draw, span)


class Unbounded(TensorSpec):
    """Any value of the given shape and dtype.

    ``rand`` draws standard normal floats (complex too), integers from ``[-2**31+1, 2**31-1]``
    clipped to the dtype's range, or random bools.

    Args:
        shape: The value shape (without batch dims).
        dtype: Any torch dtype.
        device: The device of created values (default: torch's default device).

    Example:
        >>> spec = Unbounded(shape=(3,))
        >>> spec.rand(2).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        shape: ShapeLike = (),
        dtype: torch.dtype = torch.float32,
        device: DeviceLike = None,
    ) -> None:
        super().__init__(as_size(shape), check_dtype(dtype, "Unbounded", "fibc"), as_device(device))

    def rand(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        dtype = self._dtype
        if dtype.is_floating_point or dtype.is_complex:
            return torch.randn(full, dtype=dtype, device=self._device)
        if dtype == torch.bool:
            return torch.randint(0, 2, full, device=self._device).to(torch.bool)
        low, high = _int_limits(dtype)
        out = torch.randint(low, high + 1, full, dtype=torch.int64, device=self._device)
        return out.to(dtype)

    def zero(self, shape: ShapeLike = ()) -> torch.Tensor:
        return torch.zeros(self._full_shape(shape), dtype=self._dtype, device=self._device)

    def _project_values(self, x: torch.Tensor) -> torch.Tensor:
        if not is_integer_dtype(self._dtype):
            return x.to(self._dtype)
        # Saturate instead of letting the cast wrap around (300 -> 127 for int8, not 44).
        info = torch.iinfo(self._dtype)
        if x.dtype.is_complex:
            x = x.real
        if x.dtype.is_floating_point:
            # float(int64 max) rounds up to 2**63, which would overflow the cast.
            high = float(info.max)
            if high > info.max:
                high = math.nextafter(high, 0.0)
            x = torch.nan_to_num(x.to(torch.float64), nan=0.0).round()
            return x.clamp(float(info.min), high).to(self._dtype)
        return x.to(torch.int64).clamp(info.min, info.max).to(self._dtype)


class Bounded(TensorSpec):
    """Values in a box ``[low, high]`` (elementwise, inclusive).

    ``low`` and ``high`` are scalars or tensors broadcastable to ``shape``; when ``shape`` is
    omitted it is their broadcast shape. For integer dtypes the bounds are rounded inwards
    (``ceil(low)``, ``floor(high)``) and ``rand`` draws integers in ``[low, high]``. Infinite
    float bounds are allowed; ``rand`` then draws clamped normal samples on those elements.

    Args:
        low: Lower bound(s).
        high: Upper bound(s).
        shape: The value shape (default: broadcast shape of ``low`` and ``high``).
        dtype: A floating or integer dtype.
        device: The device of created values.

    Raises:
        SpecError: If ``low > high`` anywhere, the bounds do not broadcast to ``shape``, a
            bound is NaN, or ``dtype`` is bool/complex.

    Example:
        >>> spec = Bounded(low=-2.0, high=2.0, shape=(1,))
        >>> spec
        Bounded(shape=torch.Size([1]), low=-2.0, high=2.0, dtype=torch.float32, device=cpu)
        >>> spec.project(torch.tensor([3.0]))
        tensor([2.])
    """

    _shaped_tensors = ("_low", "_high", "_zero")
    _eq_tensors = ("_low", "_high")

    def __init__(
        self,
        low: float | int | torch.Tensor | Any,
        high: float | int | torch.Tensor | Any,
        shape: ShapeLike | None = None,
        dtype: torch.dtype = torch.float32,
        device: DeviceLike = None,
    ) -> None:
        dtype = check_dtype(dtype, "Bounded", "fi")
        device = as_device(device)
        low_t = self._bound_tensor(low, "low", dtype, device)
        high_t = self._bound_tensor(high, "high", dtype, device)
        if shape is None:
            try:
                full = torch.broadcast_shapes(low_t.shape, high_t.shape)
            except RuntimeError as err:
                raise SpecError(
                    f"Bounded: low of shape {list(low_t.shape)} and high of shape "
                    f"{list(high_t.shape)} do not broadcast together"
                ) from err
        else:
            full = as_size(shape)
            for name, t in (("low", low_t), ("high", high_t)):
                try:
                    ok = torch.broadcast_shapes(t.shape, full) == full
                except RuntimeError:
                    ok = False
                if not ok:
                    raise SpecError(
                        f"Bounded: {name} of shape {list(t.shape)} does not broadcast to "
                        f"shape {list(full)}; pass a scalar or a tensor of that shape"
                    )
        if bool(low_t.isnan().any() | high_t.isnan().any()):
            raise SpecError("Bounded: low and high must not be NaN")
        bad = low_t.expand(full) > high_t.expand(full)
        if bool(bad.any()):
            idx = first_bad_index(bad)
            lo = low_t.expand(full)[idx].item()
            hi = high_t.expand(full)[idx].item()
            where = f" at index {idx}" if idx else ""
            rounded = (
                " (integer dtypes round low up and high down)" if is_integer_dtype(dtype) else ""
            )
            raise SpecError(
                f"Bounded: low must be <= high, got low={fmt_number(lo)} > "
                f"high={fmt_number(hi)}{where}{rounded}"
            )
        super().__init__(full, dtype, device)
        # Stored in the spec dtype: the cast values are what ``is_in`` compares against.
        self._low = low_t.to(dtype).expand(full).contiguous()
        self._high = high_t.to(dtype).expand(full).contiguous()
        # zero(): 0 where it is inside, else the low bound (the high one if low is -inf).
        self._zero = torch.where(
            (self._low <= 0) & (self._high >= 0),
            torch.zeros_like(self._low),
            torch.where(self._low.isfinite(), self._low, self._high),
        )
        uniform = self._low.numel() > 0 and bool(
            (self._low == self._low.reshape(-1)[0]).all()
            & (self._high == self._high.reshape(-1)[0]).all()
        )
        # Uniform bounds let is_in compare one min/max pair with Python scalars.
        self._scalar_bounds: tuple[Any, Any] | None = (
            (self._low.reshape(-1)[0].item(), self._high.reshape(-1)[0].item()) if uniform else None
        )
        self._finite = bool(self._low.isfinite().all() & self._high.isfinite().all())
        # The one-kernel rand path needs uniform finite bounds, and uniform_ computes
        # high - low, which must not overflow the dtype.
        self._fast_rand = self._scalar_bounds is not None and self._finite
        if self._fast_rand and dtype.is_floating_point:
            lo, hi = self._scalar_bounds  # type: ignore[misc]
            self._fast_rand = float(hi) - float(lo) <= torch.finfo(dtype).max

    @staticmethod
    def _bound_tensor(
        value: Any, name: str, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """Convert a bound to float64, or to int64 (rounded inwards) for integer specs."""
        try:
            t = torch.as_tensor(value, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise SpecError(f"Bounded: {name} must be a number or a tensor, got {value!r}") from err
        if t.dtype.is_complex:
            raise SpecError(f"Bounded: {name} must be real, got dtype {t.dtype}")
        if not is_integer_dtype(dtype):
            return t.to(torch.float64)
        if t.dtype == torch.bool:
            t = t.to(torch.int64)
        if t.dtype.is_floating_point:
            if bool(t.isnan().any()):
                raise SpecError(f"Bounded: {name} must not be NaN")
            t = t.ceil() if name == "low" else t.floor()
        info = torch.iinfo(dtype)
        # Clip to the dtype's range (and to +-2**61 for int64 so that high - low + 1 fits in
        # int64 when sampling); the clamp happens in float64 only for float input.
        lo, hi = max(info.min, -(2**61)), min(info.max, 2**61)
        return t.clamp(lo, hi).to(torch.int64)

    @property
    def low(self) -> torch.Tensor:
        """Lower bounds, a tensor of the spec's full shape."""
        return self._low

    @property
    def high(self) -> torch.Tensor:
        """Upper bounds, a tensor of the spec's full shape."""
        return self._high

    def rand(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        if self._fast_rand:
            # One kernel for the common case of uniform finite bounds.
            lo, hi = self._scalar_bounds  # type: ignore[misc]
            if is_integer_dtype(self._dtype):
                return torch.randint(lo, hi + 1, full, dtype=self._dtype, device=self._device)
            out = torch.empty(full, dtype=self._dtype, device=self._device)
            return out.uniform_(lo, hi)
        if is_integer_dtype(self._dtype):
            return _randint_between(self._low, self._high, full, self._device).to(self._dtype)
        # Sampling in float32 (float64 for float64 specs) keeps half-precision specs exact
        # enough; the final clamp guards against rounding past a bound.
        work = torch.float64 if self._dtype == torch.float64 else torch.float32
        low, high = self._low.to(work), self._high.to(work)
        u = torch.rand(full, dtype=work, device=self._device)
        # low*(1-u) + high*u cannot overflow, unlike low + (high-low)*u for huge bounds.
        out = low * (1 - u) + high * u
        if not self._finite:
            normal = torch.randn(full, dtype=work, device=self._device)
            out = torch.where(low.isfinite() & high.isfinite(), out, normal)
        return out.to(self._dtype).clamp(self._low, self._high)

    def zero(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        return self._zero.expand(full).clone(memory_format=torch.contiguous_format)

    def _values_ok(self, x: torch.Tensor) -> bool:
        if x.numel() == 0:
            return True
        if self._scalar_bounds is not None:
            lo, hi = torch.aminmax(x)
            return bool(lo.item() >= self._scalar_bounds[0] and hi.item() <= self._scalar_bounds[1])
        low, high = self._low.to(x.device), self._high.to(x.device)
        return bool(((x >= low) & (x <= high)).all())

    def _values_problem(self, x: torch.Tensor) -> str:
        got = value_range(x)
        if self._scalar_bounds is not None:
            lo, hi = (fmt_number(b) for b in self._scalar_bounds)
            return f"expected values in [{lo}, {hi}], {got} (fix: spec.project(x) clamps)"
        low, high = self._low.to(x.device), self._high.to(x.device)
        bad = ~((x >= low) & (x <= high))
        idx = first_bad_index(bad)
        spec_idx = idx[len(idx) - self.ndim :]
        return (
            f"expected values in [low, high] elementwise, {got}; first violation "
            f"x[{', '.join(map(str, idx))}] = {fmt_number(x[idx].item())} outside "
            f"[{fmt_number(self._low[spec_idx].item())}, "
            f"{fmt_number(self._high[spec_idx].item())}] (fix: spec.project(x) clamps)"
        )

    def _project_values(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self._low.to(x.device), self._high.to(x.device)
        if x.dtype.is_complex:
            x = x.real
        if x.dtype == torch.bool:
            x = x.to(torch.int64)
        if x.dtype.is_floating_point:
            # NaN has no closest value; map it to the spec's zero value.
            zero = self._zero.to(x.device)
            x = torch.where(x.isnan(), zero.to(x.dtype), x)
            if is_integer_dtype(self._dtype):
                # Clamp before casting so huge floats cannot overflow the integer dtype.
                x = x.to(torch.float64).clamp(low.to(torch.float64), high.to(torch.float64))
                return x.round().to(self._dtype).clamp(low, high)
            return x.to(self._dtype).clamp(low, high)
        # Integer input: clamp in int64 so that no value wraps around during the cast.
        if is_integer_dtype(self._dtype):
            return (
                x.to(torch.int64).clamp(low.to(torch.int64), high.to(torch.int64)).to(self._dtype)
            )
        return x.to(self._dtype).clamp(low, high)

    def _params(self) -> list[tuple[str, str]]:
        if self._scalar_bounds is not None:
            return [
                ("low", fmt_number(self._scalar_bounds[0])),
                ("high", fmt_number(self._scalar_bounds[1])),
            ]
        return [("low", fmt_tensor(self._low)), ("high", fmt_tensor(self._high))]
