"""Hook specifications of the ``rlblocks`` plugin system.

A plugin is a module named by an entry point in the ``rlblocks`` group::

    [project.entry-points.rlblocks]
    myplugin = "my_package.rlblocks_plugin"

The module implements any of the hooks below, each decorated with
:data:`rlblocks.core.hookimpl`. rlblocks' own components (the gymnasium backend, the
built-in losses, samplers and loggers) register through exactly this mechanism.

Every hook takes no argument and returns a mapping ``{name: component}``. The results of all
plugins are merged per hook: names must be unique across plugins of one kind, otherwise
:class:`~rlblocks.core.errors.PluginConflictError` names both distributions. A hook that
raises is reported once as a :class:`~rlblocks.core.errors.PluginLoadWarning` and its
plugin contributes nothing; every other plugin keeps working.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pluggy

from rlblocks.core._segment_tree import SegmentTreeProvider

__all__ = [
    "PROJECT_NAME",
    "hookspec",
    "hookimpl",
    "rlblocks_env_backends",
    "rlblocks_losses",
    "rlblocks_samplers",
    "rlblocks_loggers",
    "rlblocks_segment_tree_providers",
]

PROJECT_NAME = "rlblocks"
"""The pluggy project name, which is also the entry-point group plugins register under."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- environments ------------------------------------------------------------------------


@hookspec
def rlblocks_env_backends() -> Mapping[str, Callable[..., Any]]:
    """Provide environment backends.

    Returns:
        ``{backend_name: factory}``. ``make_env("<backend_name>:<env_id>", **kwargs)`` calls
        ``factory(env_id, **kwargs)`` and returns what it returns (an rlblocks env). The
        factory raises a clear error for an unknown ``env_id``.

    How results combine:
        Merged across plugins; a backend name claimed twice raises ``PluginConflictError``.
    """


# -- training ----------------------------------------------------------------------------


@hookspec
def rlblocks_losses() -> Mapping[str, Callable[..., Any]]:
    """Provide loss modules.

    Returns:
        ``{loss_name: factory}``; ``make_loss(name, **kwargs)`` returns ``factory(**kwargs)``.
        The factory is usually the loss class itself (e.g. ``{"ppo": ClipPPOLoss}``).

    How results combine:
        Merged across plugins; a loss name claimed twice raises ``PluginConflictError``.
    """


@hookspec
def rlblocks_loggers() -> Mapping[str, Callable[..., Any]]:
    """Provide experiment loggers.

    Returns:
        ``{logger_name: factory}``; ``make_logger(name, **kwargs)`` returns
        ``factory(**kwargs)``, an object with the :class:`rlblocks.core.loggers.Logger` API.

    How results combine:
        Merged across plugins; a logger name claimed twice raises ``PluginConflictError``.
    """


# -- replay ------------------------------------------------------------------------------


@hookspec
def rlblocks_samplers() -> Mapping[str, Callable[..., Any]]:
    """Provide replay-buffer samplers.

    Returns:
        ``{sampler_name: factory}``; ``make_sampler(name, **kwargs)`` returns
        ``factory(**kwargs)``.

    How results combine:
        Merged across plugins; a sampler name claimed twice raises ``PluginConflictError``.
    """


@hookspec
def rlblocks_datasets() -> Mapping[str, Callable[..., Any]]:
    """Provide offline dataset formats.

    Returns:
        ``{format_name: factory}``. ``make_dataset("<format_name>:<dataset_id>", **kwargs)``
        calls ``factory(dataset_id, **kwargs)`` and returns what it returns: a replay buffer
        over the dataset (``rlblocks.buffers.DatasetReplayBuffer`` or one with its API). The
        factory raises a clear error for a dataset it cannot find, naming where it looked.

    How results combine:
        Merged across plugins; a format name claimed twice raises ``PluginConflictError``.
    """


@hookspec
def rlblocks_segment_tree_providers() -> Mapping[str, SegmentTreeProvider]:
    """Provide segment-tree implementations used by prioritized sampling.

    Returns:
        ``{provider_name: SegmentTreeProvider(...)}``.

    How results combine:
        Merged across plugins; names must be unique. The provider with the highest
        ``priority`` is active unless ``RLBLOCKS_SEGMENT_TREE=<name>`` selects another;
        :func:`rlblocks.core.active_segment_tree_provider` says which one is active.
    """
