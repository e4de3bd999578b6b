"""The :class:`Logger` base class: the API every rlblocks experiment logger shares.

The base class validates every call (metric names, values, steps, hyper-parameters) and keeps
the automatic step counter, so a backend only implements the ``_write_*`` hooks and receives
clean data: ``str`` names, ``float`` values, ``int`` steps and flat, JSON-friendly hparams.
"""

from __future__ import annotations

import abc
import numbers
import operator
import os
import reprlib
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
import torch
from tensordict import TensorDictBase

from rlblocks.core._loggers_video import check_video
from rlblocks.core.errors import LoggerClosedError, LoggerError

__all__ = [
    "DEFAULT_LOG_DIR",
    "Logger",
    "LoggerClosedError",
    "LoggerError",
    "ScalarLike",
]

DEFAULT_LOG_DIR = "runs"
"""Parent folder of the run folders when a logger is given no ``log_dir``."""

ScalarLike = float | int | bool | np.generic | np.ndarray | torch.Tensor
"""What a metric value may be: a Python or numpy number, or a one-element array or tensor."""

_LoggerT = TypeVar("_LoggerT", bound="Logger")

# Bounded reprs keep an error message readable when someone passes a whole batch by mistake.
_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


class Logger(abc.ABC):
    """Base class of the experiment loggers: scalars over steps, plus hyper-parameters.

    Every logger writes into one run folder, :attr:`log_dir`. Calls are validated up front and
    a rejected call writes nothing. Steps are non-negative ints; when ``step`` is ``None`` the
    logger uses its own counter, which starts at 0 and advances by one per
    :meth:`log_scalar`/:meth:`log_metrics` call that relies on it (all values of one
    ``log_metrics`` call share a step); explicit steps leave the counter alone. Loggers are
    context managers and :meth:`close` is idempotent. They are not thread-safe: log from one
    thread.

    Subclasses implement :meth:`_write_scalars`, :meth:`_write_hparams` and :meth:`_close`,
    and may override :meth:`_flush`.

    Args:
        exp_name: Name of the run; the run folder is ``<log_dir>/<exp_name>``. A relative
            path such as ``"cartpole/ppo_seed0"`` groups runs in sub-folders.
        log_dir: Parent folder of the run folder; ``"runs"`` (in the working directory) when
            ``None``. ``~`` is expanded.

    Raises:
        LoggerError: ``exp_name`` is empty, absolute or leaves ``log_dir`` (``".."``), or
            ``log_dir`` is not a path.

    Example:
        >>> with CSVLogger("ppo_cartpole", log_dir="runs") as logger:
        ...     logger.log_hparams({"lr": 3e-4, "env": {"id": "CartPole-v1"}})
        ...     logger.log_metrics({"train/loss": loss, "train/return": ret}, step=frames)
    """

    def __init__(self, exp_name: str, log_dir: str | os.PathLike[str] | None = None) -> None:
        self.exp_name = _check_exp_name(type(self).__name__, exp_name)
        if log_dir is None:
            log_dir = DEFAULT_LOG_DIR
        elif not isinstance(log_dir, str | os.PathLike):
            raise LoggerError(
                f"{type(self).__name__}: log_dir must be a str or os.PathLike folder, got "
                f"{_repr.repr(log_dir)} of type {type(log_dir).__name__}. "
                f"Fix: pass e.g. log_dir='runs'."
            )
        # Absolute, so a later os.chdir in the training script cannot move the run folder.
        self.log_dir: Path = (Path(log_dir).expanduser() / self.exp_name).absolute()
        self._auto_step = 0
        self._closed = False

    # -- public API ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def log_scalar(self, name: str, value: ScalarLike, step: int | None = None) -> None:
        """Log one scalar ``value`` under ``name`` at ``step``.

        Args:
            name: Metric name, e.g. ``"train/loss"``; a non-empty ``str``.
            value: A Python or numpy number, or a one-element numpy array or tensor (it is
                read with ``.item()``, which synchronizes a GPU tensor). NaN and inf are
                written as they are.
            step: A non-negative int, or ``None`` for the logger's own counter.

        Raises:
            LoggerError: Bad name, value (e.g. a tensor with more than one element) or step.
            LoggerClosedError: The logger is closed.
        """
        self._check_open()
        owner = type(self).__name__
        name = _check_name(owner, name)
        item = (name, _to_float(owner, name, value))
        step = _check_step(owner, step)
        self._write_scalars([item], self._next_step(step), time.time())

    def log_metrics(
        self, metrics: Mapping[str, Any] | TensorDictBase, step: int | None = None
    ) -> None:
        """Log several scalars at one ``step``.

        Args:
            metrics: ``{name: value}`` with values as in :meth:`log_scalar`. Nested mappings
                (and a TensorDict, e.g. the output of a loss module) are flattened with
                ``"/"``: ``{"loss": {"actor": x}}`` logs ``"loss/actor"``. An empty mapping
                logs nothing and leaves the step counter alone.
            step: A non-negative int, or ``None`` for the logger's own counter.

        Raises:
            LoggerError: ``metrics`` is not a mapping, or a name, value or step is bad; nothing
                is written then.
            LoggerClosedError: The logger is closed.
        """
        self._check_open()
        owner = type(self).__name__
        if isinstance(metrics, TensorDictBase):
            flat = (
                ("/".join(key) if isinstance(key, tuple) else key, value)
                for key, value in metrics.items(include_nested=True, leaves_only=True)
            )
        elif isinstance(metrics, Mapping):
            flat = _flatten(owner, "metrics", metrics)
        else:
            raise LoggerError(
                f"{owner}.log_metrics: metrics must be a mapping of name -> scalar, got "
                f"{_repr.repr(metrics)} of type {type(metrics).__name__}. "
                f"Fix: pass a dict such as {{'loss': loss}}, or use log_scalar for one value."
            )
        items = [(name, _to_float(owner, name, value)) for name, value in flat]
        step = _check_step(owner, step)
        if items:
            self._write_scalars(items, self._next_step(step), time.time())

    def log_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Record the run's hyper-parameters.

        Nested mappings are flattened with ``"/"`` (``{"optim": {"lr": 1e-3}}`` becomes
        ``"optim/lr"``). Values may be numbers, strings, bools, ``None`` or lists/tuples of
        those; numpy scalars and arrays, tensors, paths, ``torch.dtype`` and ``torch.device``
        are converted (to Python numbers, lists or strings). Calling it again adds keys and
        replaces the values of keys given again.

        Args:
            hparams: The hyper-parameters, e.g. the script's config as a dict.

        Raises:
            LoggerError: ``hparams`` is not a mapping, a key is not a non-empty ``str``, or a
                value has a type listed nowhere above; nothing is written then.
            LoggerClosedError: The logger is closed.
        """
        self._check_open()
        owner = type(self).__name__
        if not isinstance(hparams, Mapping):
            raise LoggerError(
                f"{owner}.log_hparams: hparams must be a mapping of name -> value, got "
                f"{_repr.repr(hparams)} of type {type(hparams).__name__}. "
                f"Fix: pass a dict (for a dataclass config: dataclasses.asdict(config); for an "
                f"argparse.Namespace: vars(args))."
            )
        flat = {
            key: _hparam_value(owner, key, value)
            for key, value in _flatten(owner, "hparams", hparams)
        }
        self._write_hparams(flat)

    def log_video(self, name: str, video: Any, step: int | None = None, fps: float = 30) -> None:
        """Log a video (e.g. an evaluation episode) under ``name`` at ``step``.

        The CSV logger writes ``videos/<name>_<step>.mp4`` (or ``.gif``) in the run folder,
        TensorBoard shows it as an animated image, W&B as a video. Needs ``imageio`` (``pip
        install 'rlblocks-core[video]'``).

        Args:
            name: Video name, e.g. ``"eval/video"``; a non-empty ``str``.
            video: Frames ``[T, H, W, C]`` or ``[T, C, H, W]`` (C = 1, 3 or 4), a tensor or
                numpy array, uint8 or float in ``[0, 1]``.
            step: A non-negative int, or ``None`` for the logger's own counter.
            fps: Frames per second of the file.

        Raises:
            LoggerError: Bad name, frames (shape, dtype, range), fps or step, or a file that
                cannot be written (its path is named); nothing is logged then.
            MissingDependencyError: ``imageio`` (or, for mp4, ``imageio-ffmpeg``) is missing.
            LoggerClosedError: The logger is closed.
        """
        self._check_open()
        owner = type(self).__name__
        name = _check_name(owner, name)
        frames, fps = check_video(owner, name, video, fps)
        step = _check_step(owner, step)
        self._write_video(name, frames, self._next_step(step), fps)

    def flush(self) -> None:
        """Write buffered data to disk now.

        Raises:
            LoggerClosedError: The logger is closed (closing already flushed).
        """
        self._check_open()
        self._flush()

    def close(self) -> None:
        """Flush and release the logger's files; calling it again does nothing."""
        if self._closed:
            return
        self._close()
        # Only once _close succeeded: after a failed flush the data is still buffered and a
        # second close() can retry.
        self._closed = True

    def __enter__(self: _LoggerT) -> _LoggerT:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"{type(self).__name__}(exp_name={self.exp_name!r}, log_dir='{self.log_dir}'{state})"

    # -- backend hooks ---------------------------------------------------------------------

    @abc.abstractmethod
    def _write_scalars(self, items: list[tuple[str, float]], step: int, wall_time: float) -> None:
        """Write validated ``(name, value)`` pairs at ``step``; ``wall_time`` is ``time.time()``."""

    @abc.abstractmethod
    def _write_hparams(self, hparams: dict[str, Any]) -> None:
        """Write flat, validated hyper-parameters (JSON-compatible values)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Flush and release resources; called once, unless it raises."""

    def _write_video(self, name: str, frames: np.ndarray, step: int, fps: float) -> None:
        """Write validated uint8 frames ``[T, H, W, C]``; backends that show videos override."""
        raise LoggerError(f"{type(self).__name__} cannot log videos")

    def _flush(self) -> None:  # noqa: B027 - optional hook: unbuffered backends need nothing
        """Write buffered data now."""

    # -- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LoggerClosedError(
                f"{self!r} is closed; nothing more can be logged to it. "
                f"Fix: log before close() (or before leaving its `with` block), or create a "
                f"new logger; CSVLogger appends when given the same exp_name and log_dir."
            )

    def _next_step(self, step: int | None) -> int:
        """Return ``step`` (already validated) or the next value of the automatic counter."""
        if step is not None:
            return step
        step = self._auto_step
        self._auto_step += 1
        return step


