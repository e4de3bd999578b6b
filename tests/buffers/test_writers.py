"""RoundRobinWriter and TensorDictMaxValueWriter."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import (
    CheckpointError,
    ListStorage,
    PriorityError,
    ReplayBuffer,
    ReplayBufferError,
    RoundRobinWriter,
    StorageLayoutError,
    TensorDictMaxValueWriter,
    TensorDictReplayBuffer,
)


def ranked(values):
    values = torch.as_tensor(values, dtype=torch.float32)
    return TensorDict({"ret": values, "id": values.long()}, batch_size=[len(values)])


def stored_ids(rb):
    return sorted(rb[:]["id"].tolist())


def test_round_robin_wraps_and_counts(any_storage):
    rb = ReplayBuffer(storage=any_storage(4))
    assert rb.extend(torch.arange(3)).tolist() == [0, 1, 2]
    assert rb.extend(torch.arange(3)).tolist() == [3, 0, 1]
    assert (len(rb), rb.storage.cursor, rb.storage.written) == (4, 2, 6)
    assert rb.extend(torch.arange(0)).tolist() == []


def test_max_value_writer_keeps_the_top_k(any_storage):
    rb = TensorDictReplayBuffer(
        storage=any_storage(3), writer=TensorDictMaxValueWriter(rank_key="ret")
    )
    assert rb.extend(ranked([5, 1, 3])).tolist() == [0, 1, 2]
    assert rb.extend(ranked([0, 4])).tolist() == [-1, 1]
    assert stored_ids(rb) == [3, 4, 5]
    assert rb.extend(ranked([9, 8, 7])).tolist() == [2, 1, 0]  # lowest rank replaced first
    assert stored_ids(rb) == [7, 8, 9]


def test_max_value_writer_within_one_batch_keeps_the_last_winner():
    rb = TensorDictReplayBuffer(writer=TensorDictMaxValueWriter(rank_key="ret"))
    rb.storage._max_size = 2  # a small storage without rebuilding the fixture
    rb.writer.register_storage(rb.storage)
    assert rb.extend(ranked([1, 2, 3])).tolist() == [-1, 1, 0]
    assert stored_ids(rb) == [2, 3] and len(rb) == 2


def test_max_value_writer_reduces_ranks_and_checks_them():
    writer = TensorDictMaxValueWriter(rank_key=("next", "r"), reduction="max")
    rb = TensorDictReplayBuffer(writer=writer)
    data = TensorDict({"next": {"r": torch.tensor([[1.0, 9.0], [2.0, 3.0]])}}, [2])
    rb.extend(data)
    assert writer._ranks[:2].tolist() == [9.0, 3.0]
    with pytest.raises(ValueError, match="reduction"):
        TensorDictMaxValueWriter(rank_key="r", reduction="median")
    nan = TensorDict({"next": {"r": torch.full((1, 2), float("nan"))}}, [1])
    with pytest.raises(PriorityError, match="NaN"):
        rb.extend(nan)
    other = TensorDictReplayBuffer(writer=TensorDictMaxValueWriter(rank_key="missing"))
    with pytest.raises(StorageLayoutError, match="no rank key"):
        other.extend(ranked([1.0]))
    assert len(other) == 0 and len(rb) == 2


def test_max_value_writer_state_round_trip():
    rb = TensorDictReplayBuffer(writer=TensorDictMaxValueWriter(rank_key="ret"))
    rb.extend(ranked([4, 2, 6]))
    clone = TensorDictReplayBuffer(writer=TensorDictMaxValueWriter(rank_key="ret"))
    clone.load_state_dict(rb.state_dict())
    clone.storage._max_size = 3
    clone.writer.register_storage(clone.storage)
    clone.writer.load_state_dict(rb.writer.state_dict())
    assert clone.extend(ranked([5])).tolist() == [1]  # replaces the 2
    with pytest.raises(CheckpointError, match="ranks"):
        clone.writer.load_state_dict({"ranks": torch.zeros(7)})


def test_writer_without_storage_says_so():
    with pytest.raises(ReplayBufferError, match="no storage"):
        RoundRobinWriter().storage  # noqa: B018
    assert isinstance(ReplayBuffer(storage=ListStorage(2)).writer, RoundRobinWriter)
