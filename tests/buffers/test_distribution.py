"""rlblocks-buffers as an installed distribution."""

from __future__ import annotations

import importlib.metadata
import importlib.resources

import rlblocks.buffers


def test_version_matches_metadata():
    assert rlblocks.buffers.__version__ == importlib.metadata.version("rlblocks-buffers")


def test_public_api_is_declared():
    assert [name for name in rlblocks.buffers.__all__ if not hasattr(rlblocks.buffers, name)] == []


def test_py_typed_is_shipped():
    assert importlib.resources.files("rlblocks.buffers").joinpath("py.typed").is_file()
