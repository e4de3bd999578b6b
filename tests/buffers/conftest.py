"""Shared fixtures of the rlblocks-buffers tests."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import LazyMemmapStorage, LazyTensorStorage, ListStorage


def make_transitions(n: int, start: int = 0) -> TensorDict:
    """CartPole-like transitions; ``observation[:, 0]`` numbers them from ``start``."""
    step = torch.arange(start, start + n, dtype=torch.float32)
    obs = torch.stack([step, step * 0, step * 0, step * 0], -1)
    done = (torch.arange(start, start + n) % 5 == 4).unsqueeze(-1)
    return TensorDict(
        {
            "observation": obs,
            "action": torch.zeros(n, 1, dtype=torch.int64),
            "done": torch.zeros(n, 1, dtype=torch.bool),
            "next": {
                "observation": obs + 1,
                "reward": torch.ones(n, 1),
                "done": done,
                "terminated": done,
                "truncated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        batch_size=[n],
    )


@pytest.fixture(name="transitions")
def transitions_fixture():
    return make_transitions


@pytest.fixture(params=["LazyTensorStorage", "LazyMemmapStorage"])
def tensor_storage(request, tmp_path):
    """A factory of each tensor storage: ``tensor_storage(max_size)``."""
    if request.param == "LazyTensorStorage":
        return LazyTensorStorage
    counter = iter(range(1000))
    return lambda max_size: LazyMemmapStorage(max_size, tmp_path / f"s{next(counter)}")


@pytest.fixture(params=["ListStorage", "LazyTensorStorage", "LazyMemmapStorage"])
def any_storage(request, tmp_path):
    """A factory of every storage: ``any_storage(max_size)``."""
    if request.param == "ListStorage":
        return ListStorage
    if request.param == "LazyTensorStorage":
        return LazyTensorStorage
    counter = iter(range(1000))
    return lambda max_size: LazyMemmapStorage(max_size, tmp_path / f"s{next(counter)}")
