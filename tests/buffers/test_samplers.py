"""RandomSampler and SamplerWithoutReplacement."""

from __future__ import annotations

import pytest
import torch

from rlblocks.buffers import (
    CheckpointError,
    EmptyBufferError,
    ListStorage,
    RandomSampler,
    ReplayBuffer,
    ReplayBufferError,
    SamplerWithoutReplacement,
)


def test_random_sampler_covers_the_filled_part_only(any_storage):
    rb = ReplayBuffer(storage=any_storage(100), batch_size=500)
    rb.extend(torch.arange(10))
    values = rb.sample()
    assert set(torch.as_tensor(values).tolist()) == set(range(10))


def test_random_sampler_is_reproducible_with_a_generator():
    storage = ListStorage(50)
    ReplayBuffer(storage=storage).extend(list(range(50)))
    draws = [
        RandomSampler(torch.Generator().manual_seed(3)).sample(storage, 20)[0] for _ in range(2)
    ]
    assert torch.equal(*draws)


def test_sampling_an_empty_buffer_is_a_clear_error():
    rb = ReplayBuffer(batch_size=2)
    with pytest.raises(EmptyBufferError, match="empty.*extend"):
        rb.sample()
    with pytest.raises(EmptyBufferError, match="empty"):
        RandomSampler().sample(ListStorage(3), 2)
    with pytest.raises(EmptyBufferError, match="empty"):
        SamplerWithoutReplacement().sample(ListStorage(3), 2)


@pytest.mark.parametrize("drop_last", [False, True])
def test_without_replacement_visits_each_element_once_per_epoch(drop_last):
    rb = ReplayBuffer(sampler=SamplerWithoutReplacement(drop_last=drop_last), batch_size=3)
    rb.extend(list(range(10)))
    for _ in range(2):  # two epochs
        batches = list(rb)
        seen = [x for batch in batches for x in batch.tolist()]
        assert len(seen) == len(set(seen))
        if drop_last:
            assert [len(b) for b in batches] == [3, 3, 3]
        else:
            assert sorted(seen) == list(range(10)) and len(batches[-1]) == 1


def test_without_replacement_in_storage_order():
    rb = ReplayBuffer(sampler=SamplerWithoutReplacement(shuffle=False), batch_size=4)
    rb.extend(list(range(6)))
    assert [b.tolist() for b in rb] == [[0, 1, 2, 3], [4, 5]]
    assert rb.sampler.ran_out


def test_without_replacement_with_drop_last_and_too_little_data():
    rb = ReplayBuffer(sampler=SamplerWithoutReplacement(drop_last=True), batch_size=4)
    rb.extend([1, 2])
    with pytest.raises(EmptyBufferError, match="drop_last"):
        rb.sample()


def test_without_replacement_state_round_trip():
    sampler = SamplerWithoutReplacement()
    rb = ReplayBuffer(sampler=sampler, batch_size=4)
    rb.extend(list(range(10)))
    first = rb.sample().tolist()
    state = sampler.state_dict()
    rest = rb.sample().tolist() + rb.sample().tolist()
    sampler.load_state_dict(state, length=10)
    assert rb.sample().tolist() + rb.sample().tolist() == rest
    assert sorted(first + rest) == list(range(10))
    with pytest.raises(CheckpointError, match="position"):
        sampler.load_state_dict({"perm": torch.arange(3), "pos": 9, "ran_out": False}, 10)
    with pytest.raises(CheckpointError, match="past the storage"):
        sampler.load_state_dict({"perm": torch.arange(30), "pos": 0, "ran_out": False}, 10)


def test_samplers_without_priorities_refuse_updates():
    rb = ReplayBuffer()
    rb.extend([1, 2])
    with pytest.raises(ReplayBufferError, match="PrioritizedReplayBuffer"):
        rb.update_priority([0], [1.0])
