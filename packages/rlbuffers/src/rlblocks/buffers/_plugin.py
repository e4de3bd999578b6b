"""rlblocks-buffers' components, registered through the ``rlblocks`` entry point."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import SegmentTreeProvider, hookimpl


@hookimpl
def rlblocks_samplers() -> Mapping[str, Callable[..., Any]]:
    from rlblocks.buffers import (
        PrioritizedSampler,
        RandomSampler,
        SamplerWithoutReplacement,
        SliceSampler,
    )

    return {
        "random": RandomSampler,
        "without_replacement": SamplerWithoutReplacement,
        "prioritized": PrioritizedSampler,
        "slice": SliceSampler,
    }


@hookimpl
def rlblocks_segment_tree_providers() -> Mapping[str, SegmentTreeProvider]:
    from rlblocks.buffers._segment_tree import NUMPY_PROVIDER

    return {"numpy": NUMPY_PROVIDER}
