"""dm_env specs to rlblocks specs, and dm_env values to tensors.

=====================================  ===============================================
dm_env                                 rlblocks
=====================================  ===============================================
``Mapping`` of specs (nested too)      :class:`~rlblocks.core.specs.Composite`
``DiscreteArray(num_values)``          :class:`~rlblocks.core.specs.Categorical`
``BoundedArray(minimum, maximum)``     :class:`~rlblocks.core.specs.Bounded`
``Array``                              :class:`~rlblocks.core.specs.Unbounded`
=====================================  ===============================================

Dtypes are kept (dm_control's physics observations are float64). A scalar entry (shape
``()``, e.g. walker's ``height``) becomes shape ``[1]``, like rewards and done flags, so that
observations can be concatenated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from rlblocks.core.specs import Bounded, Categorical, Composite, TensorSpec, Unbounded
from rlblocks.dmcontrol.errors import DMControlError

__all__ = ["convert_spec", "value_shape", "to_tensors", "to_numpy"]


def value_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The rlblocks shape of a dm_env value of ``shape``: scalars become ``[1]``."""
    return tuple(shape) if len(shape) else (1,)


def _torch_dtype(dtype: np.dtype, where: str) -> torch.dtype:
    try:
        return torch.from_numpy(np.zeros((), dtype=dtype)).dtype
    except TypeError as err:
        raise DMControlError(
            f"{where} has numpy dtype {dtype}, which torch cannot hold; only numeric and bool "
            f"dm_env arrays can be converted"
        ) from err


def convert_spec(spec: Any, where: str, device: torch.device) -> TensorSpec:
    """Convert a dm_env spec (or a nested mapping of them) for an unbatched env.

    Args:
        spec: A ``dm_env.specs.Array`` (or subclass), or a mapping of them.
        where: What the spec describes, for error messages (``"observation 'position'"``).
        device: Device of the resulting spec.

    Returns:
        A leaf spec, or a :class:`Composite` for a mapping.

    Raises:
        DMControlError: The spec is of a kind rlblocks has no counterpart for (a tuple or
            list of specs, a string array).
    """
    from dm_env import specs

    if isinstance(spec, Mapping):
        return Composite(
            {k: convert_spec(v, f"{where} {k!r}", device) for k, v in spec.items()},
            shape=(),
            device=device,
        )
    if not isinstance(spec, specs.Array):
        raise DMControlError(
            f"{where}: cannot convert dm_env spec {spec!r} ({type(spec).__name__}); expected a "
            f"dm_env.specs.Array (or BoundedArray/DiscreteArray) or a dict of them"
        )
    dtype = _torch_dtype(spec.dtype, where)
    shape = value_shape(spec.shape)
    if isinstance(spec, specs.DiscreteArray):
        # DiscreteArray is a scalar index: keep it scalar, as Categorical indices are.
        return Categorical(spec.num_values, shape=spec.shape, dtype=dtype, device=device)
    if isinstance(spec, specs.BoundedArray):
        low = torch.from_numpy(np.broadcast_to(spec.minimum, spec.shape).reshape(shape).copy())
        high = torch.from_numpy(np.broadcast_to(spec.maximum, spec.shape).reshape(shape).copy())
        return Bounded(low, high, shape=shape, dtype=dtype, device=device)
    return Unbounded(shape=shape, dtype=dtype, device=device)


def to_tensors(values: Any, spec: TensorSpec) -> Any:
    """dm_env values (nested dicts of arrays) to CPU tensors shaped and typed like ``spec``.

    Returns nested ``dict`` s of tensors for a Composite (what ``TensorDict`` takes, and moves
    to the env's device).
    """
    if isinstance(spec, Composite):
        return {key: to_tensors(values[key], spec[key]) for key in spec.keys()}
    # A copy: dm_control may hand out views of buffers that the next physics step rewrites.
    tensor = torch.from_numpy(np.array(values, copy=True)).reshape(spec.shape)
    return tensor if tensor.dtype == spec.dtype else tensor.to(spec.dtype)


def to_numpy(value: Any, spec: Any) -> Any:
    """An rlblocks action (tensor or TensorDict) to what ``dm_env.Environment.step`` takes.

    Args:
        value: The action tensor, or a TensorDict for a dict action spec.
        spec: The dm_env action spec (for the dtype and the original shape).
    """
    if isinstance(spec, Mapping):
        return {key: to_numpy(value.get(key), sub) for key, sub in spec.items()}
    return value.detach().cpu().numpy().astype(spec.dtype, copy=False).reshape(spec.shape)


def arrays_to_action(arrays: Mapping[Any, np.ndarray], spec: Any, key: tuple = ()) -> Any:
    """What ``dm_env.Environment.step`` takes, from ``{action key: numpy array}``.

    Args:
        arrays: The action's leaves by rlblocks key (``"action"``, or ``("action", name)``
            for a dict action spec).
        spec: The dm_env action spec.
        key: The key of ``spec`` (the recursion's position; callers leave it out).
    """
    if isinstance(spec, Mapping):
        return {name: arrays_to_action(arrays, sub, (*key, name)) for name, sub in spec.items()}
    full = ("action", *key)
    value = arrays[full[0] if len(full) == 1 else full]
    return np.asarray(value).astype(spec.dtype, copy=False).reshape(spec.shape)


def write_values(
    values: Any, spec: TensorSpec, buffers: Mapping[Any, np.ndarray], index: Any, key: tuple = ()
) -> None:
    """Write dm_env values (nested dicts of arrays) into ``buffers[key][index]``.

    Args:
        values: The observation (nested dicts of arrays or scalars).
        spec: Its rlblocks spec (a Composite).
        buffers: Numpy buffers by rlblocks key.
        index: Where in each buffer (the row and time step).
        key: The key of ``spec`` (the recursion's position; callers leave it out).
    """
    if isinstance(spec, Composite):
        for name in spec.keys():
            write_values(values[name], spec[name], buffers, index, (*key, name))
        return
    buffer = buffers[key[0] if len(key) == 1 else key]
    target = buffer[index]
    target[...] = np.reshape(values, target.shape)
