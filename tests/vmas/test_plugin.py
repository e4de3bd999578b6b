"""The installed rlblocks-vmas distribution registers the ``vmas`` backend."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlblocks.core import get_component, list_env_backends, make_env, plugin_failures
from rlblocks.vmas import UnknownScenarioError, VmasEnv, __version__, list_scenarios

DIST = "rlblocks-vmas"


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD"}
    environ.update(env)
    return subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=120)


def test_entry_point_is_declared_and_loads():
    (entry,) = [
        ep
        for ep in importlib.metadata.entry_points(group="rlblocks")
        if ep.dist is not None and ep.dist.name == DIST
    ]
    assert (entry.name, entry.value) == ("vmas", "rlblocks.vmas._plugin")
    assert set(entry.load().rlblocks_env_backends()) == {"vmas"}
    assert importlib.metadata.version(DIST) == __version__


def test_backend_is_registered_by_the_distribution():
    assert "vmas" in list_env_backends()
    info = get_component("env_backend", "vmas")
    assert (info.distribution, info.plugin, info.version) == (DIST, "vmas", __version__)
    assert not [f for f in plugin_failures() if f.distribution == DIST]


def test_make_env_builds_and_rolls_out_a_scenario():
    env = make_env("vmas:navigation", num_envs=3, n_agents=2, seed=0)
    assert isinstance(env, VmasEnv)
    assert env.scenario_name == "navigation"
    assert env.group_map == {"agents": ["agent_0", "agent_1"]}
    traj = env.rollout(4, break_when_any_done=False)
    assert traj.batch_size == torch.Size([3, 4])
    assert traj["next", "agents", "reward"].shape == torch.Size([3, 4, 2, 1])


def test_make_env_suggests_close_scenarios():
    with pytest.raises(UnknownScenarioError, match="Did you mean 'navigation'"):
        make_env("vmas:navigaton", num_envs=2)


def test_make_env_without_num_envs_says_what_to_pass():
    with pytest.raises(TypeError, match=r"needs num_envs=N"):
        make_env("vmas:navigation")


def test_list_scenarios_holds_vmas_mpe_and_debug_scenarios():
    names = list_scenarios()
    assert {"navigation", "simple_tag", "waterfall"} <= set(names)
    assert names == sorted(names)


def test_loading_the_plugin_imports_neither_vmas_nor_pyglet():
    result = run(
        [
            sys.executable,
            "-c",
            "import sys; from rlblocks.core import list_env_backends\n"
            "assert 'vmas' in list_env_backends()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('vmas', 'pyglet', 'gym')))",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_rlblocks_plugins_lists_the_backend():
    result = run([str(Path(sys.executable).with_name("rlblocks")), "plugins"])
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["env_backend", "vmas", DIST, __version__, "vmas"] in rows
