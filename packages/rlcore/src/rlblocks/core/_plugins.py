"""Plugin discovery and the component registries built on it.

Plugins are found through the ``rlblocks`` entry-point group the first time a component is
looked up (not at import, which keeps ``import rlblocks.core`` cheap), and registered with
one :class:`pluggy.PluginManager`. rlblocks-core's own loggers are registered the same way
but always, like pytest's built-in plugins, so ``RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD=1`` still
leaves a usable core.
"""

from __future__ import annotations

import difflib
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import rlblocks.core.hookspecs as hookspecs
from rlblocks.core._segment_tree import SegmentTreeProvider
from rlblocks.core.errors import (
    PluginConflictError,
    PluginError,
    PluginLoadWarning,
    UnknownComponentError,
)

if TYPE_CHECKING:
    import pluggy

__all__ = [
    "ComponentInfo",
    "PluginFailure",
    "KINDS",
    "AUTOLOAD_ENV_VAR",
    "SEGMENT_TREE_ENV_VAR",
    "load_plugins",
    "register_plugin",
    "unregister_plugin",
    "list_components",
    "plugin_failures",
    "get_component",
    "make_env",
    "make_dataset",
    "make_loss",
    "make_sampler",
    "make_logger",
    "list_env_backends",
    "list_dataset_formats",
    "list_losses",
    "list_samplers",
    "list_loggers",
    "list_segment_tree_providers",
    "segment_tree_provider",
    "active_segment_tree_provider",
]

AUTOLOAD_ENV_VAR = "RLBLOCKS_DISABLE_PLUGIN_AUTOLOAD"
SEGMENT_TREE_ENV_VAR = "RLBLOCKS_SEGMENT_TREE"

# kind -> (hook name, plural used in messages, what to install when none is there)
KINDS: dict[str, tuple[str, str, str]] = {
    "env_backend": ("rlblocks_env_backends", "env backends", "rlblocks-envs[gymnasium]"),
    "loss": ("rlblocks_losses", "losses", "rlblocks-objectives"),
    "sampler": ("rlblocks_samplers", "samplers", "rlblocks-buffers"),
    "dataset": ("rlblocks_datasets", "dataset formats", "rlblocks-minari or rlblocks-d4rl"),
    "logger": ("rlblocks_loggers", "loggers", "rlblocks-core"),
    "segment_tree": (
        "rlblocks_segment_tree_providers",
        "segment-tree providers",
        "rlblocks-buffers",
    ),
}


@dataclass(frozen=True)
class _Source:
    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component and where it comes from.

    Attributes:
        kind: One of :data:`KINDS` (``"env_backend"``, ``"loss"``, ...).
        name: The name it is looked up by (``"ppo"``).
        obj: The factory or object the plugin returned.
        plugin: The plugin (entry-point) name that registered it.
        distribution: The installed distribution holding the plugin.
        version: That distribution's version.
    """

    kind: str
    name: str
    obj: Any
    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, or one of whose hooks raised."""

    plugin: str
    distribution: str
    version: str
    error: str


