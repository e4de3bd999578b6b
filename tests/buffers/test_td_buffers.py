"""TensorDict buffers and the prioritized buffers."""

from __future__ import annotations

import pytest
import torch

from rlblocks.buffers import (
    LazyTensorStorage,
    ListStorage,
    PrioritizedReplayBuffer,
    PriorityError,
    SamplerWithoutReplacement,
    TensorDictPrioritizedReplayBuffer,
    TensorDictReplayBuffer,
)


def test_samples_carry_their_index(any_storage, transitions):
    rb = TensorDictReplayBuffer(storage=any_storage(20), batch_size=5)
    rb.extend(transitions(10))
    batch = rb.sample()
    assert batch.batch_size == (5,)
    assert torch.equal(batch["observation"][:, 0].long(), batch["index"])


def test_sampled_batches_can_be_extended_back(transitions):
    rb = TensorDictPrioritizedReplayBuffer(alpha=0.6, beta=0.4, batch_size=4)
    rb.extend(transitions(10))
    batch = rb.sample()
    assert {"index", "_weight"} <= set(batch.keys())
    rb.extend(batch)  # "index" and "_weight" are not stored
    assert len(rb) == 14


def test_default_storage_is_a_tensor_storage():
    assert isinstance(TensorDictReplayBuffer().storage, LazyTensorStorage)
    assert isinstance(PrioritizedReplayBuffer(0.6, 0.4).storage, ListStorage)


def test_update_tensordict_priority(any_storage, transitions):
    rb = TensorDictPrioritizedReplayBuffer(
        alpha=1.0, beta=1.0, eps=0.0, storage=any_storage(20), batch_size=6
    )
    rb.extend(transitions(10))
    batch = rb.sample()
    assert batch["_weight"].dtype == torch.float32
    batch["td_error"] = torch.full((6, 1), 3.0)
    rb.update_tensordict_priority(batch)
    assert rb.sampler.priorities(batch["index"]).tolist() == [3.0] * 6
    with pytest.raises(PriorityError, match="lacks"):
        rb.update_tensordict_priority(batch.exclude("td_error"))
    batch["td_error"][0] = float("nan")
    with pytest.raises(PriorityError, match="finite"):
        rb.update_tensordict_priority(batch)


def test_priorities_given_with_the_data_are_used(transitions):
    rb = TensorDictPrioritizedReplayBuffer(alpha=1.0, beta=1.0, eps=0.0, priority_key="p")
    data = transitions(3)
    data["p"] = torch.tensor([1.0, 0.0, 5.0])
    rb.extend(data)
    assert rb.sampler.priorities([0, 1, 2]).tolist() == [1.0, 0.0, 5.0]
    bad = transitions(2)
    bad["p"] = torch.tensor([1.0, -1.0])
    with pytest.raises(PriorityError, match=">= 0"):
        rb.extend(bad)
    assert len(rb) == 3  # nothing written


def test_per_step_priorities_are_reduced_with_max(transitions):
    rb = TensorDictPrioritizedReplayBuffer(alpha=1.0, beta=1.0, eps=0.0, batch_size=2)
    rb.extend(transitions(8).reshape(4, 2))
    batch = rb[torch.tensor([2, 0])]  # reads carry "index" too
    assert batch["index"].tolist() == [[2, 2], [0, 0]]
    batch["td_error"] = torch.tensor([[1.0, 4.0], [2.0, 0.5]])
    rb.update_tensordict_priority(batch)
    assert rb.sampler.priorities([2, 0]).tolist() == [4.0, 2.0]


def test_td_buffer_with_list_storage_and_other_samplers(transitions):
    rb = TensorDictReplayBuffer(
        storage=ListStorage(10), sampler=SamplerWithoutReplacement(shuffle=False), batch_size=4
    )
    rb.extend(transitions(6))
    batches = list(rb)
    assert [b["index"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5]]
    assert "_weight" not in batches[0].keys()


def test_prioritized_buffer_for_plain_tensors():
    rb = PrioritizedReplayBuffer(0.6, 0.4, storage=LazyTensorStorage(100), batch_size=16)
    rb.extend(torch.arange(40))
    batch, info = rb.sample(return_info=True)
    assert torch.equal(batch, info["index"]) and info["_weight"].shape == (16,)
    rb.update_priority(info["index"], torch.rand(16))
