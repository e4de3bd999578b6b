"""Development sessions for the rlblocks monorepo.

    python3 -m nox -s tests standalone plugins ray interop faults lint    # what CI runs

Sessions use uv (``pip install uv``) when it is installed, else venv and pip. PyTorch is
installed first and pinned, because a bare ``torch`` requirement pulls a multi-GB CUDA
build. The default is the CPU build ``torch==2.13.0`` (found in ``PIP_FIND_LINKS`` or
``RLBLOCKS_FIND_LINKS`` folders where a machine keeps it); override it with
``RLBLOCKS_TORCH_SPEC`` (e.g. ``"torch==2.13.0"`` with
``RLBLOCKS_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu`` on a machine where PyPI would
serve a CUDA wheel, or ``"torch>=2.4"`` to use whatever you have).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
TORCH_SPEC = os.environ.get("RLBLOCKS_TORCH_SPEC", "torch==2.13.0")
TORCH_INDEX_URL = os.environ.get("RLBLOCKS_TORCH_INDEX_URL", "")
# Folders of local wheels (e.g. a CPU build of torch) that pip finds through PIP_FIND_LINKS;
# uv reads no pip setting, so they are passed to it explicitly.
FIND_LINKS = os.environ.get("RLBLOCKS_FIND_LINKS", os.environ.get("PIP_FIND_LINKS", "")).split()

# uv creates venvs and installs (torch included, hard-linked from its cache) in seconds where
# venv + pip take minutes per session; nox falls back to venv where uv is not installed.
nox.options.default_venv_backend = "uv|venv"
nox.options.sessions = ["tests", "standalone", "plugins", "ray", "interop", "faults", "lint"]
nox.options.error_on_missing_interpreters = True

# The distributions of the tree: name -> folder. Plugins are picked up from plugins/*.
PACKAGES = {
    "core": "packages/rlcore",
    "envs": "packages/rlenvs",
    "buffers": "packages/rlbuffers",
    "objectives": "packages/rlobjectives",
    "collectors": "packages/rlcollectors",
}
# Test-only plugin distributions: the real entry-point path needs them installed.
TEST_FIXTURE_PLUGINS = [
    "tests/fixtures/plugins/good",
    "tests/fixtures/plugins/broken",
    "tests/fixtures/plugins/exits",
]
# Plugins whose tests need a heavy simulator or service run in their own session instead.
OWN_SESSION_PLUGINS: set[str] = set()
# Test folders that need a service of their own (a local Ray instance) run in their own session.
OWN_SESSION_TESTS = ["tests/collectors/ray", "tests/envs/interop", "tests/faults"]


def _pyproject(folder: str) -> dict:
    return tomllib.loads((ROOT / folder / "pyproject.toml").read_text())


def _plugin_folders() -> list[str]:
    return sorted(str(p.parent.relative_to(ROOT)) for p in ROOT.glob("plugins/*/pyproject.toml"))


def _local_dists() -> dict[str, str]:
    """Distribution name -> folder, for every distribution in the tree."""
    folders = list(PACKAGES.values()) + _plugin_folders()
    return {_pyproject(f)["project"]["name"]: f for f in folders}


def _requirement_name(requirement: str) -> tuple[str, list[str]]:
    match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(\[([^\]]*)\])?", requirement)
    assert match, requirement
    extras = [e.strip() for e in (match.group(3) or "").split(",") if e.strip()]
    return match.group(1).lower().replace("_", "-"), extras


def _local_closure(folder: str, extras: list[str]) -> dict[str, set[str]]:
    """``folder`` and every in-tree distribution it needs, each with the extras it needs.

    pip cannot find rlblocks-core & co. on PyPI, so in-tree dependencies (also those reached
    through extras, like ``rlblocks-buffers[kernel]``) are given to pip as folders.
    """
    local = _local_dists()
    found: dict[str, set[str]] = {}

    def visit(path: str, wanted: list[str]) -> None:
        project = _pyproject(path)["project"]
        new = set(wanted) - found.get(path, set())
        if path in found and not new:
            return
        found.setdefault(path, set()).update(wanted)
        requirements = list(project.get("dependencies", []))
        for extra in wanted:
            requirements += project.get("optional-dependencies", {}).get(extra, [])
        for requirement in requirements:
            name, sub_extras = _requirement_name(requirement)
            if name in local:
                visit(local[name], sub_extras)

    visit(folder, extras)
    return found


def _pip_args(closure: dict[str, set[str]]) -> list[str]:
    # A folder with extras is also given plain: otherwise pip's resolver does not match a
    # sibling's plain "rlblocks-envs>=..." requirement to "folder[extras]" and looks on PyPI.
    args = []
    for path, extras in closure.items():
        args.append(str(ROOT / path))
        if extras:
            args.append(f"{ROOT / path}[{','.join(sorted(extras))}]")
    return args


def _setup(session: nox.Session) -> None:
    """What every session with torch starts with: bytecode caching on, then torch."""
    # A machine may set PYTHONDONTWRITEBYTECODE (this one does): then every process
    # (pytest workers, example subprocesses, Ray workers) compiles torch's Python sources
    # again, ~3 s each. The session's venv is ours to write .pyc files into.
    session.env["PYTHONDONTWRITEBYTECODE"] = ""
    _install_torch(session)


def _install_torch(session: nox.Session) -> None:
    args = [TORCH_SPEC]
    if TORCH_INDEX_URL:
        args += ["--index-url", TORCH_INDEX_URL]
    if session.venv_backend == "uv":
        for folder in FIND_LINKS:
            args += ["--find-links", folder]
    session.install(*args)


def _pytest(session: nox.Session, *paths: str, own_session_tests: bool = False) -> None:
    # One pytest-xdist worker per core, except for the tests that start a service of their
    # own (a Ray instance per worker would only compete for the cores).
    ignored = [] if own_session_tests else [f"--ignore={p}" for p in OWN_SESSION_TESTS]
    workers = [] if own_session_tests else ["-n", "auto"]
    session.run("python", "-m", "pytest", *workers, *paths, *ignored, *session.posargs)


def _merged_closure(folders: list[tuple[str, list[str]]]) -> dict[str, set[str]]:
    closure: dict[str, set[str]] = {}
    for folder, extras in folders:
        for path, needed in _local_closure(folder, extras).items():
            closure.setdefault(path, set()).update(needed)
    return closure


# What the examples need beyond the packages (tests/examples runs them in the tests session),
# and the extras of plugins they use (qmix_pettingzoo.py runs MPE tasks, the offline examples
# record Minari datasets).
EXAMPLE_REQUIREMENTS = ["matplotlib>=3.8", "tqdm>=4.66"]
EXAMPLE_PLUGIN_EXTRAS = {"rlpettingzoo": ["mpe"], "rlminari": ["create"]}
EXAMPLE_PACKAGE_EXTRAS = {PACKAGES["collectors"]: ["ray"]}  # impala.py --collector ray


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Every package and plugin installed together: the tests that span distributions
    (the examples, the layout and import-cycle checks).

    Each package's own tests run in its ``standalone`` session and each plugin's in its
    ``plugins`` session, which install exactly what they declare; running them here again
    would only double CI time (``nox -s tests -- tests/envs`` runs a folder here anyway).
    """
    _setup(session)
    folders = [(f, ["test", *EXAMPLE_PACKAGE_EXTRAS.get(f, [])]) for f in PACKAGES.values()]
    folders += [
        (f, EXAMPLE_PLUGIN_EXTRAS.get(Path(f).name, []))
        for f in _plugin_folders()
        if Path(f).name not in OWN_SESSION_PLUGINS
    ]
    session.install(
        *_pip_args(_merged_closure(folders)),
        *(str(ROOT / f) for f in TEST_FIXTURE_PLUGINS),
        *EXAMPLE_REQUIREMENTS,
    )
    if session.posargs:
        session.run("python", "-m", "pytest", "-n", "auto", *session.posargs)
        return
    elsewhere = [f"tests/{name}" for name in PACKAGES]
    elsewhere += [f"tests/{_plugin_module(folder)}" for folder in _plugin_folders()]
    _pytest(session, "tests", *(f"--ignore={path}" for path in elsewhere))


