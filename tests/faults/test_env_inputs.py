"""Bad inputs to every kind of env: seeds, seeded resets, actions on another device.

Issue 20, items 12, 13 and 14, checked the same way on every env kind (gymnasium, the native
torch envs, SerialEnv, ParallelEnv, TransformedEnv, dm_control): each rule lives once, in
EnvBase, so each must hold everywhere. The "meta" device stands for another device on a
CPU-only machine. After every refused input the env must still work.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
import torch
from tensordict import TensorDict

from rlblocks.dmcontrol import DMControlEnv
from rlblocks.envs import (
    CartPoleEnv,
    EnvBase,
    GymEnv,
    InvalidActionError,
    ParallelEnv,
    PendulumEnv,
    SerialEnv,
    TransformedEnv,
)
from rlblocks.envs.transforms import StepCounter

ENVS: dict[str, Callable[[], EnvBase]] = {
    "GymEnv": partial(GymEnv, "CartPole-v1"),
    "GymEnv-vector": partial(GymEnv, "Pendulum-v1", num_envs=2),
    "CartPoleEnv": partial(CartPoleEnv, batch_size=[2]),
    "PendulumEnv": PendulumEnv,
    "SerialEnv": partial(SerialEnv, 2, partial(GymEnv, "CartPole-v1")),
    "ParallelEnv": partial(ParallelEnv, 2, CartPoleEnv),
    "TransformedEnv": lambda: TransformedEnv(GymEnv("CartPole-v1"), StepCounter()),
    "DMControlEnv": partial(DMControlEnv, "cartpole", "balance"),
}


@pytest.fixture(name="env", params=list(ENVS))
def env_fixture(request):
    env = ENVS[request.param]()
    yield env
    env.close()


def observations(td: TensorDict, env: EnvBase) -> dict:
    return {key: td[key].clone() for key in env.observation_keys}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[key], b[key]) for key in a)


def test_reset_with_a_seed_is_set_seed_then_reset(env):
    first = observations(env.reset(seed=3), env)
    env.rand_step(env.reset())
    assert same(observations(env.reset(seed=3), env), first)
    assert not same(observations(env.reset(seed=4), env), first)
    env.set_seed(3)
    assert same(observations(env.reset(), env), first)


@pytest.mark.parametrize("bad", ["abc", -1, 2.5])
def test_a_bad_seed_is_refused_and_the_env_keeps_working(env, bad):
    first = observations(env.reset(seed=3), env)
    with pytest.raises(ValueError, match=r"set_seed\(\): seed must be an int >= 0 \(or None\)"):
        env.set_seed(bad)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        env.reset(seed=bad)
    env.rand_step(env.reset())
    assert same(observations(env.reset(seed=3), env), first)


@pytest.mark.parametrize("check", [True, False])
def test_an_action_on_another_device_names_the_key_and_both_devices(env, check):
    td = env.reset()
    spec = env.action_spec
    # A TensorDict without a device keeps the action on its own device.
    bad = TensorDict(dict(td.items()), batch_size=env.batch_size)
    bad["action"] = torch.zeros(spec.shape, dtype=spec.dtype, device="meta")
    with pytest.raises(InvalidActionError) as info:
        env.step(bad, check=check)
    message = str(info.value)
    assert "action 'action'" in message
    assert "the spec is on device cpu, the action on device meta" in message
    env.rand_step(env.reset())  # the refused step left the env usable
