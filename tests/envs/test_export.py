"""to_gymnasium: rlblocks envs as gymnasium envs that pass gymnasium's checker."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from rlblocks.core.specs import OneHot
from rlblocks.envs import (
    CartPoleEnv,
    EnvError,
    GymEnv,
    PendulumEnv,
    StepCounter,
    TransformedEnv,
    to_gymnasium,
)

# gymnasium's checker recommends normalized, finite Box bounds; its own classic-control
# envs (which these mirror) do not follow that advice either.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*symmetric and normalized space:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*Box observation space (min|max)imum value:UserWarning"),
]


@pytest.mark.parametrize(
    "make",
    [
        PendulumEnv,
        CartPoleEnv,
        lambda: GymEnv("FrozenLake-v1"),
        lambda: GymEnv("rlblocks-tests/DictEnv-v0"),
        lambda: TransformedEnv(GymEnv("MountainCarContinuous-v0"), StepCounter(20)),
    ],
    ids=["pendulum", "cartpole", "frozenlake", "dict", "transformed"],
)
def test_exported_envs_pass_gymnasiums_checker(make):
    env = to_gymnasium(make())
    check_env(env, skip_render_check=True)
    env.close()


def test_exported_spaces_and_step():
    env = to_gymnasium(CartPoleEnv())
    assert env.action_space == gym.spaces.Discrete(2)
    assert isinstance(env.observation_space, gym.spaces.Dict)  # observation and state
    obs, info = env.reset(seed=0)
    assert obs["observation"].dtype == np.float32 and info == {}
    obs, reward, terminated, truncated, _ = env.step(1)
    assert reward == 1.0 and terminated is False and truncated is False
    assert env.observation_space.contains(obs)


def test_seeded_resets_are_reproducible():
    env = to_gymnasium(PendulumEnv())
    a, _ = env.reset(seed=3)
    b, _ = env.reset(seed=3)
    np.testing.assert_array_equal(a["observation"], b["observation"])


def test_one_hot_actions_become_discrete(counting_env_cls):
    base = counting_env_cls()
    base.action_spec = OneHot(3)
    seen = []
    original = base._step

    def step(td):
        seen.append(td["action"].clone())
        return original(td.set("action", torch.ones(1)))

    base._step = step
    env = to_gymnasium(base)
    assert env.action_space == gym.spaces.Discrete(3)
    env.reset()
    env.step(2)
    assert seen[0].tolist() == [False, False, True]


def test_batched_envs_are_refused():
    with pytest.raises(EnvError, match=r"unbatched env, got batch_size \[2\]"):
        to_gymnasium(PendulumEnv(batch_size=[2]))


def test_step_before_reset_is_refused():
    with pytest.raises(EnvError, match="reset"):
        to_gymnasium(PendulumEnv()).step(np.zeros(1, np.float32))
