"""Gymnasium spaces <-> rlblocks specs, and gym values <-> numpy buffers / tensors.

A space is flattened into *leaves*: one per Box, Discrete, MultiDiscrete or MultiBinary
inside (nested) Dict and Tuple spaces. Each leaf knows its TensorDict key, where its value
sits in the gym structure, its spec (with the env's batch dims) and its numpy dtype, so
converting a gym value costs one assignment per leaf.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensordict.utils import NestedKey

from rlblocks.core.specs import (
    Binary,
    Bounded,
    Categorical,
    Composite,
    MultiCategorical,
    OneHot,
    TensorSpec,
    Unbounded,
)
from rlblocks.envs.errors import UnsupportedEnvOperationError

__all__ = ["Leaf", "SpaceLayout", "numpy_dtype", "torch_dtype", "spec_to_space"]


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy dtype."""
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


@functools.cache
def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype of a torch dtype (cached: per-step info entries ask for it)."""
    return torch.empty(0, dtype=dtype).numpy().dtype


def _key(parts: tuple[str, ...]) -> NestedKey:
    return parts[0] if len(parts) == 1 else parts


class Leaf:
    """One array-valued part of a gym space."""

    __slots__ = ("key", "np_dtype", "path", "shape", "spec", "start")

    def __init__(
        self,
        key: NestedKey,
        path: tuple[Any, ...],
        spec: TensorSpec,
        shape: tuple[int, ...],
        start: np.ndarray | int | None,
    ) -> None:
        self.key = key
        self.path = path
        self.spec = spec
        self.shape = shape  # per-env shape, without batch dims
        self.np_dtype = numpy_dtype(spec.dtype)
        self.start = start  # Discrete/MultiDiscrete ``start`` (gym value = index + start)

    def extract(self, value: Any) -> Any:
        """This leaf's part of a gym value (structure -> array or scalar)."""
        for part in self.path:
            value = value[part]
        return value if self.start is None else np.asarray(value) - self.start


