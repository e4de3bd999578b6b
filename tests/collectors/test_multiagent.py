"""Collectors carry agent groups through unchanged; frames count env steps, not agents."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule

from rlblocks.collectors import MultiSyncDataCollector, SyncDataCollector
from rlblocks.envs import MultiAgentLineEnv, SerialEnv, StepCounter, TransformedEnv


def _right_policy() -> TensorDictModule:
    # Module-level function (not a lambda): worker processes receive it pickled.
    return TensorDictModule(_step_right, [("agents", "observation")], [("agents", "action")])


def _step_right(observation: torch.Tensor) -> torch.Tensor:
    return torch.full(observation.shape[:-1], 2, dtype=torch.long)


def _make_env() -> MultiAgentLineEnv:
    return MultiAgentLineEnv(n_agents=3, length=6, max_steps=12, batch_size=[2])


def test_sync_collector_keeps_groups_and_counts_env_steps():
    collector = SyncDataCollector(
        _make_env(), _right_policy(), frames_per_batch=20, total_frames=60
    )
    seen = 0
    for batch in collector:
        assert batch.batch_size == (2, 10)  # 20 frames = 2 envs x 10 steps, not x 3 agents
        assert batch["agents", "action"].shape == (2, 10, 3)
        assert batch["next", "agents"].batch_size == (2, 10, 3)
        assert (batch["agents", "action"] == 2).all()
        assert batch["next", "agents", "reward"].shape == (2, 10, 3, 1)
        assert batch["next", "agents", "done"].shape == (2, 10, 3, 1)
        # The next step's input is the previous step's output (or a fresh episode).
        same = batch["agents", "observation"][:, 1:]
        prev = batch["next", "agents", "observation"][:, :-1]
        continues = ~batch["next", "done"][:, :-1, 0]
        assert torch.equal(same[continues], prev[continues])
        seen += batch.numel()
    collector.shutdown()
    assert seen == 60


def test_split_trajs_pads_groups_with_the_episode_mask():
    env = TransformedEnv(SerialEnv(2, _make_env), StepCounter(5))
    collector = SyncDataCollector(
        env, _right_policy(), frames_per_batch=40, total_frames=40, split_trajs=True
    )
    batch = next(iter(collector))
    collector.shutdown()
    mask = batch["collector", "mask"]
    assert batch["next", "agents", "reward"].shape[:2] == mask.shape
    assert batch["next", "agents", "reward"].shape[2:] == (3, 1)
    assert (batch["next", "agents", "reward"][~mask] == 0).all()


def test_multi_process_collector_with_groups():
    collector = MultiSyncDataCollector(
        [_make_env, _make_env], _right_policy(), frames_per_batch=40, total_frames=80
    )
    try:
        total = 0
        for batch in collector:
            assert batch["next", "agents", "reward"].shape[-2:] == (3, 1)
            total += batch.numel()
        assert total == 80
    finally:
        collector.shutdown()
