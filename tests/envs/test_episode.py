"""StepCounter and RewardSum: per-episode counters kept in the TensorDict."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core import step_mdp
from rlblocks.core.specs import Bounded, Unbounded
from rlblocks.envs import (
    CartPoleEnv,
    GymEnv,
    RewardSum,
    StepCounter,
    TransformedEnv,
    TransformError,
    check_env_specs,
)


def test_step_counter_counts_and_truncates():
    env = TransformedEnv(GymEnv("Pendulum-v1"), StepCounter(max_steps=10))
    assert env.observation_spec["step_count"] == Bounded(0, 10, shape=(1,), dtype=torch.int64)
    td = env.rollout(100)
    assert td.batch_size == (10,)
    assert td["step_count"][:, 0].tolist() == list(range(10))
    assert td["next", "step_count"][:, 0].tolist() == list(range(1, 11))
    assert td["next", "truncated"][-1].item() and td["next", "done"][-1].item()
    assert not td["next", "terminated"].any()
    check_env_specs(env, steps=12)


def test_step_counter_restarts_with_each_episode(counting_env_cls):
    env = TransformedEnv(counting_env_cls(limit=3), StepCounter())
    td = env.rollout(7, break_when_any_done=False)
    assert td["next", "step_count"][:, 0].tolist() == [1, 2, 3, 1, 2, 3, 1]


def test_step_counter_partial_reset_keeps_other_counts():
    env = TransformedEnv(CartPoleEnv(batch_size=[3]), StepCounter())
    td = env.reset()
    for _ in range(4):
        td = step_mdp(env.rand_step(td))
    td.set("_reset", torch.tensor([[False], [True], [False]]))
    out = env.reset(td)
    assert out["step_count"][:, 0].tolist() == [4, 0, 4]


def test_step_counter_arguments_and_plain_tensordicts():
    with pytest.raises(TransformError, match="max_steps must be a positive int"):
        StepCounter(0)
    with pytest.raises(TransformError, match="inside a TransformedEnv"):
        StepCounter()(TensorDict({}, []))


def test_reward_sum_accumulates_per_episode(counting_env_cls):
    env = TransformedEnv(counting_env_cls(limit=3), RewardSum())
    assert env.observation_spec["episode_reward"] == Unbounded(shape=(1,))

    def policy(td):
        return td.set("action", torch.full((1,), 0.5))

    td = env.rollout(5, policy, break_when_any_done=False)
    assert td["next", "episode_reward"][:, 0].tolist() == [0.5, 1.0, 1.5, 0.5, 1.0]
    assert td["episode_reward"][:, 0].tolist() == [0.0, 0.5, 1.0, 0.0, 0.5]


def test_reward_sum_matches_the_return_of_gym_episodes():
    env = TransformedEnv(GymEnv("CartPole-v1"), RewardSum())
    td = env.rollout(500)
    assert td["next", "episode_reward"][-1].item() == td["next", "reward"].sum().item()
    check_env_specs(env)


def test_reward_sum_partial_reset_and_custom_keys():
    env = TransformedEnv(CartPoleEnv(batch_size=[2]), RewardSum(out_keys=["ret"]))
    td = env.reset()
    for _ in range(3):
        td = step_mdp(env.rand_step(td))
    td.set("_reset", torch.tensor([[True], [False]]))
    assert env.reset(td)["ret"][:, 0].tolist() == [0.0, 3.0]
    assert RewardSum(in_keys=[("agent", "reward")]).out_keys == [("agent", "episode_reward")]
