"""The exceptions rlblocks-envs raises on purpose.

Each one derives from :class:`EnvError` (itself a :class:`rlblocks.core.RLBlocksError`) and from
the closest builtin exception, so ``except ValueError`` keeps working where it would for the
builtin.
"""

from __future__ import annotations

from rlblocks.core.errors import RLBlocksError, SpecError

__all__ = [
    "EnvError",
    "EnvClosedError",
    "EnvSpecError",
    "InvalidActionError",
    "BatchSizeError",
    "TransformError",
    "WorkerError",
    "UnsupportedEnvOperationError",
    "ExportError",
]


class EnvError(RLBlocksError):
    """Base class of every error rlblocks-envs raises on purpose."""


class EnvClosedError(EnvError, RuntimeError):
    """An environment was used after ``close()``."""


class EnvSpecError(EnvError, SpecError):
    """What an environment returned does not match its specs (see ``check_env_specs``)."""


class InvalidActionError(EnvError, SpecError):
    """An action given to ``step`` has the wrong shape, dtype or values for its spec."""


class BatchSizeError(EnvError, ValueError):
    """A TensorDict's batch size does not match the environment's ``batch_size``."""


class TransformError(EnvError, ValueError):
    """A transform was misused (e.g. attached to two environments, or bad keys)."""


class WorkerError(EnvError, RuntimeError):
    """A worker process of a ``ParallelEnv`` raised or died; the message has its traceback."""


class UnsupportedEnvOperationError(EnvError, NotImplementedError):
    """The environment cannot do what was asked (e.g. a partial reset it has no means for)."""


class ExportError(EnvError, ValueError):
    """A policy (with its env's transforms) cannot be exported as asked."""
