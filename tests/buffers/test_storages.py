"""ListStorage, the storage of arbitrary Python objects."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import BufferConfigError, ListStorage, ReplayBuffer, StorageLayoutError
from rlblocks.buffers._storages import split_batch

Step = namedtuple("Step", ["obs", "reward"])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1, "a", None], [1, "a", None]),
        ((1, 2), [1, 2]),
        (torch.arange(3), [0, 1, 2]),
        (np.arange(2), [0, 1]),
        (iter(["x", "y"]), ["x", "y"]),
    ],
)
def test_split_batch_of_sequences_and_arrays(data, expected):
    items = split_batch(data, "test")
    assert [x if isinstance(x, (str, type(None))) else int(x) for x in items] == expected


def test_split_batch_of_dicts_namedtuples_and_tensordicts():
    items = split_batch({"obs": np.zeros((3, 2)), "r": torch.arange(3)}, "test")
    assert len(items) == 3 and items[2]["obs"].shape == (2,) and int(items[2]["r"]) == 2
    steps = split_batch(Step(torch.zeros(2, 4), torch.ones(2)), "test")
    assert isinstance(steps[0], Step) and steps[1].obs.shape == (4,)
    tds = split_batch(TensorDict({"a": torch.arange(4)}, [4]), "test")
    assert [int(td["a"]) for td in tds] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "data",
    ["abc", 3, torch.tensor(1.0), np.float32(2.0), {"a": np.zeros(2), "b": np.zeros(3)}],
)
def test_split_batch_refuses_non_batches(data):
    with pytest.raises(StorageLayoutError):
        split_batch(data, "test")


def test_list_storage_keeps_objects_as_given_and_wraps_around():
    storage = ListStorage(3)
    rb = ReplayBuffer(storage=storage, batch_size=2)
    marker = object()
    assert rb.extend(["a", marker, {"k": 1}]).tolist() == [0, 1, 2]
    assert rb[1] is marker
    assert rb.extend(["d"]).tolist() == [0]
    assert len(rb) == 3 and rb[0] == "d"
    assert rb.add("e") == 1


def test_list_storage_column_reads_a_key_of_every_item():
    storage = ListStorage(10)
    rb = ReplayBuffer(storage=storage)
    rb.extend([{"next": {"done": torch.tensor([i == 1])}} for i in range(3)])
    assert storage.column(("next", "done")).reshape(-1).tolist() == [False, True, False]


def test_empty_forgets_items():
    storage = ListStorage(5)
    rb = ReplayBuffer(storage=storage)
    rb.extend([1, 2])
    rb.empty()
    assert len(rb) == 0 and storage.get(torch.arange(0)) == []


def test_max_size_must_be_positive():
    with pytest.raises(
        BufferConfigError, match="ListStorage: max_size must be a positive int, got 0"
    ):
        ListStorage(0)
    with pytest.raises(BufferConfigError, match="max_size must be a positive int, got 2.5"):
        ListStorage(2.5)
