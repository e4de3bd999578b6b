"""Buffers extended from several processes and sampled in the main one."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import subprocess
import sys
import threading

import pytest
import torch

from rlblocks.buffers import (
    LazyMemmapStorage,
    LazyTensorStorage,
    NotShareableError,
    TensorDictMaxValueWriter,
    TensorDictPrioritizedReplayBuffer,
    TensorDictReplayBuffer,
)
from rlblocks.buffers._sharing import ProcessLock

TIMEOUT = 120


def run(processes):
    for p in processes:
        p.start()
    for p in processes:
        p.join(TIMEOUT)
    assert [p.exitcode for p in processes] == [0] * len(processes)


def shared_storage(kind, tmp_path, max_size, example):
    if kind == "memmap":
        return LazyMemmapStorage(max_size, tmp_path / "shared")
    storage = LazyTensorStorage(max_size, shared=True)
    storage.initialize(example)
    return storage


@pytest.mark.parametrize("kind", ["memmap", "shared_memory"])
def test_spawned_workers_extend_one_buffer(tmp_path, transitions, kind):
    storage = shared_storage(kind, tmp_path, 1000, transitions(1)[0])
    rb = TensorDictReplayBuffer(storage=storage, batch_size=64)
    ctx = mp.get_context("spawn")
    # The bound method pickles the buffer: memory-mapped files by path, shared memory by handle.
    run([ctx.Process(target=rb.extend, args=(transitions(150, start=1000 * w),)) for w in range(2)])
    assert len(rb) == 300 and rb.storage.cursor == 300
    ids = sorted(rb[:]["observation"][:, 0].long().tolist())
    assert ids == sorted(1000 * w + i for w in range(2) for i in range(150))
    assert rb.sample().batch_size == (64,)


@pytest.mark.parametrize("kind", ["memmap", "shared_memory"])
def test_concurrent_small_writes_lose_nothing(tmp_path, transitions, kind):
    storage = shared_storage(kind, tmp_path, 10_000, transitions(1)[0])
    rb = TensorDictReplayBuffer(storage=storage)
    chunks = {w: [transitions(7, start=10_000 * w + 7 * k) for k in range(40)] for w in range(2)}

    def work(worker):
        for chunk in chunks[worker]:
            rb.extend(chunk)

    ctx = mp.get_context("fork")
    run([ctx.Process(target=work, args=(w,)) for w in range(2)])
    rb.extend(transitions(5, start=50_000))
    ids = rb[:]["observation"][:, 0].long().tolist()
    assert len(ids) == len(set(ids)) == 2 * 40 * 7 + 5


def test_the_main_prioritized_sampler_sees_worker_writes(tmp_path, transitions):
    rb = TensorDictPrioritizedReplayBuffer(
        alpha=1.0, beta=1.0, storage=LazyMemmapStorage(100, tmp_path / "prb"), batch_size=200
    )
    rb.extend(transitions(10))
    rb.update_priority(torch.arange(10), torch.full((10,), 1e-6))
    ctx = mp.get_context("fork")
    run([ctx.Process(target=rb.extend, args=(transitions(10, start=500),))])
    batch = rb.sample()  # the new elements get the highest priority: they dominate the draws
    assert len(rb) == 20 and (batch["observation"][:, 0] >= 500).float().mean() > 0.9


def test_another_process_opens_a_memmap_storage_by_path(tmp_path, transitions):
    rb = TensorDictReplayBuffer(storage=LazyMemmapStorage(50, tmp_path / "rb"))
    rb.extend(transitions(4))
    script = (
        "import sys; from rlblocks.buffers import LazyMemmapStorage, TensorDictReplayBuffer;"
        "s = LazyMemmapStorage.open(sys.argv[1]); rb = TensorDictReplayBuffer(storage=s);"
        "rb.extend(rb[:]); print(len(rb))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "rb")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert out.stdout.strip() == "8" and len(rb) == 8
    assert rb[:]["observation"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] * 2


def test_writers_with_private_state_cannot_be_shared(tmp_path):
    rb = TensorDictReplayBuffer(
        storage=LazyMemmapStorage(10, tmp_path / "x"), writer=TensorDictMaxValueWriter("r")
    )
    with pytest.raises(NotShareableError, match="RoundRobinWriter"):
        pickle.dumps(rb)


def _take_lock(lock):
    with lock:
        pass


def test_a_lock_held_by_a_thread_at_fork_is_free_in_the_child(tmp_path):
    lock = ProcessLock(str(tmp_path / "lock"))
    held, release = threading.Event(), threading.Event()

    def hold():
        with lock:
            held.set()
            release.wait(TIMEOUT)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(TIMEOUT)
        # The child re-creates its locks after the fork; it waits only for the parent's flock.
        child = mp.get_context("fork").Process(target=_take_lock, args=(lock,))
        child.start()
        release.set()
        child.join(TIMEOUT)
        if child.is_alive():
            child.kill()
        assert child.exitcode == 0
    finally:
        release.set()
        holder.join(TIMEOUT)
