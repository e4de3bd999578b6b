"""PrioritizedSampler: proportional draws, importance weights, bad priorities, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlblocks.buffers import (
    BufferIndexError,
    CheckpointError,
    EmptyBufferError,
    LazyTensorStorage,
    ListStorage,
    PrioritizedReplayBuffer,
    PrioritizedSampler,
    PriorityError,
    ReplayBuffer,
)
from rlblocks.buffers._prioritized import resolve_segment_tree


def make_buffer(n=4, alpha=1.0, beta=1.0, eps=0.0, **kw):
    rb = PrioritizedReplayBuffer(alpha, beta, eps, storage=LazyTensorStorage(8), **kw)
    rb.extend(torch.arange(n))
    return rb


def test_draws_follow_the_priorities():
    torch.manual_seed(0)
    rb = make_buffer()
    rb.update_priority([0, 1, 2, 3], [1.0, 2.0, 0.0, 5.0])
    _, info = rb.sample(20000, return_info=True)
    freq = np.bincount(info["index"].numpy(), minlength=4) / 20000
    assert freq[2] == 0
    assert freq == pytest.approx([1 / 8, 2 / 8, 0, 5 / 8], abs=0.02)


def test_importance_weights_are_normalized_by_the_smallest_priority():
    rb = make_buffer(alpha=0.5, beta=0.4, eps=0.0)
    rb.update_priority([0, 1, 2, 3], [1.0, 4.0, 9.0, 16.0])
    batch, info = rb.sample(64, return_info=True)
    leaves = np.sqrt(np.array([1.0, 4.0, 9.0, 16.0]))
    expected = (leaves[info["index"].numpy()] / leaves.min()) ** -0.4
    assert info["_weight"].dtype == torch.float32
    assert info["_weight"].numpy() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(batch, info["index"])  # the stored values are their positions


def test_new_elements_get_the_highest_priority_seen():
    rb = make_buffer(n=2)
    rb.update_priority([0, 1], [3.0, 0.5])
    rb.extend(torch.tensor([7]))
    assert rb.sampler.priorities([2]).tolist() == [3.0]


def test_zero_priorities_do_not_make_weights_infinite():
    rb = make_buffer(n=3)
    rb.update_priority([0, 1, 2], [0.0, 2.0, 4.0])
    _, info = rb.sample(100, return_info=True)
    assert 0 not in info["index"].tolist() and torch.isfinite(info["_weight"]).all()
    rb.update_priority([0, 1, 2], 0.0)
    with pytest.raises(EmptyBufferError, match="priority 0"):
        rb.sample(4)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_priorities_raise_and_change_nothing(bad):
    rb = make_buffer()
    rb.update_priority([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(PriorityError, match="finite and >= 0"):
        rb.update_priority([0, 1], [5.0, bad])
    assert rb.sampler.priorities([0, 1]).tolist() == [1.0, 2.0]


def test_priority_count_and_index_range_are_checked():
    rb = make_buffer()
    with pytest.raises(PriorityError, match="3 priorities for 2 indices"):
        rb.update_priority([0, 1], [1.0, 2.0, 3.0])
    with pytest.raises(BufferIndexError, match="out of range"):
        rb.update_priority([4], [1.0])  # stored positions are 0..3
    with pytest.raises(PriorityError, match="numbers"):
        rb.update_priority([0], ["high"])
    rb.update_priority(torch.tensor([1, 2]), torch.tensor([7.0, 8.0], requires_grad=True))
    assert rb.sampler.priorities(torch.tensor([1, 2])).tolist() == [7.0, 8.0]


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="alpha"):
        PrioritizedSampler(10, alpha=-1, beta=0.4)
    with pytest.raises(ValueError, match="beta"):
        PrioritizedSampler(10, alpha=0.6, beta=float("nan"))
    with pytest.raises(ValueError, match="max_capacity"):
        PrioritizedSampler(0, alpha=0.6, beta=0.4)
    with pytest.raises(ValueError, match="max_capacity >= 20"):
        ReplayBuffer(storage=ListStorage(20), sampler=PrioritizedSampler(10, 0.6, 0.4))
    sampler = PrioritizedSampler(10, 0.6, 0.4, segment_tree="numpy")
    sampler.beta = 1.0
    assert sampler.beta == 1.0 and sampler.segment_tree == "numpy"
    with pytest.raises(ValueError, match="beta"):
        sampler.beta = -0.1


def test_segment_tree_falls_back_to_numpy_without_plugins(monkeypatch):
    import rlblocks.core as rc

    monkeypatch.setenv("RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD", "1")
    rc.load_plugins(reload=True)
    try:
        assert resolve_segment_tree(None)[0] == "numpy"
        rb = PrioritizedReplayBuffer(0.6, 0.4, batch_size=2)
        rb.extend([1, 2, 3])
        assert len(rb.sample()) == 2
    finally:
        monkeypatch.delenv("RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD")
        rc.load_plugins(reload=True)


def test_environment_variable_picks_the_provider(monkeypatch):
    monkeypatch.setenv("RLBLOCKS_SEGMENT_TREE", "numpy")
    assert PrioritizedSampler(4, 0.6, 0.4).segment_tree == "numpy"


def test_state_round_trip_restores_priorities_and_draws():
    rb = make_buffer(n=6, alpha=0.7, beta=0.5, eps=1e-6)
    rb.update_priority(np.arange(6), np.arange(1.0, 7.0))
    state = rb.sampler.state_dict()
    clone = make_buffer(n=6, alpha=0.7, beta=0.5, eps=1e-6)
    clone.sampler.load_state_dict(state, length=6)
    torch.manual_seed(1)
    a = rb.sample(32, return_info=True)[1]
    torch.manual_seed(1)
    b = clone.sample(32, return_info=True)[1]
    assert torch.equal(a["index"], b["index"]) and torch.equal(a["_weight"], b["_weight"])
    with pytest.raises(CheckpointError, match="alpha"):
        make_buffer(alpha=0.5).sampler.load_state_dict(state, length=6)
    bad = dict(state, sum_leaves=-state["sum_leaves"])
    with pytest.raises(CheckpointError, match="negative"):
        clone.sampler.load_state_dict(bad, length=6)
    assert clone.sampler.priorities([5]) == pytest.approx((6.0 + 1e-6) ** 0.7)
