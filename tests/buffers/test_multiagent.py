"""Replay buffers store grouped (multi-agent) transitions as they are: the agent dim is a
feature dim of each entry, one row per env step."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import (
    LazyMemmapStorage,
    LazyTensorStorage,
    SliceSampler,
    StorageLayoutError,
    TensorDictReplayBuffer,
)

N_AGENTS = 3


def grouped_steps(n: int, start: int = 0) -> TensorDict:
    """``n`` env steps of 3 agents; values encode (step, agent) so rows can be checked."""
    step = torch.arange(start, start + n, dtype=torch.float32)
    agent = torch.arange(N_AGENTS, dtype=torch.float32)
    code = step[:, None] * 10 + agent  # [n, agents]
    agents = TensorDict(
        {"observation": code.unsqueeze(-1).expand(n, N_AGENTS, 4), "action": code.long()},
        batch_size=[n, N_AGENTS],
    )
    nxt = TensorDict(
        {
            "agents": TensorDict(
                {
                    "reward": code.unsqueeze(-1),
                    "done": torch.zeros(n, N_AGENTS, 1, dtype=torch.bool),
                },
                batch_size=[n, N_AGENTS],
            ),
            "done": (torch.arange(n) % 5 == 4).unsqueeze(-1),
        },
        batch_size=[n],
    )
    return TensorDict({"agents": agents, "state": code, "step": step, "next": nxt}, batch_size=[n])


@pytest.mark.parametrize("storage", [LazyTensorStorage, LazyMemmapStorage])
def test_extend_and_sample_keep_each_row_whole(storage, tmp_path):
    kwargs = {"scratch_dir": tmp_path} if storage is LazyMemmapStorage else {}
    rb = TensorDictReplayBuffer(storage=storage(50, **kwargs), batch_size=16)
    rb.extend(grouped_steps(30))
    batch = rb.sample()
    assert batch.batch_size == (16,)
    assert batch["agents"].batch_size == (16, N_AGENTS)
    step = batch["step"]
    expected = step[:, None] * 10 + torch.arange(N_AGENTS)
    assert torch.equal(batch["agents", "action"], expected.long())
    assert torch.equal(batch["next", "agents", "reward"][..., 0], expected)


def test_wrong_agent_count_is_rejected_and_nothing_is_lost():
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(50), batch_size=4)
    rb.extend(grouped_steps(10))
    bad = grouped_steps(5)
    bad["agents"] = bad["agents"][:, :2]  # two agents instead of three
    with pytest.raises(StorageLayoutError, match="agents"):
        rb.extend(bad)
    assert len(rb) == 10
    assert torch.equal(rb[:10]["step"], torch.arange(10.0))


def test_slice_sampler_gives_sequences_of_grouped_steps():
    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(100),
        sampler=SliceSampler(slice_len=5, end_key=("next", "done")),
        batch_size=20,
    )
    rb.extend(grouped_steps(40))
    batch = rb.sample().reshape(4, 5)
    assert batch["agents", "observation"].shape == (4, 5, N_AGENTS, 4)
    steps = batch["step"]
    assert torch.equal(steps - steps[:, :1], torch.arange(5.0).expand(4, 5))


def test_a_saved_buffer_restores_the_agent_dim(tmp_path):
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(20), batch_size=4)
    rb.extend(grouped_steps(12))
    rb.dumps(tmp_path / "rb")
    fresh = TensorDictReplayBuffer(storage=LazyTensorStorage(20), batch_size=4)
    fresh.loads(tmp_path / "rb")
    batch = fresh[:12]
    assert batch["agents"].batch_size == (12, N_AGENTS)
    assert batch["next", "agents"].batch_size == (12, N_AGENTS)
    assert torch.equal(batch["agents", "action"], rb[:12]["agents", "action"])
