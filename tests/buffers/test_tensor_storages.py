"""LazyTensorStorage and LazyMemmapStorage: layout, writes, reads and bad input."""

from __future__ import annotations

import errno
import os
import pickle

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import (
    DiskFullError,
    EmptyBufferError,
    LazyMemmapStorage,
    LazyTensorStorage,
    ReplayBuffer,
    ReplayBufferError,
    StorageLayoutError,
    TensorDictReplayBuffer,
)


def test_storage_is_laid_out_by_the_first_write(tensor_storage, transitions):
    storage = tensor_storage(10)
    assert storage.layout is None and not storage.initialized
    rb = TensorDictReplayBuffer(storage=storage)
    rb.extend(transitions(5))
    assert storage.initialized
    assert {f.key for f in storage.layout.fields} == {
        ("observation",), ("action",), ("done",), ("next", "observation"), ("next", "reward"),
        ("next", "done"), ("next", "terminated"), ("next", "truncated"),
    }  # fmt: skip
    sample = storage.get(torch.tensor([4, 0]))
    assert sample["observation"][:, 0].tolist() == [4.0, 0.0]
    assert sample["next", "observation"][:, 0].tolist() == [5.0, 1.0]
    assert sample["next", "done"].tolist() == [[True], [False]]
    assert sample["action"].dtype == torch.int64 and sample["observation"].is_contiguous()


def test_bad_extend_writes_nothing_and_names_the_problem(tensor_storage, transitions):
    rb = TensorDictReplayBuffer(storage=tensor_storage(10))
    rb.extend(transitions(6))
    before = rb.storage.get(torch.arange(6))
    bad = transitions(3, start=100)
    bad["next", "reward"] = bad["next", "reward"].double()
    with pytest.raises(StorageLayoutError, match=r"\('next', 'reward'\).*float32.*float64"):
        rb.extend(bad)
    with pytest.raises(StorageLayoutError, match="missing"):
        rb.extend(transitions(3).exclude("done"))
    assert len(rb) == 6 and rb.storage.cursor == 6
    assert (rb.storage.get(torch.arange(6)) == before).all()


def test_wrap_around_overwrites_the_oldest(tensor_storage, transitions):
    rb = TensorDictReplayBuffer(storage=tensor_storage(5))
    rb.extend(transitions(4))
    index = rb.extend(transitions(3, start=4))
    assert index.tolist() == [4, 0, 1]
    stored = rb.storage.get(torch.arange(5))["observation"][:, 0].tolist()
    assert stored == [5.0, 6.0, 2.0, 3.0, 4.0]
    index = rb.extend(transitions(7, start=10))  # larger than the storage
    assert index.tolist() == [-1, -1, 4, 0, 1, 2, 3]
    assert sorted(rb.storage.get(torch.arange(5))["observation"][:, 0].tolist()) == [
        12.0, 13.0, 14.0, 15.0, 16.0,
    ]  # fmt: skip


def test_tensors_arrays_and_pytrees_come_back_in_their_structure(tensor_storage):
    rb = ReplayBuffer(storage=tensor_storage(10))
    rb.extend((np.arange(6.0).reshape(3, 2), {"r": torch.arange(3), "half": torch.ones(3).half()}))
    obs, rest = rb[torch.tensor([2, 0])]
    assert isinstance(obs, np.ndarray) and obs.tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert rest["r"].tolist() == [2, 0] and rest["half"].dtype == torch.float16
    assert rb.add((np.zeros(2), {"r": torch.tensor(7), "half": torch.tensor(0.5).half()})) == 3
    with pytest.raises(StorageLayoutError, match="structure"):
        rb.extend(np.zeros((2, 2)))


def test_bare_tensors_and_bfloat16(tensor_storage):
    rb = ReplayBuffer(storage=tensor_storage(4), batch_size=3)
    rb.extend(torch.arange(8, dtype=torch.bfloat16).reshape(4, 2))
    batch = rb.sample()
    assert batch.dtype == torch.bfloat16 and batch.shape == (3, 2)
    assert set(batch[:, 0].tolist()) <= {0.0, 2.0, 4.0, 6.0}
    with pytest.raises(StorageLayoutError, match="scalar"):
        rb.extend(torch.tensor(1.0, dtype=torch.bfloat16))


