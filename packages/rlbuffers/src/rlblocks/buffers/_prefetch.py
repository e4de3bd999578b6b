"""Sampling ahead in a background thread, and pinning sampled batches.

:class:`Prefetcher` is what ``ReplayBuffer(prefetch=N)`` uses: one thread computes draws
ahead of the caller, one at a time and in the order they were asked for, so a caller gets the
same sequence of batches it would have drawn itself (when nothing else changes the buffer in
between). The thread ends when the prefetcher is stopped or garbage collected, and a forked
child process starts its own.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch
import torch.utils._pytree as pytree
from tensordict import is_tensor_collection

from rlblocks.buffers.errors import BufferConfigError

__all__ = ["Prefetcher", "check_pin_memory", "pin_batch"]

T = TypeVar("T")


class Prefetcher:
    """Keeps up to ``depth`` results of a draw function computed ahead by one thread.

    Args:
        depth: How many results are kept ready beyond the one being returned.
        name: Prefix of the thread's name (it shows in ``threading.enumerate()``).
    """

    def __init__(self, depth: int, name: str) -> None:
        self.depth = depth
        self.name = name
        self._queue: deque[Future[Any]] = deque()
        self._executor: ThreadPoolExecutor | None = None
        self._finalizer: weakref.finalize | None = None
        self._pid = os.getpid()

    @property
    def running(self) -> bool:
        """Whether the background thread was started and not stopped since."""
        return self._executor is not None and self._pid == os.getpid()

    def next(self, draw: Callable[[], T]) -> T:
        """Return the oldest prefetched result, after topping the queue up with ``draw``.

        The first call starts the thread and waits for the first draw. ``draw`` must not
        hold its owner strongly (pass a weak reference): queued draws would otherwise keep
        the owner alive.

        Raises:
            Exception: What the oldest draw raised; the other queued draws are dropped then,
                since they were drawn from the same state.
        """
        if self._pid != os.getpid():
            self._forget()  # a forked child: the parent's thread does not exist here
        executor = self._executor
        if executor is None:
            executor = ThreadPoolExecutor(1, thread_name_prefix=self.name)
            # Bound to this object, not to the owner: the owner holds the prefetcher, so the
            # thread also ends when the owner is garbage collected.
            self._finalizer = weakref.finalize(
                self, executor.shutdown, wait=False, cancel_futures=True
            )
            self._executor = executor
        while len(self._queue) <= self.depth:
            self._queue.append(executor.submit(draw))
        future = self._queue.popleft()
        try:
            return future.result()
        except BaseException:
            self.drop()
            raise

    def drop(self) -> None:
        """Discard the queued draws; returns once none is running."""
        queue, self._queue = self._queue, deque()
        for future in queue:
            future.cancel()
        for future in queue:
            if not future.cancelled():
                future.exception()  # wait: no draw may overlap what the caller does next

    def stop(self) -> None:
        """Discard the queued draws and end the thread (a later :meth:`next` starts one)."""
        if self._pid != os.getpid():
            self._forget()
            return
        self.drop()
        if self._finalizer is not None:
            self._finalizer()  # shuts the executor down: its idle thread exits
        self._executor = self._finalizer = None

    def _forget(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        self._queue = deque()
        self._executor = self._finalizer = None
        self._pid = os.getpid()


def _accelerator_available() -> bool:
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def check_pin_memory(pin_memory: Any, who: str) -> bool:
    """Validate ``pin_memory``; return whether batches will really be pinned.

    Pinning needs an accelerator (torch raises without one), so on a machine without one
    ``pin_memory=True`` warns and batches are left as they are: the same script runs on a
    laptop and on a GPU node.

    Raises:
        BufferConfigError: ``pin_memory`` is not a bool.
    """
    if not isinstance(pin_memory, bool):
        raise BufferConfigError(
            f"{who}: pin_memory must be True or False, got {pin_memory!r}. Fix: pass "
            f"pin_memory=True to pin sampled batches for fast copies to an accelerator."
        )
    if pin_memory and not _accelerator_available():
        warnings.warn(
            f"{who}: pin_memory=True, but no accelerator is available, so sampled batches "
            f"are not pinned (pinned memory only speeds up copies to an accelerator). Pass "
            f"pin_memory=False on this machine to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
        return False
    return pin_memory


def _pin_tensor(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.pin_memory() if tensor.device.type == "cpu" else tensor


def pin_batch(data: Any) -> Any:
    """``data`` with its CPU tensors in pinned memory (TensorDicts, tensors, pytrees of them).

    Tensors already on an accelerator, numpy arrays and other objects are left as they are.
    """
    if is_tensor_collection(data):
        return data.apply(_pin_tensor)
    return pytree.tree_map_only(torch.Tensor, _pin_tensor, data)
