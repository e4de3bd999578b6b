"""rlblocks-collectors (skeleton: its content arrives with its own issue)."""

from __future__ import annotations

from rlblocks.collectors._version import __version__

__all__ = ["__version__"]
