"""The plugin system, exercised through real installed entry points.

The distributions under tests/fixtures/plugins must be installed (the nox sessions do):
``rlblocks-testplugin-good`` registers one component of every kind, and
``rlblocks-testplugin-broken`` has one plugin that fails to import and one whose hook raises,
and ``rlblocks-testplugin-exits`` one that calls ``sys.exit(3)`` at import and one whose hook
calls ``sys.exit("...")``.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import rlblocks.core as rc
from rlblocks.core import (
    PluginConflictError,
    PluginError,
    PluginLoadWarning,
    UnknownComponentError,
    hookimpl,
)

GOOD = "rlblocks-testplugin-good"
BROKEN = "rlblocks-testplugin-broken"
EXITS = "rlblocks-testplugin-exits"


@pytest.fixture(autouse=True)
def fresh_registry():
    """Each test starts from a fresh discovery and leaves no manual registration behind."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        rc.load_plugins(reload=True)
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        rc.load_plugins(reload=True)


def test_fixture_plugins_are_installed():
    # Without them this module would test nothing real: fail, don't skip.
    for dist in (GOOD, BROKEN, EXITS):
        assert importlib.metadata.version(dist) == "0.0.1", f"{dist} must be installed"


def test_entry_point_components_are_discovered_with_their_distribution():
    by_kind = {c.kind: c for c in rc.list_components() if c.distribution == GOOD}
    assert set(by_kind) == {"env_backend", "loss", "sampler", "logger", "segment_tree", "dataset"}
    loss = by_kind["loss"]
    assert (loss.name, loss.plugin, loss.version) == ("toy_loss", "testplugin_good", "0.0.1")
    assert "toy" in rc.list_env_backends()
    assert "toy_loss" in rc.list_losses()
    assert "toy_sampler" in rc.list_samplers()
    assert "toy_logger" in rc.list_loggers()
    assert "toy_tree" in rc.list_segment_tree_providers()
    assert "toy_data" in rc.list_dataset_formats()


def test_core_loggers_are_registered_as_plugins():
    loggers = {c.name: c for c in rc.list_components("logger")}
    assert {"csv", "tensorboard", "wandb"} <= set(loggers)
    assert loggers["csv"].distribution == "rlblocks-core"


def test_make_functions_build_the_registered_components():
    env = rc.make_env("toy:Corridor-v0", size=3)
    assert (type(env).__name__, env.env_id, env.kwargs) == ("ToyEnv", "Corridor-v0", {"size": 3})
    assert rc.make_loss("toy_loss", gamma=0.9).kwargs == {"gamma": 0.9}
    assert rc.make_sampler("toy_sampler", alpha=0.6).kwargs == {"alpha": 0.6}
    assert rc.make_logger("toy_logger", exp_name="x").kwargs == {"exp_name": "x"}
    data = rc.make_dataset("toy_data:pendulum/medium-v0", batch_size=8)
    assert (data.dataset_id, data.kwargs) == ("pendulum/medium-v0", {"batch_size": 8})


def reload_warnings(lookup, *plugins: str) -> tuple[list[list[str]], object]:
    """Reload the plugins, run ``lookup()``; the warnings naming each of ``plugins``, and
    what ``lookup`` returned."""
    with pytest.warns(PluginLoadWarning) as record:
        rc.load_plugins(reload=True)
        result = lookup()
    messages = [str(w.message) for w in record]
    return [[m for m in messages if plugin in m] for plugin in plugins], result


def test_broken_plugins_warn_once_each_and_the_rest_keeps_working():
    (import_failure, hook_failure), losses = reload_warnings(
        rc.list_losses, "testplugin_broken_import", "testplugin_broken_hook"
    )
    assert len(import_failure) == 1 and len(hook_failure) == 1
    assert BROKEN in import_failure[0]
    assert "rlblocks_dependency_that_is_not_installed" in import_failure[0]
    assert "deliberately broken hook" in hook_failure[0]
    assert BROKEN in hook_failure[0]
    # The good plugin and core are unaffected.
    assert "toy_loss" in losses
    assert rc.make_loss("toy_loss").kwargs == {}
    # Reported once: later lookups are silent.
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        rc.list_losses()
        rc.list_env_backends()
    failures = {f.plugin: f for f in rc.plugin_failures()}
    assert {"testplugin_broken_import", "testplugin_broken_hook"} <= set(failures)
    assert failures["testplugin_broken_import"].distribution == BROKEN


def test_plugins_calling_sys_exit_are_reported_and_the_interpreter_survives():
    """Issue 20, item 15: a plugin's sys.exit() used to end the whole interpreter."""
    (at_import, in_hook), samplers = reload_warnings(
        rc.list_samplers, "testplugin_exits_import", "testplugin_exits_hook"
    )
    assert len(at_import) == 1 and len(in_hook) == 1
    assert EXITS in at_import[0] and EXITS in in_hook[0]
    expected = "'rlblocks_testplugin_exits.exits_at_import' called sys.exit(3) (exit code 3)"
    assert expected in at_import[0]
    assert "rlblocks_samplers() called sys.exit('deliberate exit from a hook')" in in_hook[0]
    # Every other plugin still works, the good one's sampler included.
    assert "toy_sampler" in samplers
    assert rc.make_sampler("toy_sampler", alpha=0.6).kwargs == {"alpha": 0.6}
    assert "toy_loss" in rc.list_losses()
    failures = {f.plugin: f for f in rc.plugin_failures()}
    assert failures["testplugin_exits_import"].distribution == EXITS
    # Reported once: later lookups are silent.
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        rc.list_samplers()


