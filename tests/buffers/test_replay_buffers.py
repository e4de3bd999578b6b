"""ReplayBuffer: the API shared by every buffer, for any kind of data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlblocks.buffers import (
    BufferConfigError,
    BufferIndexError,
    LazyTensorStorage,
    ListStorage,
    ReplayBuffer,
    SamplerWithoutReplacement,
    StorageLayoutError,
)


@pytest.mark.parametrize(
    "element",
    [
        torch.tensor([1.0, 2.0]),
        np.array([1, 2], dtype=np.int32),
        {"obs": torch.zeros(3), "reward": 1.0},
        (np.zeros(2), torch.ones(1)),
    ],
    ids=["tensor", "array", "dict", "tuple"],
)
def test_add_and_sample_any_structure(any_storage, element):
    rb = ReplayBuffer(storage=any_storage(10), batch_size=4)
    assert [rb.add(element) for _ in range(3)] == [0, 1, 2]
    batch = rb.sample()
    leaves = batch if isinstance(batch, (tuple, dict)) else [batch]
    for leaf in leaves.values() if isinstance(leaves, dict) else leaves:
        assert len(leaf) == 4


def test_plain_python_objects_come_back_as_lists():
    rb = ReplayBuffer(batch_size=5)
    rb.extend(["a", "b", ("c", 1)])
    batch = rb.sample()
    assert isinstance(batch, list) and len(batch) == 5


def test_collate_fn_and_transform_apply_to_every_batch():
    rb = ReplayBuffer(
        storage=LazyTensorStorage(10),
        batch_size=3,
        collate_fn=lambda x: x * 10,
        transform=lambda x: x + 1,
    )
    rb.extend(torch.zeros(4))
    assert rb.sample().tolist() == [1.0, 1.0, 1.0]


def test_iteration_yields_batches():
    rb = ReplayBuffer(storage=LazyTensorStorage(20), batch_size=4)
    assert list(rb) == []
    rb.extend(torch.arange(10))
    batches = list(rb)
    assert len(batches) == 2 and all(b.shape == (4,) for b in batches)
    with pytest.raises(ValueError, match="no batch_size"):
        list(ReplayBuffer())


def test_getitem_reads_stored_positions():
    rb = ReplayBuffer(storage=LazyTensorStorage(10))
    rb.extend(torch.arange(5) * 10)
    assert int(rb[2]) == 20 and int(rb[-1]) == 40
    assert rb[1:4].tolist() == [10, 20, 30]
    assert rb[torch.tensor([4, 0])].tolist() == [40, 0]
    with pytest.raises(BufferIndexError, match="out of range"):
        rb[5]


def test_constructor_checks_its_arguments():
    with pytest.raises(TypeError, match="storage must be a Storage"):
        ReplayBuffer(storage=[])
    with pytest.raises(TypeError, match="sampler must be a Sampler"):
        ReplayBuffer(sampler="random")
    with pytest.raises(
        BufferConfigError, match=r"batch_size must be a positive int \(or None\), got 0"
    ):
        ReplayBuffer(batch_size=0)
    with pytest.raises(BufferConfigError, match="no batch_size"):
        ReplayBuffer(storage=ListStorage(3)).sample()
    with pytest.raises(BufferConfigError, match="batch_size must be a positive int, got 2.5"):
        ReplayBuffer(storage=ListStorage(3)).sample(2.5)


def test_sample_returns_info_with_the_index():
    rb = ReplayBuffer(storage=LazyTensorStorage(10), batch_size=6)
    rb.extend(torch.arange(10) * 2)
    batch, info = rb.sample(return_info=True)
    assert torch.equal(batch, info["index"] * 2)


def test_extend_is_all_or_nothing():
    rb = ReplayBuffer(storage=LazyTensorStorage(10))
    rb.extend({"a": torch.zeros(3), "b": torch.ones(3)})
    with pytest.raises(StorageLayoutError):
        rb.extend({"a": torch.zeros(2), "b": torch.ones(2, 2)})
    assert len(rb) == 3 and rb.storage.cursor == 3


def test_buffer_state_dict_round_trip(any_storage):
    rb = ReplayBuffer(storage=any_storage(6), sampler=SamplerWithoutReplacement())
    rb.extend(torch.arange(8))
    clone = ReplayBuffer(storage=any_storage(6), sampler=SamplerWithoutReplacement())
    clone.load_state_dict(rb.state_dict())
    assert len(clone) == 6 and torch.equal(torch.as_tensor(clone[:]), torch.as_tensor(rb[:]))
    assert clone.extend(torch.tensor([100])).tolist() == [2]


def test_repr_names_the_components():
    text = repr(ReplayBuffer(storage=LazyTensorStorage(4), batch_size=2))
    assert "LazyTensorStorage" in text and "RandomSampler" in text and "RoundRobinWriter" in text
