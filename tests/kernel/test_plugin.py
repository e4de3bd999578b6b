"""rlblocks-kernel registers its trees as the active provider; samples equal the fallback's."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch
from tensordict import TensorDict

import rlblocks.core as rc
from rlblocks.buffers import (
    LazyTensorStorage,
    PrioritizedSampler,
    TensorDictPrioritizedReplayBuffer,
)
from rlblocks.kernel import _core


@pytest.fixture(autouse=True)
def no_provider_override(monkeypatch):
    monkeypatch.delenv("RLBLOCKS_SEGMENT_TREE", raising=False)


def test_entry_point_registers_the_compiled_provider_with_top_priority():
    (ep,) = [
        ep
        for ep in importlib.metadata.entry_points(group="rlblocks")
        if ep.dist is not None and ep.dist.name == "rlblocks-kernel"
    ]
    assert ep.value == "rlblocks.kernel._plugin"
    info = rc.get_component("segment_tree", "kernel")
    assert info.distribution == "rlblocks-kernel"
    assert info.obj.sum_tree is _core.SumSegmentTree and info.obj.min_tree is _core.MinSegmentTree
    assert info.obj.priority > rc.segment_tree_provider("numpy").priority
    assert not [f for f in rc.plugin_failures() if f.distribution == "rlblocks-kernel"]


def test_the_kernel_is_the_active_provider():
    assert rc.active_segment_tree_provider() == "kernel"
    assert PrioritizedSampler(8, 0.6, 0.4).segment_tree == "kernel"
    assert isinstance(PrioritizedSampler(8, 0.6, 0.4)._sum, _core.SumSegmentTree)


def test_the_fallback_can_still_be_chosen(monkeypatch):
    monkeypatch.setenv("RLBLOCKS_SEGMENT_TREE", "numpy")
    assert rc.active_segment_tree_provider() == "numpy"
    assert PrioritizedSampler(8, 0.6, 0.4).segment_tree == "numpy"


def draws(provider, seed, capacity=5000, rounds=5):
    """Samples, weights and priority updates of a prioritized buffer, for one provider."""
    torch.manual_seed(seed)
    rb = TensorDictPrioritizedReplayBuffer(
        alpha=0.6, beta=0.4, storage=LazyTensorStorage(capacity), batch_size=256,
        segment_tree=provider,
    )  # fmt: skip
    assert rb.sampler.segment_tree == provider
    rb.extend(TensorDict({"x": torch.arange(capacity + 700.0)}, [capacity + 700]))
    out = []
    for _ in range(rounds):
        batch = rb.sample()
        out.append((batch["index"].clone(), batch["_weight"].clone(), batch["x"].clone()))
        batch["td_error"] = torch.rand(256) * 10
        rb.update_tensordict_priority(batch)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_seed_gives_identical_samples_with_both_providers(seed):
    kernel, fallback = draws("kernel", seed), draws("numpy", seed)
    for (i_k, w_k, x_k), (i_n, w_n, x_n) in zip(kernel, fallback):
        assert torch.equal(i_k, i_n)
        assert torch.equal(w_k, w_n)
        assert torch.equal(x_k, x_n)
    assert len({tuple(i.tolist()) for i, _, _ in kernel}) == len(kernel)  # they do vary


def test_checkpoints_move_between_providers(tmp_path):
    def make(provider):
        return TensorDictPrioritizedReplayBuffer(
            alpha=0.6, beta=0.4, storage=LazyTensorStorage(100), segment_tree=provider
        )

    rb = make("kernel")
    rb.extend(TensorDict({"x": torch.arange(60.0)}, [60]))
    rb.update_priority(np.arange(60), np.linspace(0, 5, 60))
    rb.dumps(tmp_path / "ckpt")
    clone = make("numpy")
    clone.loads(tmp_path / "ckpt")
    assert np.array_equal(clone.sampler.priorities(range(60)), rb.sampler.priorities(range(60)))
