"""PendulumEnv and CartPoleEnv follow gymnasium's dynamics on identical states and actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlblocks.envs import CartPoleEnv, InvalidActionError, PendulumEnv, check_env_specs


def _gym_step(env_id: str, state: np.ndarray, action) -> tuple:
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    env.state = state.copy()
    obs, reward, terminated, truncated, _ = env.step(action)
    env.close()
    return obs, reward, terminated, truncated


def test_pendulum_matches_gymnasium_step_for_step():
    n = 32
    env = PendulumEnv(batch_size=[n])
    gen = torch.Generator().manual_seed(0)
    state = torch.stack(
        [
            (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * 4.0,
            (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * 9.0,
        ],
        -1,
    )
    action = (torch.rand(n, 1, generator=gen) * 6 - 3).to(torch.float32)  # beyond bounds too
    td = TensorDict({"state": state, "action": action.clamp(-2, 2)}, batch_size=[n])
    out = env.step(td)["next"]
    for i in range(n):
        obs, reward, terminated, truncated = _gym_step(
            "Pendulum-v1", state[i].numpy(), action[i].clamp(-2, 2).numpy()
        )
        np.testing.assert_allclose(out["observation"][i].numpy(), obs, rtol=1e-6, atol=1e-6)
        assert out["reward"][i].item() == pytest.approx(reward, rel=1e-5, abs=1e-5)
        assert out["terminated"][i].item() is terminated is False
        assert out["truncated"][i].item() is truncated is False


def test_cartpole_matches_gymnasium_including_termination():
    n = 64
    env = CartPoleEnv(batch_size=[n])
    gen = torch.Generator().manual_seed(1)
    scale = torch.tensor([2.5, 2.0, 0.22, 2.0], dtype=torch.float64)
    state = (torch.rand(n, 4, generator=gen, dtype=torch.float64) * 2 - 1) * scale
    action = torch.randint(0, 2, (n,), generator=gen)
    out = env.step(TensorDict({"state": state, "action": action}, batch_size=[n]))["next"]
    terminated_seen = set()
    for i in range(n):
        obs, reward, terminated, _ = _gym_step("CartPole-v1", state[i].numpy(), int(action[i]))
        np.testing.assert_allclose(out["observation"][i].numpy(), obs, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out["state"][i].numpy(), obs, rtol=1e-6, atol=1e-6)
        assert out["reward"][i].item() == reward == 1.0
        assert out["terminated"][i].item() is terminated
        assert out["done"][i].item() is terminated
        terminated_seen.add(terminated)
    assert terminated_seen == {True, False}


def test_multi_step_trajectory_matches_gymnasium():
    env = PendulumEnv()
    env.set_seed(3)
    torch.manual_seed(3)
    td = env.rollout(50)
    genv = gym.make("Pendulum-v1").unwrapped
    genv.reset(seed=0)
    genv.state = td["state"][0].numpy().copy()
    for t in range(50):
        obs, reward, *_ = genv.step(td["action"][t].numpy())
        np.testing.assert_allclose(td["next", "observation"][t].numpy(), obs, atol=1e-5)
        assert td["next", "reward"][t].item() == pytest.approx(reward, abs=1e-4)


@pytest.mark.parametrize("cls", [PendulumEnv, CartPoleEnv])
def test_reset_with_a_seed_seeds_the_reset(cls):
    """Issue 20, item 14: reset(seed=s) used to ignore the seed silently."""
    env = cls(batch_size=[3])
    env.set_seed(7)
    expected = env.reset()["state"]
    env.rand_step(env.reset())
    assert torch.equal(env.reset(seed=7)["state"], expected)
    assert not torch.equal(env.reset(seed=8)["state"], expected)
    with pytest.raises(ValueError, match=r"set_seed\(\): seed must be an int >= 0.*-1"):
        env.reset(seed=-1)
    env.reset()  # still works


@pytest.mark.parametrize(
    ("cls", "shape", "dtype"),
    [(PendulumEnv, (3, 1), torch.float32), (CartPoleEnv, (3,), torch.int64)],
)
def test_an_action_on_another_device_names_the_key_and_both_devices(cls, shape, dtype):
    """Issue 20, item 12 (the "meta" device stands for another device on a CPU machine)."""
    env = cls(batch_size=[3])
    td = TensorDict(dict(env.reset().items()), batch_size=[3])
    td["action"] = torch.zeros(shape, dtype=dtype, device="meta")
    for check in (True, False):
        with pytest.raises(
            InvalidActionError, match="'action'.*spec is on device cpu, the action on device meta"
        ):
            env.step(td, check=check)


@pytest.mark.parametrize("cls", [PendulumEnv, CartPoleEnv])
def test_reset_distribution_and_seeding(cls):
    env = cls(batch_size=[256])
    env.set_seed(7)
    a = env.reset()["state"]
    env.set_seed(7)
    b = env.reset()["state"]
    assert torch.equal(a, b)
    assert not torch.equal(a, env.reset()["state"])
    high = {PendulumEnv: [np.pi, 1.0], CartPoleEnv: [0.05] * 4}[cls]
    assert (a.abs() <= torch.tensor(high, dtype=torch.float64)).all()
    assert (a.abs().amax(0) > 0.9 * torch.tensor(high, dtype=torch.float64)).all()


@pytest.mark.parametrize("cls", [PendulumEnv, CartPoleEnv])
@pytest.mark.parametrize("batch_size", [[], [5], [2, 3]])
def test_native_envs_pass_check_env_specs(cls, batch_size):
    check_env_specs(cls(batch_size=batch_size), steps=5, seed=0)


def test_partial_reset_keeps_other_states():
    env = CartPoleEnv(batch_size=[3])
    td = env.rollout(3, break_when_any_done=False)[:, -1]["next"].clone()
    td.set("_reset", torch.tensor([[False], [True], [False]]))
    out = env.reset(td)
    assert torch.equal(out["state"][0], td["state"][0])
    assert torch.equal(out["state"][2], td["state"][2])
    assert not torch.equal(out["state"][1], td["state"][1])


def test_model_based_use_steps_from_any_state():
    env = PendulumEnv(batch_size=[2])
    td = TensorDict(
        {"state": torch.tensor([[0.0, 0.0], [np.pi, 0.0]], dtype=torch.float64)}, batch_size=[2]
    )
    td = env.step(td.set("action", torch.zeros(2, 1)))
    # Upright and at rest: no cost, stays; hanging down: cost pi^2.
    assert td["next", "reward"][0].item() == pytest.approx(0.0)
    assert td["next", "reward"][1].item() == pytest.approx(-(np.pi**2), rel=1e-4)


def test_device_argument_is_honoured():
    env = PendulumEnv(batch_size=[2], device="cpu")
    assert env.device == torch.device("cpu")
    assert env.rollout(3)["next", "observation"].device == torch.device("cpu")
    assert env.action_spec.device == torch.device("cpu")


@pytest.mark.parametrize("cls", [PendulumEnv, CartPoleEnv])
def test_state_dict_restores_the_random_generator(cls):
    env = cls(batch_size=[4])
    env.set_seed(3)
    td = env.reset()
    saved = env.state_dict()
    # Continue the same episodes (their state is in td) and draw new initial states; the
    # random actions come from torch's global generator, seeded alike.
    torch.manual_seed(0)
    expected = env.rollout(40, auto_reset=False, tensordict=td.clone(), break_when_any_done=False)
    expected_reset = env.reset()
    restored = cls(batch_size=[4])
    restored.set_seed(99)
    restored.load_state_dict(saved)
    torch.manual_seed(0)
    traj = restored.rollout(40, auto_reset=False, tensordict=td.clone(), break_when_any_done=False)
    for key in expected.keys(True, True):
        assert torch.equal(traj[key], expected[key]), key
    assert torch.equal(restored.reset()["state"], expected_reset["state"])
    # The saved state is a copy: using the env afterwards does not change it.
    env.load_state_dict(saved)
    torch.manual_seed(0)
    env.rollout(40, auto_reset=False, tensordict=td.clone(), break_when_any_done=False)
    assert torch.equal(env.reset()["state"], expected_reset["state"])
    with pytest.raises(KeyError, match="generator"):
        env.load_state_dict({})
