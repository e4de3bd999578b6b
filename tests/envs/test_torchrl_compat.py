"""Calls written the way TorchRL users write them (only the imports changed) run on
rlblocks.envs; where rlblocks differs on purpose, the error says what to write."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule

from rlblocks.envs import (
    EnvCreator,
    GymEnv,
    InvalidActionError,
    ObservationNorm,
    ParallelEnv,
    SerialEnv,
    TransformedEnv,
    TransformError,
)


def make_pendulum():
    return GymEnv("Pendulum-v1")


@pytest.mark.parametrize(
    "make",
    [
        make_pendulum,
        lambda: SerialEnv(2, EnvCreator(make_pendulum)),
        lambda: GymEnv("Pendulum-v1", num_envs=2),
    ],
    ids=["GymEnv", "SerialEnv", "GymEnv-vector"],
)
def test_an_action_that_requires_grad_steps_the_env(make):
    env = make()
    net = torch.nn.Linear(3, 1)
    actor = TensorDictModule(lambda obs: 2 * torch.tanh(net(obs)), ["observation"], ["action"])
    td = env.reset()
    actor(td)
    assert td["action"].requires_grad
    env.step(td)  # TorchRL users do this with a fresh actor output
    assert td["next", "observation"].shape == (*env.batch_size, 3)
    trajectory = env.rollout(5, actor)
    assert trajectory["action"].shape == (*env.batch_size, 5, 1)
    env.close()


def test_parallel_env_outputs_carry_the_device_they_were_given():
    env = ParallelEnv(2, EnvCreator(lambda: GymEnv("CartPole-v1")), device="cpu")
    try:
        assert env.reset().device == torch.device("cpu")
        assert env.rand_step(env.reset())["next"].device == torch.device("cpu")
        assert env.rollout(3).device == torch.device("cpu")
    finally:
        env.close()


def test_observation_norm_on_an_env_without_its_key_raises(dict_env_id):
    env = TransformedEnv(GymEnv(dict_env_id), ObservationNorm(loc=0.5, scale=1.0))
    assert "observation" not in env.base_env.observation_keys
    with pytest.raises(TransformError, match=r"in_keys \['observation'\].*pass in_keys"):
        env.reset()
    named = env.base_env.observation_keys[0]
    fixed = TransformedEnv(GymEnv(dict_env_id), ObservationNorm(1.0, 2.0, in_keys=[named]))
    assert fixed.reset()[named].dtype.is_floating_point


@pytest.mark.parametrize("check_actions", [True, False])
def test_step_and_rollout_treat_an_out_of_bounds_action_alike(check_actions):
    """One setting (check_actions) decides for both paths: validate, or pass it to gym."""
    too_big = TensorDictModule(lambda obs: torch.full((1,), 5.0), ["observation"], ["action"])
    env = GymEnv("Pendulum-v1", check_actions=check_actions)
    if check_actions:
        with pytest.raises(InvalidActionError, match="'action'"):
            env.step(too_big(env.reset()))
        with pytest.raises(InvalidActionError, match="'action'"):
            env.rollout(3, too_big)  # the numpy loop
        with pytest.raises(InvalidActionError, match="'action'"):
            env.rollout(3, lambda td: too_big(td))  # the TensorDict loop
        return
    # Unchecked, both hand the action to gym, which clips it: the same transitions.
    env.set_seed(0)
    stepped = env.step(too_big(env.reset()))["next"]
    env.set_seed(0)
    rolled = env.rollout(1, too_big)["next"][0]
    assert torch.equal(stepped["observation"], rolled["observation"])
    assert torch.equal(stepped["reward"], rolled["reward"])


def test_env_instances_pickle_for_worker_processes():
    """TorchRL hands env instances to collectors' worker processes (spawn pickles them)."""
    import pickle

    for env in (
        GymEnv("CartPole-v1", frame_skip=2),
        SerialEnv(2, EnvCreator(lambda: GymEnv("CartPole-v1"))),
    ):
        env.rollout(3)
        copy = pickle.loads(pickle.dumps(env))
        assert copy.rollout(4).batch_size == (*env.batch_size, 4)
        assert copy.rand_step(copy.reset())["next", "reward"].shape == (*env.batch_size, 1)
