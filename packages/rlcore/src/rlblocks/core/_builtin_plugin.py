"""rlblocks-core's own components, registered through the same hooks as any plugin."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core.hookspecs import hookimpl


@hookimpl
def rlblocks_loggers() -> Mapping[str, Callable[..., Any]]:
    import rlblocks.core.loggers as loggers  # imported on use: it is the heaviest module

    return {
        "csv": loggers.CSVLogger,
        "tensorboard": loggers.TensorBoardLogger,
        "wandb": loggers.WandbLogger,
    }
