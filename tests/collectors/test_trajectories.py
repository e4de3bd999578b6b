"""Trajectory ids and trajectory splitting, checked against a per-step reference."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensordict import TensorDict

from rlblocks.collectors import split_trajectories
from rlblocks.collectors._trajectories import MASK, TRAJ_IDS, TrajectoryIds


def make_batch(done: torch.Tensor) -> TensorDict:
    n, t = done.shape
    return TensorDict(
        {
            "step": torch.arange(n * t).reshape(n, t),
            "next": {"done": done.unsqueeze(-1), "reward": torch.ones(n, t, 1)},
        },
        batch_size=[n, t],
    )


@settings(max_examples=60, deadline=None)
@given(
    n_envs=st.integers(1, 4),
    steps=st.integers(1, 6),
    batches=st.integers(1, 4),
    data=st.data(),
    offset=st.integers(0, 3),
    stride=st.integers(1, 3),
)
def test_ids_change_exactly_after_done_and_are_unique(n_envs, steps, batches, data, offset, stride):
    tracker = TrajectoryIds(torch.Size([n_envs]), torch.device("cpu"), offset, stride)
    all_ids, all_done = [], []
    for _ in range(batches):
        flags = data.draw(st.lists(st.booleans(), min_size=n_envs * steps, max_size=n_envs * steps))
        done = torch.tensor(flags).reshape(n_envs, steps)
        all_ids.append(tracker.assign(make_batch(done)))
        all_done.append(done)
    ids, done = torch.cat(all_ids, 1), torch.cat(all_done, 1)
    assert torch.equal(ids[:, 1:] != ids[:, :-1], done[:, :-1])
    assert ((ids - offset) % stride == 0).all()
    # Trajectories of different envs never share an id, and ids are dense from offset.
    n_traj = int(done[:, :-1].sum()) + n_envs
    assert len(ids.unique()) == n_traj
    assert sorted(ids.unique().tolist()) == [offset + stride * k for k in range(n_traj)]


def test_state_dict_continues_the_numbering():
    a = TrajectoryIds(torch.Size([2]), torch.device("cpu"))
    a.assign(make_batch(torch.tensor([[False, True], [False, False]])))
    b = TrajectoryIds(torch.Size([2]), torch.device("cpu"))
    b.load_state_dict(a.state_dict())
    done = torch.tensor([[True, False], [False, False]])
    assert torch.equal(a.assign(make_batch(done)), b.assign(make_batch(done)))


def test_new_episodes_gives_every_env_a_new_id():
    ids = TrajectoryIds(torch.Size([3]), torch.device("cpu"))
    first = ids.assign(make_batch(torch.zeros(3, 2, dtype=torch.bool)))
    ids.new_episodes()
    second = ids.assign(make_batch(torch.zeros(3, 2, dtype=torch.bool)))
    assert first[:, 0].tolist() == [0, 1, 2] and second[:, 0].tolist() == [3, 4, 5]


@settings(max_examples=60, deadline=None)
@given(n_envs=st.integers(1, 4), steps=st.integers(1, 8), data=st.data())
def test_split_keeps_every_frame_once_in_order(n_envs, steps, data):
    flags = data.draw(st.lists(st.booleans(), min_size=n_envs * steps, max_size=n_envs * steps))
    done = torch.tensor(flags).reshape(n_envs, steps)
    batch = make_batch(done)
    batch.set(TRAJ_IDS, TrajectoryIds(batch.batch_size[:1], torch.device("cpu")).assign(batch))
    split = split_trajectories(batch)
    mask = split.get(MASK)
    assert torch.equal(split["step"][mask], batch["step"].reshape(-1))
    assert (split["step"][~mask] == 0).all()
    lengths = mask.sum(-1)
    assert (lengths > 0).all() and int(lengths.sum()) == n_envs * steps
    # Inside a row the frames are consecutive steps of one env.
    for row, length in zip(split["step"], lengths.tolist()):
        assert torch.equal(row[:length], torch.arange(row[0], row[0] + length))
