"""What a tensor storage holds, and the checks that data matches it.

A :class:`Layout` lists the fields of one stored element: for a TensorDict one field per leaf
key, for any other pytree (a tensor, an array, a dict or tuple of them) one field per leaf.
It is taken from the first write and every later write is compared with it once per call:
a walk over the keys, never over the elements.

Fields are packed into rows of bytes (see :mod:`rlblocks.buffers._rows`), largest item size
first so that every field starts at a multiple of its item size.
"""

from __future__ import annotations

import base64
import math
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.utils._pytree as pytree
from tensordict import (
    NonTensorData,
    NonTensorStack,
    TensorDict,
    TensorDictBase,
    is_tensor_collection,
)

from rlblocks.buffers.errors import StorageLayoutError
from rlblocks.core.fast_td import sub_batch_dims

__all__ = ["Batch", "Field", "Layout", "infer_layout", "key_name", "numpy_dtype"]

TENSORDICT = "tensordict"
PYTREE = "pytree"
_NON_TENSOR = (NonTensorData, NonTensorStack)


def _is_leaf(cls: type) -> bool:
    """The leaves of a TensorDict as a storage sees them: tensors, and non-tensor data too
    (strings), which tensordict's default ``leaves_only`` walk passes over without a word;
    a storage must refuse them instead of dropping them."""
    return (
        cls is torch.Tensor or not issubclass(cls, TensorDictBase) or issubclass(cls, _NON_TENSOR)
    )


def numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    """The numpy dtype with the same bytes as ``dtype``, or None (bfloat16, float8, ...)."""
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        return None


def key_name(key: tuple[str, ...]) -> str:
    """How a field key is shown in messages: ``'observation'`` or ``('next', 'reward')``."""
    if key == ("",):
        return "(the data)"
    return repr(key[0]) if len(key) == 1 else repr(key)