def _check_exp_name(owner: str, exp_name: object) -> str:
    if not isinstance(exp_name, str) or not exp_name.strip():
        raise LoggerError(
            f"{owner}: exp_name must be a non-empty str naming the run folder, got "
            f"{_repr.repr(exp_name)}. Fix: pass e.g. exp_name='ppo_cartpole_seed0'."
        )
    path = Path(exp_name)
    if path.is_absolute() or ".." in path.parts:
        raise LoggerError(
            f"{owner}: exp_name must be a relative folder name inside log_dir, got "
            f"{exp_name!r}. Fix: pass the parent folder as log_dir and a plain name as exp_name."
        )
    return exp_name


def _check_name(owner: str, name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise LoggerError(
            f"{owner}: a metric name must be a non-empty str, got {_repr.repr(name)} of type "
            f"{type(name).__name__}. Fix: use names such as 'train/loss'."
        )
    return name


def _check_step(owner: str, step: object) -> int | None:
    if step is None:
        return None
    # bool is an int subclass, but step=True is a bug, not step 1.
    if isinstance(step, bool | np.bool_):
        index = None
    else:
        try:
            # Accepts int, numpy integers and one-element integer tensors; rejects floats.
            index = operator.index(step)  # type: ignore[arg-type]
        except TypeError:
            index = None
    if index is None:
        raise LoggerError(
            f"{owner}: step must be a non-negative int or None, got {_repr.repr(step)} of type "
            f"{type(step).__name__}. Fix: pass an int such as the number of frames collected "
            f"so far, or None to use the logger's own counter."
        )
    if index < 0:
        raise LoggerError(f"{owner}: step must be >= 0, got {index}.")
    return index


def _to_float(owner: str, name: str, value: object) -> float:
    if isinstance(value, torch.Tensor | np.ndarray):
        numel = value.size if isinstance(value, np.ndarray) else value.numel()
        if numel != 1:
            raise LoggerError(
                f"{owner}: metric {name!r} must be a single number, got a "
                f"{type(value).__name__} of shape {tuple(value.shape)}. Fix: reduce it first "
                f"(e.g. .mean()) or log each element under its own name."
            )
        value = value.item()
    if isinstance(value, bool | np.bool_ | numbers.Real):
        return float(value)
    raise LoggerError(
        f"{owner}: metric {name!r} must be a real number (int, float, numpy scalar, or a "
        f"one-element array or tensor), got {_repr.repr(value)} of type {type(value).__name__}."
    )


def _flatten(
    owner: str, what: str, mapping: Mapping[Any, Any], prefix: str = ""
) -> Iterator[tuple[str, Any]]:
    """Yield ``("a/b", value)`` pairs from nested mappings, checking every key."""
    for key, value in mapping.items():
        if not isinstance(key, str) or not key.strip():
            where = f" (under {prefix!r})" if prefix else ""
            raise LoggerError(
                f"{owner}: {what} keys must be non-empty str, got {_repr.repr(key)} of type "
                f"{type(key).__name__}{where}. Fix: convert the keys to names such as 'lr'."
            )
        full = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            yield from _flatten(owner, what, value, full)
        else:
            yield full, value


def _hparam_value(owner: str, key: str, value: Any) -> Any:
    """Turn ``value`` into JSON-compatible data (None, bool, int, float, str or lists)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray | torch.Tensor):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_hparam_value(owner, key, v) for v in value]
    if isinstance(value, Mapping):  # a mapping inside a list
        return {
            k: _hparam_value(owner, f"{key}/{k}", v) for k, v in _flatten(owner, "hparams", value)
        }
    if isinstance(value, os.PathLike | torch.dtype | torch.device):
        return str(value)
    raise LoggerError(
        f"{owner}: hyper-parameter {key!r} has a value of type {type(value).__name__} "
        f"({_repr.repr(value)}); expected a number, str, bool, None or a list of those. "
        f"Fix: convert it, e.g. str(value)."
    )
