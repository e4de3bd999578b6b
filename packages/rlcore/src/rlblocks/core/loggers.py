"""Experiment loggers: scalars and hyper-parameters to CSV, TensorBoard or Weights & Biases.

All loggers share the :class:`Logger` API: ``log_scalar``, ``log_metrics``, ``log_hparams``,
``flush``, ``close`` and ``with`` support, and a ``log_dir`` run folder
(``<log_dir>/<exp_name>``). They are also registered as plugins, so
``rlblocks.core.make_logger("csv", exp_name="ppo")`` builds a :class:`CSVLogger`.

- :class:`CSVLogger`: no extra dependency; one tidy ``scalars.csv`` plus ``hparams.json``.
- :class:`TensorBoardLogger` (also spelled :class:`TensorboardLogger`, as in TorchRL): needs
  ``pip install 'rlblocks-core[tensorboard]'``.
- :class:`WandbLogger`: needs ``pip install 'rlblocks-core[wandb]'``; offline by default.

TensorBoard and W&B are imported when such a logger is created, never when this module is,
so ``import rlblocks.core`` stays cheap.

Example:
    >>> from rlblocks.core.loggers import CSVLogger
    >>> with CSVLogger("ppo_cartpole") as logger:
    ...     logger.log_hparams({"lr": 3e-4, "env": {"id": "CartPole-v1", "num_envs": 8}})
    ...     logger.log_metrics({"train/loss": 0.5, "train/return": 21.0}, step=1024)
"""

from __future__ import annotations

from rlblocks.core._loggers_base import (
    DEFAULT_LOG_DIR,
    Logger,
    LoggerClosedError,
    LoggerError,
    ScalarLike,
)
from rlblocks.core._loggers_csv import CSVLogger
from rlblocks.core._loggers_tensorboard import TensorBoardLogger, TensorboardLogger
from rlblocks.core._loggers_wandb import WandbLogger

__all__ = [
    "DEFAULT_LOG_DIR",
    "Logger",
    "LoggerError",
    "LoggerClosedError",
    "ScalarLike",
    "CSVLogger",
    "TensorBoardLogger",
    "TensorboardLogger",
    "WandbLogger",
]
