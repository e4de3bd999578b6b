"""rlblocks-buffers registers its samplers and the numpy segment trees as a plugin."""

from __future__ import annotations

import importlib.metadata

import pytest

import rlblocks.core as rc
from rlblocks.buffers import (
    NumpyMinSegmentTree,
    NumpySumSegmentTree,
    PrioritizedSampler,
    RandomSampler,
    SamplerWithoutReplacement,
    SliceSampler,
)


def test_entry_point_is_declared_and_loads():
    (ep,) = [
        ep
        for ep in importlib.metadata.entry_points(group="rlblocks")
        if ep.dist is not None and ep.dist.name == "rlblocks-buffers"
    ]
    assert ep.value == "rlblocks.buffers._plugin"
    assert hasattr(ep.load(), "rlblocks_samplers")


def test_samplers_are_registered_by_name():
    found = {c.name: c for c in rc.list_components("sampler")}
    for name in ("random", "without_replacement", "prioritized", "slice"):
        assert found[name].distribution == "rlblocks-buffers"
    assert isinstance(rc.make_sampler("random"), RandomSampler)
    assert rc.make_sampler("without_replacement", drop_last=True).drop_last
    sampler = rc.make_sampler("prioritized", max_capacity=8, alpha=0.6, beta=0.4)
    assert isinstance(sampler, PrioritizedSampler) and sampler.max_capacity == 8
    assert isinstance(rc.make_sampler("slice", slice_len=4), SliceSampler)
    assert isinstance(rc.make_sampler("without_replacement"), SamplerWithoutReplacement)
    with pytest.raises(rc.UnknownComponentError, match="Did you mean 'prioritized'"):
        rc.make_sampler("prioritised")


def test_numpy_segment_tree_provider_is_registered():
    assert "numpy" in rc.list_segment_tree_providers()
    provider = rc.segment_tree_provider("numpy")
    assert provider.priority == 0
    assert provider.sum_tree is NumpySumSegmentTree and provider.min_tree is NumpyMinSegmentTree
    active = rc.active_segment_tree_provider()
    assert rc.segment_tree_provider().priority >= 0 and active in rc.list_segment_tree_providers()