class _Registry:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._pm: pluggy.PluginManager | None = None
        self._sources: dict[str, _Source] = {}
        self._kinds: dict[str, dict[str, ComponentInfo]] = {}
        self.failures: list[PluginFailure] = []

    # -- loading -------------------------------------------------------------------------

    def manager(self) -> pluggy.PluginManager:
        with self._lock:
            if self._pm is None:
                self._pm = self._new_manager()
            return self._pm

    def reset(self) -> None:
        with self._lock:
            self._pm = None
            self._sources.clear()
            self._kinds.clear()
            self.failures.clear()

    def _new_manager(self) -> pluggy.PluginManager:
        import pluggy

        import rlblocks.core._builtin_plugin as _builtin_plugin
        from rlblocks.core._version import __version__

        pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        pm.add_hookspecs(hookspecs)
        self._register(pm, _builtin_plugin, _Source("core", "rlblocks-core", __version__))
        if os.environ.get(AUTOLOAD_ENV_VAR, "").strip() not in ("", "0"):
            return pm
        from importlib.metadata import entry_points

        for ep in entry_points(group=hookspecs.PROJECT_NAME):
            dist = ep.dist
            source = _Source(
                ep.name,
                dist.name if dist is not None else "(unknown distribution)",
                dist.version if dist is not None else "",
            )
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not break the others
                self._fail(source, f"cannot import {ep.value!r}: {type(exc).__name__}: {exc}")
                continue
            except SystemExit as exc:
                self._fail(source, f"importing {ep.value!r} {_describe_exit(exc)}")
                continue
            self._register(pm, plugin, source)
        return pm

    def _register(self, pm: pluggy.PluginManager, plugin: object, source: _Source) -> None:
        import pluggy

        if source.plugin in self._sources:
            other = self._sources[source.plugin]
            self._fail(
                source,
                f"plugin name {source.plugin!r} is already used by distribution "
                f"{other.distribution!r}; rename one of the entry points",
            )
            return
        try:
            pm.register(plugin, name=source.plugin)
            unknown = [
                impl.function.__name__
                for caller in pm.get_hookcallers(plugin) or []
                for impl in caller.get_hookimpls()
                if impl.plugin is plugin and not caller.has_spec()
            ]
            if unknown:
                pm.unregister(plugin)
                known = sorted(n for n in dir(hookspecs) if n.startswith("rlblocks_"))
                raise pluggy.PluginValidationError(
                    plugin, f"unknown hook(s) {unknown}; the known hooks are {known}"
                )
        except (ValueError, pluggy.PluginValidationError) as exc:
            self._fail(source, f"cannot register: {exc}")
            return
        self._sources[source.plugin] = source
        self._kinds.clear()

    def _fail(self, source: _Source, error: str) -> None:
        self.failures.append(
            PluginFailure(source.plugin, source.distribution, source.version, error)
        )
        warnings.warn(
            f"rlblocks plugin {source.plugin!r} from distribution {source.distribution!r} "
            f"{source.version} failed and is skipped ({error}). Every other plugin still "
            f"works; reinstall or uninstall {source.distribution!r} to silence this.",
            PluginLoadWarning,
            stacklevel=4,
        )

    # -- registries ----------------------------------------------------------------------

    def components(self, kind: str) -> dict[str, ComponentInfo]:
        if kind not in KINDS:
            raise ValueError(f"unknown component kind {kind!r}; expected one of {sorted(KINDS)}")
        with self._lock:
            cached = self._kinds.get(kind)
            if cached is not None:
                return cached
            pm = self.manager()
            hook_name = KINDS[kind][0]
            found: dict[str, ComponentInfo] = {}
            # get_hookimpls() lists the latest registration first; keep registration order.
            for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
                source = self._sources[impl.plugin_name]
                try:
                    result = impl.function()
                    if not isinstance(result, Mapping):
                        raise TypeError(f"{hook_name}() must return a mapping, got {result!r}")
                except Exception as exc:
                    self._fail(source, f"{hook_name}() raised {type(exc).__name__}: {exc}")
                    continue
                except SystemExit as exc:
                    self._fail(source, f"{hook_name}() {_describe_exit(exc)}")
                    continue
                for name, obj in result.items():
                    if name in found:
                        first = found[name]
                        raise PluginConflictError(
                            f"two plugins register the {kind} {name!r}: plugin {first.plugin!r} "
                            f"from distribution {first.distribution!r} and plugin "
                            f"{source.plugin!r} from distribution {source.distribution!r}. "
                            f"Uninstall one of them, or rename the component in one."
                        )
                    found[name] = ComponentInfo(
                        kind, name, obj, source.plugin, source.distribution, source.version
                    )
            self._kinds[kind] = found
            return found

    def get(self, kind: str, name: str) -> ComponentInfo:
        found = self.components(kind)
        if name in found:
            return found[name]
        plural, install = KINDS[kind][1], KINDS[kind][2]
        if not found:
            raise UnknownComponentError(
                f"no {plural} are installed, so {name!r} cannot be found. "
                f"Install a distribution that provides them, e.g. pip install '{install}'."
            )
        close = difflib.get_close_matches(name, list(found), n=3, cutoff=0.5)
        hint = f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise UnknownComponentError(
            f"unknown {kind.replace('_', ' ')} {name!r}. {hint}Installed {plural}: "
            f"{', '.join(sorted(found))}. Run `rlblocks plugins` to see where each comes from."
        )


