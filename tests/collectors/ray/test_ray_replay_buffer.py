"""RayReplayBuffer on a local Ray instance: one actor owns the storage, everyone else uses it.

Each buffer is a Ray actor whose process imports torch (seconds), so the tests share one
where they can (emptied before each use) and make their own only for another sampler or
layout.
"""

from __future__ import annotations

import pickle

import pytest
import ray
import torch
from tensordict import TensorDict

from rlblocks.buffers import (
    BufferConfigError,
    EmptyBufferError,
    LazyTensorStorage,
    PrioritizedSampler,
    RayReplayBuffer,
    SamplerWithoutReplacement,
    TensorDictReplayBuffer,
)
from rlblocks.collectors import RayCollector
from rlblocks.envs import CartPoleEnv

TRAJ = ("collector", "traj_ids")


def rows(start: int, n: int) -> TensorDict:
    ids = torch.arange(start, start + n)
    return TensorDict({"id": ids, "x": ids.float().unsqueeze(-1)}, batch_size=[n])


@pytest.fixture(scope="module", name="shared")
def shared_fixture():
    """A buffer of `rows` (sampled without replacement), shared by the tests below."""
    buffer = RayReplayBuffer(
        storage=LazyTensorStorage(100),
        sampler=SamplerWithoutReplacement(),
        batch_size=10,
        replay_buffer_cls=TensorDictReplayBuffer,
    )
    yield buffer
    buffer.close()


@pytest.fixture(name="buffer")
def buffer_fixture(shared):
    shared.empty()
    return shared


def test_extend_sample_and_len_go_through_the_actor(buffer):
    assert len(buffer) == 0
    indices = buffer.extend(rows(0, 30))
    assert indices.tolist() == list(range(30)) and len(buffer) == 30
    # The sampler given here runs in the actor: without replacement, 3 batches cover all.
    seen = torch.cat([buffer.sample()["id"] for _ in range(3)])
    assert sorted(seen.tolist()) == list(range(30))
    assert buffer.sample(5).batch_size == (5,)


def test_a_pickled_handle_writes_into_the_same_storage(buffer):
    @ray.remote(num_cpus=0)
    def writer(handle, start):
        handle.extend(rows(start, 10))

    ray.get([writer.remote(buffer, 30), writer.remote(buffer, 40)])
    copy = pickle.loads(pickle.dumps(buffer))
    assert len(copy) == len(buffer) == 20
    assert sorted(copy.sample(20)["id"].tolist()) == list(range(30, 50))


def test_a_state_dict_round_trips_through_the_actor(buffer):
    buffer.extend(rows(0, 6))
    state = buffer.state_dict()
    buffer.empty()
    assert len(buffer) == 0
    buffer.load_state_dict(state)
    assert sorted(buffer.sample(6)["id"].tolist()) == list(range(6))


def test_errors_of_the_hosted_buffer_keep_their_type_and_lose_nothing(buffer):
    with pytest.raises(EmptyBufferError):
        buffer.sample()
    buffer.extend(rows(0, 4))
    with pytest.raises(Exception, match="id") as info:  # a layout the storage does not have
        buffer.extend(TensorDict({"other": torch.zeros(2)}, batch_size=[2]))
    assert not isinstance(info.value, ray.exceptions.RayError)
    assert "Raised in the buffer's Ray actor" in "".join(getattr(info.value, "__notes__", []))
    assert len(buffer) == 4


def test_priorities_update_in_the_actor():
    buffer = RayReplayBuffer(
        storage=LazyTensorStorage(16),
        sampler=PrioritizedSampler(16, alpha=1.0, beta=1.0),
        batch_size=64,
        replay_buffer_cls=TensorDictReplayBuffer,
    )
    buffer.extend(rows(0, 4))
    buffer.update_priority(torch.arange(4), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert (buffer.sample()["id"] == 3).all()
    buffer.close()  # and a closed buffer says so
    buffer.close()
    with pytest.raises(BufferConfigError, match="was closed"):
        len(buffer)


def test_a_bad_buffer_class_is_named():
    with pytest.raises(BufferConfigError, match="replay_buffer_cls must be an rlblocks buffer"):
        RayReplayBuffer(replay_buffer_cls=dict)


def test_two_ray_collectors_extend_it_from_their_actors():
    """Several collectors on Ray (one gathering its actors, one not) write into one buffer,
    with split_trajs off; the driver only counts frames."""
    other = RayReplayBuffer(
        storage=LazyTensorStorage(1000), replay_buffer_cls=TensorDictReplayBuffer
    )
    config = {"frames_per_batch": 8, "total_frames": 24, "replay_buffer": other}
    collectors = [
        RayCollector([lambda: CartPoleEnv()], sync=sync, remote_config={"num_cpus": 0.5}, **config)
        for sync in (True, False)
    ]
    try:
        assert [list(c) for c in collectors] == [[None] * 3, [None] * 3]
        assert [c.frames for c in collectors] == [24, 24]
        assert len(other) == 48
        stored = other.sample(48)
        assert stored["observation"].shape == (48, 4) and TRAJ in stored.keys(True)
    finally:
        for collector in collectors:
            collector.shutdown()
        other.close()


def test_split_trajs_and_postproc_run_in_the_actors():
    buffer = RayReplayBuffer(
        storage=LazyTensorStorage(100), replay_buffer_cls=TensorDictReplayBuffer
    )

    def mark(batch):
        batch["marked"] = torch.ones(batch.shape)
        return batch

    collector = RayCollector([lambda: CartPoleEnv()], frames_per_batch=30, total_frames=30,
                             split_trajs=True, postproc=mark, replay_buffer=buffer)  # fmt: skip
    try:
        list(collector)
        stored = buffer.sample(len(buffer))
        assert stored.ndim == 2 and ("collector", "mask") in stored.keys(True)  # trajectories
        assert (stored["marked"] == 1).all()
    finally:
        collector.shutdown()
        buffer.close()
