"""The exceptions rlblocks-collectors raises on purpose.

Each one derives from :class:`CollectorError` (itself a :class:`rlblocks.core.RLBlocksError`)
and from the closest builtin exception, so ``except ValueError`` keeps working where it would
for the builtin.
"""

from __future__ import annotations

from rlblocks.core.errors import RLBlocksError

__all__ = [
    "CollectorError",
    "CollectorConfigError",
    "CollectorClosedError",
    "CollectorWorkerError",
    "TrainerError",
    "CheckpointError",
]


class CollectorError(RLBlocksError):
    """Base class of every error rlblocks-collectors raises on purpose."""


class CollectorConfigError(CollectorError, ValueError):
    """A collector or trainer was given an invalid argument (bad frame counts, devices, ...)."""


class CollectorClosedError(CollectorError, RuntimeError):
    """A collector was used after ``shutdown()``."""


class CollectorWorkerError(CollectorError, RuntimeError):
    """A collector worker (process or Ray actor) raised or died; the message has its traceback."""


class TrainerError(CollectorError, RuntimeError):
    """The trainer could not run a step (e.g. the loss module returned no ``loss_*`` term)."""


class CheckpointError(CollectorError, ValueError):
    """A checkpoint is missing, incomplete, or does not match the trainer loading it."""
