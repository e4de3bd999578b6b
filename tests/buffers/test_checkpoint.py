"""dumps/loads: round trips for every storage and sampler, and corrupt checkpoints."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
import torch

from rlblocks.buffers import (
    CheckpointError,
    LazyTensorStorage,
    ListStorage,
    PrioritizedSampler,
    RandomSampler,
    ReplayBuffer,
    SamplerWithoutReplacement,
    SliceSampler,
    TensorDictMaxValueWriter,
    TensorDictPrioritizedReplayBuffer,
    TensorDictReplayBuffer,
)
from rlblocks.core.checkpoint import CheckpointWriter

SAMPLERS = {
    "random": lambda: RandomSampler(),
    "without_replacement": lambda: SamplerWithoutReplacement(),
    "prioritized": lambda: PrioritizedSampler(16, alpha=0.7, beta=0.5, segment_tree="numpy"),
    "slice": lambda: SliceSampler(slice_len=2),
}


def content(rb):
    return rb[:] if len(rb) else None


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_round_trip_for_every_storage_and_sampler(tmp_path, any_storage, transitions, sampler):
    rb = TensorDictReplayBuffer(storage=any_storage(16), sampler=SAMPLERS[sampler](), batch_size=4)
    rb.extend(transitions(20))
    rb.sample()
    if sampler == "prioritized":
        rb.update_priority(torch.arange(16), torch.arange(16.0))
    rb.dumps(tmp_path / "ckpt")
    clone = TensorDictReplayBuffer(
        storage=any_storage(16), sampler=SAMPLERS[sampler](), batch_size=4
    )
    clone.loads(tmp_path / "ckpt")
    assert (len(clone), clone.storage.cursor) == (16, 4)
    assert (content(clone) == content(rb)).all()
    if sampler == "prioritized":
        assert (clone.sampler.priorities(range(16)) == rb.sampler.priorities(range(16))).all()
        torch.manual_seed(0)
        a = rb.sample()
        torch.manual_seed(0)
        b = clone.sample()
        assert (a == b).all()
    if sampler == "without_replacement":
        assert torch.equal(clone.sampler.state_dict()["perm"], rb.sampler.state_dict()["perm"])
    assert clone.extend(transitions(1, start=50)).tolist() == [4]


def test_tensor_checkpoints_load_across_tensor_storages(tmp_path, tensor_storage, transitions):
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(8))
    rb.extend(transitions(5))
    rb.dumps(tmp_path / "ckpt")
    clone = TensorDictReplayBuffer(storage=tensor_storage(8))
    clone.loads(tmp_path / "ckpt")
    assert (clone[:] == rb[:]).all()
    with pytest.raises(CheckpointError, match="cannot load"):
        TensorDictReplayBuffer(storage=ListStorage(8)).loads(tmp_path / "ckpt")


def test_round_trip_of_pytrees_objects_and_empty_buffers(tmp_path):
    rb = ReplayBuffer(storage=LazyTensorStorage(5))
    rb.extend({"a": torch.arange(3), "b": (torch.ones(3, 2),)})
    rb.dumps(tmp_path / "tree")
    clone = ReplayBuffer(storage=LazyTensorStorage(5))
    clone.loads(tmp_path / "tree")
    assert clone[:]["a"].tolist() == [0, 1, 2] and clone[:]["b"][0].shape == (3, 2)
    objects = ReplayBuffer(storage=ListStorage(4))
    objects.extend(["x", {"y": 1}])
    objects.dumps(tmp_path / "objects")
    clone = ReplayBuffer(storage=ListStorage(4))
    clone.loads(tmp_path / "objects")
    assert clone[:] == ["x", {"y": 1}]
    empty = ReplayBuffer(storage=LazyTensorStorage(5))
    empty.dumps(tmp_path / "empty")
    rb.loads(tmp_path / "empty")
    assert len(rb) == 0 and rb.storage.layout is None


def test_max_value_writer_state_survives(tmp_path, transitions):
    def make():
        return TensorDictReplayBuffer(
            storage=LazyTensorStorage(3),
            writer=TensorDictMaxValueWriter(rank_key=("next", "reward")),
        )

    rb = make()
    data = transitions(3)
    data["next", "reward"] = torch.tensor([[1.0], [5.0], [3.0]])
    rb.extend(data)
    rb.dumps(tmp_path / "ckpt")
    clone = make()
    clone.loads(tmp_path / "ckpt")
    better = transitions(1, start=9)
    better["next", "reward"] = torch.tensor([[2.0]])
    assert clone.extend(better).tolist() == [0]  # replaces the 1.0


@pytest.fixture
def saved(tmp_path, transitions):
    """A prioritized buffer saved to tmp_path / "ckpt", and a second one with other content."""
    rb = TensorDictPrioritizedReplayBuffer(alpha=0.6, beta=0.4, storage=LazyTensorStorage(10))
    rb.extend(transitions(7))
    rb.dumps(tmp_path / "ckpt")
    other = TensorDictPrioritizedReplayBuffer(alpha=0.6, beta=0.4, storage=LazyTensorStorage(10))
    other.extend(transitions(3, start=100))
    other.update_priority([0, 1, 2], [5.0, 6.0, 7.0])
    return tmp_path / "ckpt", other


def assert_unchanged(other):
    assert len(other) == 3 and other.storage.cursor == 3
    assert other[:]["observation"][:, 0].tolist() == [100.0, 101.0, 102.0]
    assert other.sampler.priorities([0, 1, 2]).tolist() == pytest.approx(
        [(p + 1e-8) ** 0.6 for p in (5.0, 6.0, 7.0)]
    )


def checkpoint_file(path, name):
    """The file ``name`` of the checkpoint ``path``, wherever its format keeps it."""
    return next(p for p in sorted(path.rglob(name)) if p.is_file())


def flip_bit(file, bit):
    data = bytearray(file.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    file.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "corrupt",
    [
        "missing_meta",
        "truncated_rows",
        "flipped_byte",
        "missing_components",
        "bad_json",
        "other_version",
        "wrong_length",
        "missing_pointer",
        "truncated_manifest",
    ],
)
def test_corrupt_checkpoints_raise_and_leave_the_buffer_as_it_was(saved, corrupt):
    path, other = saved
    meta_path = checkpoint_file(path, "meta.json")
    meta = json.loads(meta_path.read_text())
    rows = checkpoint_file(path, "rows.bin")
    if corrupt == "missing_meta":
        meta_path.unlink()
    elif corrupt == "truncated_rows":
        rows.write_bytes(rows.read_bytes()[:-5])
    elif corrupt == "flipped_byte":
        flip_bit(rows, 3 * 8 + 2)
    elif corrupt == "missing_components":
        checkpoint_file(path, "components.pt").unlink()
    elif corrupt == "bad_json":
        meta_path.write_text("{not json")
    elif corrupt == "other_version":
        meta_path.write_text(json.dumps(dict(meta, version=99)))
    elif corrupt == "wrong_length":
        meta["storage"]["len"] = 9  # rows.bin holds 7 rows
        meta_path.write_text(json.dumps(meta))
    elif corrupt == "missing_pointer":
        (path / "CHECKPOINT").unlink()
    elif corrupt == "truncated_manifest":
        manifest = checkpoint_file(path, "MANIFEST")
        manifest.write_bytes(manifest.read_bytes()[:-1])
    with pytest.raises(CheckpointError):
        other.loads(path)
    assert_unchanged(other)


@pytest.mark.parametrize(
    ("text", "char"), [('"cursor": 7', 10), ('"observation"', 4)], ids=["cursor", "key"]
)
def test_a_bit_flip_in_the_metadata_is_caught(saved, text, char):
    """Issue 20, item 3: flips that keep meta.json valid JSON (a cursor moved, a key
    renamed) used to load a different state silently."""
    path, other = saved
    meta_path = checkpoint_file(path, "meta.json")
    offset = meta_path.read_text().index(text) + char
    flip_bit(meta_path, offset * 8)  # '7' -> '6', 's' -> 'r'
    json.loads(meta_path.read_text())  # still valid JSON: only a checksum can tell
    with pytest.raises(CheckpointError, match="meta.json.*CRC-32"):
        other.loads(path)
    assert_unchanged(other)


def test_another_capacity_is_refused_naming_both(tmp_path, transitions):
    """Issue 20, item 11: the error named neither capacity ("length 80 is invalid")."""
    big = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
    big.extend(transitions(80))
    big.dumps(tmp_path / "ckpt")
    small = TensorDictReplayBuffer(storage=LazyTensorStorage(50))
    small.extend(transitions(3))
    fix = r"Fix: build the buffer with LazyTensorStorage\(max_size=100\)"
    with pytest.raises(CheckpointError, match=rf"max_size=100, .* has max_size=50.*{fix}"):
        small.loads(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="max_size=100, .* has max_size=50"):
        small.load_state_dict(big.state_dict())
    assert len(small) == 3


def test_checkpoints_of_other_components_or_sizes_are_refused(saved, transitions):
    path, other = saved
    for rb, match in [
        (TensorDictReplayBuffer(storage=LazyTensorStorage(10)), "sampler"),
        (TensorDictPrioritizedReplayBuffer(0.6, 0.4, storage=LazyTensorStorage(12)), "max_size"),
        (TensorDictPrioritizedReplayBuffer(0.9, 0.4, storage=LazyTensorStorage(10)), "alpha"),
    ]:
        rb.extend(transitions(2))
        with pytest.raises(CheckpointError, match=match):
            rb.loads(path)
        assert len(rb) == 2
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        other.loads(path.parent / "nowhere")
    assert_unchanged(other)


def test_state_dict_with_bad_parts_leaves_the_buffer_as_it_was(saved):
    _, other = saved
    state = other.state_dict()
    state["writer"] = "garbage"
    with pytest.raises(CheckpointError):
        other.load_state_dict(state)
    with pytest.raises(CheckpointError):
        other.load_state_dict({"storage": {}})
    assert_unchanged(other)


def test_dumps_is_atomic(saved, monkeypatch):
    path, other = saved
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    calls = []

    def failing_write(self, name, chunks):
        calls.append(name)
        raise OSError("disk full")

    monkeypatch.setattr(CheckpointWriter, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        other.dumps(path)
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert calls and after == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]  # no temporary left


@pytest.mark.parametrize("call", ["replace", "rename"])
def test_an_interrupted_overwrite_keeps_a_loadable_checkpoint(saved, monkeypatch, call):
    """Issue 20, item 7: a failure between the two renames of an overwrite left no
    checkpoint at the path. Fail each call in turn: the path loads, old or new."""
    path, other = saved
    original = TensorDictPrioritizedReplayBuffer(0.6, 0.4, storage=LazyTensorStorage(10))
    original.loads(path)
    real = getattr(os, call)
    for k in range(1, 10):
        original.dumps(path)
        calls = [0]

        def failing(*args, _k=k, _calls=calls):
            _calls[0] += 1
            if _calls[0] == _k:
                raise OSError("crash")
            return real(*args)

        monkeypatch.setattr(os, call, failing)
        with contextlib.suppress(OSError):
            other.dumps(path)
        monkeypatch.undo()
        loaded = TensorDictPrioritizedReplayBuffer(0.6, 0.4, storage=LazyTensorStorage(10))
        loaded.loads(path)
        assert (loaded[:] == (original if len(loaded) == 7 else other)[:]).all()
        if calls[0] < k:  # every call of the overwrite was failed once
            assert len(loaded) == 3
            break


def test_dumps_replaces_an_old_checkpoint_but_never_other_folders(saved, tmp_path):
    path, other = saved
    other.dumps(path)
    meta = json.loads(checkpoint_file(path, "meta.json").read_text())
    assert meta["storage"]["len"] == 3
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not overwritten"):
        other.dumps(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
