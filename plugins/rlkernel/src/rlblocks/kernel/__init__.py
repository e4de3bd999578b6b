"""rlblocks-kernel: compiled sum- and min-segment trees for prioritized replay.

The trees live in the compiled module ``rlblocks.kernel._core`` (C++ with pybind11, numpy
buffers only, so one build serves every torch version). Installing this distribution
registers them as the segment-tree provider ``"kernel"``, with a higher priority than
rlblocks-buffers' numpy fallback; ``rlblocks.core.active_segment_tree_provider()`` says which
one prioritized samplers use, and ``RLBLOCKS_SEGMENT_TREE=numpy`` picks the fallback.

Importing this package fails if the compiled module is missing, so a broken install shows
up as a plugin-load warning (and the numpy fallback) rather than silently.
"""

from __future__ import annotations

from rlblocks.kernel._core import MinSegmentTree, SumSegmentTree
from rlblocks.kernel._version import __version__

__all__ = ["__version__", "SumSegmentTree", "MinSegmentTree", "PROVIDER_NAME"]

PROVIDER_NAME = "kernel"
"""The name the trees are registered under (``segment_tree_provider("kernel")``)."""
