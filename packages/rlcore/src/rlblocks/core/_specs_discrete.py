"""Discrete specs: :class:`Categorical`, :class:`OneHot` and :class:`Binary`."""

from __future__ import annotations

import operator
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
    is_integer_dtype,
    value_range,
)
from rlblocks.core.errors import SpecError

__all__ = ["MaskableSpec", "Categorical", "OneHot", "Binary"]


def check_count(n: Any, cls_name: str, name: str = "n") -> int:
    """Return ``n`` as a positive int or raise a SpecError naming the argument."""
    try:
        if isinstance(n, bool):
            raise TypeError
        value = operator.index(n)
    except TypeError:
        raise SpecError(f"{cls_name}: {name} must be a positive int, got {n!r}") from None
    if value <= 0:
        raise SpecError(f"{cls_name}: {name} must be a positive int, got {value}")
    return value


def check_nvec(nvec: Any, cls_name: str) -> tuple[int, ...]:
    """Return ``nvec`` as a non-empty tuple of positive ints or raise a SpecError."""
    if isinstance(nvec, torch.Tensor):
        if nvec.ndim != 1 or nvec.dtype.is_floating_point or nvec.dtype == torch.bool:
            raise SpecError(
                f"{cls_name}: nvec must be a 1-D integer tensor or a sequence of ints, got a "
                f"tensor of shape {list(nvec.shape)} and dtype {nvec.dtype}"
            )
        nvec = nvec.tolist()
    if isinstance(nvec, (str, bytes)) or not hasattr(nvec, "__iter__"):
        raise SpecError(f"{cls_name}: nvec must be a sequence of positive ints, got {nvec!r}")
    values = tuple(check_count(n, cls_name, "every entry of nvec") for n in nvec)
    if not values:
        raise SpecError(f"{cls_name}: nvec must not be empty")
    return values


def check_last_dim(shape: torch.Size, size: int, cls_name: str, what: str) -> None:
    if len(shape) == 0 or shape[-1] != size:
        raise SpecError(
            f"{cls_name}: the last dim of shape must be {what} = {size}, got shape {list(shape)}"
        )


def check_fits(dtype: torch.dtype, largest: int, cls_name: str) -> None:
    if torch.iinfo(dtype).max < largest:
        raise SpecError(
            f"{cls_name}: dtype {dtype} cannot hold the category {largest}; use torch.int64"
        )


def round_into(x: torch.Tensor, high: torch.Tensor | int) -> torch.Tensor:
    """Closest integers in ``[0, high]`` to ``x``, as int64 (NaN -> 0)."""
    if x.dtype.is_complex:
        x = x.real
    if not x.dtype.is_floating_point:
        return x.to(torch.int64).clamp(min=0).minimum(torch.as_tensor(high, device=x.device))
    # Clamp in float64 before casting so that huge floats cannot overflow int64.
    x = torch.nan_to_num(x.to(torch.float64), nan=0.0).clamp(min=0.0)
    high_f = torch.as_tensor(high, device=x.device).to(torch.float64)
    return x.minimum(high_f).round().to(torch.int64)


def argmax_last(x: torch.Tensor) -> torch.Tensor:
    """``argmax`` over the last dim for any real dtype (torch has none for bool)."""
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    elif x.dtype.is_complex:
        x = x.real
    return x.argmax(-1)


def one_hot_rows_ok(x: torch.Tensor) -> torch.Tensor:
    """Per-row flag: exactly one entry equals 1 and all others are 0 (last dim)."""
    if x.dtype == torch.bool:
        return x.sum(-1) == 1
    # One nonzero entry whose value (the row sum) is exactly 1.
    return ((x != 0).sum(-1) == 1) & (x.sum(-1) == 1)


