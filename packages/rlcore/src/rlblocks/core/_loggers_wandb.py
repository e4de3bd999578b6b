"""WandbLogger: scalars and hyper-parameters to a Weights & Biases run (offline by default)."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from rlblocks.core._loggers_base import Logger, LoggerError
from rlblocks.core._loggers_video import write_video
from rlblocks.core.errors import missing_dependency

__all__ = ["WandbLogger"]


class WandbLogger(Logger):
    """Log scalars and hyper-parameters to a Weights & Biases run.

    Offline by default: unless ``mode`` is passed or the ``WANDB_MODE`` environment variable
    is set, the run is created with ``mode="offline"``, which needs no network and no login;
    upload it later with ``wandb sync <run_dir>``, or pass ``mode="online"``. W&B files go
    under the run folder ``<log_dir>/<exp_name>`` (W&B's own ``wandb/<run>`` folder inside
    it is :attr:`run_dir`). Hyper-parameters go into ``run.config``. Each logger owns its own
    run (``reinit="create_new"`` unless you pass ``reinit``), so several loggers can be open
    at once; the ``wandb.run`` global is then not set, use :attr:`run` (e.g.
    ``logger.run.watch(model)``). Steps must not decrease, because W&B drops rows logged at
    an earlier step. Leaving a ``with`` block on an exception marks the run failed. Needs the
    ``wandb`` package (``pip install 'rlblocks-core[wandb]'``).

    Args:
        exp_name: Name of the run (W&B's ``name``); the run folder is ``<log_dir>/<exp_name>``.
        project: W&B project; W&B's default (``"uncategorized"`` offline) when ``None``.
        log_dir: Parent folder of the run folder; ``"runs"`` when ``None``.
        **wandb_init_kwargs: Passed to ``wandb.init``, e.g. ``entity``, ``group``, ``tags``,
            ``config``, ``mode`` or ``settings`` (but not ``name`` or ``dir``: use
            ``exp_name`` and ``log_dir``).

    Raises:
        MissingDependencyError: ``wandb`` is not installed (also an ``ImportError``).
        LoggerError: Bad ``exp_name`` or ``log_dir``, or ``name``/``dir`` given in
            ``wandb_init_kwargs``.

    Example:
        >>> with WandbLogger("ppo_cartpole", project="rlblocks-demo", log_dir="runs") as logger:
        ...     logger.log_hparams({"lr": 3e-4})
        ...     logger.log_metrics({"train/loss": loss}, step=frames)
    """

    def __init__(
        self,
        exp_name: str,
        project: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        **wandb_init_kwargs: Any,
    ) -> None:
        super().__init__(exp_name, log_dir)
        for key, ours in (("name", "exp_name"), ("dir", "log_dir")):
            if key in wandb_init_kwargs:
                raise LoggerError(
                    f"WandbLogger: got {key}={wandb_init_kwargs[key]!r} in wandb_init_kwargs; "
                    f"WandbLogger sets it from {ours}. Fix: pass {ours}=... instead."
                )
        try:
            import wandb
        except ImportError as err:
            raise missing_dependency("WandbLogger", "wandb", "rlblocks-core[wandb]") from err
        # wandb.init's own arguments override its `settings=` (and the environment), so our
        # defaults are filled in only where the user chose nothing anywhere.
        chosen = wandb_init_kwargs.keys() | _explicit_settings(wandb_init_kwargs.get("settings"))
        if "mode" not in chosen and "WANDB_MODE" not in os.environ:
            wandb_init_kwargs["mode"] = "offline"
        if "reinit" not in chosen:
            wandb_init_kwargs["reinit"] = "create_new"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project, name=exp_name, dir=str(self.log_dir), **wandb_init_kwargs
        )
        sync_dir = getattr(self.run.settings, "sync_dir", None)
        self.run_dir: Path | None = Path(sync_dir) if sync_dir else None
        self._last_step = -1
        self._exit_code = 0

    def _check_step_order(self, step: int) -> None:
        if step < self._last_step:
            raise LoggerError(
                f"WandbLogger: step {step} is smaller than the last step logged, "
                f"{self._last_step}, and W&B would silently drop the row. Fix: log with "
                f"non-decreasing steps (e.g. the number of frames collected so far)."
            )

    def _write_scalars(self, items: list[tuple[str, float]], step: int, wall_time: float) -> None:
        self._check_step_order(step)
        self.run.log(dict(items), step=step)
        self._last_step = step

    def _write_video(self, name: str, frames: np.ndarray, step: int, fps: float) -> None:
        import wandb

        self._check_step_order(step)
        # From a file: wandb.Video of an array needs moviepy, a file does not.
        path = self.log_dir / "videos" / f"{name.replace('/', '_')}_{step}.mp4"
        write_video("WandbLogger.log_video", frames, fps, path)
        self.run.log({name: wandb.Video(str(path), format="mp4")}, step=step)
        self._last_step = step

    def _write_hparams(self, hparams: dict[str, Any]) -> None:
        self.run.config.update(hparams, allow_val_change=True)

    def _close(self) -> None:
        self.run.finish(exit_code=self._exit_code)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._exit_code = 1  # W&B then shows the run as failed, not finished
        super().__exit__(exc_type, exc, tb)


def _explicit_settings(settings: Any) -> set[str]:
    """Names of the fields set in a ``settings=`` argument (a dict or ``wandb.Settings``)."""
    if settings is None:
        return set()
    if isinstance(settings, dict):
        return set(settings)
    # wandb.Settings is a pydantic model: model_fields_set holds the fields given explicitly.
    return set(getattr(settings, "model_fields_set", ()))
