"""TensorDict access for per-step hot paths, with the public API as the fallback.

``TensorDict.get``/``set`` parse and validate nested keys on every call, which costs a
microsecond or so; a step of a fast env (~10 us) cannot afford a dozen of them. For plain
``TensorDict`` instances and top-level string keys, these helpers read and build tensordict's
internal layout (four fields, the entries in a ``_tensordict`` dict: stable across the 0.15
series rlblocks pins, and checked at import, see :data:`PLAIN_LAYOUT`); anything else goes
through the public API. Values set this way must already have the right batch dims.

Used by ``step_mdp`` and by the env step paths of rlblocks-envs; env backends in plugins
may use them too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

__all__ = [
    "PLAIN_LAYOUT",
    "fast_get",
    "fast_set",
    "top_items",
    "new_tensordict",
    "flat_entries",
    "has_key",
    "shallow_copy",
    "detached",
    "sub_batch_dims",
    "set_sub_batch_dims",
]

_FIELDS = {"_tensordict", "_batch_size", "_device", "_td_dim_names"}


def _plain_layout() -> bool:
    """Whether a plain TensorDict is just :data:`_FIELDS`, its entries in a ``dict``.

    False as well when tensordict's invariant checks are on (``TD_CHECK_INVARIANTS``), so
    that they run.
    """
    if not hasattr(TensorDict, "_set_str") or TensorDict.__new__ is not object.__new__:
        return False
    if os.environ.get("TD_CHECK_INVARIANTS", "0") not in ("", "0"):
        return False
    probe = TensorDict({}, batch_size=[])
    return set(vars(probe)) == _FIELDS and type(probe._tensordict) is dict


PLAIN_LAYOUT: bool = _plain_layout()
"""Whether plain TensorDicts are read and built through their internal layout here."""


def fast_get(tensordict: TensorDictBase, key: Any, default: Any = None) -> Any:
    """``tensordict.get(key, default)``; a nested key (a tuple of strings) is read through
    the entries' own dicts while they are plain TensorDicts."""
    if PLAIN_LAYOUT and type(tensordict) is TensorDict and type(key) is str:
        return tensordict._tensordict.get(key, default)
    value = _walk(tensordict, key)
    if value is _ASK:
        return tensordict.get(key, default)
    return default if value is None else value


_ASK = object()  # _walk's answer where only the public API can tell


def _walk(tensordict: TensorDictBase, key: Any) -> Any:
    """The entry at ``key`` (a string or a non-empty tuple of strings) read through the
    dicts of plain TensorDicts: ``None`` when absent, ``_ASK`` when the path leaves plain
    TensorDicts (or while dynamo traces)."""
    if not PLAIN_LAYOUT or torch.compiler.is_compiling():
        return _ASK
    path = (key,) if type(key) is str else key
    if type(path) is not tuple or not path:
        return _ASK
    node: Any = tensordict
    for part in path:
        if type(node) is not TensorDict or type(part) is not str:
            return _ASK
        node = node._tensordict.get(part)
        if node is None:
            return None
    return node


def fast_set(tensordict: TensorDictBase, key: Any, value: Any) -> None:
    """``tensordict.set(key, value)`` for a value with the TensorDict's batch dims."""
    if PLAIN_LAYOUT and type(tensordict) is TensorDict and type(key) is str:
        tensordict._set_str(key, value, validated=True, inplace=False)
    else:
        tensordict.set(key, value)


def top_items(tensordict: TensorDictBase) -> Iterable[tuple[str, Any]]:
    """The top-level ``(key, value)`` pairs."""
    if PLAIN_LAYOUT and type(tensordict) is TensorDict:
        return tensordict._tensordict.items()
    return tensordict.items()


def new_tensordict(
    data: dict[str, Any], batch_size: torch.Size, device: torch.device | None
) -> TensorDictBase:
    """Build a TensorDict from top-level string keys and tensors already on ``device``.

    Two are built per env step: setting the fields directly skips the per-call checks of
    ``TensorDict._new_unsafe``, which cost more than the rest of the construction. The
    TensorDict takes ``data`` over (no copy): callers pass a dict they built for it.
    """
    if PLAIN_LAYOUT:
        out = object.__new__(TensorDict)
        out._tensordict = data
        out._batch_size = batch_size
        out._device = device
        out._td_dim_names = None
        return out
    return TensorDict(data, batch_size=batch_size, device=device)


