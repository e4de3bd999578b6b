"""ReplayBuffer(prefetch=N, pin_memory=...): batches sampled ahead in a thread, pinned batches."""

from __future__ import annotations

import gc
import pickle
import threading
import time

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import (
    BufferConfigError,
    EmptyBufferError,
    LazyTensorStorage,
    PrioritizedReplayBuffer,
    ReplayBuffer,
    SamplerWithoutReplacement,
    TensorDictReplayBuffer,
)

THREAD_PREFIX = "rlblocks-prefetch"
HAS_ACCELERATOR = torch.cuda.is_available() or (
    hasattr(torch, "accelerator") and torch.accelerator.is_available()
)


def prefetch_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)}


def assert_ended(threads: set[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=10)
    assert not [t for t in threads if t.is_alive()]


@pytest.fixture(autouse=True)
def no_prefetch_thread_left():
    """Every buffer of a test is gone when it ends: so must its prefetch thread be."""
    before = prefetch_threads()
    yield
    gc.collect()
    assert_ended(prefetch_threads() - before)


def prefetching_buffer(prefetch: int = 2) -> tuple[ReplayBuffer, set[threading.Thread]]:
    """A buffer of 0..19 that sampled once, and the prefetch thread it started."""
    rb = ReplayBuffer(storage=LazyTensorStorage(20), batch_size=4, prefetch=prefetch)
    before = prefetch_threads()
    rb.extend(torch.arange(20))
    rb.sample()
    started = prefetch_threads() - before
    assert len(started) == 1
    return rb, started


class Recorder:
    """A transform recording the thread of every draw (transforms run where the draw runs)."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, batch):
        with self._changed:
            self.threads.append(threading.current_thread().name)
            self._changed.notify_all()
        return batch

    def wait_for(self, draws: int) -> None:
        """Wait until ``draws`` draws ran, then check no more run (nothing beyond the depth)."""
        with self._changed:
            done = self._changed.wait_for(lambda: len(self.threads) >= draws, timeout=10)
        assert done, f"{len(self.threads)} draws ran, expected {draws}"
        time.sleep(0.05)  # a thread drawing too far ahead would do it now
        assert len(self.threads) == draws


def test_prefetch_keeps_n_batches_ready_and_hands_them_out_in_order():
    recorder = Recorder()
    rb = ReplayBuffer(storage=LazyTensorStorage(100), batch_size=8, prefetch=3, transform=recorder)
    rb.extend(torch.arange(50))
    for calls in range(1, 7):
        batch, info = rb.sample(return_info=True)
        assert batch.shape == (8,) and torch.equal(batch, info["index"])
        assert int(batch.min()) >= 0 and int(batch.max()) < 50
        recorder.wait_for(calls + 3)  # the batches handed out, plus 3 ready
    assert all(name.startswith(THREAD_PREFIX) for name in recorder.threads)
    assert rb.prefetch == 3


def test_a_prefetched_sequence_equals_the_synchronous_one():
    def draws(prefetch):
        torch.manual_seed(0)
        rb = ReplayBuffer(storage=LazyTensorStorage(30), batch_size=5, prefetch=prefetch)
        rb.extend(torch.arange(30))
        batches = [rb.sample() for _ in range(8)]
        rb.shutdown()  # no draw ahead may use the global generator once this returns
        return batches

    expected = draws(None)
    assert all(torch.equal(a, b) for a, b in zip(draws(2), expected, strict=True))


def test_batches_drawn_before_an_extend_are_stale_for_prefetch_calls():
    recorder = Recorder()
    rb = ReplayBuffer(storage=LazyTensorStorage(10), batch_size=4, prefetch=2, transform=recorder)
    rb.extend(torch.zeros(10))
    assert rb.sample().tolist() == [0.0] * 4
    recorder.wait_for(3)  # two batches ready, drawn from the zeros
    rb.extend(torch.ones(10))  # replaces every element
    assert rb.sample().tolist() == [0.0] * 4
    assert rb.sample().tolist() == [0.0] * 4
    assert rb.sample().tolist() == [1.0] * 4  # drawn after the extend


def test_priority_updates_reach_the_batches_drawn_after_them():
    recorder = Recorder()
    rb = PrioritizedReplayBuffer(
        alpha=1.0,
        beta=1.0,
        storage=LazyTensorStorage(10),
        batch_size=4,
        prefetch=2,
        transform=recorder,
    )
    rb.extend(torch.arange(10))
    rb.sample()
    recorder.wait_for(3)
    priorities = torch.zeros(10)
    priorities[7] = 1.0
    rb.update_priority(torch.arange(10), priorities)
    for _ in range(2):  # drawn before the update: any stored elements, with their weights
        batch, info = rb.sample(return_info=True)
        assert torch.equal(batch, info["index"]) and info["_weight"].shape == (4,)
    for _ in range(3):
        assert rb.sample().tolist() == [7] * 4


def test_iteration_uses_prefetched_batches():
    recorder = Recorder()
    rb = ReplayBuffer(storage=LazyTensorStorage(40), batch_size=8, prefetch=2, transform=recorder)
    rb.extend(torch.arange(40))
    batches = list(rb)
    assert len(batches) == 5 and all(b.shape == (8,) and int(b.max()) < 40 for b in batches)
    recorder.wait_for(5 + 2)
    assert all(name.startswith(THREAD_PREFIX) for name in recorder.threads)


def test_prefetched_epochs_cover_every_element_once():
    rb = ReplayBuffer(
        storage=LazyTensorStorage(12),
        sampler=SamplerWithoutReplacement(),
        batch_size=4,
        prefetch=2,
    )
    rb.extend(torch.arange(12))
    for _ in range(3):  # batches prefetched past an epoch's end start the next epoch
        epoch = list(rb)
        assert len(epoch) == 3
        assert sorted(torch.cat(epoch).tolist()) == list(range(12))


def test_empty_ends_the_thread_and_a_later_sample_starts_another():
    rb, started = prefetching_buffer()
    rb.empty()
    assert_ended(started)
    with pytest.raises(EmptyBufferError, match="empty"):
        rb.sample()
    rb.extend(torch.arange(3))  # the failed draw does not poison later ones
    assert set(rb.sample().tolist()) <= {0, 1, 2}


def test_shutdown_ends_the_thread_and_keeps_the_content():
    rb, started = prefetching_buffer()
    rb.shutdown()
    rb.shutdown()  # idempotent
    assert_ended(started)
    assert len(rb) == 20 and rb.sample().shape == (4,)


def test_a_dropped_buffer_ends_its_thread():
    rb, started = prefetching_buffer(prefetch=3)
    del rb
    gc.collect()
    assert_ended(started)


def test_a_copy_of_a_prefetching_buffer_samples_with_its_own_thread():
    rb, _ = prefetching_buffer()
    copy = pickle.loads(pickle.dumps(rb))
    assert copy.prefetch == 2 and copy.sample().shape == (4,)
    rb.extend(torch.full((20,), 100))
    assert int(copy.sample().max()) < 20  # the copy's content is its own


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prefetch": 2}, "prefetch=2 needs a batch_size"),
        ({"prefetch": -1, "batch_size": 4}, "prefetch must be an int >= 0"),
        ({"prefetch": 1.5, "batch_size": 4}, "prefetch must be an int >= 0"),
        ({"pin_memory": "yes"}, "pin_memory must be True or False"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(BufferConfigError, match=match):
        ReplayBuffer(**kwargs)


def test_prefetch_zero_means_no_prefetching():
    before = prefetch_threads()
    rb = ReplayBuffer(storage=LazyTensorStorage(10), batch_size=2, prefetch=0)
    rb.extend(torch.arange(10))
    rb.sample()
    assert rb.prefetch is None and prefetch_threads() == before


@pytest.mark.skipif(HAS_ACCELERATOR, reason="the behaviour without an accelerator")
def test_pin_memory_without_an_accelerator_warns_and_pins_nothing():
    with pytest.warns(UserWarning, match="no accelerator is available"):
        rb = ReplayBuffer(storage=LazyTensorStorage(10), batch_size=4, pin_memory=True)
    rb.extend(torch.arange(10.0))
    assert rb.pin_memory is False and not rb.sample().is_pinned()


@pytest.mark.skipif(not HAS_ACCELERATOR, reason="pinning needs an accelerator")
@pytest.mark.parametrize("prefetch", [None, 2])
def test_pin_memory_pins_sampled_batches(prefetch):
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(10), batch_size=4, prefetch=prefetch, pin_memory=True
    )
    rb.extend(TensorDict({"obs": torch.randn(10, 3), "nested": {"r": torch.zeros(10)}}, [10]))
    batch = rb.sample()
    assert rb.pin_memory is True
    assert all(value.is_pinned() for value in batch.values(True, True))
    plain = ReplayBuffer(storage=LazyTensorStorage(10), batch_size=4, pin_memory=True)
    plain.extend({"a": torch.zeros(10, 2), "b": torch.ones(10)})
    assert all(value.is_pinned() for value in plain.sample().values())


# -- as TorchRL users write it (only the imports changed) --------------------------------------


def test_torchrl_style_prefetching_buffer():
    # from torchrl.data import LazyTensorStorage, SamplerWithoutReplacement, TensorDictReplayBuffer
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(1000),
        sampler=SamplerWithoutReplacement(),
        batch_size=64,
        prefetch=3,
        pin_memory=False,
    )
    rb.extend(TensorDict({"observation": torch.randn(256, 4), "reward": torch.randn(256)}, [256]))
    seen = []
    for batch in rb:
        assert batch["observation"].shape == (64, 4)
        seen.append(batch["index"])
    assert sorted(torch.cat(seen).tolist()) == list(range(256))
    sample = rb.sample()
    assert sample.batch_size == (64,)


@pytest.mark.skipif(HAS_ACCELERATOR, reason="the behaviour without an accelerator")
def test_torchrl_style_pin_memory_on_a_cpu_only_machine():
    # TorchRL fails at sample() here (torch cannot pin memory without an accelerator);
    # rlblocks warns once and leaves batches unpinned, so one script runs on both machines.
    # from torchrl.data import LazyTensorStorage, ReplayBuffer
    with pytest.warns(UserWarning, match="pin_memory=True, but no accelerator"):
        rb = ReplayBuffer(storage=LazyTensorStorage(100), batch_size=16, pin_memory=True)
    rb.extend(torch.randn(100, 3))
    assert rb.sample().shape == (16, 3)
