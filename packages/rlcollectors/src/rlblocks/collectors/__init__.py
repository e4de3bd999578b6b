"""rlblocks-collectors: data collectors, distributed collection, the trainer and checkpoints.

Collectors run a policy in environments and hand out batches of transitions as
TensorDicts: :class:`SyncDataCollector` in the calling process,
:class:`MultiSyncDataCollector` / :class:`MultiaSyncDataCollector` over worker processes, and
``RayCollector`` over Ray actors (``pip install 'rlblocks-collectors[ray]'``). The
:class:`Trainer` puts a collector, a loss module, an optimizer and optionally a replay buffer
together, with hooks, logging and checkpoints that resume a run exactly.
"""

from __future__ import annotations

from rlblocks.collectors._base import DataCollectorBase
from rlblocks.collectors._multi import MultiaSyncDataCollector, MultiSyncDataCollector
from rlblocks.collectors._ray import RayCollector
from rlblocks.collectors._sync import SyncDataCollector
from rlblocks.collectors._trainer import STAGES, Trainer
from rlblocks.collectors._trajectories import split_trajectories
from rlblocks.collectors._version import __version__
from rlblocks.collectors.errors import (
    CheckpointError,
    CollectorClosedError,
    CollectorConfigError,
    CollectorError,
    CollectorWorkerError,
    TrainerError,
)

__all__ = [
    "__version__",
    # collectors
    "DataCollectorBase",
    "SyncDataCollector",
    "MultiSyncDataCollector",
    "MultiaSyncDataCollector",
    "RayCollector",
    "split_trajectories",
    # trainer
    "Trainer",
    "STAGES",
    # errors
    "CollectorError",
    "CollectorConfigError",
    "CollectorClosedError",
    "CollectorWorkerError",
    "TrainerError",
    "CheckpointError",
]