class DiscreteSpec(TensorSpec):
    """Shared checks for the conversions between categorical and one-hot encodings."""

    def _range_ok(self, x: torch.Tensor) -> bool:
        """Whether ``x`` holds valid encodings (a mask, if any, aside)."""
        return self._values_ok(x)

    def _check_convertible(self, x: Any, method: str, integer: bool) -> None:
        problem = None
        if not isinstance(x, torch.Tensor) or not self._shape_ok(x.shape):
            problem = self._problem(x)
        elif integer and not is_integer_dtype(x.dtype):
            problem = f"expected an integer tensor, got dtype {x.dtype}"
        elif not self._range_ok(x):  # not the mask: stored values predate the current one
            problem = self._values_problem(x)
        if problem is not None:
            raise SpecError(f"{type(self).__name__}.{method}: {problem}")


class MaskableSpec(DiscreteSpec):
    """A discrete spec that can carry a mask of the categories allowed now (action masking).

    The mask is a bool tensor of shape :attr:`mask_shape` (``True``: allowed). With one,
    :meth:`rand` draws only allowed categories (uniformly among them), and ``is_in`` and
    ``assert_is_in`` reject a value that picks a forbidden one. ``expand``, ``to``,
    ``clone`` and ``==`` carry and compare it. TorchRL's ``mask`` / ``update_mask``.
    """

    _n: int
    _mask: torch.Tensor | None = None

    @property
    def mask_shape(self) -> torch.Size:
        """The shape of a mask: one entry per category of every value."""
        raise NotImplementedError

    @property
    def mask(self) -> torch.Tensor | None:
        """The categories allowed now (``None``: all of them)."""
        return self._mask

    def update_mask(self, mask: torch.Tensor | None) -> None:
        """Set the mask (``None`` clears it), in place.

        Args:
            mask: A bool tensor broadcastable to :attr:`mask_shape`, ``True`` where a
                category is allowed; every value needs at least one allowed category.

        Raises:
            SpecError: ``mask`` is not a bool tensor, does not broadcast to
                :attr:`mask_shape`, or allows no category somewhere (the index is named).
        """
        self._mask = None if mask is None else self._checked_mask(mask)

    def _checked_mask(self, mask: Any) -> torch.Tensor:
        name, want = type(self).__name__, list(self.mask_shape)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            given = f"dtype {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise SpecError(
                f"{name}.update_mask: expected a bool tensor of shape {want} (True = allowed), "
                f"got {given} (fix: mask.bool())"
            )
        try:
            mask = mask.to(self._device).expand(self.mask_shape)
        except RuntimeError:
            raise SpecError(
                f"{name}.update_mask: expected a bool tensor of shape {want} (or one that "
                f"broadcasts to it), got shape {list(mask.shape)}"
            ) from None
        empty = ~mask.any(-1)
        if bool(empty.any()):
            raise SpecError(
                f"{name}.update_mask: the mask allows no category at index "
                f"{list(first_bad_index(empty))} (of {list(empty.shape)}); every value needs at "
                f"least one allowed category (an env with no legal action should end its "
                f"episode)"
            )
        return mask

    def _mask_for(self, leading: torch.Size) -> torch.Tensor:
        """The mask expanded to values with ``leading`` batch dims: ``[*leading, *mask_shape]``."""
        assert self._mask is not None
        return self._mask.expand(*leading, *self.mask_shape)

    def _draw_allowed(self, full: torch.Size) -> torch.Tensor:
        """Category indices of shape ``full`` (leading dims + :meth:`_index_shape`), each
        drawn uniformly among the categories its mask allows."""
        leading = full[: len(full) - len(self._index_shape())]
        probs = self._mask_for(leading).reshape(-1, self._n).float()
        return torch.multinomial(probs, 1).reshape(full)

    def _index_shape(self) -> torch.Size:
        """The shape of the category indices of one value (``mask_shape[:-1]``)."""
        return self.mask_shape[:-1]

    def _forbidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Per index (any leading dims), whether the mask forbids that category."""
        leading = idx.shape[: idx.ndim - len(self._index_shape())]
        allowed = self._mask_for(leading).gather(-1, idx.to(torch.int64).unsqueeze(-1))
        return ~allowed.squeeze(-1)

    def _mask_problem(self, idx: torch.Tensor) -> str:
        bad = self._forbidden(idx)
        where = list(first_bad_index(bad))
        return (
            f"{int(bad.sum())} value(s) pick a category the mask forbids, the first at index "
            f"{where}: category {int(idx[tuple(where)])}"
        )

    # -- carried by expand / to / clone / == ---------------------------------------------

    def expand(self, *shape: int | ShapeLike) -> Any:
        new = super().expand(*shape)
        if self._mask is not None:
            new._mask = self._mask.expand(new.mask_shape)
        return new

    def to(self, device: DeviceLike) -> Any:
        new = super().to(device)
        if new is not self and self._mask is not None:
            new._mask = self._mask.to(new.device)
        return new

    def clone(self) -> Any:
        new = super().clone()
        if self._mask is not None:
            new._mask = self._mask.clone()
        return new

    def __eq__(self, other: object) -> bool:
        same = super().__eq__(other)
        if same is not True:
            return same
        assert isinstance(other, MaskableSpec)
        if self._mask is None or other._mask is None:
            return self._mask is None and other._mask is None
        return torch.equal(self._mask, other._mask)

    __hash__ = None  # type: ignore[assignment]


class Categorical(MaskableSpec):
    """Integers in ``[0, n)``, e.g. a discrete action.

    Args:
        n: Number of categories.
        shape: The value shape (default: scalar).
        dtype: An integer dtype able to hold ``n - 1``.
        device: The device of created values.
        mask: The categories allowed now (see :class:`MaskableSpec`): a bool tensor of
            shape ``[*shape, n]``, or ``None`` (all).

    Raises:
        SpecError: If ``n <= 0``, ``dtype`` is not an integer dtype, or the mask is not
            valid (see :meth:`~MaskableSpec.update_mask`).

    Example:
        >>> spec = Categorical(4)
        >>> spec.to_one_hot(torch.tensor(2))
        tensor([False, False,  True, False])
    """

    _eq_attrs = ("_n",)

    def __init__(
        self,
        n: int,
        shape: ShapeLike = (),
        dtype: torch.dtype = torch.int64,
        device: DeviceLike = None,
        mask: torch.Tensor | None = None,
    ) -> None:
        n = check_count(n, "Categorical")
        dtype = check_dtype(dtype, "Categorical", "i")
        check_fits(dtype, n - 1, "Categorical")
        super().__init__(as_size(shape), dtype, as_device(device))
        self._n = n
        self.update_mask(mask)

    @property
    def mask_shape(self) -> torch.Size:
        return torch.Size((*self._shape, self._n))

    @property
    def n(self) -> int:
        """Number of categories."""
        return self._n

    def rand(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        if self._mask is not None:
            return self._draw_allowed(full).to(self._dtype)
        return torch.randint(0, self._n, full, dtype=self._dtype, device=self._device)

    def zero(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        if self._mask is not None:  # the first allowed category
            leading = full[: len(full) - self.ndim]
            return self._mask_for(leading).to(torch.int8).argmax(-1).to(self._dtype)
        return torch.zeros(full, dtype=self._dtype, device=self._device)

    def _range_ok(self, x: torch.Tensor) -> bool:
        if x.numel() == 0:
            return True
        lo, hi = torch.aminmax(x)
        return bool(lo.item() >= 0 and hi.item() < self._n)

    def _values_ok(self, x: torch.Tensor) -> bool:
        if not self._range_ok(x):
            return False
        return self._mask is None or x.numel() == 0 or not bool(self._forbidden(x).any())

    def _values_problem(self, x: torch.Tensor) -> str:
        if self._range_ok(x):
            return self._mask_problem(x)
        return f"expected integers in [0, {self._n}), {value_range(x)}"

    def _project_values(self, x: torch.Tensor) -> torch.Tensor:
        if self._mask is None:
            return round_into(x, self._n - 1).to(self._dtype)
        # The nearest allowed category (ties: the lower one).
        x = torch.nan_to_num(x.to(torch.float64), nan=0.0)
        categories = torch.arange(self._n, device=x.device, dtype=torch.float64)
        distance = (x.unsqueeze(-1) - categories).abs()
        leading = x.shape[: x.ndim - self.ndim]
        distance = distance.masked_fill(~self._mask_for(leading), float("inf"))
        return distance.argmin(-1).to(self._dtype)

    def _params(self) -> list[tuple[str, str]]:
        return [("n", str(self._n))]

    def to_one_hot(self, x: torch.Tensor) -> torch.Tensor:
        """Encode category indices as one-hot rows.

        Args:
            x: Valid integer values of this spec, shape ``[*batch, *self.shape]``.

        Returns:
            A bool tensor of shape ``[*x.shape, n]``.

        Raises:
            SpecError: If ``x`` is not a valid value (any integer dtype is accepted).
        """
        self._check_convertible(x, "to_one_hot", integer=True)
        out = torch.zeros(*x.shape, self._n, dtype=torch.bool, device=x.device)
        return out.scatter_(-1, x.to(torch.int64).unsqueeze(-1), True)

    def to_one_hot_spec(self) -> OneHot:
        """Return the :class:`OneHot` spec of ``to_one_hot``'s output (with the same mask)."""
        shape = (*self._shape, self._n)
        return OneHot(self._n, shape=shape, device=self._device, mask=self._mask)