def test_gathered_fields_are_exact_and_contiguous(tensor_storage):
    # Neighbouring fields of one byte size but different dtypes or shapes, a dtype without a
    # numpy twin, numpy leaves, and batch sizes that change between calls.
    g = torch.Generator().manual_seed(0)
    data = {
        "f32": torch.randn(20, 2, generator=g),
        "i64": torch.randint(-9, 9, (20, 1), generator=g),
        "bf16": torch.randn(20, 3, generator=g).bfloat16(),
        "f16": torch.randn(20, 1, generator=g).half(),
        "flags": torch.rand(20, 5, generator=g) < 0.5,
        "np": np.arange(40, dtype=np.int32).reshape(20, 2),
    }
    rb = ReplayBuffer(storage=tensor_storage(20))
    rb.extend(data)
    for index in ([3, 3, 19, 0], [7], list(range(20))[::-1]):
        batch = rb[torch.tensor(index)]
        for key, value in batch.items():
            expected = data[key][index]
            if key == "np":
                assert isinstance(value, np.ndarray) and value.flags.c_contiguous
                assert (value == expected).all()
            else:
                assert value.is_contiguous() and value.dtype == expected.dtype
                assert torch.equal(value, expected) and value.view(-1).numel() == expected.numel()


def test_tensordict_elements_with_batch_dims(transitions):
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(10), batch_size=2)
    rb.extend(transitions(12).reshape(4, 3))
    batch = rb.sample()
    assert batch.batch_size == (2, 3)
    assert batch["index"].shape == (2, 3) and (batch["index"][:, 0] == batch["index"][:, 2]).all()
    with pytest.raises(StorageLayoutError, match=r"batch size \[3\]"):
        rb.extend(transitions(4).reshape(2, 2))


def test_device_is_honoured(transitions):
    storage = LazyTensorStorage(10, device="cpu")
    rb = TensorDictReplayBuffer(storage=storage, batch_size=2)
    rb.extend(transitions(3))
    assert storage.device == torch.device("cpu") and rb.sample().device == torch.device("cpu")
    assert LazyTensorStorage(3).device is None


def test_initialize_fixes_the_layout_without_storing(tensor_storage, transitions):
    storage = tensor_storage(8)
    storage.initialize(transitions(1)[0])
    assert storage.initialized and len(storage) == 0
    with pytest.raises(StorageLayoutError):
        storage.initialize({"x": torch.zeros(2)})
    with pytest.raises(EmptyBufferError):
        LazyTensorStorage(3).get(torch.tensor([0]))


def test_column_is_a_view_of_the_stored_elements(transitions):
    storage = LazyTensorStorage(10)
    TensorDictReplayBuffer(storage=storage).extend(transitions(6))
    done = storage.column(("next", "done"))
    assert done.shape == (6, 1) and done.reshape(-1).tolist() == [False] * 4 + [True, False]
    with pytest.raises(KeyError, match="no key"):
        storage.column("nope")


def test_memmap_storage_reopens_after_a_restart(tmp_path, transitions):
    rb = TensorDictReplayBuffer(storage=LazyMemmapStorage(20, tmp_path / "rb"))
    rb.extend(transitions(7))
    with pytest.raises(ReplayBufferError, match="existsok=True"):
        LazyMemmapStorage(20, tmp_path / "rb")
    with pytest.raises(ReplayBufferError, match="max_size"):
        LazyMemmapStorage(10, tmp_path / "rb", existsok=True)
    reopened = LazyMemmapStorage.open(tmp_path / "rb")
    assert (reopened.max_size, len(reopened), reopened.cursor) == (20, 7, 7)
    assert reopened.get(torch.tensor([6]))["observation"][0, 0] == 6.0
    with pytest.raises(ReplayBufferError, match="holds no storage"):
        LazyMemmapStorage.open(tmp_path / "nothing")


