"""CSVLogger: scalars to one tidy ``scalars.csv``, hyper-parameters to ``hparams.json``."""

from __future__ import annotations

import csv
import json
import numbers
import os
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from rlblocks.core._loggers_base import Logger, LoggerError
from rlblocks.core._loggers_video import VIDEO_FORMATS, write_video

__all__ = ["CSVLogger"]

_HEADER = "step,name,value,wall_time"


class _RowBuffer:
    """Rows waiting to be appended to ``scalars.csv``.

    It lives apart from the logger so that a ``weakref.finalize`` can flush it when a logger
    that was never closed is garbage-collected or the interpreter exits.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[tuple[int, str, float, float]] = []

    def flush(self) -> None:
        if not self.rows:
            return
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            csv.writer(file, lineterminator="\n").writerows(self.rows)
        # Cleared only once written: a failed write (disk full) keeps the rows for a retry.
        self.rows.clear()


class CSVLogger(Logger):
    """Log scalars to one tidy CSV file and hyper-parameters to a JSON file.

    The run folder ``<log_dir>/<exp_name>`` holds:

    - ``scalars.csv``: header ``step,name,value,wall_time`` and one row per logged value, so
      new metric names may appear at any time and ``pandas.read_csv`` or a spreadsheet reads
      it directly (``df.pivot_table(index="step", columns="name", values="value")`` gives
      one column per metric). NaN is written as ``nan``.
    - ``hparams.json``: one JSON object of the flattened hyper-parameters; each
      :meth:`log_hparams` call merges its keys in and rewrites the file atomically.
    - ``videos/<name>_<step>.<video_format>``: each :meth:`log_video` (``/`` in the name
      becomes ``_``).

    Rows are buffered in memory and appended every ``flush_every`` rows or ``flush_secs``
    seconds, whichever comes first, so a training loop does not pay a system call per
    scalar; :meth:`flush` and :meth:`close` write the rest (and so does garbage collection or
    interpreter exit for a logger never closed). Reopening an existing run folder appends to
    its ``scalars.csv`` and merges into its ``hparams.json``: nothing a previous run wrote is
    overwritten. Two loggers must not share one run folder at the same time.

    Args:
        exp_name: Name of the run; the run folder is ``<log_dir>/<exp_name>`` (created).
        log_dir: Parent folder of the run folder; ``"runs"`` when ``None``.
        flush_every: Append the buffered rows once this many are waiting.
        flush_secs: Also append them when this many seconds passed since the last write
            (checked when something is logged); ``None`` to flush on row count only.
        video_format: ``"mp4"`` or ``"gif"``, the files :meth:`log_video` writes.

    Raises:
        LoggerError: Bad ``exp_name``/``log_dir``/``flush_every``/``flush_secs``, or the
            folder holds a ``scalars.csv`` with another header or a ``hparams.json`` that is
            not a JSON object (files not written by CSVLogger, left untouched).

    Example:
        >>> with CSVLogger("ppo_cartpole", log_dir="runs") as logger:
        ...     logger.log_hparams({"lr": 3e-4, "gamma": 0.99})
        ...     for step in range(3):
        ...         logger.log_metrics({"loss": 1.0 / (step + 1), "return": 10.0 * step}, step)
        >>> import pandas as pd
        >>> pd.read_csv(logger.scalars_path).shape
        (6, 4)
    """

    def __init__(
        self,
        exp_name: str,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        flush_every: int = 1000,
        flush_secs: float | None = 10.0,
        video_format: str = "mp4",
    ) -> None:
        super().__init__(exp_name, log_dir)
        if video_format not in VIDEO_FORMATS:
            raise LoggerError(
                f"CSVLogger: video_format must be one of {list(VIDEO_FORMATS)}, got "
                f"{video_format!r}."
            )
        self.video_format = video_format
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise LoggerError(
                f"CSVLogger: flush_every must be an int >= 1 (rows buffered before a write), "
                f"got {flush_every!r}."
            )
        if flush_secs is not None and (
            isinstance(flush_secs, bool)
            or not isinstance(flush_secs, numbers.Real)
            or not flush_secs > 0
        ):
            raise LoggerError(
                f"CSVLogger: flush_secs must be a number of seconds > 0, or None, "
                f"got {flush_secs!r}."
            )
        self.flush_every = flush_every
        self.flush_secs = flush_secs
        self.scalars_path: Path = self.log_dir / "scalars.csv"
        self.hparams_path: Path = self.log_dir / "hparams.json"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_scalars_file()
        self._buffer = _RowBuffer(self.scalars_path)
        self._finalizer = weakref.finalize(self, self._buffer.flush)
        self._last_flush = time.time()
        self._hparams: dict[str, Any] | None = None  # read from hparams.json on first use

    def _prepare_scalars_file(self) -> None:
        path = self.scalars_path
        if not path.exists() or path.stat().st_size == 0:
            path.write_text(_HEADER + "\n", encoding="utf-8")
            return
        with open(path, "rb") as file:
            header = file.readline().decode("utf-8", errors="replace").rstrip("\r\n")
            file.seek(-1, os.SEEK_END)
            ends_with_newline = file.read(1) == b"\n"
        if header != _HEADER:
            raise LoggerError(
                f"CSVLogger: {path} exists but its header is {header[:80]!r}, not {_HEADER!r}, "
                f"so it was not written by CSVLogger; it is left untouched. Fix: choose another "
                f"exp_name or log_dir, or move the file away."
            )
        if not ends_with_newline:
            # A process killed mid-write left a partial row; start ours on a line of their own.
            with open(path, "a", encoding="utf-8") as file:
                file.write("\n")

    def _write_scalars(self, items: list[tuple[str, float]], step: int, wall_time: float) -> None:
        rows = self._buffer.rows
        rows.extend((step, name, value, wall_time) for name, value in items)
        if len(rows) >= self.flush_every or (
            self.flush_secs is not None and wall_time - self._last_flush >= self.flush_secs
        ):
            self._flush()

    def _write_video(self, name: str, frames: np.ndarray, step: int, fps: float) -> None:
        file = f"{name.replace('/', '_')}_{step}.{self.video_format}"
        write_video("CSVLogger.log_video", frames, fps, self.log_dir / "videos" / file)

    def _flush(self) -> None:
        self._buffer.flush()
        self._last_flush = time.time()

    def _write_hparams(self, hparams: dict[str, Any]) -> None:
        if self._hparams is None:
            self._hparams = self._read_hparams()
        merged = {**self._hparams, **hparams}
        # Write-then-rename, so a crash never leaves a truncated hparams.json behind.
        tmp = self.hparams_path.with_name(self.hparams_path.name + ".tmp")
        tmp.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.hparams_path)
        self._hparams = merged

    def _read_hparams(self) -> dict[str, Any]:
        if not self.hparams_path.exists():
            return {}
        try:
            data = json.loads(self.hparams_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise LoggerError(
                f"CSVLogger: {self.hparams_path} exists but is not a JSON object, so new "
                f"hyper-parameters cannot be merged into it; it is left untouched. Fix: choose "
                f"another exp_name or log_dir, or move the file away."
            )
        return data

    def _close(self) -> None:
        self._buffer.flush()
        self._finalizer.detach()
