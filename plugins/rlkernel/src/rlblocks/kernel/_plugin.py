"""Registers the compiled segment trees through the ``rlblocks`` entry point."""

from __future__ import annotations

from collections.abc import Mapping

from rlblocks.core import SegmentTreeProvider, hookimpl


@hookimpl
def rlblocks_segment_tree_providers() -> Mapping[str, SegmentTreeProvider]:
    from rlblocks.kernel import PROVIDER_NAME, MinSegmentTree, SumSegmentTree

    return {
        PROVIDER_NAME: SegmentTreeProvider(
            sum_tree=SumSegmentTree,
            min_tree=MinSegmentTree,
            priority=100,
            description="compiled C++ segment trees (rlblocks-kernel)",
        )
    }
