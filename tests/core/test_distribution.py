"""rlblocks-core as an installed distribution."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import subprocess
import sys

import rlblocks.core

SIBLINGS = {
    "rlblocks.envs": "rlblocks-envs",
    "rlblocks.buffers": "rlblocks-buffers",
    "rlblocks.objectives": "rlblocks-objectives",
    "rlblocks.collectors": "rlblocks-collectors",
}


def test_version_matches_metadata():
    assert rlblocks.core.__version__ == importlib.metadata.version("rlblocks-core")


def test_public_api_is_declared():
    missing = [name for name in rlblocks.core.__all__ if not hasattr(rlblocks.core, name)]
    assert missing == []


def test_py_typed_is_shipped():
    assert importlib.resources.files("rlblocks.core").joinpath("py.typed").is_file()


def test_rlblocks_is_a_namespace_package():
    import rlblocks

    assert getattr(rlblocks, "__file__", None) is None  # PEP 420: no rlblocks/__init__.py


def test_siblings_import_exactly_when_installed():
    # In the core-only venv (nox -s standalone-core) every sibling must be missing.
    installed = {d.metadata["Name"] for d in importlib.metadata.distributions()}
    for module, dist in SIBLINGS.items():
        code = f"import {module}"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if dist in installed:
            assert result.returncode == 0, result.stderr
        else:
            assert f"ModuleNotFoundError: No module named '{module}'" in result.stderr


def test_importing_core_loads_no_sibling_and_no_plugin():
    code = (
        "import sys, rlblocks.core; "
        "print(sorted(m for m in sys.modules if m.startswith(('rlblocks.', 'rlblocks_'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = eval(out.stdout)
    assert all(m.startswith("rlblocks.core") for m in loaded), loaded
    assert importlib.util.find_spec("rlblocks.core.loggers") is not None
