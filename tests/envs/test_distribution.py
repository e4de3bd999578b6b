"""rlblocks-envs as an installed distribution."""

from __future__ import annotations

import importlib.metadata
import importlib.resources

import rlblocks.envs


def test_version_matches_metadata():
    assert rlblocks.envs.__version__ == importlib.metadata.version("rlblocks-envs")


def test_public_api_is_declared():
    assert [name for name in rlblocks.envs.__all__ if not hasattr(rlblocks.envs, name)] == []


def test_py_typed_is_shipped():
    assert importlib.resources.files("rlblocks.envs").joinpath("py.typed").is_file()
