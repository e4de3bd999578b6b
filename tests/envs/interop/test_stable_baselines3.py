"""Interop: rlblocks envs exported with ``to_gymnasium`` train with Stable-Baselines3.

SB3 knows nothing of rlblocks; it only sees gymnasium envs. Runs in the ``interop`` nox
session (stable-baselines3 installed); the other sessions leave this folder out.
"""

from __future__ import annotations

import numpy as np
import pytest
from stable_baselines3 import PPO

from rlblocks.envs import CartPoleEnv, PendulumEnv, StepCounter, TransformedEnv, to_gymnasium
from rlblocks.envs.transforms import Compose, RewardScaling

STEPS = 2048
# Small rollouts and few epochs: the point is that the loop runs end to end, quickly.
PPO_KWARGS = {"n_steps": 256, "batch_size": 64, "n_epochs": 2, "seed": 0, "device": "cpu"}


def train(gym_env):
    # The exported observation space is a Dict ("observation" plus the simulator "state").
    model = PPO("MultiInputPolicy", gym_env, **PPO_KWARGS)
    model.learn(STEPS)
    assert model.num_timesteps >= STEPS
    return model


def predicted_actions(model, gym_env, n=20):
    obs, _ = gym_env.reset(seed=1)
    actions = []
    for _ in range(n):
        action, _ = model.predict(obs, deterministic=True)
        actions.append(action)
        obs, _, terminated, truncated, _ = gym_env.step(action)
        if terminated or truncated:
            obs, _ = gym_env.reset()
    return actions


def test_ppo_trains_on_an_exported_native_env():
    gym_env = to_gymnasium(CartPoleEnv())
    model = train(gym_env)
    # SB3's Monitor saw whole episodes end by termination (the pole fell); the native env
    # has no time limit, and 2k steps of PPO are far from balancing for long.
    lengths = [episode["l"] for episode in model.ep_info_buffer]
    assert len(lengths) >= 10
    assert all(1 <= n < 500 for n in lengths) and sum(lengths) <= model.num_timesteps
    actions = predicted_actions(model, gym_env)
    assert all(gym_env.action_space.contains(int(a)) for a in actions)
    gym_env.close()
    assert gym_env.unwrapped.rlblocks_env.is_closed


def test_ppo_trains_on_an_exported_transformed_env():
    base = PendulumEnv()
    env = TransformedEnv(base, Compose(StepCounter(100), RewardScaling(loc=0.0, scale=0.1)))
    gym_env = to_gymnasium(env)
    assert set(gym_env.observation_space.spaces) == {"observation", "state", "step_count"}
    model = train(gym_env)
    # StepCounter's truncation reaches SB3: every episode is cut at exactly 100 steps
    episodes = list(model.ep_info_buffer)
    assert len(episodes) == STEPS // 100
    assert all(episode["l"] == 100 for episode in episodes)
    # and so does the scaling: a pendulum step costs at most ~16.3, scaled by 0.1
    assert all(-100 * 1.63 <= episode["r"] < 0 for episode in episodes)
    for action in predicted_actions(model, gym_env):
        assert gym_env.action_space.contains(np.asarray(action, dtype=np.float32))
    gym_env.close()
    assert base.is_closed


@pytest.mark.parametrize("make", [CartPoleEnv, PendulumEnv])
def test_sb3_sees_the_same_seeded_start_as_rlblocks(make):
    gym_env = to_gymnasium(make())
    first, _ = gym_env.reset(seed=5)
    again, _ = gym_env.reset(seed=5)
    env = make()
    env.set_seed(5)
    direct = env.reset()["observation"].numpy()
    np.testing.assert_array_equal(first["observation"], again["observation"])
    np.testing.assert_array_equal(first["observation"], direct)