def test_a_plugin_calling_sys_exit_does_not_end_a_fresh_process():
    code = "import rlblocks.core as rc; rc.list_losses(); print('still running')"
    env = {k: v for k, v in os.environ.items() if k != "RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert (result.returncode, result.stdout) == (0, "still running\n"), result.stderr


def test_two_plugins_claiming_one_name_raise_naming_both_distributions():
    class Duplicate:
        @hookimpl
        def rlblocks_losses(self):
            return {"toy_loss": object}

    rc.register_plugin(Duplicate(), "duplicate", distribution="my-duplicate-dist")
    with pytest.raises(PluginConflictError) as info:
        rc.make_loss("toy_loss")
    assert GOOD in str(info.value)
    assert "my-duplicate-dist" in str(info.value)
    assert "'toy_loss'" in str(info.value)
    # Other kinds are unaffected, and removing the culprit heals the loss registry.
    assert "toy_sampler" in rc.list_samplers()
    rc.unregister_plugin("duplicate")
    assert "toy_loss" in rc.list_losses()


def test_unknown_name_suggests_close_matches_and_lists_installed():
    with pytest.raises(UnknownComponentError) as info:
        rc.make_loss("toy_los")
    message = str(info.value)
    assert "Did you mean 'toy_loss'?" in message
    assert "Installed losses:" in message and "toy_loss" in message
    assert isinstance(info.value, LookupError)
    with pytest.raises(UnknownComponentError, match="Installed env backends: .*toy"):
        rc.make_env("nonexistent:Foo-v0")


def test_make_env_needs_backend_and_id():
    with pytest.raises(ValueError, match="'<backend>:<env_id>'.*'CartPole-v1'"):
        rc.make_env("CartPole-v1")


def test_make_dataset_needs_format_and_id_and_names_installed_formats():
    with pytest.raises(ValueError, match="'<format>:<dataset_id>'.*'hopper-v2'.*toy_data"):
        rc.make_dataset("hopper-v2")
    with pytest.raises(UnknownComponentError, match="Installed dataset formats: .*toy_data"):
        rc.make_dataset("nonexistent:hopper-v2")


def test_make_env_errors_from_the_backend_name_the_request():
    with pytest.raises(ValueError, match="has no env 'Nope-v0'") as info:
        rc.make_env("toy:Nope-v0", size=2)
    assert any("'toy:Nope-v0'" in note and "size" in note for note in info.value.__notes__)


def test_manual_registration_rejects_unknown_hooks_and_taken_names():
    class Typo:
        @hookimpl
        def rlblocks_loss(self):  # missing "es"
            return {}

    with pytest.raises(PluginError, match="unknown hook.*rlblocks_losses"):
        rc.register_plugin(Typo(), "typo")

    class Fine:
        @hookimpl
        def rlblocks_samplers(self):
            return {"fine": object}

    with pytest.raises(
        PluginError, match="already used by distribution 'rlblocks-testplugin-good'"
    ):
        rc.register_plugin(Fine(), "testplugin_good")


def test_hook_returning_non_mapping_is_reported_not_fatal():
    class Wrong:
        @hookimpl
        def rlblocks_samplers(self):
            return ["not", "a", "mapping"]

    rc.register_plugin(Wrong(), "wrong", distribution="wrong-dist")
    with pytest.warns(PluginLoadWarning, match="wrong-dist.*must return a mapping"):
        samplers = rc.list_samplers()
    assert "toy_sampler" in samplers


def test_autoload_switch_keeps_only_core(monkeypatch):
    monkeypatch.setenv("RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)  # nothing broken gets loaded either
        rc.load_plugins(reload=True)
        assert rc.list_env_backends() == []
        assert rc.list_losses() == []
        assert {"csv", "tensorboard", "wandb"} == set(rc.list_loggers())
    with pytest.raises(UnknownComponentError, match="no env backends are installed.*pip install"):
        rc.make_env("toy:Corridor-v0")


def test_segment_tree_provider_selection(monkeypatch):
    providers = {c.name: c.obj for c in rc.list_components("segment_tree")}
    best = max(providers, key=lambda n: (providers[n].priority, n))
    assert rc.active_segment_tree_provider() == best
    assert rc.segment_tree_provider() is providers[best]
    monkeypatch.setenv("RLBLOCKS_SEGMENT_TREE", "toy_tree")
    assert rc.active_segment_tree_provider() == "toy_tree"
    tree = rc.segment_tree_provider().sum_tree(4)
    assert tree.capacity == 4
    monkeypatch.setenv("RLBLOCKS_SEGMENT_TREE", "toy_tre")
    with pytest.raises(UnknownComponentError, match="Did you mean 'toy_tree'"):
        rc.active_segment_tree_provider()


def _rlblocks_command() -> str:
    script = Path(sys.executable).with_name("rlblocks")
    assert script.exists(), f"console script missing next to {sys.executable}"
    return str(script)


def test_cli_lists_components_with_distribution_and_version_and_failures():
    env = {k: v for k, v in os.environ.items() if k != "RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD"}
    result = subprocess.run(
        [_rlblocks_command(), "plugins"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "DISTRIBUTION", "VERSION", "PLUGIN"]
    assert any(
        line.split() == ["loss", "toy_loss", GOOD, "0.0.1", "testplugin_good"] for line in lines
    )
    assert any(line.split()[:3] == ["logger", "csv", "rlblocks-core"] for line in lines)
    assert "segment tree in use:" in result.stdout
    assert "failed to load" in result.stdout and "testplugin_broken_import" in result.stdout
    assert "Warning" not in result.stderr  # failures are in the report, not as warnings


def test_cli_with_autoload_disabled_shows_only_core():
    env = dict(os.environ, RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD="1")
    result = subprocess.run(
        [_rlblocks_command(), "plugins"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert GOOD not in result.stdout
    assert "rlblocks-core" in result.stdout