class OneHot(MaskableSpec):
    """One-hot rows of length ``n``: exactly one 1 (True) along the last dim.

    Args:
        n: Number of categories (the size of the last dim).
        shape: The value shape (default: ``(n,)``); its last dim must be ``n``.
        dtype: A bool, integer or floating dtype.
        device: The device of created values.
        mask: The categories allowed now (see :class:`MaskableSpec`): a bool tensor of
            ``shape``, or ``None`` (all).

    Raises:
        SpecError: If ``n <= 0``, ``shape[-1] != n``, ``dtype`` is complex, or the mask is
            not valid (see :meth:`~MaskableSpec.update_mask`).

    Example:
        >>> spec = OneHot(3)
        >>> spec.to_categorical(torch.tensor([False, True, False]))
        tensor(1)
    """

    _eq_attrs = ("_n",)

    def __init__(
        self,
        n: int,
        shape: ShapeLike | None = None,
        dtype: torch.dtype = torch.bool,
        device: DeviceLike = None,
        mask: torch.Tensor | None = None,
    ) -> None:
        n = check_count(n, "OneHot")
        full = as_size((n,) if shape is None else shape)
        check_last_dim(full, n, "OneHot", "n")
        super().__init__(full, check_dtype(dtype, "OneHot", "fib"), as_device(device))
        self._n = n
        self.update_mask(mask)

    @property
    def mask_shape(self) -> torch.Size:
        return self._shape

    @property
    def n(self) -> int:
        """Number of categories."""
        return self._n

    def rand(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        if self._mask is not None:
            return self._encode(self._draw_allowed(full[:-1]))
        idx = torch.randint(0, self._n, full[:-1], device=self._device)
        return self._encode(idx)

    def zero(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        if self._mask is not None:  # the first allowed category
            leading = full[: len(full) - self.ndim]
            return self._encode(self._mask_for(leading).to(torch.int8).argmax(-1))
        out = torch.zeros(full, dtype=self._dtype, device=self._device)
        out[..., 0] = 1
        return out

    def _encode(self, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*idx.shape, self._n, dtype=self._dtype, device=idx.device)
        return out.scatter_(-1, idx.unsqueeze(-1), 1)

    def _range_ok(self, x: torch.Tensor) -> bool:
        return bool(one_hot_rows_ok(x).all())

    def _values_ok(self, x: torch.Tensor) -> bool:
        if not self._range_ok(x):
            return False
        return self._mask is None or not bool(self._forbidden(argmax_last(x)).any())

    def _values_problem(self, x: torch.Tensor) -> str:
        bad = ~one_hot_rows_ok(x)
        if not bool(bad.any()):
            return self._mask_problem(argmax_last(x))
        idx = first_bad_index(bad)
        row = x[idx].to(torch.float64 if x.dtype.is_floating_point else torch.int64).tolist()
        shown = row if len(row) <= 16 else [*row[:16], "..."]
        return (
            f"expected one-hot rows of length {self._n} (exactly one 1, the rest 0), got "
            f"{int(bad.sum())} invalid row(s), the first at index {list(idx)}: {shown} "
            f"(fix: spec.project(x) takes the argmax)"
        )

    def _project_values(self, x: torch.Tensor) -> torch.Tensor:
        if self._mask is None:
            return self._encode(argmax_last(x))
        # The largest entry among the allowed categories.
        leading = x.shape[: x.ndim - self.ndim]
        low = torch.finfo(torch.float64).min  # below it only the forbidden ones
        scores = torch.nan_to_num(x.to(torch.float64), nan=low, neginf=low)
        return self._encode(scores.masked_fill(~self._mask_for(leading), float("-inf")).argmax(-1))

    def _params(self) -> list[tuple[str, str]]:
        return [("n", str(self._n))]

    def to_categorical(self, x: torch.Tensor) -> torch.Tensor:
        """Decode one-hot rows into category indices.

        Args:
            x: Valid one-hot values of this spec (any bool/integer/float dtype).

        Returns:
            An int64 tensor of shape ``x.shape[:-1]``.

        Raises:
            SpecError: If ``x`` is not made of valid one-hot rows.
        """
        self._check_convertible(x, "to_categorical", integer=False)
        return argmax_last(x)

    def to_categorical_spec(self) -> Categorical:
        """Return the :class:`Categorical` spec of ``to_categorical``'s output (same mask)."""
        shape = self._shape[:-1]
        return Categorical(self._n, shape=shape, device=self._device, mask=self._mask)


class Binary(DiscreteSpec):
    """Values in ``{0, 1}`` (``False``/``True`` for bool), e.g. done flags or a bit mask.

    Args:
        n: Size of the last dim; the shape defaults to ``(n,)``.
        shape: The value shape; its last dim must equal ``n`` when both are given.
        dtype: A bool, integer or floating dtype.
        device: The device of created values.

    Raises:
        SpecError: If neither ``n`` nor a non-empty ``shape`` is given, or they disagree.

    Example:
        >>> spec = Binary(shape=(1,))
        >>> spec.zero()
        tensor([False])
    """

    def __init__(
        self,
        n: int | None = None,
        shape: ShapeLike | None = None,
        dtype: torch.dtype = torch.bool,
        device: DeviceLike = None,
    ) -> None:
        if n is None and shape is None:
            raise SpecError("Binary: give n or shape, e.g. Binary(shape=(1,)) for a flag")
        if n is not None:
            n = check_count(n, "Binary")
        full = as_size((n,) if shape is None else shape)
        if len(full) == 0:
            raise SpecError("Binary: shape must have at least one dim, e.g. (1,) for a flag")
        if n is not None:
            check_last_dim(full, n, "Binary", "n")
        super().__init__(full, check_dtype(dtype, "Binary", "fib"), as_device(device))

    @property
    def n(self) -> int:
        """Size of the last dim."""
        return self._shape[-1]

    def rand(self, shape: ShapeLike = ()) -> torch.Tensor:
        full = self._full_shape(shape)
        bits = torch.randint(0, 2, full, dtype=torch.uint8, device=self._device)
        return bits.to(self._dtype)

    def zero(self, shape: ShapeLike = ()) -> torch.Tensor:
        return torch.zeros(self._full_shape(shape), dtype=self._dtype, device=self._device)

    def _values_ok(self, x: torch.Tensor) -> bool:
        if x.dtype == torch.bool:
            return True
        return bool(((x == 0) | (x == 1)).all())

    def _values_problem(self, x: torch.Tensor) -> str:
        idx = first_bad_index(~((x == 0) | (x == 1)))
        return (
            f"expected values in {{0, 1}}, {value_range(x)}; first violation "
            f"x[{', '.join(map(str, idx))}] = {fmt_number(x[idx].item())} "
            f"(fix: spec.project(x) rounds to 0/1)"
        )

    def _project_values(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype.is_complex:
            x = x.real
        # 1 is the closer of {0, 1} exactly when x >= 0.5 (NaN maps to 0).
        return (x >= 0.5).to(self._dtype)

    def _params(self) -> list[tuple[str, str]]:
        return [("n", str(self.n))]