def _leaf_spec(space: Any, batch: tuple[int, ...], device: torch.device, where: str) -> tuple:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        dtype = torch_dtype(space.dtype)
        shape = (*batch, *space.shape)
        low = torch.as_tensor(np.asarray(space.low, dtype=np.float64))
        high = torch.as_tensor(np.asarray(space.high, dtype=np.float64))
        if dtype.is_floating_point and bool(low.isinf().all() & high.isinf().all()):
            return Unbounded(shape=shape, dtype=dtype, device=device), tuple(space.shape), None
        return (
            Bounded(low, high, shape=shape, dtype=dtype, device=device),
            tuple(space.shape),
            None,
        )
    if isinstance(space, spaces.Discrete):
        start = int(space.start)
        spec = Categorical(int(space.n), shape=batch, dtype=torch.int64, device=device)
        return spec, (), (start or None)
    if isinstance(space, spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise UnsupportedEnvOperationError(
                f"{where}: MultiDiscrete spaces with a {space.nvec.ndim}-D nvec are not "
                f"supported; flatten it with a gymnasium wrapper"
            )
        start = np.asarray(space.start, dtype=np.int64)
        spec = MultiCategorical(
            space.nvec.tolist(), shape=(*batch, len(space.nvec)), dtype=torch.int64, device=device
        )
        return spec, (len(space.nvec),), (start if start.any() else None)
    if isinstance(space, spaces.MultiBinary):
        shape = tuple(np.atleast_1d(space.shape))
        spec = Binary(shape=(*batch, *shape), dtype=torch.int8, device=device)
        return spec, shape, None
    raise UnsupportedEnvOperationError(
        f"{where}: gymnasium space {space!r} has no rlblocks spec (supported: Box, Discrete, "
        f"MultiDiscrete, MultiBinary, and Dict/Tuple of those); wrap the env with a gymnasium "
        f"wrapper that turns it into one of those"
    )


class SpaceLayout:
    """The leaves of a gym space, with conversions between gym values and tensors.

    Args:
        space: The (single-env) gymnasium space.
        root: Key of a non-Dict space (``"observation"`` or ``"action"``).
        batch: Batch dims of the values (``()`` or ``(num_envs,)``).
        device: Device of the specs.
        dict_at_root: Put the keys of a Dict space at the TensorDict root (observations)
            instead of under ``root`` (actions).
    """

    def __init__(
        self,
        space: Any,
        root: str,
        batch: tuple[int, ...],
        device: torch.device,
        dict_at_root: bool,
    ) -> None:
        from gymnasium import spaces

        self.space = space
        self.batch = batch
        self.leaves: list[Leaf] = []

        def visit(sub: Any, key: tuple[str, ...], path: tuple[Any, ...]) -> None:
            if isinstance(sub, spaces.Dict):
                for name, child in sub.spaces.items():
                    visit(child, (*key, str(name)), (*path, name))
            elif isinstance(sub, spaces.Tuple):
                for i, child in enumerate(sub.spaces):
                    visit(child, (*key, str(i)), (*path, i))
            else:
                where = f"{root} space at key {_key(key or (root,))!r}"
                spec, shape, start = _leaf_spec(sub, batch, device, where)
                self.leaves.append(Leaf(_key(key or (root,)), path, spec, shape, start))

        top = () if isinstance(space, spaces.Dict) and dict_at_root else (root,)
        visit(space, top, ())
        # One plain array (Box/Discrete at the top): the common case, converted directly.
        self.simple = len(self.leaves) == 1 and not self.leaves[0].path
        # (key, numpy dtype) when a gym value converts with one copy (no ``start`` offset).
        self._direct: tuple[NestedKey, np.dtype] | None = None
        if self.simple and self.leaves[0].start is None:
            self._direct = (self.leaves[0].key, self.leaves[0].np_dtype)
        self.spec = Composite(
            {leaf.key: leaf.spec for leaf in self.leaves}, shape=batch, device=device
        )

    @property
    def keys(self) -> list[NestedKey]:
        """TensorDict keys of the leaves."""
        return [leaf.key for leaf in self.leaves]

    def empty(self, lead: tuple[int, ...]) -> dict[NestedKey, np.ndarray]:
        """Numpy buffers of shape ``[*lead, *batch, *leaf]`` for every leaf."""
        return {
            leaf.key: np.empty((*lead, *self.batch, *leaf.shape), dtype=leaf.np_dtype)
            for leaf in self.leaves
        }

    def write(self, value: Any, buffers: dict[NestedKey, np.ndarray], index: Any) -> None:
        """Write a gym value into ``buffers[key][index]`` for every leaf."""
        for leaf in self.leaves:
            buffers[leaf.key][index] = leaf.extract(value)

    def to_tensors(self, value: Any) -> dict[NestedKey, torch.Tensor]:
        """Fresh CPU tensors (``{key: tensor}``) holding a gym value."""
        if self._direct is not None:
            key, dtype = self._direct
            return {key: torch.from_numpy(np.array(value, dtype=dtype))}
        out = {}
        for leaf in self.leaves:
            array = np.array(leaf.extract(value), dtype=leaf.np_dtype)  # always a copy
            out[leaf.key] = torch.from_numpy(array)
        return out

    def to_gym(self, arrays: dict[NestedKey, np.ndarray] | Sequence[np.ndarray]) -> Any:
        """Build the gym value (nested dicts/tuples) from per-leaf numpy arrays."""
        values = arrays if isinstance(arrays, (list, tuple)) else [arrays[k] for k in self.keys]
        if self.simple:
            leaf = self.leaves[0]
            value = values[0]
            return value if leaf.start is None else value + leaf.start
        return self._assemble(self.space, (), dict(zip((lf.path for lf in self.leaves), values)))

    def _assemble(self, space: Any, path: tuple[Any, ...], values: dict) -> Any:
        from gymnasium import spaces

        if isinstance(space, spaces.Dict):
            return {k: self._assemble(s, (*path, k), values) for k, s in space.spaces.items()}
        if isinstance(space, spaces.Tuple):
            return tuple(self._assemble(s, (*path, i), values) for i, s in enumerate(space.spaces))
        leaf = next(lf for lf in self.leaves if lf.path == path)
        value = values[path]
        return value if leaf.start is None else value + leaf.start


def spec_to_space(spec: TensorSpec, where: str) -> Any:
    """The gymnasium space of an (unbatched) rlblocks leaf spec or Composite."""
    from gymnasium import spaces

    if isinstance(spec, Composite):
        return spaces.Dict({str(k): spec_to_space(v, f"{where}[{k!r}]") for k, v in spec.items()})
    dtype = numpy_dtype(spec.dtype)
    shape = tuple(spec.shape)
    if isinstance(spec, Bounded):
        return spaces.Box(
            spec.low.cpu().numpy().astype(dtype),
            spec.high.cpu().numpy().astype(dtype),
            shape,
            dtype,
        )
    if isinstance(spec, Unbounded):
        if not spec.dtype.is_floating_point:
            info = np.iinfo(dtype)
            return spaces.Box(info.min, info.max, shape, dtype)
        return spaces.Box(-np.inf, np.inf, shape, dtype)
    if isinstance(spec, Categorical):
        if shape:
            return spaces.MultiDiscrete(np.full(shape, spec.n, dtype=np.int64))
        return spaces.Discrete(spec.n)
    if isinstance(spec, OneHot) and len(shape) == 1:
        return spaces.Discrete(spec.n)
    if isinstance(spec, MultiCategorical) and len(shape) == 1:
        return spaces.MultiDiscrete(spec.nvec.cpu().numpy())
    if isinstance(spec, Binary):
        return spaces.MultiBinary(list(shape) if len(shape) > 1 else shape[0])
    raise UnsupportedEnvOperationError(
        f"{where}: {type(spec).__name__} of shape {list(shape)} has no gymnasium space; "
        f"add a transform that turns it into a Bounded, Unbounded, Categorical, "
        f"MultiCategorical or Binary spec"
    )
