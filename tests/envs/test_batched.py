"""SerialEnv and EnvCreator: stacking sub-envs, seeding, partial resets."""

from __future__ import annotations

import functools
import pickle

import pytest
import torch

from rlblocks.envs import (
    CartPoleEnv,
    EnvCreator,
    EnvError,
    GymEnv,
    PendulumEnv,
    SerialEnv,
    check_env_specs,
)


def test_serial_env_stacks_sub_envs():
    env = SerialEnv(3, lambda: PendulumEnv(batch_size=[2]))
    assert env.batch_size == (3, 2) and env.sub_batch_size == (2,)
    assert env.action_spec.shape == (3, 2, 1)
    td = env.rollout(5)
    assert td.batch_size == (3, 2, 5)
    check_env_specs(env)
    env.close()
    assert all(sub.is_closed for sub in env.envs)


def test_per_worker_seeding_matches_single_envs():
    env = SerialEnv(3, lambda: GymEnv("CartPole-v1"))
    assert env.set_seed(7) == 10
    obs = env.reset()["observation"]
    for i in range(3):
        single = GymEnv("CartPole-v1")
        single.set_seed(7 + i)
        assert torch.equal(obs[i], single.reset()["observation"])


def test_partial_reset_resets_masked_sub_envs_only():
    env = SerialEnv(3, lambda: GymEnv("CartPole-v1"))
    env.set_seed(0)
    td = env.reset()
    for _ in range(3):
        td = env.step_and_maybe_reset(env.rand_action(td))[1]
    before = td["observation"].clone()
    td.set("_reset", torch.tensor([[False], [True], [False]]))
    after = env.reset(td)["observation"]
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert not torch.equal(after[1], before[1])


def test_partial_reset_inside_batched_sub_envs():
    env = SerialEnv(2, lambda: CartPoleEnv(batch_size=[2]))
    td = env.rollout(3, break_when_any_done=False)[..., -1]["next"].clone()
    td.set("_reset", torch.tensor([[[True], [False]], [[False], [False]]]))
    out = env.reset(td)
    changed = (out["state"] != td["state"]).any(-1)
    assert changed.tolist() == [[True, False], [False, False]]


def test_generic_step_path_and_step_and_maybe_reset():
    env = SerialEnv(2, lambda: CartPoleEnv())
    td = env.reset()
    ends = 0
    for _ in range(60):
        transition, td = env.step_and_maybe_reset(env.rand_action(td))
        ends += int(transition["next", "done"].sum())
        # Finished episodes were restarted: no state is past the termination bounds.
        assert (td["state"][:, 0].abs() <= 2.4).all()
        assert (td["state"][:, 2].abs() <= 12 * 2 * torch.pi / 360).all()
    assert ends > 0


def test_sub_envs_must_be_alike():
    fns = [lambda: GymEnv("CartPole-v1"), lambda: GymEnv("Pendulum-v1")]
    with pytest.raises(EnvError, match="sub-env 1's full_observation_spec differs"):
        SerialEnv(2, fns)


def test_argument_errors():
    with pytest.raises(ValueError, match="num_workers must be a positive int"):
        SerialEnv(0, CartPoleEnv)
    with pytest.raises(ValueError, match="2 create_env_fn for 3 workers"):
        SerialEnv(3, [CartPoleEnv, CartPoleEnv])
    with pytest.raises(ValueError, match="1 create_env_kwargs for 2 workers"):
        SerialEnv(2, CartPoleEnv, [{}])


def test_per_worker_kwargs():
    env = SerialEnv(2, PendulumEnv, [{"g": 10.0}, {"g": 10.0}])
    assert [sub.g for sub in env.envs] == [10.0, 10.0]


def test_env_creator_meta_and_pickling():
    creator = EnvCreator(functools.partial(GymEnv, "CartPole-v1"))
    assert creator.batch_size == ()
    assert creator.meta["specs"]["action"]["action"].n == 2
    clone = pickle.loads(pickle.dumps(creator))
    env = clone()
    assert isinstance(env, GymEnv)
    env.close()
    with pytest.raises(EnvError, match="not an rlblocks env"):
        EnvCreator(lambda: object())()
    with pytest.raises(TypeError, match="callable"):
        EnvCreator(3)