@nox.session(python="3.11")
@nox.parametrize("package", list(PACKAGES))
def standalone(session: nox.Session, package: str) -> None:
    """One package with only its declared dependencies; only its own tests.

    This is what proves that each distribution installs and works alone.
    """
    _setup(session)
    closure = _local_closure(PACKAGES[package], ["test"])
    fixtures = [str(ROOT / f) for f in TEST_FIXTURE_PLUGINS] if package == "core" else []
    session.install(*_pip_args(closure), *fixtures)
    # The tests of this package must not lean on a sibling that it does not declare.
    expected = sorted(_pyproject(path)["project"]["name"] for path in closure)
    session.run("python", str(ROOT / "tests" / "installed_rlblocks.py"), *expected)
    _pytest(session, f"tests/{package}")


def _plugin_module(folder: str) -> str:
    (module,) = [p.name for p in (ROOT / folder / "src" / "rlblocks").iterdir() if p.is_dir()]
    return module


PLUGINS = {Path(f).name: f for f in _plugin_folders()}


@nox.session(python="3.11")
@nox.parametrize("plugin", sorted(PLUGINS))
def plugins(session: nox.Session, plugin: str) -> None:
    """One plugin built from source with its dependencies and ``test`` extra; its own tests."""
    _setup(session)
    session.install(*_pip_args(_local_closure(PLUGINS[plugin], ["test"])))
    _pytest(session, f"tests/{_plugin_module(PLUGINS[plugin])}")


