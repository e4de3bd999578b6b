"""The :class:`TensorSpec` base class and the helpers every spec shares.

A spec describes the shape, dtype, device and valid values of one tensor (or, for
``Composite``, of a tree of tensors). The leaf machinery lives here so that each concrete spec
only states what makes its values valid, how to sample them and how to project onto them.

Specs are treated as immutable values: ``expand``/``to``/``clone`` return new specs, and
tensors a spec hands out (``rand``, ``zero``) never alias its internal buffers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import torch

from rlblocks.core.errors import SpecError
from rlblocks.core.utils import as_device as _as_device

__all__ = ["TensorSpec", "ShapeLike", "DeviceLike", "NestedKey"]

ShapeLike = int | Sequence[int] | torch.Size
DeviceLike = str | int | torch.device | None
NestedKey = str | tuple[str, ...]


def as_size(shape: Any, what: str = "shape") -> torch.Size:
    """Normalize an int, sequence of ints or ``torch.Size`` to a ``torch.Size``.

    Args:
        shape: The shape to normalize.
        what: How to call the argument in error messages.

    Returns:
        The shape as a ``torch.Size``.

    Raises:
        SpecError: If ``shape`` is not made of non-negative integers.
    """
    if isinstance(shape, torch.Size):
        return shape
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(int(d) for d in shape)
        ok = all(not isinstance(d, bool) and int(d) == d for d in shape)
    except (TypeError, ValueError):
        ok = False
    if not ok or any(d < 0 for d in dims):
        raise SpecError(f"{what} must be an int or a sequence of non-negative ints, got {shape!r}")
    return torch.Size(dims)


def as_device(device: DeviceLike) -> torch.device:
    """Normalize a device argument; ``None`` means torch's current default device.

    Accelerator devices without an index get the current index (``"cuda"`` -> ``cuda:0``) so
    that a spec's device compares equal to the device of the tensors it creates.

    Args:
        device: A device, a string such as ``"cuda:1"``, an accelerator index, or ``None``.

    Returns:
        The normalized ``torch.device``.

    Raises:
        SpecError: If ``device`` cannot be interpreted as a device.
    """
    try:
        return _as_device(device)
    except ValueError as err:
        raise SpecError(str(err)) from None


def parse_shape_args(args: tuple[Any, ...], method: str) -> tuple[Any, ...]:
    """Accept ``f(2, 3)`` as well as ``f((2, 3))``/``f(torch.Size([2, 3]))``."""
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
        raise SpecError(f"{method}() takes ints or one tuple/torch.Size, got {args!r}")
    return args


def resolve_expand_shape(spec_shape: torch.Size, args: tuple[Any, ...]) -> torch.Size:
    """Return the full shape an ``expand(*args)`` call asks for, checked like torch.expand.

    ``-1`` is allowed in the trailing positions, where it keeps the spec's own dim.

    Raises:
        SpecError: If the new shape does not end with ``spec_shape``.
    """
    dims = list(parse_shape_args(args, "expand"))
    offset = len(dims) - len(spec_shape)
    if offset >= 0:
        for i, old in enumerate(spec_shape):
            if dims[offset + i] == -1:
                dims[offset + i] = old
    new_shape = as_size(dims, "expand shape")
    if offset < 0 or new_shape[offset:] != spec_shape:
        raise SpecError(
            f"cannot expand a spec of shape {list(spec_shape)} to {list(dims)}: the new shape "
            f"must end with the spec's shape (leading batch dims only), "
            f"e.g. expand(4, {', '.join(str(d) for d in spec_shape)})"
        )
    return new_shape


def fmt_number(value: float | int | bool) -> str:
    """Format a Python number compactly for reprs and error messages (``-2.0``, ``0.1``)."""
    if isinstance(value, int):  # bool included
        return str(value)
    text = f"{value:.6g}"
    if text.lstrip("-").isdigit():
        text += ".0"
    return text


def fmt_tensor(values: torch.Tensor) -> str:
    """Short repr of a parameter tensor: a scalar if uniform, else values or a summary."""
    if values.numel() == 0:
        return "tensor([])"
    flat = values.reshape(-1)
    if bool((flat == flat[0]).all()):
        return fmt_number(flat[0].item())
    if values.numel() <= 8:
        return f"tensor({values.tolist()})"
    return (
        f"tensor(shape={list(values.shape)}, min={fmt_number(values.min().item())}, "
        f"max={fmt_number(values.max().item())})"
    )


def fmt_key(key: NestedKey | None) -> str:
    """Return ``"value for key 'a'"`` (or ``"value"`` when there is no key)."""
    if key is None:
        return "value"
    if isinstance(key, tuple) and len(key) == 1:
        key = key[0]
    return f"value for key {key!r}"


def first_bad_index(bad: torch.Tensor) -> tuple[int, ...]:
    """Index of the first True entry of a boolean mask (used in error messages only)."""
    return tuple(int(i) for i in bad.nonzero()[0].tolist())


def value_range(x: torch.Tensor) -> str:
    """``"got min m max M"`` for an error message (empty-safe)."""
    if x.numel() == 0:
        return "got an empty tensor"
    lo, hi = torch.aminmax(x if x.dtype != torch.bool else x.to(torch.uint8))
    return f"got min {fmt_number(lo.item())} max {fmt_number(hi.item())}"


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """True for integer dtypes (bool excluded)."""
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def check_dtype(dtype: Any, cls_name: str, allowed: str) -> torch.dtype:
    """Check that ``dtype`` is a ``torch.dtype`` of an allowed kind.

    Args:
        dtype: The dtype argument given to the spec's constructor.
        cls_name: The spec class name, for the error message.
        allowed: Which kinds are allowed: any combination of the letters ``f`` (floating),
            ``i`` (integer), ``b`` (bool) and ``c`` (complex).

    Returns:
        ``dtype`` unchanged.

    Raises:
        SpecError: If ``dtype`` is not a torch dtype of an allowed kind.
    """
    if not isinstance(dtype, torch.dtype):
        raise SpecError(f"{cls_name}: dtype must be a torch.dtype, got {dtype!r}")
    kind = (
        "f"
        if dtype.is_floating_point
        else "c"
        if dtype.is_complex
        else "b"
        if dtype == torch.bool
        else "i"
    )
    if kind not in allowed:
        names = {"f": "floating", "i": "integer", "b": "bool", "c": "complex"}
        wanted = " or ".join(names[k] for k in allowed)
        article = "an" if wanted[0] in "aeiou" else "a"
        raise SpecError(f"{cls_name}: dtype must be {article} {wanted} dtype, got {dtype}")
    return dtype


class TensorSpec:
    """Base class of all specs: the shape, dtype, device and valid values of a tensor.

    Concrete leaf specs implement ``rand``, ``zero``, ``_values_ok``, ``_values_problem``
    and ``_project_values``; shape/dtype checks, error messages, ``expand``, ``to``,
    ``clone``, ``==`` and ``repr`` are shared. Tensor-valued parameters named in
    ``_shaped_tensors`` have the spec's full shape and are expanded with it; those in
    ``_device_tensors`` only follow the device.

    Example:
        >>> spec = Bounded(low=-1.0, high=1.0, shape=(2,))
        >>> spec.is_in(spec.rand(5))
        True
    """

    _shaped_tensors: ClassVar[tuple[str, ...]] = ()
    _device_tensors: ClassVar[tuple[str, ...]] = ()
    # Parameters (beyond shape, dtype, device) compared by ``==``.
    _eq_tensors: ClassVar[tuple[str, ...]] = ()
    _eq_attrs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, shape: torch.Size, dtype: torch.dtype | None, device: torch.device):
        self._shape = shape
        self._dtype = dtype
        self._device = device

    # ------------------------------------------------------------------ attributes
    @property
    def shape(self) -> torch.Size:
        """The shape of a value (without batch dims)."""
        return self._shape

    @property
    def dtype(self) -> torch.dtype | None:
        """The dtype of a value (``None`` for ``Composite``)."""
        return self._dtype

    @property
    def device(self) -> torch.device:
        """The device values are created on."""
        return self._device

    @property
    def ndim(self) -> int:
        """The number of dims of ``shape``."""
        return len(self._shape)

    # ------------------------------------------------------------------ values
    def rand(self, shape: ShapeLike = ()) -> torch.Tensor:
        """Sample a uniformly random valid value of shape ``[*shape, *self.shape]``.

        Args:
            shape: Leading batch dims.

        Returns:
            A tensor on ``self.device`` with ``self.dtype``.
        """
        raise NotImplementedError

    def zero(self, shape: ShapeLike = ()) -> torch.Tensor:
        """Return a fixed valid value (zeros where valid) of shape ``[*shape, *self.shape]``.

        Args:
            shape: Leading batch dims.

        Returns:
            A tensor on ``self.device`` with ``self.dtype``.
        """
        raise NotImplementedError

    def is_in(self, x: Any) -> bool:
        """Whether ``x`` is a valid value: a tensor of the right dtype, shape and range.

        Leading batch dims are allowed: ``x.shape`` must end with ``self.shape``.

        Args:
            x: The value to check.

        Returns:
            ``True`` if ``x`` is valid, ``False`` otherwise (never raises).
        """
        return (
            isinstance(x, torch.Tensor)
            and x.dtype == self._dtype
            and self._shape_ok(x.shape)
            and self._values_ok(x)
        )

    def assert_is_in(self, x: Any, key: NestedKey | None = None) -> None:
        """Raise a :class:`SpecError` explaining why ``x`` is not a valid value.

        Args:
            x: The value to check.
            key: The TensorDict key ``x`` was read from, named in the message.

        Raises:
            SpecError: If ``x`` is not valid; the message names the key, this spec, what was
                expected and what was given.
        """
        if self.is_in(x):
            return
        raise SpecError(f"{fmt_key(key)} is not in {self._short_repr()}: {self._problem(x)}")

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Return the valid value closest to ``x`` (``x`` itself if it is already valid).

        The result has this spec's dtype and stays on ``x``'s device.

        Args:
            x: A tensor whose shape ends with ``self.shape``.

        Returns:
            A valid value.

        Raises:
            SpecError: If ``x`` is not a tensor or its shape does not end with ``self.shape``.
        """
        if not isinstance(x, torch.Tensor) or not self._shape_ok(x.shape):
            raise SpecError(f"cannot project onto {self._short_repr()}: {self._problem(x)}")
        if self.is_in(x):
            return x
        return self._project_values(x)

    # ------------------------------------------------------------------ new specs
    def expand(self, *shape: int | ShapeLike) -> Self:
        """Return a spec for values of shape ``[*batch, *self.shape]``.

        Args:
            *shape: The new full shape, as ints or one tuple/``torch.Size``; it must end with
                ``self.shape`` (``-1`` keeps a trailing dim), like ``torch.Tensor.expand``.

        Returns:
            A new spec of the same class with the expanded shape.

        Raises:
            SpecError: If the new shape does not end with ``self.shape``.
        """
        new_shape = resolve_expand_shape(self._shape, shape)
        new = copy.copy(self)
        new._shape = new_shape
        for name in self._shaped_tensors:
            setattr(new, name, getattr(self, name).expand(new_shape))
        return new

    def to(self, device: DeviceLike) -> Self:
        """Return this spec on ``device`` (``self`` if it is already there, like tensors).

        Args:
            device: The target device.

        Returns:
            A spec whose ``rand``/``zero`` create tensors on ``device``.
        """
        device = as_device(device)
        if device == self._device:
            return self
        new = copy.copy(self)
        new._device = device
        for name in self._shaped_tensors + self._device_tensors:
            setattr(new, name, getattr(self, name).to(device))
        return new

    def clone(self) -> Self:
        """Return an independent copy of this spec (equal to it)."""
        new = copy.copy(self)
        for name in self._shaped_tensors + self._device_tensors:
            setattr(new, name, getattr(self, name).clone())
        return new

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, TensorSpec)
        return (
            self._shape == other._shape
            and self._dtype == other._dtype
            and self._device == other._device
            and all(getattr(self, a) == getattr(other, a) for a in self._eq_attrs)
            and all(torch.equal(getattr(self, t), getattr(other, t)) for t in self._eq_tensors)
        )

    __hash__ = None  # type: ignore[assignment]  # specs are compared by value

    def __repr__(self) -> str:
        params = "".join(f", {name}={value}" for name, value in self._params())
        return (
            f"{type(self).__name__}(shape={self._shape}{params}, dtype={self._dtype}, "
            f"device={self._device})"
        )

    # ------------------------------------------------------------------ subclass hooks
    def _params(self) -> list[tuple[str, str]]:
        """(name, formatted value) pairs shown in ``repr`` between shape and dtype."""
        return []

    def _values_ok(self, x: torch.Tensor) -> bool:
        """Whether the values of ``x`` (right dtype and shape already) are valid."""
        return True

    def _values_problem(self, x: torch.Tensor) -> str:
        """Describe what is wrong with the values of ``x`` (only called when invalid)."""
        return "values are invalid"

    def _project_values(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``x`` (right shape, any dtype) onto the valid values."""
        return x.to(self._dtype)

    # ------------------------------------------------------------------ helpers
    def _full_shape(self, shape: ShapeLike) -> torch.Size:
        if shape == ():  # the per-step case; skips the validation of as_size
            return self._shape
        return as_size(shape, "batch shape") + self._shape

    def _shape_ok(self, shape: torch.Size) -> bool:
        n = len(self._shape)
        return len(shape) >= n and shape[len(shape) - n :] == self._shape

    def _short_repr(self) -> str:
        params = "".join(f", {name}={value}" for name, value in self._params())
        return f"{type(self).__name__}(shape={list(self._shape)}{params}, dtype={self._dtype})"

    def _problem(self, x: Any) -> str:
        if not isinstance(x, torch.Tensor):
            return f"expected a torch.Tensor, got {type(x).__name__}"
        if not self._shape_ok(x.shape):
            trailing = ", ".join(str(d) for d in self._shape)
            spec_shape = f"[*batch, {trailing}]" if trailing else "[*batch]"
            return f"expected shape {spec_shape}, got shape {list(x.shape)}"
        if x.dtype != self._dtype:
            return f"expected dtype {self._dtype}, got dtype {x.dtype} (fix: x.to({self._dtype}))"
        return self._values_problem(x)
