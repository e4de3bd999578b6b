"""RayReplayBuffer on a local Ray instance: one actor owns the storage, everyone else uses it."""

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


@pytest.fixture(name="buffers")
def buffers_fixture():
    made = []

    def make(*args, **kwargs):
        buffer = RayReplayBuffer(*args, **kwargs)
        made.append(buffer)
        return buffer

    yield make
    for buffer in made:
        buffer.close()


def test_extend_sample_and_len_go_through_the_actor(buffers):
    buffer = buffers(
        storage=LazyTensorStorage(100),
        sampler=SamplerWithoutReplacement(),
        batch_size=10,
        replay_buffer_cls=TensorDictReplayBuffer,
    )
    assert len(buffer) == 0
    indices = buffer.extend(rows(0, 30))
    assert indices.tolist() == list(range(30)) and len(buffer) == 30
    # The sampler given here runs in the actor: without replacement, 3 batches cover all.
    seen = torch.cat([buffer.sample()["id"] for _ in range(3)])
    assert sorted(seen.tolist()) == list(range(30))
    assert buffer.sample(5).batch_size == (5,)


def test_a_pickled_handle_writes_into_the_same_storage(buffers):
    buffer = buffers(
        storage=LazyTensorStorage(100),
        sampler=SamplerWithoutReplacement(),
        replay_buffer_cls=TensorDictReplayBuffer,
    )

    @ray.remote(num_cpus=0)
    def writer(handle, start):
        handle.extend(rows(start, 10))

    ray.get([writer.remote(buffer, 0), writer.remote(buffer, 10)])
    copy = pickle.loads(pickle.dumps(buffer))
    assert len(copy) == len(buffer) == 20
    assert sorted(copy.sample(20)["id"].tolist()) == list(range(20))


def test_priorities_update_in_the_actor(buffers):
    buffer = buffers(
        storage=LazyTensorStorage(16),
        sampler=PrioritizedSampler(16, alpha=1.0, beta=1.0),
        batch_size=64,
        replay_buffer_cls=TensorDictReplayBuffer,
    )
    buffer.extend(rows(0, 4))
    buffer.update_priority(torch.arange(4), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert (buffer.sample()["id"] == 3).all()


def test_errors_of_the_hosted_buffer_keep_their_type_and_lose_nothing(buffers):
    buffer = buffers(storage=LazyTensorStorage(10), batch_size=4,
                     replay_buffer_cls=TensorDictReplayBuffer)  # fmt: skip
    with pytest.raises(EmptyBufferError):
        buffer.sample()
    buffer.extend(rows(0, 4))
    with pytest.raises(Exception, match="id") as info:  # a layout the storage does not have
        buffer.extend(TensorDict({"other": torch.zeros(2)}, batch_size=[2]))
    assert not isinstance(info.value, ray.exceptions.RayError)
    assert len(buffer) == 4


def test_a_bad_buffer_class_is_named():
    with pytest.raises(BufferConfigError, match="replay_buffer_cls must be an rlblocks buffer"):
        RayReplayBuffer(replay_buffer_cls=dict)


def test_a_closed_buffer_says_so(buffers):
    buffer = buffers(storage=LazyTensorStorage(10))
    buffer.close()
    buffer.close()
    with pytest.raises(BufferConfigError, match="was closed"):
        len(buffer)


def test_a_state_dict_round_trips_through_the_actor(buffers):
    kwargs = {"sampler": SamplerWithoutReplacement(), "replay_buffer_cls": TensorDictReplayBuffer}
    first = buffers(storage=LazyTensorStorage(10), **kwargs)
    first.extend(rows(0, 6))
    second = buffers(storage=LazyTensorStorage(10), **kwargs)
    second.load_state_dict(first.state_dict())
    assert len(second) == 6
    assert sorted(second.sample(6)["id"].tolist()) == list(range(6))


def test_two_ray_collectors_extend_it_from_their_actors(buffers):
    """Several collectors on Ray (one gathering its actors, one not) write into one buffer;
    the driver only counts frames."""
    buffer = buffers(storage=LazyTensorStorage(1000), replay_buffer_cls=TensorDictReplayBuffer)
    config = {"frames_per_batch": 8, "total_frames": 24, "replay_buffer": buffer}
    collectors = [
        RayCollector([lambda: CartPoleEnv()], sync=sync, remote_config={"num_cpus": 0.5}, **config)
        for sync in (True, False)
    ]
    try:
        assert [list(c) for c in collectors] == [[None] * 3, [None] * 3]
        assert [c.frames for c in collectors] == [24, 24]
    finally:
        for collector in collectors:
            collector.shutdown()
    assert len(buffer) == 48
    stored = buffer.sample(48)
    assert stored["observation"].shape == (48, 4) and TRAJ in stored.keys(True)


def test_split_trajs_and_postproc_run_in_the_actors(buffers):
    buffer = buffers(storage=LazyTensorStorage(100), replay_buffer_cls=TensorDictReplayBuffer)

    def mark(batch):
        batch["marked"] = torch.ones(batch.shape)
        return batch

    collector = RayCollector([lambda: CartPoleEnv()], frames_per_batch=30, total_frames=30,
                             split_trajs=True, postproc=mark, replay_buffer=buffer)  # fmt: skip
    try:
        list(collector)
    finally:
        collector.shutdown()
    stored = buffer.sample(len(buffer))
    assert stored.ndim == 2 and ("collector", "mask") in stored.keys(True)  # trajectories
    assert (stored["marked"] == 1).all()
