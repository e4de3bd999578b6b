"""ActionDiscretizer."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.specs import (
    Bounded,
    Categorical,
    Composite,
    MultiCategorical,
    MultiOneHot,
    OneHot,
    Unbounded,
)
from rlblocks.envs import CartPoleEnv, EnvBase, PendulumEnv, check_env_specs
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms import ActionDiscretizer, TransformedEnv


class EchoEnv(EnvBase):
    """Its reward is the action it received; the action's bounds are given."""

    def __init__(self, low, high, batch_size=()) -> None:
        super().__init__(batch_size=batch_size)
        b = self.batch_size
        low, high = torch.as_tensor(low), torch.as_tensor(high)
        self.full_observation_spec = Composite(observation=Unbounded(shape=(*b, 1)), shape=b)
        self.action_spec = Bounded(low.expand(*b, *low.shape), high.expand(*b, *high.shape))
        self.reward_spec = Unbounded(shape=self.action_spec.shape)

    def _reset(self, tensordict, **kwargs):
        return TensorDict(observation=torch.zeros(*self.batch_size, 1), batch_size=self.batch_size)

    def _step(self, tensordict):
        return TensorDict(
            observation=torch.zeros(*self.batch_size, 1),
            reward=tensordict["action"].clone(),
            terminated=torch.zeros(*self.batch_size, 1, dtype=torch.bool),
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed):
        pass


def _echo(env, action):
    return env.step(env.reset().set("action", action))["next", "reward"]


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        ("median", [-1.6, -0.8, 0.0, 0.8, 1.6]),
        ("low", [-2.0, -1.2, -0.4, 0.4, 1.2]),
        (ActionDiscretizer.SamplingStrategy.HIGH, [-1.2, -0.4, 0.4, 1.2, 2.0]),
    ],
)
def test_indices_map_to_points_of_their_interval(sampling, expected):
    env = TransformedEnv(
        EchoEnv([-2.0], [2.0], batch_size=[5]), ActionDiscretizer(5, sampling=sampling)
    )
    assert env.action_spec == Categorical(5, shape=(5, 1))
    reward = _echo(env, torch.arange(5).reshape(5, 1))
    torch.testing.assert_close(reward.flatten(), torch.tensor(expected))


def test_random_sampling_stays_in_the_interval():
    env = TransformedEnv(
        EchoEnv([0.0], [1.0], batch_size=[1000]), ActionDiscretizer(4, sampling="random")
    )
    reward = _echo(env, torch.full((1000, 1), 2))
    assert reward.min() >= 0.5 and reward.max() <= 0.75 and reward.std() > 0.05


def test_one_hot_actions():
    env = TransformedEnv(
        EchoEnv([-1.0], [1.0], batch_size=[2]), ActionDiscretizer(4, categorical=False)
    )
    assert env.action_spec == OneHot(4, shape=(2, 1, 4))
    one_hot = torch.nn.functional.one_hot(torch.tensor([[0], [3]]), 4).bool()
    torch.testing.assert_close(_echo(env, one_hot).flatten(), torch.tensor([-0.75, 0.75]))
    check_env_specs(env)


def test_per_dim_interval_counts():
    base = EchoEnv([-1.0, 0.0], [1.0, 10.0], batch_size=[3])
    env = TransformedEnv(base, ActionDiscretizer([2, 5]))
    assert env.action_spec == MultiCategorical([2, 5], shape=(3, 2))
    reward = _echo(env, torch.tensor([[0, 0], [1, 4], [1, 2]]))
    torch.testing.assert_close(reward, torch.tensor([[-0.5, 1.0], [0.5, 9.0], [0.5, 5.0]]))
    check_env_specs(env)
    one_hot = TransformedEnv(
        EchoEnv([-1.0, 0.0], [1.0, 10.0]), ActionDiscretizer([2, 5], categorical=False)
    )
    assert one_hot.action_spec == MultiOneHot([2, 5], shape=(7,))
    action = torch.tensor([0, 1, 0, 0, 0, 0, 1], dtype=torch.bool)
    torch.testing.assert_close(_echo(one_hot, action), torch.tensor([0.5, 9.0]))


def test_out_action_key_and_pendulum_rollout():
    env = TransformedEnv(
        PendulumEnv(batch_size=[4]), ActionDiscretizer(7, out_action_key="action_index")
    )
    assert env.action_keys == ["action_index"]
    check_env_specs(env)
    td = env.rollout(5)
    assert td["action_index"].dtype == torch.int64 and "action" not in td.keys()
    # Bounds come from the spec, not the state_dict: another env loads it as is.
    other = TransformedEnv(PendulumEnv(), ActionDiscretizer(7, out_action_key="action_index"))
    other.load_state_dict(env.state_dict())
    assert env.state_dict() == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_intervals": 0}, "num_intervals must be a positive int"),
        ({"num_intervals": [3, 1.5]}, "num_intervals must be a positive int"),
        ({"num_intervals": 3, "sampling": "middle"}, "sampling must be one of"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(TransformError, match=match):
        ActionDiscretizer(**kwargs)


@pytest.mark.parametrize(
    ("env_fn", "transform", "match"),
    [
        (CartPoleEnv, ActionDiscretizer(3), "must be a Bounded float spec"),
        (lambda: EchoEnv([-float("inf")], [1.0]), ActionDiscretizer(3), "infinite bounds"),
        (lambda: EchoEnv([0.0], [1.0]), ActionDiscretizer([2, 3]), "has 2 counts"),
    ],
)
def test_env_action_errors(env_fn, transform, match):
    env = TransformedEnv(env_fn(), transform)
    with pytest.raises(TransformError, match=match):
        env.action_spec  # noqa: B018


def test_bounds_that_differ_across_the_batch_are_refused():
    base = EchoEnv([0.0], [1.0], batch_size=[2])
    base.action_spec = Bounded(torch.tensor([[0.0], [1.0]]), 2.0)
    with pytest.raises(TransformError, match="differ between batch elements"):
        TransformedEnv(base, ActionDiscretizer(3)).action_spec  # noqa: B018