@nox.session(python="3.11")
def ray(session: nox.Session) -> None:
    """RayCollector and RayReplayBuffer against a local Ray instance."""
    _setup(session)
    wanted = [(PACKAGES["collectors"], ["ray", "test"]), (PACKAGES["buffers"], ["ray"])]
    session.install(*_pip_args(_merged_closure(wanted)))
    _pytest(session, "tests/collectors/ray", own_session_tests=True)


@nox.session(python="3.11")
def interop(session: nox.Session) -> None:
    """rlblocks envs exported with ``to_gymnasium`` train with Stable-Baselines3; policies
    exported with ``export_policy`` to ONNX run in onnxruntime."""
    _setup(session)
    closure = _local_closure(PACKAGES["envs"], ["test", "onnx"])
    session.install(*_pip_args(closure), "stable-baselines3>=2.3", "onnxruntime>=1.17")
    _pytest(session, "tests/envs/interop", own_session_tests=True)


@nox.session(python="3.11")
def faults(session: nox.Session) -> None:
    """The fault-injection suite: killed, hung and interrupted processes, corrupt and
    truncated checkpoints, a full disk, writes that cannot complete. Serial: its scenarios
    time how long processes take to notice each other."""
    _setup(session)
    folders = [(f, ["test"]) for f in PACKAGES.values()]
    folders += [(f, []) for f in _plugin_folders() if Path(f).name not in OWN_SESSION_PLUGINS]
    session.install(*_pip_args(_merged_closure(folders)))
    _pytest(session, "tests/faults", own_session_tests=True)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff==0.17.6")  # pinned: formatting changes between releases
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def _install_everything(
    session: nox.Session,
    *extra: str,
    kernel: bool = False,
    dmcontrol: bool = False,
    multiagent: bool = False,
    offline: bool = False,
    atari: bool = False,
) -> None:
    """torch, then every package of the tree (with the gymnasium backend, and the compiled
    kernel, the dm_control plugin, the multi-agent backends, the dataset formats and the
    Atari plugin if asked), then ``extra``."""
    _setup(session)
    folders = [(f, []) for f in PACKAGES.values()] + [(PACKAGES["envs"], ["gymnasium"])]
    if kernel:
        folders.append((PACKAGES["buffers"], ["kernel"]))
    if dmcontrol:
        folders.append((PLUGINS["rldmcontrol"], []))
    if multiagent:
        folders += [(PLUGINS["rlvmas"], []), (PLUGINS["rlpettingzoo"], ["mpe"])]
    if offline:
        folders += [(PLUGINS["rlminari"], ["create"]), (PLUGINS["rld4rl"], [])]
    if atari:
        folders.append((PLUGINS["rlatari"], []))
    session.install(*_pip_args(_merged_closure(folders)), *EXAMPLE_REQUIREMENTS, *extra)


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The main job: PPO learns CartPole-v1 (progress bar, final return, run folder)."""
    _install_everything(session)
    session.run("python", "examples/ppo.py", "--env-id", "CartPole-v1", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Every benchmarks/*.py; their figures next to their targets in benchmarks/RESULTS.md.

    The compiled kernel is built too (the buffers benchmark compares it with the numpy
    fallback), the dm_control plugin (its benchmark compares it with bare dm_control), the
    Atari plugin (against gymnasium's Atari wrappers, which resize with OpenCV), and
    Stable-Baselines3 and cpprb are the references measured in the same run.
    ``nox -s bench -- envs.py buffers.py`` re-runs some scripts and keeps the other sections.
    """
    _install_everything(
        session,
        "stable-baselines3>=2.3",
        "cpprb==11.0.0",
        "opencv-python-headless>=4.8",
        kernel=True,
        dmcontrol=True,
        multiagent=True,
        offline=True,
        atari=True,
    )
    session.run("python", "benchmarks/run_all.py", *session.posargs, env={"MUJOCO_GL": "disable"})
