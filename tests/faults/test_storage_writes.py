"""Storage writes under faults: leaves that cannot be copied, and a full disk.

Issue 20, items 2 and 4. A write into a storage is all or nothing: anything that can fail
(a sparse or ``meta`` tensor, a full disk) fails before the first byte is written, with an
error naming the culprit, and the buffer keeps its contents, cursor and priorities. A full
disk under a memory-mapped storage is an error when the file is created, never a SIGBUS.
"""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import (
    DiskFullError,
    LazyMemmapStorage,
    LazyTensorStorage,
    ReplayBuffer,
    StorageLayoutError,
    TensorDictMaxValueWriter,
    TensorDictPrioritizedReplayBuffer,
    TensorDictReplayBuffer,
)

SPAWN = multiprocessing.get_context("spawn")


def transitions(n: int, start: int = 0) -> TensorDict:
    """32-byte rows: observation f32[4], action i64[1], reward f32[1], done bool[1]."""
    step = torch.arange(start, start + n, dtype=torch.float32)
    return TensorDict(
        {
            "observation": torch.stack([step, step, -step, step], -1),
            "action": torch.arange(n).unsqueeze(-1),
            "next": {"reward": step[:, None], "done": torch.zeros(n, 1, dtype=torch.bool)},
        },
        [n],
    )


# -- leaves that cannot be copied --------------------------------------------------------


def pairs(n: int, start: float, z: torch.Tensor | None = None) -> TensorDict:
    """``a`` (float64) is packed before ``z`` (complex64): both 8-byte items."""
    a = torch.arange(start, start + n, dtype=torch.float64)[:, None]
    if z is None:
        z = (a.expand(n, 2) + 1j).to(torch.complex64)
    return TensorDict({"a": a, "z": z}, [n])


BAD_LEAVES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sparse": lambda z: z.to_sparse(),
    "meta-device": lambda z: torch.empty_like(z, device="meta"),  # stands for another device
}

STORAGES: dict[str, Callable[[Path], Any]] = {
    "tensor": lambda d: LazyTensorStorage(6),
    "shared-tensor": lambda d: LazyTensorStorage(6, shared=True),
    "memmap": lambda d: LazyMemmapStorage(6, d / "s"),
}

BUFFERS: dict[str, Callable[[Any], Any]] = {
    "round-robin": lambda s: TensorDictReplayBuffer(storage=s),
    "prioritized": lambda s: TensorDictPrioritizedReplayBuffer(alpha=0.7, beta=0.5, storage=s),
    "max-value": lambda s: TensorDictReplayBuffer(
        storage=s, writer=TensorDictMaxValueWriter(rank_key="a")
    ),
}


