"""Checkpoints under faults: bit flips, truncation, crashes between system calls, SIGKILL.

Issue 20, items 3, 5, 6 and 7. Every replay-buffer and trainer checkpoint follows one rule
(rlblocks.core.checkpoint): whatever happened to its files, a load restores exactly the
saved state or raises and changes nothing; whenever a save was interrupted, the path still
holds a complete checkpoint, the previous one or the new one.
"""

from __future__ import annotations

import builtins
import itertools
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.buffers import (
    CheckpointError,
    LazyMemmapStorage,
    LazyTensorStorage,
    ListStorage,
    ReplayBuffer,
    TensorDictPrioritizedReplayBuffer,
    TensorDictReplayBuffer,
)
from rlblocks.collectors import CheckpointError as TrainerCheckpointError
from rlblocks.collectors import SyncDataCollector, Trainer
from rlblocks.core.specs import Categorical, Composite, Unbounded
from rlblocks.envs import EnvBase

pytestmark = pytest.mark.filterwarnings(
    # Python 3.12+ warns on fork() in a threaded process; the children here run only
    # rlblocks' own file writes.
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

FORK = multiprocessing.get_context("fork")
CRASHED = 86  # the exit code of a child made to crash


# -- state fingerprints ------------------------------------------------------------------


def transitions(n: int, start: int = 0) -> TensorDict:
    step = torch.arange(start, start + n, dtype=torch.float32)
    return TensorDict(
        {
            "observation": torch.stack([step, -step], -1),
            "action": torch.arange(n).unsqueeze(-1) % 2,
            "next": {"observation": torch.stack([step + 1, -step], -1), "reward": step[:, None]},
        },
        [n],
    )


BUFFERS: dict[str, Callable[[Path], ReplayBuffer]] = {
    "prioritized-tensor": lambda d: TensorDictPrioritizedReplayBuffer(
        alpha=0.6, beta=0.4, storage=LazyTensorStorage(10)
    ),
    "memmap": lambda d: TensorDictReplayBuffer(storage=LazyMemmapStorage(10, d)),
    "list": lambda d: ReplayBuffer(storage=ListStorage(10)),
}


def filled(kind: str, folder: Path, start: int, n: int) -> ReplayBuffer:
    rb = BUFFERS[kind](folder)
    data = transitions(n, start)
    rb.extend(data if kind != "list" else [{"x": int(v)} for v in data["observation"][:, 0]])
    if kind == "prioritized-tensor":
        rb.update_priority(list(range(min(n, 10))), [float(i + start) for i in range(min(n, 10))])
    return rb


# -- bit flips and truncation ------------------------------------------------------------

SMALL = ("CHECKPOINT", "MANIFEST", "meta.json")


def flips(file: Path, bits: Any) -> Any:
    """Flip each of ``bits`` of ``file`` in place, one at a time (yielding while flipped)."""
    original = file.read_bytes()
    fd = os.open(file, os.O_RDWR)
    try:
        for bit in bits:
            at = int(bit) // 8
            os.pwrite(fd, bytes([original[at] ^ (1 << (int(bit) % 8))]), at)
            yield int(bit)
            os.pwrite(fd, original[at : at + 1], at)
    finally:
        os.close(fd)


def truncations(file: Path) -> Any:
    """Truncate ``file`` to a few lengths in turn (yielding while truncated), then restore."""
    original = file.read_bytes()
    for length in sorted({0, 1, len(original) // 2, len(original) - 1}):
        file.write_bytes(original[:length])
        yield length
    file.write_bytes(original)


@pytest.mark.parametrize("kind", sorted(BUFFERS))
def test_every_bit_flip_and_truncation_restores_exactly_or_raises(tmp_path, kind, same):
    """Flip every bit of the small files (pointer, manifest, metadata; a sample for the
    storages other than the first) and a sample of the data files' bits, and truncate every
    file: each load either restores exactly the saved state or raises CheckpointError,
    leaving the loading buffer as it was."""
    saved = filled(kind, tmp_path / "saved", 0, 7)
    expected = saved.state_dict()
    path = tmp_path / "ckpt"
    saved.dumps(path)
    other = filled(kind, tmp_path / "other", 100, 3)
    before = other.state_dict()
    files = sorted(p for p in path.rglob("*") if p.is_file())
    assert "meta.json" in {p.name for p in files}
    outcomes = {"raised": 0, "restored": 0}

    def attempt() -> None:
        try:
            other.loads(path)
        except CheckpointError:
            outcomes["raised"] += 1
            assert (len(other), other.storage.cursor) == (3, 3)
            if outcomes["raised"] % 64 == 0:  # the full comparison costs as much as a load
                assert same(other.state_dict(), before)
        else:
            outcomes["restored"] += 1
            assert same(other.state_dict(), expected)
            other.load_state_dict(before)

    for file in files:
        nbits = file.stat().st_size * 8
        if file.name in SMALL:
            bits = range(0, nbits, 1 if kind == "prioritized-tensor" else 7)
        else:
            bits = np.linspace(0, nbits - 1, 97).astype(int)
        for _ in flips(file, bits):
            attempt()
        for _ in truncations(file):
            attempt()
        assert same(other.state_dict(), before)
    assert outcomes["restored"] == 0  # every change to any file is caught
    other.loads(path)
    assert same(other.state_dict(), expected)


def test_every_trainer_checkpoint_file_is_verified_before_anything_changes(tmp_path, same):
    """Flip a sample of bits and truncate each file of a trainer checkpoint (trainer.pt
    and the replay buffer's files): each load raises and leaves the trainer as it was."""
    trainer = make_trainer(seed=0)
    trainer.train(num_batches=2)
    path = trainer.save(tmp_path / "ckpt")
    other = make_trainer(seed=1)
    other.train(num_batches=1)
    before = trainer_state(other)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    assert {"trainer.pt", "CHECKPOINT", "MANIFEST", "meta.json", "rows.bin"} <= {
        p.name for p in files
    }
    for file in files:
        bits = np.linspace(0, file.stat().st_size * 8 - 1, 13).astype(int)
        for _ in itertools.chain(flips(file, bits), truncations(file)):
            with pytest.raises(TrainerCheckpointError):
                other.load(path)
            assert same(trainer_state(other), before), file
    other.load(path)
    assert same(trainer_state(other), trainer_state(trainer))


# -- crashes between system calls --------------------------------------------------------

# Every file-system call a checkpoint write makes goes through one of these.
SYSTEM_CALLS = [
    (os, "mkdir"),
    (builtins, "open"),
    (os, "open"),
    (os, "write"),
    (os, "fsync"),
    (os, "replace"),
    (os, "rename"),
    (os, "scandir"),
    (os, "unlink"),
    (os, "rmdir"),
]


# The calls that change what a folder holds (the others write inside a version folder that
# nothing points to yet, or make data durable against power loss, not process death).
STRUCTURAL_CALLS = [c for c in SYSTEM_CALLS if c[1] not in ("open", "write", "fsync")]


def crash_at(k: int, action: Callable[[], None], calls: list[tuple[Any, str]]) -> bool:
    """Run ``action`` in a forked child that dies (``os._exit``, no cleanup) just before its
    ``k``-th call of one of ``calls``. Returns True if the child finished before that."""

    def child() -> None:
        count = [0]
        for module, name in calls:
            real = getattr(module, name)

            def counted(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
                count[0] += 1
                if count[0] == k:
                    os._exit(CRASHED)
                return _real(*args, **kwargs)

            setattr(module, name, counted)
        action()
        os._exit(0)

    process = FORK.Process(target=child)
    process.start()
    process.join(60)
    if process.is_alive():  # never leave a child behind, whatever the outcome
        process.kill()
        process.join()
    assert process.exitcode in (0, CRASHED), process.exitcode
    return process.exitcode == 0


def crash_everywhere(
    initial: str,
    reset: Callable[[], None],
    write: Callable[[], None],
    state: Callable[[], str],
    calls: list[tuple[Any, str]] = SYSTEM_CALLS,
) -> set[str]:
    """Crash ``write`` before each of its calls in turn; after each crash ``state()`` must
    name a complete checkpoint. ``reset`` restores the ``initial`` state when a crash left
    another; what a crash left behind is otherwise kept, so the next write meets it.
    Returns the states seen after crashes."""
    seen: set[str] = set()
    found = initial
    for k in range(1, 500):
        if found != initial:
            reset()
        finished = crash_at(k, write, calls)
        found = state()
        if finished:
            assert found == "new"
            return seen
        seen.add(found)
    raise AssertionError("the write never finished")


@pytest.mark.parametrize("existing", [True, False], ids=["overwrite", "create"])
def test_a_crash_between_any_two_system_calls_of_dumps_leaves_a_checkpoint(
    tmp_path, existing, same
):
    """Issue 20, item 7: an overwrite was two renames, and a crash between them left no
    loadable checkpoint at the path."""
    path = tmp_path / "ckpt"
    old = filled("prioritized-tensor", tmp_path, 0, 7)
    new = filled("prioritized-tensor", tmp_path, 50, 4)

    def reset() -> None:
        if existing:
            old.dumps(path)
        else:
            shutil.rmtree(path, ignore_errors=True)

    def state() -> str:
        if not path.exists():
            assert not existing
            return "none"
        loaded = filled("prioritized-tensor", tmp_path, 200, 1)
        loaded.loads(path)  # must not raise: a complete checkpoint is always there
        for name, rb in (("old", old), ("new", new)):
            if same(loaded.state_dict(), rb.state_dict()):
                return name
        raise AssertionError("the path holds a checkpoint of neither state")

    reset()
    seen = crash_everywhere("old" if existing else "none", reset, lambda: new.dumps(path), state)
    assert seen == ({"old", "new"} if existing else {"none", "new"})
    names = sorted(p.name for p in path.iterdir())
    assert len(names) == 2 and names[0] == "CHECKPOINT"  # no leftover version folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no leftover staging


def test_a_crash_between_any_two_system_calls_of_trainer_save_leaves_a_checkpoint(tmp_path, same):
    path = tmp_path / "ckpt"
    old_trainer = make_trainer(seed=0)
    old_trainer.train(num_batches=1)
    new_trainer = make_trainer(seed=0)
    new_trainer.train(num_batches=2)
    old, new = trainer_state(old_trainer), trainer_state(new_trainer)
    probe = make_trainer(seed=3)

    def state() -> str:
        probe.load(path)  # must not raise: a complete checkpoint is always there
        found = trainer_state(probe)
        return "old" if same(found, old) else "new" if same(found, new) else "neither"

    old_trainer.save(path)
    seen = crash_everywhere(
        "old",
        lambda: old_trainer.save(path),
        lambda: new_trainer.save(path),
        state,
        STRUCTURAL_CALLS,
    )
    assert seen == {"old", "new"}


def test_sigkill_during_dumps_leaves_the_previous_or_the_new_checkpoint(tmp_path):
    """A child writes two large states in turn until SIGKILLed at some point of a write:
    the checkpoint loads, and holds one of the two states."""
    path = tmp_path / "ckpt"
    states = []
    for start in (0, 1_000_000):
        rb = TensorDictReplayBuffer(storage=LazyTensorStorage(60_000))
        rb.extend(transitions(60_000, start))
        states.append(rb)
    states[0].dumps(path)
    firsts = {float(rb[0]["observation"][0]) for rb in states}

    def writer() -> None:
        while True:
            for rb in states[::-1]:
                rb.dumps(path)

    rng = np.random.default_rng(0)
    for _ in range(6):
        process = FORK.Process(target=writer)
        process.start()
        time.sleep(float(rng.uniform(0.05, 0.4)))
        os.kill(process.pid, signal.SIGKILL)
        process.join(10)
        assert process.exitcode == -signal.SIGKILL
        loaded = TensorDictReplayBuffer(storage=LazyTensorStorage(60_000))
        loaded.loads(path)
        first = float(loaded[0]["observation"][0])
        assert first in firsts
        match = next(rb for rb in states if float(rb[0]["observation"][0]) == first)
        assert (loaded[:] == match[:]).all()


# -- a small trainer ----------------------------------------------------------------------


class Walk(EnvBase):
    """Four walkers on a line: action 1 steps right, 0 left; reward -|x|; never done."""

    def __init__(self) -> None:
        super().__init__(batch_size=(4,))
        self.observation_spec = Composite(
            {"observation": Unbounded(shape=(4, 1))}, shape=self.batch_size
        )
        self.action_spec = Categorical(2, shape=self.batch_size)

    def _reset(self, tensordict: Any) -> TensorDict:
        return TensorDict({"observation": torch.zeros(4, 1)}, self.batch_size)

    def _step(self, tensordict: TensorDict) -> TensorDict:
        x = tensordict["observation"] + tensordict["action"].unsqueeze(-1).float() * 2 - 1
        flag = torch.zeros(4, 1, dtype=torch.bool)
        return TensorDict(
            {"observation": x, "reward": -x.abs(), "done": flag, "terminated": flag,
             "truncated": flag},
            self.batch_size,
        )  # fmt: skip

    def _set_seed(self, seed: int | None) -> None:
        pass


class ValueLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Linear(1, 1)

    def forward(self, batch: TensorDict) -> TensorDict:
        error = self.value(batch["observation"]) - batch["next", "reward"]
        return TensorDict({"loss_value": error.pow(2).mean()}, [])


class Actor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 2)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.linear(observation).argmax(-1)


def make_trainer(seed: int) -> Trainer:
    torch.manual_seed(seed)
    policy = TensorDictModule(Actor(), ["observation"], ["action"])
    loss = ValueLoss()
    collector = SyncDataCollector(Walk(), policy, frames_per_batch=16)
    return Trainer(
        collector,
        loss,
        torch.optim.Adam(loss.parameters(), lr=0.01),
        replay_buffer=TensorDictReplayBuffer(storage=LazyTensorStorage(64)),
        optim_steps_per_batch=2,
        batch_size=8,
        progress_bar=False,
    )


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    state = trainer.state_dict()
    del state["rng"]  # the generators move on with every call; they are restored at load
    state["buffer"] = trainer.replay_buffer.state_dict()
    return state
