"""TensorBoardLogger (alias TensorboardLogger): scalars, hyper-parameters and videos to
TensorBoard."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from rlblocks.core._loggers_base import Logger
from rlblocks.core._loggers_video import encode_video
from rlblocks.core.errors import missing_dependency

__all__ = ["TensorBoardLogger", "TensorboardLogger"]


class TensorBoardLogger(Logger):
    """Log scalars and hyper-parameters to TensorBoard event files.

    Writes with :class:`torch.utils.tensorboard.SummaryWriter` into the run folder
    ``<log_dir>/<exp_name>``; view with ``tensorboard --logdir <log_dir>``. The
    hyper-parameters of the first :meth:`log_hparams` call go to TensorBoard's HParams
    dashboard (lists and ``None`` shown as text), which keeps one set per run, so log them all
    in one call; every call is also written as a table under the ``hparams`` tag of the Text
    dashboard. Reopening a run folder adds a new event file next to the old ones; TensorBoard
    reads both. Needs the ``tensorboard`` package
    (``pip install 'rlblocks-core[tensorboard]'``).

    Args:
        exp_name: Name of the run; the run folder is ``<log_dir>/<exp_name>``.
        log_dir: Parent folder of the run folder; ``"runs"`` when ``None``.
        **writer_kwargs: Passed to ``SummaryWriter``, e.g. ``flush_secs=30`` or
            ``max_queue=100`` (events are queued and written by a background thread).

    Raises:
        MissingDependencyError: ``tensorboard`` is not installed (also an ``ImportError``).
        LoggerError: Bad ``exp_name`` or ``log_dir``.

    Example:
        >>> with TensorBoardLogger("ppo_cartpole", log_dir="runs") as logger:
        ...     logger.log_hparams({"lr": 3e-4})
        ...     logger.log_scalar("train/loss", loss, step=frames)
    """

    def __init__(
        self,
        exp_name: str,
        log_dir: str | os.PathLike[str] | None = None,
        **writer_kwargs: Any,
    ) -> None:
        super().__init__(exp_name, log_dir)
        try:
            # Imported first on purpose: torch.utils.tensorboard may already sit in
            # sys.modules, and only this import tells whether tensorboard itself is usable.
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise missing_dependency(
                "TensorBoardLogger", "tensorboard", "rlblocks-core[tensorboard]"
            ) from err
        self._writer = SummaryWriter(log_dir=str(self.log_dir), **writer_kwargs)
        self._hparams_calls = 0

    def _write_scalars(self, items: list[tuple[str, float]], step: int, wall_time: float) -> None:
        for name, value in items:
            self._writer.add_scalar(name, value, global_step=step, walltime=wall_time)

    def _write_hparams(self, hparams: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        if self._hparams_calls == 0:
            # The HParams plugin takes numbers, str and bool only.
            values = {
                key: value if isinstance(value, bool | int | float | str) else str(value)
                for key, value in hparams.items()
            }
            # Into this writer's own event file: SummaryWriter.add_hparams would open a second
            # file in the same folder, and TensorBoard's live loader (DirectoryWatcher) assumes
            # a file is finished once a newer one appears, so later scalars could go unseen.
            file_writer = self._writer.file_writer
            for summary in hparams_summaries(values, {}):
                file_writer.add_summary(summary)
        # Every call, also as a table in the Text dashboard: TensorBoard keeps only the first
        # hparams summary of a run (a writer strips the plugin metadata from later ones).
        rows = "".join(f"| {key} | {_markdown_cell(value)} |\n" for key, value in hparams.items())
        self._writer.add_text(
            "hparams", "| name | value |\n|---|---|\n" + rows, global_step=self._hparams_calls
        )
        self._hparams_calls += 1

    def _write_video(self, name: str, frames: np.ndarray, step: int, fps: float) -> None:
        # What SummaryWriter.add_video writes (an animated GIF in an image summary), encoded
        # with imageio instead of the moviepy add_video needs.
        from tensorboard.compat.proto.summary_pb2 import Summary

        image = Summary.Image(
            height=frames.shape[1],
            width=frames.shape[2],
            colorspace=frames.shape[3],
            encoded_image_string=encode_video(frames, fps, "gif"),
        )
        summary = Summary(value=[Summary.Value(tag=name, image=image)])
        self._writer.file_writer.add_summary(summary, step)

    def _flush(self) -> None:
        self._writer.flush()

    def _close(self) -> None:
        self._writer.close()


TensorboardLogger = TensorBoardLogger
"""TorchRL's spelling of :class:`TensorBoardLogger` (``torchrl.record.loggers``): the same class.

``TensorboardLogger(exp_name="ppo")`` writes to ``runs/ppo``; TorchRL's default parent
folder is ``tb_logs``, so pass ``log_dir="tb_logs"`` to keep TorchRL's layout.
"""


def _markdown_cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")
