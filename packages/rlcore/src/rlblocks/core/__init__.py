"""rlblocks-core: the dict-tensor contract, specs and plugin registry of rlblocks.

Everything other rlblocks distributions share lives here: the TensorDict key vocabulary and
``step_mdp``, the spec classes that describe observations and actions, the exploration mode,
the exception hierarchy, and the ``rlblocks`` entry-point plugin system with its
``make_*``/``list_*`` lookups.
"""

from __future__ import annotations

from rlblocks.core._contract import (
    ACTION,
    DONE,
    DONE_KEYS,
    IS_INIT,
    NEXT,
    OBSERVATION,
    PIXELS,
    RESET,
    REWARD,
    TERMINATED,
    TRUNCATED,
    step_mdp,
    terminated_or_truncated,
)
from rlblocks.core._exploration import (
    DEFAULT_EXPLORATION_TYPE,
    ExplorationType,
    exploration_type,
    set_exploration_type,
)
from rlblocks.core._plugins import (
    ComponentInfo,
    PluginFailure,
    active_segment_tree_provider,
    get_component,
    list_components,
    list_dataset_formats,
    list_env_backends,
    list_loggers,
    list_losses,
    list_samplers,
    list_segment_tree_providers,
    load_plugins,
    make_dataset,
    make_env,
    make_logger,
    make_loss,
    make_sampler,
    plugin_failures,
    register_plugin,
    segment_tree_provider,
    unregister_plugin,
)
from rlblocks.core._segment_tree import MinSegmentTree, SegmentTreeProvider, SumSegmentTree
from rlblocks.core._version import __version__
from rlblocks.core.errors import (
    LoggerClosedError,
    LoggerError,
    MissingDependencyError,
    MissingKeyError,
    ModuleOutputError,
    PluginConflictError,
    PluginError,
    PluginLoadWarning,
    RLBlocksError,
    SpecError,
    UnknownComponentError,
)
from rlblocks.core.hookspecs import hookimpl
from rlblocks.core.specs import (
    Binary,
    Bounded,
    Categorical,
    Composite,
    MultiCategorical,
    MultiOneHot,
    OneHot,
    TensorSpec,
    Unbounded,
)

__all__ = [
    "__version__",
    # contract
    "OBSERVATION",
    "ACTION",
    "REWARD",
    "DONE",
    "TERMINATED",
    "TRUNCATED",
    "NEXT",
    "RESET",
    "IS_INIT",
    "PIXELS",
    "DONE_KEYS",
    "step_mdp",
    "terminated_or_truncated",
    # exploration
    "ExplorationType",
    "set_exploration_type",
    "exploration_type",
    "DEFAULT_EXPLORATION_TYPE",
    # specs
    "TensorSpec",
    "Unbounded",
    "Bounded",
    "Categorical",
    "OneHot",
    "MultiCategorical",
    "MultiOneHot",
    "Binary",
    "Composite",
    # errors
    "RLBlocksError",
    "SpecError",
    "MissingKeyError",
    "MissingDependencyError",
    "ModuleOutputError",
    "LoggerError",
    "LoggerClosedError",
    "PluginError",
    "PluginConflictError",
    "UnknownComponentError",
    "PluginLoadWarning",
    # plugins
    "hookimpl",
    "ComponentInfo",
    "PluginFailure",
    "load_plugins",
    "register_plugin",
    "unregister_plugin",
    "get_component",
    "list_components",
    "plugin_failures",
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
    "SumSegmentTree",
    "MinSegmentTree",
    "SegmentTreeProvider",
]
