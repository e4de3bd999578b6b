"""dumps/loads: round trips for every storage and sampler, and corrupt checkpoints."""

from __future__ import annotations

import json

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
from rlblocks.buffers._checkpoint import CheckpointWriter

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
    ],
)
def test_corrupt_checkpoints_raise_and_leave_the_buffer_as_it_was(saved, corrupt):
    path, other = saved
    meta_path = path / "meta.json"
    meta = json.loads(meta_path.read_text())
    if corrupt == "missing_meta":
        meta_path.unlink()
    elif corrupt == "truncated_rows":
        data = (path / "rows.bin").read_bytes()
        (path / "rows.bin").write_bytes(data[:-5])
    elif corrupt == "flipped_byte":
        data = bytearray((path / "rows.bin").read_bytes())
        data[3] ^= 0xFF
        (path / "rows.bin").write_bytes(bytes(data))
    elif corrupt == "missing_components":
        (path / "components.pt").unlink()
    elif corrupt == "bad_json":
        meta_path.write_text("{not json")
    elif corrupt == "other_version":
        meta_path.write_text(json.dumps(dict(meta, version=99)))
    elif corrupt == "wrong_length":
        meta["storage"]["len"] = 9  # rows.bin holds 7 rows
        meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        other.loads(path)
    assert_unchanged(other)


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
    with pytest.raises(CheckpointError, match="not a replay-buffer checkpoint"):
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
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    calls = []

    def failing_write(self, name, chunks):
        calls.append(name)
        raise OSError("disk full")

    monkeypatch.setattr(CheckpointWriter, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        other.dumps(path)
    assert calls and {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]  # no temporary left


def test_dumps_replaces_an_old_checkpoint_but_never_other_folders(saved, tmp_path):
    path, other = saved
    other.dumps(path)
    assert json.loads((path / "meta.json").read_text())["storage"]["len"] == 3
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not overwritten"):
        other.dumps(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