def _describe_exit(exc: SystemExit) -> str:
    """What a plugin's ``sys.exit()`` is reported as: the exit code it asked for.

    A plugin's ``SystemExit`` is a plugin failure like any exception: one plugin must not end
    the interpreter of every program that looks up a component. ``KeyboardInterrupt`` is not
    caught: it is the user asking the whole program to stop, not a fault of the plugin.
    """
    code = exc.code
    if code is None:
        return "called sys.exit() (exit code 0)"
    if isinstance(code, int):
        return f"called sys.exit({code}) (exit code {code})"
    # sys.exit("message") prints the message and exits with code 1.
    return f"called sys.exit({code!r}) (exit code 1)"


_REGISTRY = _Registry()


def load_plugins(*, reload: bool = False) -> None:
    """Discover and register the plugins of the ``rlblocks`` entry-point group.

    Lookups call this on first use; call it yourself to load eagerly, or with
    ``reload=True`` after installing a plugin in a running process. Manually registered
    plugins are forgotten on reload.

    Args:
        reload: Drop everything loaded so far and discover again.
    """
    if reload:
        _REGISTRY.reset()
    _REGISTRY.manager()


def register_plugin(
    plugin: object,
    name: str | None = None,
    *,
    distribution: str | None = None,
    version: str = "",
) -> None:
    """Register a plugin object (a module or an instance with hook methods) by hand.

    Useful in scripts and tests; installed plugins should use an entry point instead.

    Args:
        plugin: Module or object whose ``rlblocks_*`` attributes are decorated with
            :data:`rlblocks.core.hookimpl`.
        name: Plugin name; defaults to the module's or class's name.
        distribution: Shown by ``rlblocks plugins`` and in conflict errors; defaults to
            ``"(registered at runtime)"``.
        version: Version string shown next to the distribution.

    Raises:
        PluginError: ``name`` is taken, or the object implements an unknown hook.
    """
    if name is None:
        name = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__name__
    pm = _REGISTRY.manager()
    before = len(_REGISTRY.failures)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        _REGISTRY._register(
            pm, plugin, _Source(name, distribution or "(registered at runtime)", version)
        )
    if len(_REGISTRY.failures) > before:
        raise PluginError(_REGISTRY.failures.pop().error)


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered under ``name`` (no-op if there is none)."""
    with _REGISTRY._lock:
        pm = _REGISTRY.manager()
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        _REGISTRY._sources.pop(name, None)
        _REGISTRY._kinds.clear()


def list_components(kind: str | None = None) -> list[ComponentInfo]:
    """Return every registered component, or those of one ``kind``, sorted by kind and name."""
    kinds = [kind] if kind is not None else list(KINDS)
    return [c for k in kinds for _, c in sorted(_REGISTRY.components(k).items())]


def plugin_failures() -> list[PluginFailure]:
    """Return the plugins that failed to load or whose hooks raised, in order."""
    _REGISTRY.manager()
    return list(_REGISTRY.failures)


def get_component(kind: str, name: str) -> ComponentInfo:
    """Look up one component.

    Raises:
        UnknownComponentError: Nothing of that kind is named ``name``; the message suggests
            close names and lists the installed ones.
        PluginConflictError: Two plugins claim ``name``.
    """
    return _REGISTRY.get(kind, name)


def _build(kind: str, name: str, call: Callable[[Any], Any], what: str) -> Any:
    factory = get_component(kind, name).obj
    try:
        return call(factory)
    except Exception as exc:
        exc.add_note(f"(raised while making {what})")
        raise


def _build_named_item(
    caller: str, kind: str, given: Any, form: str, example: str, kwargs: dict[str, Any]
) -> Any:
    """``factory(item, **kwargs)`` of the ``kind`` component named before the ``:`` of
    ``given`` (``"<name>:<item>"``, as ``make_env`` and ``make_dataset`` take)."""
    if not isinstance(given, str) or ":" not in given:
        raise ValueError(
            f"{caller} expects '{form}', e.g. '{example}', got {given!r}. "
            f"Installed {KINDS[kind][1]}: {', '.join(_names(kind)) or 'none'}."
        )
    name, item = given.split(":", 1)
    what = kind.removesuffix("_backend")
    return _build(kind, name, lambda f: f(item, **kwargs), f"{what} {given!r} with kwargs {kwargs}")


def make_env(env: str, **kwargs: Any) -> Any:
    """Create an environment from ``"<backend>:<env_id>"``.

    Args:
        env: Backend and environment id, e.g. ``"gymnasium:CartPole-v1"``.
        **kwargs: Passed to the backend's factory.

    Returns:
        The environment the backend builds.

    Raises:
        ValueError: ``env`` has no ``":"``.
        UnknownComponentError: No backend has that name.

    Example:
        >>> env = make_env("gymnasium:CartPole-v1", num_envs=4)
    """
    return _build_named_item(
        "make_env", "env_backend", env, "<backend>:<env_id>", "gymnasium:CartPole-v1", kwargs
    )


def make_dataset(dataset: str, **kwargs: Any) -> Any:
    """Open an offline dataset from ``"<format>:<dataset_id>"`` as a replay buffer.

    Args:
        dataset: Format and dataset id, e.g. ``"minari:mujoco/hopper/expert-v0"`` or
            ``"d4rl:hopper-medium-v2"``.
        **kwargs: Passed to the format's factory (``batch_size``, ``sampler``, ...).

    Returns:
        The replay buffer the format builds over the dataset.

    Raises:
        ValueError: ``dataset`` has no ``":"``.
        UnknownComponentError: No dataset format has that name.

    Example:
        >>> data = make_dataset("minari:pendulum/medium-v0", batch_size=256)  # doctest: +SKIP
    """
    return _build_named_item(
        "make_dataset",
        "dataset",
        dataset,
        "<format>:<dataset_id>",
        "minari:pendulum/medium-v0",
        kwargs,
    )


def make_loss(name: str, **kwargs: Any) -> Any:
    """Create the loss registered as ``name`` (e.g. ``"ppo"``) with ``kwargs``."""
    return _build("loss", name, lambda f: f(**kwargs), f"loss {name!r} with kwargs {kwargs}")


def make_sampler(name: str, **kwargs: Any) -> Any:
    """Create the replay sampler registered as ``name`` (e.g. ``"prioritized"``)."""
    return _build("sampler", name, lambda f: f(**kwargs), f"sampler {name!r} with kwargs {kwargs}")


def make_logger(name: str, **kwargs: Any) -> Any:
    """Create the logger registered as ``name`` (``"csv"``, ``"tensorboard"``, ``"wandb"``)."""
    return _build("logger", name, lambda f: f(**kwargs), f"logger {name!r} with kwargs {kwargs}")


def _names(kind: str) -> list[str]:
    return sorted(_REGISTRY.components(kind))


def list_env_backends() -> list[str]:
    """Names usable before the ``:`` in :func:`make_env`."""
    return _names("env_backend")


def list_losses() -> list[str]:
    """Names accepted by :func:`make_loss`."""
    return _names("loss")


def list_samplers() -> list[str]:
    """Names accepted by :func:`make_sampler`."""
    return _names("sampler")


def list_dataset_formats() -> list[str]:
    """Names usable before the ``:`` in :func:`make_dataset`."""
    return _names("dataset")


def list_loggers() -> list[str]:
    """Names accepted by :func:`make_logger`."""
    return _names("logger")


def list_segment_tree_providers() -> list[str]:
    """Names of the installed segment-tree implementations."""
    return _names("segment_tree")


def active_segment_tree_provider() -> str:
    """Name of the segment-tree implementation prioritized sampling uses right now.

    It is ``$RLBLOCKS_SEGMENT_TREE`` if set, else the installed provider with the highest
    priority (the compiled ``rlblocks-kernel`` when installed, else numpy).

    Raises:
        UnknownComponentError: None is installed, or the variable names an unknown one.
    """
    chosen = os.environ.get(SEGMENT_TREE_ENV_VAR, "").strip()
    if chosen:
        return get_component("segment_tree", chosen).name
    found = _REGISTRY.components("segment_tree")
    if not found:
        # Reuse the lookup's "nothing installed" message.
        return get_component("segment_tree", "default").name
    return max(found.values(), key=lambda c: (c.obj.priority, c.name)).name


def segment_tree_provider(name: str | None = None) -> SegmentTreeProvider:
    """Return the segment-tree implementation called ``name``, or the active one."""
    return get_component("segment_tree", name or active_segment_tree_provider()).obj
