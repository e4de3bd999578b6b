"""SliceSampler: contiguous steps of one trajectory per slice."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import (
    EmptyBufferError,
    LazyTensorStorage,
    SliceSampler,
    StorageLayoutError,
    TensorDictReplayBuffer,
)


def episodes(lengths, start_id=0):
    """Steps numbered globally, with trajectory ids and done flags."""
    ids = torch.cat([torch.full((n,), start_id + i) for i, n in enumerate(lengths)])
    done = torch.cat([torch.arange(n) == n - 1 for n in lengths]).unsqueeze(-1)
    total = sum(lengths)
    return TensorDict(
        {"step": torch.arange(total), "traj": ids, "next": {"done": done}}, batch_size=[total]
    )


@pytest.mark.parametrize("by", ["end_key", "traj_key"])
def test_slices_are_consecutive_steps_of_one_trajectory(by):
    kwargs = {"traj_key": "traj"} if by == "traj_key" else {}
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(100), sampler=SliceSampler(slice_len=4, **kwargs), batch_size=12
    )
    rb.extend(episodes([3, 10, 6, 2]))
    for _ in range(20):
        batch = rb.sample().reshape(3, 4)
        steps, traj = batch["step"], batch["traj"]
        assert (steps[:, 1:] - steps[:, :-1] == 1).all()
        assert (traj == traj[:, :1]).all()
        assert set(traj[:, 0].tolist()) <= {1, 2}  # the only trajectories with >= 4 steps


def test_num_slices_sets_the_slice_length_from_the_batch_size():
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(50), sampler=SliceSampler(num_slices=2))
    rb.extend(episodes([10, 10]))
    batch, info = rb.sample(10, return_info=True)
    assert batch.shape == (10,) and info["slice_lengths"].tolist() == [5, 5]
    with pytest.raises(ValueError, match="multiple of num_slices"):
        rb.sample(7)


def test_no_slice_crosses_the_round_robin_seam():
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(10),
        sampler=SliceSampler(slice_len=3, traj_key="traj"),
        batch_size=30,
    )
    rb.extend(episodes([8]))
    rb.extend(episodes([5], start_id=1))  # wraps: positions 8, 9, 0, 1, 2
    for _ in range(10):
        steps = rb.sample().reshape(10, 3)["step"]
        assert (steps[:, 1:] - steps[:, :-1] == 1).all()


def test_short_trajectories_with_strict_length_false():
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(20),
        sampler=SliceSampler(slice_len=4, strict_length=False),
    )
    rb.extend(episodes([2, 2]))
    batch, info = rb.sample(8, return_info=True)
    assert info["slice_lengths"].tolist() == [2, 2] and batch.shape == (4,)
    strict = TensorDictReplayBuffer(
        storage=LazyTensorStorage(20), sampler=SliceSampler(slice_len=4), batch_size=8
    )
    strict.extend(episodes([2, 3]))
    with pytest.raises(EmptyBufferError, match="no stored trajectory has 4 steps"):
        strict.sample()


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="exactly one"):
        SliceSampler()
    with pytest.raises(ValueError, match="exactly one"):
        SliceSampler(num_slices=2, slice_len=3)
    with pytest.raises(ValueError, match="not both"):
        SliceSampler(slice_len=2, traj_key="a", end_key="b")
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(20), sampler=SliceSampler(slice_len=2, end_key="nope")
    )
    rb.extend(episodes([4]))
    with pytest.raises(StorageLayoutError, match="no key 'nope'"):
        rb.sample(4)


def test_trajectories_are_recomputed_only_after_writes():
    sampler = SliceSampler(slice_len=2)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(20), sampler=sampler, batch_size=4)
    rb.extend(episodes([4]))
    rb.sample()
    cached = sampler._cache
    rb.sample()
    assert sampler._cache is cached
    rb.extend(episodes([4], start_id=1))
    rb.sample()
    assert sampler._cache is not cached and len(sampler._cache[1][0]) == 2
