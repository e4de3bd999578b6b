"""The rlblocks-envs plugin: its entry point loads and registers the gymnasium backend."""

from __future__ import annotations

import importlib.metadata

from rlblocks.core import get_component, list_env_backends, plugin_failures


def test_entry_point_is_declared_and_loads():
    (entry,) = [
        ep
        for ep in importlib.metadata.entry_points(group="rlblocks")
        if ep.dist is not None and ep.dist.name == "rlblocks-envs"
    ]
    assert entry.value == "rlblocks.envs._plugin"
    module = entry.load()
    assert set(module.rlblocks_env_backends()) == {"gymnasium"}


def test_gymnasium_backend_is_registered_by_rlblocks_envs():
    assert "gymnasium" in list_env_backends()
    info = get_component("env_backend", "gymnasium")
    assert info.distribution == "rlblocks-envs" and info.plugin == "envs"
    assert not [f for f in plugin_failures() if f.distribution == "rlblocks-envs"]
