"""What lets several processes write into one storage: a lock and shared counters.

A storage keeps three counters (fill level, write cursor, rows written in total) in a small
int64 array. In a shared storage that array lives in shared memory or in a memory-mapped
file, so every process sees one fill level and one cursor; writes are serialized by
:class:`ProcessLock`, an ``flock`` on a file, which works across processes however they were
started (fork, spawn, or an unrelated process opening the same memory-mapped storage).
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from types import TracebackType

import numpy as np

try:  # POSIX only; elsewhere a shared storage is locked within its process only
    import fcntl
except ImportError:  # pragma: no cover - not reachable on Linux/macOS
    fcntl = None  # type: ignore[assignment]

__all__ = ["LEN", "CURSOR", "WRITTEN", "ProcessLock"]

# Positions in a storage's counters array.
LEN, CURSOR, WRITTEN = 0, 1, 2


class ProcessLock:
    """A re-entrant lock that also excludes other processes when given a lock file.

    Args:
        path: The lock file (created if missing), or None for a thread lock only.

    The lock is re-created after a fork and after unpickling: a file descriptor inherited
    through fork shares its lock with the parent, so each process opens its own.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._reset()
        _LOCKS.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._reset()
        _LOCKS.add(self)

    def __enter__(self) -> ProcessLock:
        self._thread_lock.acquire()
        if self.path is not None and fcntl is not None:
            if self._depth == 0:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                except BaseException:
                    self._thread_lock.release()
                    raise
            self._depth += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.path is not None and fcntl is not None:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)


# Every lock of this process, to re-create after a fork (rather than comparing process ids
# at each acquisition, a system call on every sample).
_LOCKS: weakref.WeakSet[ProcessLock] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for lock in list(_LOCKS):
        lock._reset()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_reset_after_fork)


def new_counters() -> np.ndarray:
    """A private (not shared) counters array."""
    return np.zeros(3, dtype=np.int64)
