"""Multi-process collectors under faults: a stuck worker, a shutdown from another thread.

Issue 20, items 8 and 10. Each scenario runs real worker processes and bounds how long the
parent may wait; none may leave a process behind.
"""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from rlblocks.collectors import (
    CollectorClosedError,
    CollectorWorkerError,
    MultiaSyncDataCollector,
    MultiSyncDataCollector,
)
from rlblocks.envs import CartPoleEnv

COLLECTORS = [MultiSyncDataCollector, MultiaSyncDataCollector]


class SlowCartPole(CartPoleEnv):
    """CartPole whose step takes ``delay`` seconds, or an hour when ``hang``."""

    def __init__(self, delay: float = 0.0, hang: bool = False) -> None:
        super().__init__()
        self.delay, self.hang = delay, hang

    def _step(self, tensordict):
        time.sleep(3600 if self.hang else self.delay)
        return super()._step(tensordict)


def hanging() -> SlowCartPole:
    return SlowCartPole(hang=True)


def slow() -> SlowCartPole:
    return SlowCartPole(delay=0.005)


def slow_to_build() -> SlowCartPole:
    time.sleep(3600)
    return SlowCartPole()


@pytest.mark.parametrize("cls", COLLECTORS)
def test_a_stuck_worker_raises_naming_it_and_leaves_no_process(cls, wait_gone):
    """Worker 1 hangs in its env's step: iteration raises within the timeout (plus the
    bounded shutdown) instead of waiting forever, naming the worker and where it hangs."""
    collector = cls([SlowCartPole, hanging], frames_per_batch=4, timeout=1.0)
    pids = collector.worker_pids
    start = time.monotonic()
    with pytest.raises(CollectorWorkerError) as info:
        for _ in collector:  # the async collector keeps yielding worker 0's batches meanwhile
            pass
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert f"worker 1 (pid {pids[1]}) sent nothing for 1." in message
    assert "while collecting a batch (timeout=1 s" in message
    # Its stack when it was stopped says where it hangs.
    assert "_step" in message and "test_collector_faults.py" in message
    assert collector.is_closed
    assert wait_gone(pids, 10) == []
    with pytest.raises(CollectorClosedError):
        collector.next()


def test_a_worker_slower_than_the_timeout_at_building_its_env_fails_the_constructor(
    wait_gone,
):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(CollectorWorkerError, match=r"worker 0 \(pid \d+\) sent nothing.*env"):
        MultiSyncDataCollector([slow_to_build], frames_per_batch=2, timeout=0.5)
    now = {p.pid for p in psutil.Process().children(recursive=True)}
    assert wait_gone(list(now - before), 10) == []


@pytest.mark.parametrize("cls", COLLECTORS)
def test_shutdown_from_another_thread_ends_the_iteration_cleanly(cls, wait_gone):
    """The iterating thread used to die of ``AttributeError: 'NoneType' object has no
    attribute 'clone'``; now its iteration ends with the closed collector's error."""
    collector = cls([slow, slow], frames_per_batch=20, total_frames=-1)
    pids = collector.worker_pids
    second_batch = threading.Event()
    outcome: list[BaseException | None] = []
    batches = []

    def iterate() -> None:
        try:
            for batch in collector:
                batches.append(batch)
                if len(batches) == 2:
                    second_batch.set()  # from now on the workers are mid-batch
        except BaseException as err:
            outcome.append(err)
        else:
            outcome.append(None)

    thread = threading.Thread(target=iterate)
    thread.start()
    assert second_batch.wait(60)
    time.sleep(0.02)
    start = time.monotonic()
    collector.shutdown()
    thread.join(15)
    assert not thread.is_alive()
    assert time.monotonic() - start < 15
    (err,) = outcome
    # Mostly "shutdown() was called while this call was waiting for the workers"; if the
    # shutdown lands between two batches, the next one says the collector is shut down.
    assert isinstance(err, CollectorClosedError), repr(err)
    assert "shutdown()" in str(err)
    assert all(b is not None and b.numel() == batches[0].numel() for b in batches)
    assert collector.is_closed
    assert wait_gone(pids, 10) == []
