"""The installed rlblocks-dmcontrol distribution registers the ``dm_control`` backend."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import torch

from rlblocks.core import get_component, list_env_backends, make_env, plugin_failures
from rlblocks.dmcontrol import DMControlEnv, __version__

DIST = "rlblocks-dmcontrol"


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD"}
    environ.update(env)
    return subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=120)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-c", code], **env)


def test_entry_point_is_declared_and_loads():
    (entry,) = [
        ep
        for ep in importlib.metadata.entry_points(group="rlblocks")
        if ep.dist is not None and ep.dist.name == DIST
    ]
    assert (entry.name, entry.value) == ("dmcontrol", "rlblocks.dmcontrol._plugin")
    assert set(entry.load().rlblocks_env_backends()) == {"dm_control"}
    assert importlib.metadata.version(DIST) == __version__


def test_backend_is_registered_by_the_distribution():
    assert "dm_control" in list_env_backends()
    info = get_component("env_backend", "dm_control")
    assert (info.distribution, info.plugin, info.version) == (DIST, "dmcontrol", __version__)
    assert not [f for f in plugin_failures() if f.distribution == DIST]


def test_make_env_builds_and_rolls_out_a_real_task():
    env = make_env("dm_control:cartpole/swingup", frame_skip=2, task_kwargs={"random": 0})
    try:
        assert isinstance(env, DMControlEnv)
        assert (env.domain, env.task, env.frame_skip) == ("cartpole", "swingup", 2)
        traj = env.rollout(20)
        assert traj.batch_size == torch.Size([20])
        assert traj["next", "reward"].sum() > 0
    finally:
        env.close()


def test_loading_the_plugin_imports_neither_dm_control_nor_opengl():
    result = run_python(
        "import sys; from rlblocks.core import list_env_backends\n"
        "assert 'dm_control' in list_env_backends()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dm_control', 'mujoco', 'OpenGL', 'glfw')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_rlblocks_plugins_lists_the_backend():
    result = run([str(Path(sys.executable).with_name("rlblocks")), "plugins"])
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["env_backend", "dm_control", DIST, __version__, "dmcontrol"] in rows


def test_autoload_switch_turns_the_backend_off():
    result = run_python(
        "from rlblocks.core import list_env_backends; print(list_env_backends())",
        RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    assert result.returncode == 0, result.stderr
    assert "dm_control" not in result.stdout