def _dims(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


@dataclass(frozen=True)
class Field:
    """One leaf of a stored element, and where its bytes sit in a row."""

    key: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int
    nbytes: int
    from_numpy: bool = False  # pytree leaves given as numpy arrays come back as numpy arrays

    @property
    def name(self) -> str:
        return key_name(self.key)


@dataclass
class Batch:
    """Data checked against a layout: ``n`` elements, one array per field, in field order.

    Each leaf is a tensor or a numpy array whose first dimension has ``n`` entries.
    """

    n: int
    leaves: list[Any]
    layout: Layout

    def select(self, rows: np.ndarray | slice) -> Batch:
        """The elements ``rows`` of this batch."""
        if isinstance(rows, slice):
            leaves = [leaf[rows] for leaf in self.leaves]
        else:
            t_rows = torch.from_numpy(rows)
            leaves = [
                leaf[rows] if isinstance(leaf, np.ndarray) else leaf[t_rows.to(leaf.device)]
                for leaf in self.leaves
            ]
        return Batch(len(leaves[0]) if leaves else 0, leaves, self.layout)

    def column(self, key: tuple[str, ...]) -> torch.Tensor:
        """The values of one field for every element, as a tensor."""
        return torch.as_tensor(self.leaves[self.layout.position(key)])


@dataclass(frozen=True)
class Layout:
    """The fields of one element and how they pack into a row of ``row_bytes`` bytes."""

    kind: str  # TENSORDICT or PYTREE
    fields: tuple[Field, ...]
    row_bytes: int
    element_batch: tuple[int, ...] = ()  # batch dims of one TensorDict element
    treespec: Any = None  # pytree structure of one element (PYTREE only)
    # Sub-TensorDicts with batch dims of their own after the element's (a multi-agent
    # group's agent dim): key -> those dims.
    nested_batch: tuple[tuple[tuple[str, ...], tuple[int, ...]], ...] = ()
    _positions: dict[tuple[str, ...], int] = field(default_factory=dict, compare=False)

    _plan: _Plan = field(default_factory=lambda: _Plan({}, ()), compare=False)

    def __post_init__(self) -> None:
        self._positions.update({f.key: i for i, f in enumerate(self.fields)})
        # The nesting of the keys, for assemble(): name -> field position, or a sub-plan.
        extra = dict(self.nested_batch)
        for i, f in enumerate(self.fields):
            node = self._plan
            for depth, part in enumerate(f.key[:-1], start=1):
                child = node.entries.get(part)
                if child is None:
                    child = node.entries[part] = _Plan({}, extra.get(f.key[:depth], ()))
                node = child
            node.entries[f.key[-1]] = i

    def position(self, key: str | tuple[str, ...]) -> int:
        """Index in :attr:`fields` of the field ``key``.

        Raises:
            KeyError: No field has that key.
        """
        key = (key,) if isinstance(key, str) else tuple(key)
        if key not in self._positions:
            raise KeyError(
                f"the storage holds no key {key_name(key)}; its keys are "
                f"{', '.join(f.name for f in self.fields)}"
            )
        return self._positions[key]

    def describe(self) -> str:
        """One line per field: key, shape and dtype."""
        return "; ".join(f"{f.name}: {_dims(f.shape)} {f.dtype}" for f in self.fields)

    # -- checking data -----------------------------------------------------------------

    def prepare(self, data: Any, batched: bool, ignore: frozenset, who: str) -> Batch:
        """Check ``data`` against this layout and return it as a :class:`Batch`.

        Raises:
            StorageLayoutError: Keys, shapes or dtypes differ; the message names the first
                difference, what the storage holds and what was given.
        """
        if self.kind == TENSORDICT:
            return self._prepare_tensordict(data, batched, ignore, who)
        return self._prepare_pytree(data, batched, who)

    def _prepare_tensordict(self, data: Any, batched: bool, ignore: frozenset, who: str) -> Batch:
        if not is_tensor_collection(data):
            raise StorageLayoutError(
                f"{who}: the storage holds TensorDicts ({self.describe()}) but was given "
                f"{type(data).__name__}. Fix: pass a TensorDict with the same keys."
            )
        n, element_batch = _split_batch(data, batched, who)
        if element_batch != self.element_batch:
            raise StorageLayoutError(
                f"{who}: each element has batch size {_dims(element_batch)} but the storage "
                f"holds elements of batch size {_dims(self.element_batch)}. Fix: reshape the "
                f"data, or use another storage for it."
            )
        leaves: list[Any] = [None] * len(self.fields)
        skip = 1 if batched else 0
        positions = self._positions
        for key, value in data.items(include_nested=True, leaves_only=True, is_leaf=_is_leaf):
            key = (key,) if isinstance(key, str) else key
            if key[0] in ignore:
                continue
            if not isinstance(value, torch.Tensor):
                raise _not_a_tensor(who, key_name(key), value)
            pos = positions.get(key)
            if pos is None:
                raise StorageLayoutError(
                    f"{who}: key {key_name(key)} is not in the storage, which holds "
                    f"{self.describe()}. Nothing was written. Fix: drop that key "
                    f"(data.exclude({key!r})), or start a new storage for this layout."
                )
            f = self.fields[pos]
            if value.dtype != f.dtype or tuple(value.shape[skip:]) != f.shape:
                raise _mismatch(who, f, tuple(value.shape[skip:]), value.dtype)
            leaves[pos] = value if batched else value.unsqueeze(0)
        if any(leaf is None for leaf in leaves):
            missing = [f.name for f, leaf in zip(self.fields, leaves) if leaf is None]
            raise StorageLayoutError(
                f"{who}: key(s) {', '.join(missing)} are missing; the storage holds "
                f"{self.describe()}. Nothing was written. Fix: give every key of the layout."
            )
        return Batch(n, leaves, self)

    def _prepare_pytree(self, data: Any, batched: bool, who: str) -> Batch:
        if is_tensor_collection(data):
            raise StorageLayoutError(
                f"{who}: the storage holds {self._pytree_name()} but was given a "
                f"{type(data).__name__}. Fix: give data of the first write's structure."
            )
        values, spec = pytree.tree_flatten(data)
        if spec != self.treespec:
            raise StorageLayoutError(
                f"{who}: the data's structure {spec} differs from the storage's "
                f"{self.treespec}. Nothing was written. Fix: give data of the same structure "
                f"(same keys, same nesting) as the first write."
            )
        leaves = []
        n = None
        for f, value in zip(self.fields, values):
            value = _as_array(value, who, f.name, batched)
            shape = tuple(value.shape[1:] if batched else value.shape)
            dtype = value.dtype if isinstance(value, torch.Tensor) else _torch_dtype(value.dtype)
            if dtype != f.dtype or shape != f.shape:
                raise _mismatch(who, f, shape, dtype)
            if batched:
                if n is None:
                    n = len(value)
                elif len(value) != n:
                    raise StorageLayoutError(
                        f"{who}: leaf {f.name} has {len(value)} elements but an earlier leaf "
                        f"has {n}. Fix: every leaf of a batch needs the same first dimension."
                    )
                leaves.append(value)
            else:
                leaves.append(value[None])
        return Batch(n if batched else 1, leaves, self)

    def _pytree_name(self) -> str:
        if len(self.fields) == 1 and self.fields[0].key == ("",):
            return "tensors" if not self.fields[0].from_numpy else "numpy arrays"
        return "pytrees of tensors"

    # -- building results ----------------------------------------------------------------

    def assemble(
        self, leaves: list[Any], batch: int, device: torch.device | None, extras: dict
    ) -> Any:
        """Turn per-field results back into a TensorDict or the original pytree structure."""
        if self.kind == PYTREE:
            return pytree.tree_unflatten(leaves, self.treespec)
        batch_size = torch.Size((batch, *self.element_batch))
        root = _fill_plan(self._plan.entries, leaves, batch_size, device)
        for key, value in extras.items():
            if self.element_batch:
                value = value.reshape(batch, *(1,) * len(self.element_batch)).expand(batch_size)
            root[key] = value
        return _TD_NEW(root, batch_size, device)

    # -- persistence ---------------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, tuple[dict]]:
        # Pickled as its JSON description: unpickling a pytree LeafSpec warns in recent torch
        # (sharing a storage with spawned processes, copying a buffer).
        return (Layout.from_json, (self.to_json(),))

    def to_json(self) -> dict:
        """A JSON-serializable description (the pytree structure pickled if need be)."""
        spec = None
        if self.treespec is not None:
            try:
                spec = {"json": pytree.treespec_dumps(self.treespec)}
            except Exception:  # e.g. a namedtuple without a registered serialization
                spec = {"pickle": base64.b64encode(pickle.dumps(self.treespec)).decode()}
        return {
            "kind": self.kind,
            "row_bytes": self.row_bytes,
            "element_batch": list(self.element_batch),
            "nested_batch": [[list(k), list(d)] for k, d in self.nested_batch],
            "treespec": spec,
            "fields": [
                {
                    "key": list(f.key),
                    "shape": list(f.shape),
                    "dtype": str(f.dtype).removeprefix("torch."),
                    "offset": f.offset,
                    "nbytes": f.nbytes,
                    "from_numpy": f.from_numpy,
                }
                for f in self.fields
            ],
        }

    @classmethod
    def from_json(cls, spec: dict) -> Layout:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: The description is malformed or inconsistent.
        """
        try:
            fields = []
            for f in spec["fields"]:
                dtype = getattr(torch, f["dtype"])
                if not isinstance(dtype, torch.dtype):
                    raise ValueError(f"unknown dtype {f['dtype']!r}")
                fields.append(
                    Field(
                        tuple(str(k) for k in f["key"]),
                        tuple(int(s) for s in f["shape"]),
                        dtype,
                        int(f["offset"]),
                        int(f["nbytes"]),
                        bool(f.get("from_numpy", False)),
                    )
                )
            treespec = None
            if spec.get("treespec"):
                if "json" in spec["treespec"]:
                    treespec = pytree.treespec_loads(spec["treespec"]["json"])
                else:
                    treespec = pickle.loads(base64.b64decode(spec["treespec"]["pickle"]))
            layout = cls(
                spec["kind"],
                tuple(fields),
                int(spec["row_bytes"]),
                tuple(int(s) for s in spec["element_batch"]),
                treespec,
                tuple(
                    (tuple(str(k) for k in key), tuple(int(d) for d in dims))
                    for key, dims in spec.get("nested_batch", ())
                ),
            )
        except (KeyError, TypeError, AttributeError, pickle.UnpicklingError) as exc:
            raise ValueError(f"malformed storage layout: {type(exc).__name__}: {exc}") from exc
        for f in layout.fields:
            expected = math.prod(f.shape) * f.dtype.itemsize
            if f.nbytes != expected or f.offset < 0 or f.offset + f.nbytes > layout.row_bytes:
                raise ValueError(f"malformed storage layout: field {f.name} does not fit its row")
        if layout.kind not in (TENSORDICT, PYTREE):
            raise ValueError(f"malformed storage layout: unknown kind {layout.kind!r}")
        return layout


# _new_unsafe skips the checks that the layout already guarantees, and nested=False its walk
# over the values looking for dicts to convert (_fill_plan builds the sub-TensorDicts
# itself, which halves the cost of assembling a sampled batch). The plain constructor is the
# fallback should a tensordict release drop the fast one.
_TD_NEW = (
    partial(TensorDict._new_unsafe, nested=False)
    if hasattr(TensorDict, "_new_unsafe")
    else TensorDict
)


class _Plan(NamedTuple):
    """A sub-TensorDict to assemble: its entries (name -> field position or sub-plan) and
    the batch dims it has after its parent's."""

    entries: dict[str, Any]
    extra_batch: tuple[int, ...]


def _fill_plan(
    entries: dict[str, Any], leaves: list[Any], batch_size: torch.Size, device: torch.device | None
) -> dict[str, Any]:
    """A TensorDict's entries: names mapped to their leaves or sub-TensorDicts."""
    out = {}
    for name, pos in entries.items():
        if type(pos) is int:
            out[name] = leaves[pos]
        else:
            sub_batch = batch_size + pos.extra_batch if pos.extra_batch else batch_size
            out[name] = _TD_NEW(
                _fill_plan(pos.entries, leaves, sub_batch, device), sub_batch, device
            )
    return out


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def _split_batch(data: Any, batched: bool, who: str) -> tuple[int, tuple[int, ...]]:
    if not batched:
        return 1, tuple(data.batch_size)
    if data.batch_dims == 0:
        raise StorageLayoutError(
            f"{who}: extend needs a batch, but the TensorDict has batch size []. "
            f"Fix: use add() for one element, or give the TensorDict a batch dimension."
        )
    return int(data.batch_size[0]), tuple(data.batch_size[1:])


def _not_a_tensor(who: str, name: str, value: Any) -> StorageLayoutError:
    return StorageLayoutError(
        f"{who}: leaf {name} is a {type(value).__name__}, not a tensor; tensor storages hold "
        f"tensors and numpy arrays only. Nothing was written. Fix: drop it "
        f"(data.exclude({name})), or use ListStorage for arbitrary Python objects."
    )


def _mismatch(who: str, f: Field, shape: tuple[int, ...], dtype: Any) -> StorageLayoutError:
    return StorageLayoutError(
        f"{who}: key {f.name} does not match the storage: expected per-element shape "
        f"{_dims(f.shape)} and dtype {f.dtype}, given shape {_dims(shape)} and dtype {dtype}. "
        f"Nothing was written. Fix: reshape or cast the data to the storage's layout (taken "
        f"from the first write), or use a new storage for data of another layout."
    )


def _as_array(value: Any, who: str, name: str, batched: bool) -> torch.Tensor | np.ndarray:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if batched and value.ndim == 0:
            raise StorageLayoutError(
                f"{who}: leaf {name} is a scalar, but extend needs a batch (a first dimension "
                f"over elements). Fix: use add() for one element."
            )
        if isinstance(value, np.ndarray) and value.dtype.kind not in "biufc":
            raise _not_a_tensor(who, name, value)
        return value
    if isinstance(value, (bool, int, float, complex, np.generic)) and not batched:
        return torch.as_tensor(value)
    raise _not_a_tensor(who, name, value)


def infer_layout(data: Any, batched: bool, ignore: frozenset, who: str) -> Layout:
    """Derive the layout of one element from the first data written to a storage.

    Raises:
        StorageLayoutError: The data holds something other than tensors/arrays, or no leaf.
    """
    if is_tensor_collection(data):
        n, element_batch = _split_batch(data, batched, who)
        nested_batch = sub_batch_dims(data)
        entries = []
        for key, value in data.items(include_nested=True, leaves_only=True, is_leaf=_is_leaf):
            key = (key,) if isinstance(key, str) else tuple(key)
            if key[0] in ignore:
                continue
            if not isinstance(value, torch.Tensor) or is_tensor_collection(value):
                raise _not_a_tensor(who, key_name(key), value)
            shape = tuple(value.shape[1:] if batched else value.shape)
            entries.append((key, shape, value.dtype, False))
        kind, treespec = TENSORDICT, None
    else:
        flat, treespec = pytree.tree_flatten_with_path(data)
        entries = []
        n = None
        for path, value in flat:
            name = pytree.keystr(path)
            value = _as_array(value, who, key_name((name,)), batched)
            shape = tuple(value.shape[1:] if batched else value.shape)
            is_np = isinstance(value, np.ndarray)
            dtype = _torch_dtype(value.dtype) if is_np else value.dtype
            entries.append(((name,), shape, dtype, is_np))
            if batched and n is not None and len(value) != n:
                raise StorageLayoutError(
                    f"{who}: leaf {name!r} has {len(value)} elements but an earlier leaf has "
                    f"{n}. Fix: every leaf of a batch needs the same first dimension."
                )
            n = len(value) if batched else 1
        kind, element_batch, nested_batch = PYTREE, (), ()
    if not entries:
        raise StorageLayoutError(f"{who}: the data holds no tensor to store.")
    for key, shape, _, _ in entries:
        if math.prod(shape) == 0:
            raise StorageLayoutError(
                f"{who}: leaf {key_name(key)} has per-element shape {_dims(shape)}, with no "
                f"element; tensor storages need at least one value per leaf."
            )
    # Largest item size first: every offset is then a multiple of its field's item size.
    order = sorted(range(len(entries)), key=lambda i: -entries[i][2].itemsize)
    fields: list[Field | None] = [None] * len(entries)
    offset = 0
    for i in order:
        key, shape, dtype, is_np = entries[i]
        nbytes = math.prod(shape) * dtype.itemsize
        fields[i] = Field(key, shape, dtype, offset, nbytes, is_np)
        offset += nbytes
    align = max(e[2].itemsize for e in entries)
    row_bytes = -(-offset // align) * align
    return Layout(kind, tuple(fields), row_bytes, element_batch, treespec, nested_batch)
