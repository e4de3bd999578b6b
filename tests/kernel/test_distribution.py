"""rlblocks-kernel as an installed distribution."""

from __future__ import annotations

import importlib.metadata
import importlib.resources

import rlblocks.kernel


def test_version_matches_metadata():
    assert rlblocks.kernel.__version__ == importlib.metadata.version("rlblocks-kernel")
    assert rlblocks.kernel._core.__version__ == rlblocks.kernel.__version__


def test_public_api_is_declared():
    assert [name for name in rlblocks.kernel.__all__ if not hasattr(rlblocks.kernel, name)] == []


def test_py_typed_and_stubs_are_shipped():
    files = importlib.resources.files("rlblocks.kernel")
    assert files.joinpath("py.typed").is_file() and files.joinpath("_core.pyi").is_file()
