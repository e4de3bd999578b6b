"""Episode returns summed across batches by trajectory id."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from rlblocks.collectors._episodes import EpisodeTracker


def batch(ids, rewards, done, mask=None):
    td = TensorDict(
        {
            "collector": {"traj_ids": torch.tensor(ids)},
            "next": {
                "reward": torch.tensor(rewards, dtype=torch.float32).unsqueeze(-1),
                "done": torch.tensor(done).unsqueeze(-1),
            },
        },
        batch_size=torch.tensor(ids).shape,
    )
    if mask is not None:
        td.set(("collector", "mask"), torch.tensor(mask))
    return td


def test_returns_are_summed_across_batches():
    tracker = EpisodeTracker()
    assert tracker.update(
        batch([[0, 0], [1, 1]], [[1, 2], [5, 5]], [[False, False], [False, True]])
    ) == [10.0]
    finished = tracker.update(
        batch([[0, 2], [3, 3]], [[3, 1], [1, 1]], [[True, False], [False, False]])
    )
    assert finished == [6.0]


def test_padding_is_ignored():
    tracker = EpisodeTracker()
    got = tracker.update(
        batch([[4, 4, 0]], [[1, 1, 100]], [[False, True, True]], mask=[[True, True, False]])
    )
    assert got == [2.0]


def test_open_episodes_are_bounded_and_saved():
    tracker = EpisodeTracker(max_open=2)
    tracker.update(batch([[0, 1, 2]], [[1, 1, 1]], [[False, False, False]]))
    assert tracker.state_dict()["ids"] == [1, 2]
    other = EpisodeTracker()
    other.load_state_dict(tracker.state_dict())
    assert other.update(batch([[2]], [[4]], [[True]])) == [5.0]


def test_batches_without_rewards_finish_nothing():
    assert EpisodeTracker().update(TensorDict({}, batch_size=[2])) == []
