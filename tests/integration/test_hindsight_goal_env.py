"""A goal env's rewards recomputed by hindsight relabelling in a replay buffer (envs and
buffers together: each package's own tests run without the other)."""

from __future__ import annotations

import torch

from rlblocks.buffers import HindsightRelabel, LazyTensorStorage, TensorDictReplayBuffer
from rlblocks.envs import BitFlippingEnv


def test_hindsight_relabelling_recomputes_the_envs_rewards():
    env = BitFlippingEnv(6, batch_size=[8], seed=6)
    storage = LazyTensorStorage(1000)
    her = HindsightRelabel(
        storage,
        BitFlippingEnv.compute_reward,
        terminated_fn=BitFlippingEnv.compute_terminated,
        traj_key="episode",
        generator=torch.Generator().manual_seed(0),
    )
    her.check_observation_spec(env.full_observation_spec)
    rb = TensorDictReplayBuffer(storage=storage, transform=her)
    td = env.rollout(60, break_when_any_done=False)  # random actions: rarely solved
    episode = td["next", "done"].squeeze(-1).long().cumsum(-1)
    episode = torch.cat([torch.zeros_like(episode[:, :1]), episode[:, :-1]], -1)
    td["episode"] = episode + 1000 * torch.arange(8).unsqueeze(-1)  # ids unique per env
    rb.extend(td.reshape(-1))
    batch = rb.sample(512)
    achieved, goal = batch["next", "achieved_goal"], batch["desired_goal"]
    assert torch.equal(batch["next", "reward"], BitFlippingEnv.compute_reward(achieved, goal))
    assert torch.equal(
        batch["next", "terminated"], BitFlippingEnv.compute_terminated(achieved, goal)
    )
    solved = float((batch["next", "reward"] == 0).float().mean())
    assert solved > 2 * float((td["next", "reward"] == 0).float().mean())
