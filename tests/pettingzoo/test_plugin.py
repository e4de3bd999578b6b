"""The installed rlblocks-pettingzoo distribution registers the ``pettingzoo`` backend."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import torch

from rlblocks.core import get_component, list_env_backends, make_env, plugin_failures
from rlblocks.pettingzoo import PettingZooEnv, __version__, list_tasks

DIST = "rlblocks-pettingzoo"


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
    assert (entry.name, entry.value) == ("pettingzoo", "rlblocks.pettingzoo._plugin")
    assert set(entry.load().rlblocks_env_backends()) == {"pettingzoo"}
    assert importlib.metadata.version(DIST) == __version__


def test_backend_is_registered_by_the_distribution():
    assert "pettingzoo" in list_env_backends()
    info = get_component("env_backend", "pettingzoo")
    assert (info.distribution, info.plugin, info.version) == (DIST, "pettingzoo", __version__)
    assert not [f for f in plugin_failures() if f.distribution == DIST]


def test_make_env_builds_parallel_and_turn_based_tasks():
    spread = make_env("pettingzoo:mpe2.simple_spread_v3", N=2, max_cycles=10)
    game = make_env("pettingzoo:classic.tictactoe_v3")
    forced = make_env("pettingzoo:mpe2.simple_spread_v3", parallel=False, N=2)
    try:
        assert isinstance(spread, PettingZooEnv) and spread.parallel  # parallel by default
        assert spread.group_map == {"agents": ["agent_0", "agent_1"]}
        assert spread.rollout(12, break_when_any_done=False)["next", "done"].sum() == 1
        assert isinstance(game, PettingZooEnv) and not game.parallel  # AEC only
        assert not forced.parallel
        traj = game.rollout(9)
        assert traj["next", "done"][-1].item()
        assert traj["agents", "action"].shape[-1] == 2
    finally:
        for env in (spread, game, forced):
            env.close()


def test_pettingzoo_prefix_and_seed_argument():
    a = make_env("pettingzoo:pettingzoo.classic.tictactoe_v3")
    assert a.group_map == {"agents": ["player_1", "player_2"]}
    b = PettingZooEnv("mpe2.simple_spread_v3", N=2, seed=5)
    c = PettingZooEnv("mpe2.simple_spread_v3", N=2, seed=5)
    assert torch.equal(b.reset()["agents", "observation"], c.reset()["agents", "observation"])


def test_list_tasks():
    tasks = list_tasks()
    assert {"mpe2.simple_spread_v3", "classic.tictactoe_v3", "classic.connect_four_v3"} <= set(
        tasks
    )
    assert tasks == sorted(tasks)
    assert all(t.startswith("mpe2.") for t in list_tasks("mpe2"))
    assert "classic.rps_v2" in list_tasks("classic")


def test_loading_the_plugin_imports_no_pettingzoo():
    result = run_python(
        "import sys; from rlblocks.core import list_env_backends\n"
        "assert 'pettingzoo' in list_env_backends()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pettingzoo', 'mpe2', 'pygame')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_rlblocks_plugins_lists_the_backend():
    result = run([str(Path(sys.executable).with_name("rlblocks")), "plugins"])
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["env_backend", "pettingzoo", DIST, __version__, "pettingzoo"] in rows


def test_autoload_switch_turns_the_backend_off():
    result = run_python(
        "from rlblocks.core import list_env_backends; print(list_env_backends())",
        RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    assert result.returncode == 0, result.stderr
    assert "pettingzoo" not in result.stdout
