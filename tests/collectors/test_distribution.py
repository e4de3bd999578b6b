"""rlblocks-collectors as an installed distribution."""

from __future__ import annotations

import importlib.metadata
import importlib.resources

import rlblocks.collectors


def test_version_matches_metadata():
    assert rlblocks.collectors.__version__ == importlib.metadata.version("rlblocks-collectors")


def test_public_api_is_declared():
    assert [
        name for name in rlblocks.collectors.__all__ if not hasattr(rlblocks.collectors, name)
    ] == []


def test_py_typed_is_shipped():
    assert importlib.resources.files("rlblocks.collectors").joinpath("py.typed").is_file()
