"""Helpers that rlblocks distributions and plugins share: one implementation of each.

* :func:`check_int`: the positive-int (or ``>= minimum``) argument check, raising the
  caller's own error class with a message naming the owner, the argument and the value.
* :func:`check_timeout`: a timeout argument in seconds (a positive number, or ``None`` for
  no limit), raising the caller's own error class.
* :func:`as_device` / :func:`as_optional_device`: device normalization. Accelerator devices
  without an index get the current one (``"cuda"`` -> ``cuda:0``), so that two spellings of
  the same GPU compare equal.
* :func:`stop_processes`: bounded, idempotent shutdown of worker processes (a polite
  message, then SIGTERM, then SIGKILL), leaving no child behind.
* :data:`TORCH_COMPILE_ARGS` and :func:`error_summary`: what an option forwarded to
  ``torch.compile`` may hold, and the one-line quote of a compile failure in the warning
  of a component that then runs eager.

They are public so that third-party plugins (env backends with worker processes,
storages with checkpoints) behave like rlblocks' own components; the shared checkpoint
format (manifests, checksums, atomic overwrites) is :mod:`rlblocks.core.checkpoint`.
"""

from __future__ import annotations

import contextlib
import inspect
import numbers
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

__all__ = [
    "check_int",
    "check_timeout",
    "as_device",
    "as_optional_device",
    "stop_processes",
    "TORCH_COMPILE_ARGS",
    "error_summary",
]

TORCH_COMPILE_ARGS: frozenset[str] = frozenset(inspect.signature(torch.compile).parameters) - {
    "model"
}
"""The keyword arguments ``torch.compile`` takes besides the function."""


def error_summary(error: BaseException, limit: int = 400) -> str:
    """``"Type: message"`` on one line, cut to ``limit`` characters (with ``...``)."""
    message = " ".join(str(error).split())
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return f"{type(error).__name__}: {message}"


def check_int(
    value: Any,
    name: str,
    owner: str,
    *,
    minimum: int = 1,
    allow: Sequence[Any] = (),
    error: type[Exception] = ValueError,
) -> Any:
    """Return ``value`` as an ``int`` if it is one (numpy ints too, bools not) ``>= minimum``.

    Args:
        value: The argument to check.
        name: Its name, for the message (``"num_workers"``).
        owner: Who takes it, for the message (``"ParallelEnv"``).
        minimum: The smallest accepted value.
        allow: Other values accepted as they are (e.g. ``(None, -1)`` for "no limit").
        error: The exception class raised (each distribution raises its own).

    Returns:
        ``value`` (an ``int``, or one of ``allow`` unchanged).

    Raises:
        error: ``value`` is not an int ``>= minimum`` nor one of ``allow``.
    """
    if not isinstance(value, bool) and any(
        value is a or (type(value) is type(a) and value == a) for a in allow
    ):
        return value
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        also = f" (or {', '.join(map(repr, allow))})" if allow else ""
        raise error(
            f"{owner}: {name} must be {kind}{also}, got {value!r}; "
            f"pass e.g. {name}={max(minimum, 1)}"
        )
    return number


def check_timeout(
    value: Any, name: str, owner: str, *, error: type[Exception] = ValueError
) -> float | None:
    """Return ``value`` as a float number of seconds ``> 0``, or ``None`` ("no limit").

    Args:
        value: The argument to check (any real number, numpy's included; not a bool).
        name: Its name, for the message (``"timeout"``).
        owner: Who takes it, for the message (``"MultiSyncDataCollector"``).
        error: The exception class raised (each distribution raises its own).

    Returns:
        ``float(value)``, or ``None``.

    Raises:
        error: ``value`` is neither a positive finite number nor ``None``.
    """
    if value is None:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy's too
    if not ok or not 0 < value < float("inf"):
        raise error(
            f"{owner}: {name} must be a positive number of seconds or None (wait forever), "
            f"got {value!r}; pass e.g. {name}=60"
        )
    return float(value)


def as_device(device: Any) -> torch.device:
    """Normalize a device argument; ``None`` means torch's current default device.

    Args:
        device: A ``torch.device``, a string such as ``"cuda:1"``, an accelerator index,
            or ``None``.

    Returns:
        The ``torch.device``, with the current index filled in for an accelerator given
        without one (``"cuda"`` -> ``cuda:0``).

    Raises:
        ValueError: ``device`` does not name a device.
        RuntimeError: ``device`` names an accelerator this machine does not have.
    """
    if device is None:
        device = torch.get_default_device()
    try:
        device = torch.device(device)
    except (TypeError, RuntimeError) as err:
        raise ValueError(
            f"device must be a torch.device, a str such as 'cpu' or 'cuda:0', or an int, "
            f"got {device!r}"
        ) from err
    if device.index is None and device.type not in ("cpu", "meta"):
        try:
            device = torch.empty(0, device=device).device
        except (AssertionError, RuntimeError) as err:  # torch raises both for a missing GPU
            raise RuntimeError(f"device {str(device)!r} is not available here: {err}") from err
    return device


def as_optional_device(device: Any) -> torch.device | None:
    """:func:`as_device`, but ``None`` stays ``None`` ("wherever the data already is")."""
    return None if device is None else as_device(device)


def stop_processes(
    processes: Sequence[Any],
    conns: Iterable[Any] = (),
    *,
    send_close: Callable[[Any], None] | None = None,
    grace_s: float = 1.5,
    terminate_s: float = 1.0,
    kill_s: float = 1.0,
) -> None:
    """Stop worker processes within ``grace_s + terminate_s + kill_s`` seconds.

    Each connection first gets ``send_close(conn)`` (a polite request to leave); processes
    still alive after ``grace_s`` are terminated, and those alive ``terminate_s`` later are
    killed. Connections are closed and exited processes released. Safe to call several
    times and on processes that already exited.

    Args:
        processes: ``multiprocessing.Process`` objects (or anything with ``join``,
            ``is_alive``, ``terminate``, ``kill``).
        conns: The parent's ends of the workers' pipes.
        send_close: Sends the close request on one connection (errors of a closed pipe
            are ignored); ``None`` sends nothing.
        grace_s: How long the workers get to leave on their own.
        terminate_s: How long SIGTERM gets before SIGKILL.
        kill_s: How long to wait for killed processes to be reaped.
    """
    conns = list(conns)
    if send_close is not None:
        for conn in conns:
            with contextlib.suppress(OSError, ValueError):  # the worker or the pipe is gone
                send_close(conn)
    _join_all(processes, grace_s)
    for stage, timeout in (("terminate", terminate_s), ("kill", kill_s)):
        alive = [p for p in processes if _alive(p)]
        if not alive:
            break
        for process in alive:
            with contextlib.suppress(ValueError):  # closed meanwhile
                getattr(process, stage)()
        _join_all(alive, timeout)
    for conn in conns:
        with contextlib.suppress(OSError):
            conn.close()
    for process in processes:
        if not _alive(process) and hasattr(process, "close"):
            with contextlib.suppress(ValueError):
                process.close()


def _alive(process: Any) -> bool:
    try:
        return bool(process.is_alive())
    except ValueError:  # a closed multiprocessing.Process
        return False


def _join_all(processes: Iterable[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(ValueError):
            process.join(max(0.0, deadline - time.monotonic()))
