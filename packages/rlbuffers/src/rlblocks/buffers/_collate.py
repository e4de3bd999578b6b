"""Turning a list of sampled elements into one batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tensordict import is_tensor_collection

__all__ = ["default_collate"]


def _stack(items: list[Any]) -> Any:
    first = items[0]
    if is_tensor_collection(first) or isinstance(first, torch.Tensor):
        return torch.stack(items)
    if isinstance(first, np.ndarray):
        return np.stack(items)
    if isinstance(first, (bool, int, float)):
        return torch.tensor(items)
    if isinstance(first, np.generic):
        return np.asarray(items)
    if isinstance(first, Mapping):
        return type(first)({key: _stack([item[key] for item in items]) for key in first})
    if isinstance(first, tuple) and hasattr(first, "_fields"):  # namedtuple
        return type(first)(*(_stack(list(column)) for column in zip(*items, strict=True)))
    if isinstance(first, (tuple, list)):
        return type(first)(_stack(list(column)) for column in zip(*items, strict=True))
    return items


def default_collate(items: list[Any]) -> Any:
    """Stack sampled elements into one batch, or return them as a list.

    TensorDicts and tensors are stacked with ``torch.stack``, numpy arrays with
    ``np.stack`` (they stay numpy), Python numbers become a tensor, and dicts, tuples and
    namedtuples are collated field by field. Anything else (strings, arbitrary objects), and
    elements that do not stack (different shapes or keys), come back as the list itself.
    """
    if not items:
        return items
    try:
        return _stack(items)
    except (RuntimeError, ValueError, TypeError, KeyError):
        return items
