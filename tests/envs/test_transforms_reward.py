"""RewardScaling and RewardClipping."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.specs import Bounded, Unbounded
from rlblocks.envs import GymEnv, PendulumEnv, check_env_specs
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms import Compose, RewardClipping, RewardScaling, TransformedEnv


def _transition(reward: torch.Tensor) -> TensorDict:
    n = reward.shape[0]
    return TensorDict(
        {"observation": torch.zeros(n, 3), "next": {"reward": reward}}, batch_size=[n]
    )


@pytest.mark.parametrize("batch_size", [(), (4,)])
def test_reward_scaling_values_and_specs(batch_size):
    env = TransformedEnv(PendulumEnv(batch_size=batch_size), RewardScaling(loc=1.0, scale=0.5))
    check_env_specs(env, seed=0)
    assert env.reward_spec == Unbounded(shape=(*batch_size, 1))
    base = PendulumEnv(batch_size=batch_size)
    base.set_seed(3)
    env.set_seed(3)
    action = torch.full((*batch_size, 1), 0.7)
    raw = base.step(base.reset().set("action", action))["next", "reward"]
    out = env.step(env.reset().set("action", action))["next", "reward"]
    torch.testing.assert_close(out, raw * 0.5 + 1.0)


def test_reward_scaling_standard_normal_and_plain_tensordict():
    t = RewardScaling(loc=2.0, scale=4.0, standard_normal=True)
    td = t(_transition(torch.tensor([[2.0], [6.0], [-2.0]])))
    assert td["next", "reward"].flatten().tolist() == [0.0, 1.0, -1.0]
    # Only the reward key is edited.
    assert torch.equal(td["observation"], torch.zeros(3, 3))


def test_reward_scaling_maps_bounds_and_swaps_them_for_negative_scales():
    env = TransformedEnv(
        PendulumEnv(batch_size=[2]),
        Compose(RewardClipping(-1.0, 3.0), RewardScaling(loc=1.0, scale=-2.0)),
    )
    spec = env.reward_spec
    assert isinstance(spec, Bounded)
    assert spec.low.unique().tolist() == [-5.0] and spec.high.unique().tolist() == [3.0]
    check_env_specs(env, seed=1)


def test_reward_scaling_keeps_the_reward_dtype_and_moves_with_to():
    t = RewardScaling(loc=0.0, scale=3.0, in_keys=["r64"])
    td = TensorDict({"r64": torch.ones(2, 1, dtype=torch.float64)}, batch_size=[2])
    assert t(td)["r64"].dtype == torch.float64
    assert set(t.state_dict()) == {"loc", "scale"}
    assert t.to(torch.float64).scale.dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loc": 0.0, "scale": 0.0}, "scale must be nonzero"),
        ({"loc": float("nan"), "scale": 1.0}, "loc must be finite"),
        ({"loc": "a", "scale": 1.0}, "loc must be a number or a tensor"),
        ({"loc": 0.0, "scale": torch.tensor([1.0, 0.0])}, "scale must be nonzero"),
    ],
)
def test_reward_scaling_rejects_bad_arguments(kwargs, match):
    with pytest.raises(TransformError, match=match):
        RewardScaling(**kwargs)


def test_reward_clipping_values_and_spec():
    env = TransformedEnv(PendulumEnv(batch_size=[8]), RewardClipping(-2.0, -1.0))
    assert env.reward_spec == Bounded(-2.0, -1.0, shape=(8, 1))
    check_env_specs(env, seed=0)
    rewards = env.rollout(20)["next", "reward"]
    assert rewards.min() >= -2.0 and rewards.max() <= -1.0


def test_reward_clipping_one_sided_and_plain_tensordict():
    t = RewardClipping(clamp_max=0.5)
    td = t(_transition(torch.tensor([[-7.0], [0.25], [9.0]])))
    assert td["next", "reward"].flatten().tolist() == [-7.0, 0.25, 0.5]
    env = TransformedEnv(PendulumEnv(), RewardClipping(clamp_min=-1.0))
    assert env.reward_spec.low.item() == -1.0 and env.reward_spec.high.item() == float("inf")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((), "give clamp_min and/or clamp_max"),
        ((1.0, -1.0), "clamp_min must be <= clamp_max"),
        (("low", 1.0), "clamp_min must be a number"),
    ],
)
def test_reward_clipping_rejects_bad_arguments(args, match):
    with pytest.raises(TransformError, match=match):
        RewardClipping(*args)


def test_fast_gym_rollout_matches_stepping():
    # Random-action rollouts apply stateless transforms to the whole trajectory at once.
    transform = Compose(RewardScaling(loc=0.5, scale=2.0), RewardClipping(-10.0, 0.0))
    env = TransformedEnv(GymEnv("Pendulum-v1"), transform)
    base = GymEnv("Pendulum-v1")
    env.set_seed(0)
    base.set_seed(0)
    torch.manual_seed(0)
    fast = env.rollout(30)
    torch.manual_seed(0)
    raw = base.rollout(30)
    torch.testing.assert_close(fast["action"], raw["action"])
    expected = (raw["next", "reward"] * 2.0 + 0.5).clamp(-10.0, 0.0)
    torch.testing.assert_close(fast["next", "reward"], expected)
