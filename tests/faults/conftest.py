"""Shared fixtures of the fault-injection suite."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import psutil
import pytest
import torch
from tensordict import TensorDictBase

# Several tests fork a child from this process. A child forked after torch's OpenMP pool
# ran can deadlock in its first parallel op (libgomp is not fork-safe); with one thread the
# pool is never started. Nothing here measures speed.
torch.set_num_threads(1)


def _running(pids: list[int]) -> list[int]:
    """The processes among ``pids`` still running (zombies count as gone)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while _running(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _running(pids)


@pytest.fixture(name="wait_gone")
def wait_gone_fixture() -> Callable[[list[int], float], list[int]]:
    """``wait_gone(pids, seconds)``: wait up to ``seconds`` for the processes ``pids`` to
    end; returns those still running (an empty list when none is)."""
    return _wait_gone


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, TensorDictBase) and isinstance(b, TensorDictBase):
        return a.keys(True, True) == b.keys(True, True) and bool((a == b).all())
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.fixture(name="same")
def same_fixture() -> Callable[[Any, Any], bool]:
    """``same(a, b)``: deep equality of two states (state dicts, TensorDicts, containers),
    tensors and arrays compared by value."""
    return _same
