"""default_collate: stacking sampled elements of a ListStorage."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import torch
from tensordict import TensorDict

from rlblocks.buffers import default_collate

Step = namedtuple("Step", ["obs", "reward"])


def test_tensors_arrays_and_numbers_are_stacked():
    assert default_collate([torch.zeros(2), torch.ones(2)]).shape == (2, 2)
    stacked = default_collate([np.zeros(3), np.ones(3)])
    assert isinstance(stacked, np.ndarray) and stacked.shape == (2, 3)
    assert default_collate([1.0, 2.0]).tolist() == [1.0, 2.0]
    assert default_collate([np.float32(1), np.float32(2)]).dtype == np.float32


def test_containers_are_collated_field_by_field():
    batch = default_collate([{"a": torch.zeros(2), "s": "x"}, {"a": torch.ones(2), "s": "y"}])
    assert batch["a"].shape == (2, 2) and batch["s"] == ["x", "y"]
    steps = default_collate([Step(np.zeros(2), 1.0), Step(np.ones(2), 2.0)])
    assert isinstance(steps, Step) and steps.obs.shape == (2, 2)
    pair = default_collate([(torch.zeros(1), 1), (torch.ones(1), 2)])
    assert isinstance(pair, tuple) and pair[1].tolist() == [1, 2]
    td = default_collate([TensorDict({"a": torch.zeros(3)}, []) for _ in range(4)])
    assert td.batch_size == (4,)


def test_what_does_not_stack_stays_a_list():
    items = [torch.zeros(2), torch.zeros(3)]
    assert default_collate(items) is items
    assert default_collate(["a", object()])[0] == "a"
    assert default_collate([]) == []
    mixed = [{"a": 1}, {"b": 2}]
    assert default_collate(mixed) is mixed
