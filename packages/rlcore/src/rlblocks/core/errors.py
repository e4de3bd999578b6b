"""The rlblocks exception hierarchy.

Every error raised on purpose by any rlblocks distribution derives from
:class:`RLBlocksError`, so ``except RLBlocksError`` catches all of them. Each subclass also
derives from the closest builtin exception (``ValueError``, ``LookupError``, ``ImportError``)
so code written against the builtins keeps working.

Sibling distributions add their own subclasses (``rlblocks.envs.EnvError``, …) of the classes
below rather than new roots.
"""

from __future__ import annotations

__all__ = [
    "RLBlocksError",
    "SpecError",
    "PluginError",
    "PluginConflictError",
    "UnknownComponentError",
    "MissingDependencyError",
    "MissingKeyError",
    "LoggerError",
    "LoggerClosedError",
    "PluginLoadWarning",
]


class RLBlocksError(Exception):
    """Base class of every error rlblocks raises on purpose."""


class SpecError(RLBlocksError, ValueError):
    """A value does not match its spec (shape, dtype, range or keys), or a spec is ill-formed."""


class PluginError(RLBlocksError):
    """A plugin could not be loaded or used."""


class PluginConflictError(PluginError):
    """Two plugins registered a component of the same kind under the same name."""


class UnknownComponentError(PluginError, LookupError):
    """No installed plugin provides a component with the requested name."""

    def __str__(self) -> str:
        # LookupError would otherwise repr() a single argument like KeyError does.
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(RLBlocksError, ImportError):
    """An optional third-party dependency is not installed; the message names the fix."""


class MissingKeyError(RLBlocksError, KeyError):
    """A TensorDict lacks a key the contract requires (e.g. ``"next"`` or ``"action"``)."""

    def __str__(self) -> str:
        # KeyError would otherwise repr() the message, quoting it.
        return str(self.args[0]) if self.args else ""


class ModuleOutputError(RLBlocksError, ValueError):
    """A module returned a different number of outputs than its ``out_keys``."""


class LoggerError(RLBlocksError, ValueError):
    """A logger was given a bad experiment name, metric name, value, step or hyper-parameter."""


class LoggerClosedError(LoggerError):
    """A logger was used after ``close()`` (a ``ValueError``, like I/O on a closed file)."""


class PluginLoadWarning(UserWarning):
    """An installed plugin failed to load; the other plugins keep working."""


def missing_dependency(feature: str, module: str, install: str) -> MissingDependencyError:
    """Build the error raised when ``feature`` needs ``module`` and it is not importable.

    Args:
        feature: What the user asked for, e.g. ``"TensorBoardLogger"``.
        module: The top-level module that failed to import, e.g. ``"tensorboard"``.
        install: The pip requirement that fixes it, e.g. ``"rlblocks-core[tensorboard]"``.

    Returns:
        A :class:`MissingDependencyError` whose message names the ``pip install`` fix.
    """
    return MissingDependencyError(
        f"{feature} needs the optional dependency {module!r}, which is not installed. "
        f"Fix: pip install '{install}'"
    )
