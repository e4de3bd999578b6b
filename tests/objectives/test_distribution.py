"""rlblocks-objectives as an installed distribution."""

from __future__ import annotations

import importlib.metadata
import importlib.resources

import rlblocks.objectives


def test_version_matches_metadata():
    assert rlblocks.objectives.__version__ == importlib.metadata.version("rlblocks-objectives")


def test_public_api_is_declared():
    assert [
        name for name in rlblocks.objectives.__all__ if not hasattr(rlblocks.objectives, name)
    ] == []


def test_py_typed_is_shipped():
    assert importlib.resources.files("rlblocks.objectives").joinpath("py.typed").is_file()
