"""TensorDict access for the per-step hot paths, with the public API as the fallback.

``TensorDict.get``/``set`` parse and validate nested keys on every call, which costs a
microsecond or so; a step of a fast env (~10 us) cannot afford a dozen of them. For plain
``TensorDict`` instances and top-level string keys, these helpers use tensordict's internal
string-key accessors (stable across the 0.15 series this package pins); anything else goes
through the public API. Values set this way must already have the right batch dims.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

__all__ = ["fast_get", "fast_set", "top_items", "new_tensordict"]

_FAST = all(hasattr(TensorDict, name) for name in ("_get_str", "_set_str", "_new_unsafe"))
_MISSING: Any = object()


def fast_get(tensordict: TensorDictBase, key: Any, default: Any = None) -> Any:
    """``tensordict.get(key, default)``."""
    if _FAST and type(tensordict) is TensorDict and type(key) is str:
        return tensordict._get_str(key, default)
    return tensordict.get(key, default)


def fast_set(tensordict: TensorDictBase, key: Any, value: Any) -> None:
    """``tensordict.set(key, value)`` for a value with the TensorDict's batch dims."""
    if _FAST and type(tensordict) is TensorDict and type(key) is str:
        tensordict._set_str(key, value, validated=True, inplace=False)
    else:
        tensordict.set(key, value)


def top_items(tensordict: TensorDictBase) -> Iterable[tuple[str, Any]]:
    """The top-level ``(key, value)`` pairs."""
    if _FAST and type(tensordict) is TensorDict:
        return tensordict._tensordict.items()
    return tensordict.items()


def new_tensordict(
    data: dict[str, Any], batch_size: torch.Size, device: torch.device | None
) -> TensorDictBase:
    """Build a TensorDict from top-level string keys and tensors already on ``device``."""
    if _FAST:
        # nested=False: ``data`` holds tensors and TensorDicts only, so skip the dict scan.
        return TensorDict._new_unsafe(data, batch_size=batch_size, device=device, nested=False)
    return TensorDict(data, batch_size=batch_size, device=device)