def test_memmap_storage_pickles_by_path_and_sees_later_writes(tmp_path, transitions):
    storage = LazyMemmapStorage(20, tmp_path / "rb")
    copy = pickle.loads(pickle.dumps(storage))  # before the layout is known
    rb = TensorDictReplayBuffer(storage=storage)
    rb.extend(transitions(3))
    assert len(copy) == 3 and copy.get(torch.tensor([2]))["observation"][0, 0] == 2.0
    assert len(pickle.dumps(storage)) < 1000  # the path, not the data


def test_temporary_memmap_folder_is_removed_with_its_storage(transitions):
    storage = LazyMemmapStorage(5)
    folder = storage.scratch_dir
    TensorDictReplayBuffer(storage=storage).extend(transitions(2))
    assert folder.is_dir()
    del storage
    assert not folder.exists()


def test_shared_storage_must_be_laid_out_before_pickling(transitions):
    storage = LazyTensorStorage(5, shared=True)
    with pytest.raises(ReplayBufferError, match="initialize"):
        pickle.dumps(storage)
    storage.initialize(transitions(1)[0])
    assert storage.shared and pickle.loads(pickle.dumps(storage)).layout == storage.layout
    with pytest.raises(ValueError, match="device='cpu'"):
        LazyTensorStorage(5, device="meta", shared=True)


def test_plain_storage_pickles_its_data(transitions):
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(5), batch_size=2)
    rb.extend(transitions(3))
    clone = pickle.loads(pickle.dumps(rb))
    clone.extend(transitions(2, start=3))
    assert (len(rb), len(clone)) == (3, 5)
    assert clone.storage.get(torch.tensor([1]))["observation"][0, 0] == 1.0


def test_state_dict_round_trip_and_atomic_failure(tensor_storage, transitions):
    source = TensorDictReplayBuffer(storage=tensor_storage(8))
    source.extend(transitions(10))
    state = source.storage.state_dict()
    target = tensor_storage(8)
    target.load_state_dict(state)
    assert (len(target), target.cursor, target.written) == (8, 2, 8)
    assert (target.get(torch.arange(8)) == source.storage.get(torch.arange(8))).all()
    broken = dict(state, rows=state["rows"][:3])
    with pytest.raises(ReplayBufferError, match="uint8 tensor"):
        target.load_state_dict(broken)
    assert len(target) == 8


def test_empty_keeps_the_layout(tensor_storage, transitions):
    storage = tensor_storage(5)
    rb = TensorDictReplayBuffer(storage=storage, batch_size=2)
    rb.extend(transitions(3))
    rb.empty()
    assert len(rb) == 0 and storage.initialized
    with pytest.raises(EmptyBufferError):
        rb.sample()
    rb.extend(transitions(1, start=9))
    assert rb.sample()["observation"][:, 0].tolist() == [9.0, 9.0]


def test_gather_of_a_non_cpu_layout_goes_through_torch():
    # The "meta" device has no data but exercises the device-generic path's shapes.
    storage = LazyTensorStorage(4, device="meta")
    rb = TensorDictReplayBuffer(storage=storage)
    rb.extend(TensorDict({"a": torch.zeros(3, 2), "b": torch.zeros(3, dtype=torch.int64)}, [3]))
    out = storage.get(torch.tensor([0, 2]), {"index": torch.tensor([0, 2])})
    assert out["a"].device.type == "meta" and out["a"].shape == (2, 2)
    assert out["index"].device.type == "meta"


def pairs(n: int, value: float, z=None) -> TensorDict:
    """Two fields of 8-byte items, ``a`` packed first: a failure writing ``z`` used to come
    after ``a`` was written."""
    z = torch.full((n, 2), complex(value, 1.0), dtype=torch.complex64) if z is None else z
    return TensorDict({"a": torch.full((n, 1), value, dtype=torch.float64), "z": z}, [n])


def non_copyable(kind: str, n: int) -> torch.Tensor:
    z = torch.full((n, 2), complex(9.0, 1.0), dtype=torch.complex64)
    return z.to_sparse() if kind == "sparse" else torch.empty_like(z, device="meta")