@pytest.mark.parametrize("buffer", sorted(BUFFERS))
@pytest.mark.parametrize("storage", sorted(STORAGES))
@pytest.mark.parametrize("leaf", sorted(BAD_LEAVES))
def test_a_leaf_that_cannot_be_copied_writes_nothing(tmp_path, storage, buffer, leaf, same):
    """A batch that wraps over stored rows and whose second field cannot be copied: the
    error names the key, and every stored row, the cursor, the priorities and the writer's
    state are as before."""
    rb = BUFFERS[buffer](STORAGES[storage](tmp_path))
    rb.extend(pairs(6, 0.0))
    if buffer == "prioritized":
        rb.update_priority(list(range(6)), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    before = rb.state_dict()
    bad = pairs(4, 100.0)
    bad["z"] = BAD_LEAVES[leaf](bad["z"])
    with pytest.raises(StorageLayoutError, match=r"leaf 'z' .*Nothing was written"):
        rb.extend(bad)
    assert same(rb.state_dict(), before)
    rb.extend(pairs(4, 100.0))  # the buffer still works
    assert sorted(rb[:]["a"].flatten().tolist())[-4:] == [100.0, 101.0, 102.0, 103.0]


@pytest.mark.parametrize("leaf", sorted(BAD_LEAVES))
def test_pytree_data_with_a_leaf_that_cannot_be_copied_writes_nothing(leaf, same):
    rb = ReplayBuffer(storage=LazyTensorStorage(4))
    rb.extend({"a": torch.zeros(4, 1, dtype=torch.float64), "z": torch.zeros(4, 2) + 0j})
    before = rb.state_dict()
    z = BAD_LEAVES[leaf](torch.ones(3, 2, dtype=torch.complex64))
    with pytest.raises(StorageLayoutError, match=r"leaf \"\['z'\]\" .*Nothing was written"):
        rb.extend({"a": torch.ones(3, 1, dtype=torch.float64), "z": z})
    assert same(rb.state_dict(), before)


def test_conjugate_views_are_stored_as_their_values(tmp_path):
    rb = TensorDictReplayBuffer(storage=LazyMemmapStorage(6, tmp_path / "s"))
    rb.extend(pairs(6, 0.0))
    z = torch.full((4, 2), 3 + 4j, dtype=torch.complex64)
    rb.extend(pairs(4, 100.0, z=z.conj()))
    assert (rb[:4]["z"] == 3 - 4j).all() and rb[:4]["a"].flatten().tolist() == [
        100.0, 101.0, 102.0, 103.0,
    ]  # fmt: skip


# -- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root, as in CI); skipped where this machine cannot mount one."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _report(conn: Any, action: Callable[..., str], args: tuple[Any, ...]) -> None:
    try:
        conn.send(action(*args))
    except BaseException as exc:
        conn.send(f"raised {type(exc).__name__}: {exc}")


def in_child(action: Callable[..., str], *args: Any) -> tuple[int | None, str]:
    """Run ``action(*args)`` in a child process (a SIGBUS kills only the child); returns the
    exit code (negative: the signal) and what ``action`` returned.

    The child is spawned, not forked: a fork of a process whose torch thread pool already
    ran can deadlock in the child's first parallel op. It is killed if it does not answer.
    """
    parent, child = SPAWN.Pipe(duplex=False)
    process = SPAWN.Process(target=_report, args=(child, action, args))
    process.start()
    child.close()
    try:
        result = parent.recv() if parent.poll(120) else "nothing (no answer in 120 s)"
        process.join(30)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
    return process.exitcode, result


def _fill(folder: Path) -> str:
    rb = TensorDictReplayBuffer(storage=LazyMemmapStorage(100_000, folder / "s"))
    try:
        rb.extend(transitions(80_000))
    except DiskFullError as exc:
        assert len(rb) == 0 and not rb.storage.initialized
        return str(exc)
    return "no error"


def test_a_full_disk_raises_when_the_memmap_is_created_not_sigbus(small_disk):
    """Issue 20, item 4: the memmap file was sparse, and the process died of SIGBUS inside
    a write once the disk was full."""
    exitcode, message = in_child(_fill, small_disk)
    assert exitcode == 0, f"the child died (exit code {exitcode}): {message}"
    assert "needs 3,200,000 bytes (100,000 rows of 32" in message and "bytes free" in message, (
        message
    )
    assert "rows-" in message and str(small_disk) in message
    assert not list((small_disk / "s").glob("rows-*")), "the reserved file was not removed"


def _load(folder: Path, checkpoint: Path) -> str:
    rb = TensorDictReplayBuffer(storage=LazyMemmapStorage(40_000, folder / "s"))
    rb.extend(transitions(10))  # 1.3 MB of the 2 MiB: no room for a second file
    try:
        rb.loads(checkpoint)
    except DiskFullError as exc:
        assert len(rb) == 10 and rb[:]["observation"][:, 0].tolist() == list(range(10))
        return str(exc)
    return "no error"


def test_loading_a_checkpoint_onto_a_full_disk_keeps_the_buffer(small_disk, tmp_path):
    """Loading allocates a new memmap file before it switches over: on a full disk that
    fails cleanly, and the buffer keeps the rows it had."""
    saved = TensorDictReplayBuffer(storage=LazyTensorStorage(40_000))
    saved.extend(transitions(40_000, start=7))
    saved.dumps(tmp_path / "ckpt")
    exitcode, message = in_child(_load, small_disk, tmp_path / "ckpt")
    assert exitcode == 0, f"the child died (exit code {exitcode}): {message}"
    assert "bytes free" in message, message


def test_a_checkpoint_that_fills_the_disk_leaves_the_previous_one(small_disk):
    path = small_disk / "ckpt"
    small = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
    small.extend(transitions(100))
    small.dumps(path)
    free = shutil.disk_usage(small_disk).free
    big = TensorDictReplayBuffer(storage=LazyTensorStorage(80_000))
    big.extend(transitions(80_000))  # 2.6 MB of rows: more than the disk
    with pytest.raises(OSError, match="No space left"):
        big.dumps(path)
    loaded = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
    loaded.loads(path)
    assert (loaded[:] == small[:]).all()
    assert shutil.disk_usage(small_disk).free == free  # the partial version was removed
