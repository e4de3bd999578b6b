"""The monorepo keeps the layout and layering rules of DESIGN.md.

Runs in the ``tests`` session (the whole tree); it reads files, so it needs nothing installed.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "core": [],
    "envs": ["core"],
    "buffers": ["core"],
    "objectives": ["core"],
    "collectors": ["core", "envs"],
}
SIBLINGS = set(PACKAGES)
DISTRIBUTION_FOLDERS = sorted(
    p.parent
    for p in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("plugins/*/pyproject.toml")]
)


def imported_rlblocks_packages(source: Path) -> set[str]:
    """The ``rlblocks.<name>`` packages that a file imports at module level or lazily."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "rlblocks" and len(parts) > 1:
                found.add(parts[1])
            if parts[0] == "torchrl":
                found.add("torchrl")
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_imports_only_what_it_may(package):
    src = ROOT / "packages" / f"rl{package}" / "src"
    files = list(src.rglob("*.py"))
    assert files, f"no source under {src}"
    allowed = {package, *PACKAGES[package]}
    for file in files:
        bad = imported_rlblocks_packages(file) & (SIBLINGS | {"torchrl"}) - allowed
        assert not bad, (
            f"{file.relative_to(ROOT)} imports {sorted(bad)}; allowed: {sorted(allowed)}"
        )


def test_plugins_do_not_import_torchrl():
    for file in ROOT.glob("plugins/**/*.py"):
        assert "torchrl" not in imported_rlblocks_packages(file), file


@pytest.mark.parametrize("folder", DISTRIBUTION_FOLDERS, ids=lambda p: p.name)
def test_distribution_layout(folder):
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    assert project["name"].startswith("rlblocks-")
    assert (folder / "README.md").is_file()
    namespace = folder / "src" / "rlblocks"
    assert not (namespace / "__init__.py").exists(), "rlblocks is a PEP 420 namespace"
    (module,) = [p for p in namespace.iterdir() if p.is_dir() and p.name != "__pycache__"]
    for name in ("__init__.py", "py.typed", "_version.py"):
        assert (module / name).is_file(), f"{module / name} is missing"
    init = ast.parse((module / "__init__.py").read_text())
    assert any(
        isinstance(node, ast.Assign)
        and any(getattr(t, "id", "") == "__all__" for t in node.targets)
        for node in init.body
    ), f"{module}/__init__.py has no __all__"


def test_every_test_folder_mirrors_a_package():
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir()} - {
        "fixtures",
        "__pycache__",
    }
    plugin_modules = {p.name for p in ROOT.glob("plugins/*/src/rlblocks/*") if p.is_dir()}
    # Besides one folder per distribution: the examples' tests, the pipelines that span
    # distributions (run by the tests session, which installs them all), and the
    # fault-injection suite, which crosses every package and runs in a nox session of its own.
    expected = SIBLINGS | plugin_modules | {"examples", "integration", "faults"}
    assert folders <= expected, f"unexpected test folders: {sorted(folders - expected)}"