def flat_entries(tensordict: TensorDictBase) -> dict[str, torch.Tensor] | None:
    """The entries of a plain TensorDict that holds only tensors (no sub-TensorDicts, no
    dim names), as the TensorDict's own dict: read it, never change it. ``None`` for any
    other TensorDict, and while ``torch.compile`` traces (dynamo knows the public API)."""
    if (
        PLAIN_LAYOUT
        and type(tensordict) is TensorDict
        and tensordict._td_dim_names is None
        and not torch.compiler.is_compiling()
    ):
        data = tensordict._tensordict
        if all(type(value) is torch.Tensor for value in data.values()):
            return data
    return None


def has_key(tensordict: TensorDictBase, key: Any) -> bool:
    """``key in tensordict.keys(include_nested=True)`` for a key (a string or a tuple of
    strings): through the entries' own dicts while they are plain TensorDicts, so that a
    loss checking its keys on a batch with ``"next"`` does not list every nested key."""
    value = _walk(tensordict, key)
    if value is _ASK:
        return key in tensordict.keys(include_nested=True)
    return value is not None


def shallow_copy(tensordict: TensorDictBase) -> TensorDictBase:
    """``tensordict.copy()``: a new TensorDict holding the same tensors (and copies of its
    sub-TensorDicts), so that what a module writes into the copy leaves ``tensordict`` as
    it was.

    A loss hands one to each network it calls, once or twice per update; tensordict's
    ``copy`` takes about 20 Python calls per TensorDict, this one a dict copy each where
    every TensorDict in the tree is plain (no dim names), as with ``"next"``.
    """
    if PLAIN_LAYOUT and not torch.compiler.is_compiling():
        copied = _copy_tree(tensordict)
        if copied is not None:
            return copied
    return tensordict.copy()


def _copy_tree(tensordict: TensorDictBase) -> TensorDictBase | None:
    """The shallow copy of a tree of plain TensorDicts holding tensors, else ``None``."""
    if type(tensordict) is not TensorDict or tensordict._td_dim_names is not None:
        return None
    data = dict(tensordict._tensordict)
    for key, value in data.items():
        if type(value) is not torch.Tensor:
            copied = _copy_tree(value)
            if copied is None:
                return None
            data[key] = copied  # replaces a value: the dict's size does not change
    return new_tensordict(data, tensordict.batch_size, tensordict.device)


def detached(tensordict: TensorDictBase) -> TensorDictBase:
    """``tensordict.detach()``, built directly where :func:`flat_entries` serves."""
    data = flat_entries(tensordict)
    if data is None:
        return tensordict.detach()
    entries = {key: value.detach() for key, value in data.items()}
    return new_tensordict(entries, tensordict.batch_size, tensordict.device)


SubBatchDims = tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]
"""``((key, dims), ...)``: sub-TensorDicts with batch dims beyond their parent's."""


def sub_batch_dims(tensordict: TensorDictBase) -> SubBatchDims:
    """The sub-TensorDicts of ``tensordict`` with batch dims of their own after their
    parent's (a multi-agent group's agent dim), parents first, and those dims.

    Storage and trajectory code that rebuilds TensorDicts from their leaves records this
    once, then restores it with :func:`set_sub_batch_dims`.
    """
    out = []
    for key, value in tensordict.items(include_nested=True):
        if not isinstance(value, TensorDictBase):
            continue
        key = (key,) if isinstance(key, str) else tuple(key)
        parent = tensordict.get(key[:-1]) if len(key) > 1 else tensordict
        if value.batch_dims > parent.batch_dims:
            out.append((key, tuple(value.batch_size[parent.batch_dims :])))
    return tuple(sorted(out, key=lambda item: len(item[0])))


def set_sub_batch_dims(tensordict: TensorDictBase, dims: SubBatchDims) -> TensorDictBase:
    """Give the sub-TensorDicts named in ``dims`` (from :func:`sub_batch_dims`) their batch
    dims back after their parent's, in place; returns ``tensordict``."""
    for key, extra in dims:
        parent = tensordict.get(key[:-1]) if len(key) > 1 else tensordict
        sub = parent.get(key[-1], None)
        if sub is not None:
            sub.batch_size = (*parent.batch_size, *extra)
    return tensordict