@pytest.mark.parametrize("kind", ["sparse", "meta"])
def test_a_leaf_that_cannot_be_copied_writes_nothing(tensor_storage, kind):
    """Issue 20, item 2: the rows of earlier fields were overwritten before the copy of a
    later field failed, pairing new observations with old fields."""
    rb = TensorDictReplayBuffer(storage=tensor_storage(5))
    rb.extend(pairs(5, 1.0))  # full: the next write goes over stored rows
    with pytest.raises(StorageLayoutError, match=r"leaf 'z' .*Nothing was written\. Fix"):
        rb.extend(pairs(3, 9.0, z=non_copyable(kind, 3)))
    assert (len(rb), rb.storage.cursor) == (5, 0)
    stored = rb[:]
    assert stored["a"].flatten().tolist() == [1.0] * 5
    assert (stored["z"] == complex(1.0, 1.0)).all()
    empty = TensorDictReplayBuffer(storage=tensor_storage(5))
    with pytest.raises(StorageLayoutError, match="leaf 'z'"):
        empty.extend(pairs(3, 9.0, z=non_copyable(kind, 3)))
    assert len(empty) == 0 and not empty.storage.initialized


def test_conjugate_and_negative_views_are_stored_resolved(tensor_storage):
    rb = TensorDictReplayBuffer(storage=tensor_storage(5))
    rb.extend(pairs(2, 1.0))
    z = torch.full((3, 2), complex(2.0, 5.0), dtype=torch.complex64)
    data = pairs(3, 2.0, z=z.conj())
    data["a"] = z.to(torch.complex128).conj().imag[:, :1]  # a float64 view with the neg bit
    assert data["z"].is_conj() and data["a"].is_neg()
    rb.extend(data)
    stored = rb[2:]
    assert (stored["z"] == complex(2.0, -5.0)).all()
    assert stored["a"].flatten().tolist() == [-5.0] * 3


def memmap_files(folder):
    return sorted(folder.glob("rows-*.memmap"))


def test_memmap_blocks_are_reserved_when_the_file_is_created(tmp_path, transitions):
    """Issue 20, item 4: the file was sparse, so a full disk surfaced as SIGBUS in a write."""
    rb = TensorDictReplayBuffer(storage=LazyMemmapStorage(5000, tmp_path / "s"))
    rb.extend(transitions(1))
    (rows,) = memmap_files(tmp_path / "s")
    stat = rows.stat()
    assert stat.st_size == 5000 * rb.storage.layout.row_bytes
    assert stat.st_blocks * 512 >= stat.st_size  # every block allocated: not sparse


def test_a_full_disk_raises_when_the_memmap_is_created(tmp_path, transitions, monkeypatch):
    def no_space(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    rb = TensorDictReplayBuffer(storage=LazyMemmapStorage(1000, tmp_path / "s"))
    match = r"rows-\w+\.memmap' needs [\d,]+ bytes .* has [\d,]+ bytes free .*Nothing was written"
    with pytest.raises(DiskFullError, match=match) as info:
        rb.extend(transitions(3))
    assert isinstance(info.value, OSError)
    assert len(rb) == 0 and not rb.storage.initialized and memmap_files(tmp_path / "s") == []
    monkeypatch.undo()
    rb.extend(transitions(3))  # once there is room, the storage works
    assert len(rb) == 3


@pytest.mark.parametrize("fallocate", ["missing", "unsupported"])
def test_without_fallocate_the_blocks_are_written(tmp_path, transitions, monkeypatch, fallocate):
    if fallocate == "missing":
        monkeypatch.delattr(os, "posix_fallocate", raising=False)
    else:

        def unsupported(fd, offset, size):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        monkeypatch.setattr(os, "posix_fallocate", unsupported)
    rb = TensorDictReplayBuffer(storage=LazyMemmapStorage(3000, tmp_path / "s"))
    rb.extend(transitions(4))
    (rows,) = memmap_files(tmp_path / "s")
    assert rows.stat().st_blocks * 512 >= rows.stat().st_size
    assert rb[:]["observation"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
