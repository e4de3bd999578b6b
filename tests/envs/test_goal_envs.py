"""BitFlippingEnv: specs, dynamics, reward and termination, truncation, partial resets,
seeding, and its reward function as hindsight experience replay uses it."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.envs import BitFlippingEnv, check_env_specs


def greedy(td: TensorDict) -> TensorDict:
    """Flip the first bit that differs from the goal: solves any episode in Hamming steps."""
    td["action"] = (td["observation"] != td["desired_goal"]).float().argmax(-1)
    return td


def away(td: TensorDict) -> TensorDict:
    """Flip the first bit that already matches the goal: never solves (for n_bits >= 2)."""
    td["action"] = (td["observation"] == td["desired_goal"]).float().argmax(-1)
    return td


@pytest.mark.parametrize("batch_size", [(), (4,), (2, 3)])
def test_specs_match_what_the_env_returns(batch_size):
    env = BitFlippingEnv(5, batch_size=batch_size, seed=0)
    check_env_specs(env, steps=8)
    assert env.action_spec.n == 5
    assert env.observation_spec["desired_goal"].shape == (*batch_size, 5)


def test_a_step_flips_the_bit_the_action_names():
    env = BitFlippingEnv(6, batch_size=[8], seed=1)
    td = env.reset()
    assert torch.equal(td["observation"], td["achieved_goal"])
    action = torch.arange(8) % 6
    out = env.step(td.set("action", action))["next"]
    changed = out["observation"] != td["observation"]
    assert torch.equal(changed, torch.nn.functional.one_hot(action, 6).bool())
    assert torch.equal(out["achieved_goal"], out["observation"])
    assert torch.equal(out["desired_goal"], td["desired_goal"])  # the goal stays
    assert set(out["observation"].unique().tolist()) <= {0.0, 1.0}


def test_reward_is_zero_on_success_and_success_terminates():
    n = 7
    env = BitFlippingEnv(n, batch_size=[64], seed=2)
    td = env.rollout(n, greedy, break_when_any_done=False)
    distance = (td["observation"][:, 0] != td["desired_goal"][:, 0]).sum(-1)
    assert (distance >= 1).all()  # no episode starts solved
    for i in range(64):
        d = int(distance[i])
        reward = td["next", "reward"][i, :d, 0]
        assert torch.equal(reward, torch.tensor([-1.0] * (d - 1) + [0.0]))
        terminated = td["next", "terminated"][i, :d, 0]
        assert torch.equal(terminated, torch.arange(d) == d - 1)
        assert not td["next", "truncated"][i, :d].any()
    expected = BitFlippingEnv.compute_reward(
        td["next", "achieved_goal"], td["next", "desired_goal"]
    )
    assert torch.equal(td["next", "reward"], expected)
    done = td["next", "done"]
    assert torch.equal(done, td["next", "terminated"] | td["next", "truncated"])


def test_unsolved_episodes_are_truncated_at_max_steps():
    env = BitFlippingEnv(4, batch_size=[16], max_steps=3, seed=3)
    td = env.rollout(7, away, break_when_any_done=False)
    truncated = td["next", "truncated"][..., 0]
    assert truncated[:, [2, 5]].all() and truncated.sum() == 2 * 16
    assert not td["next", "terminated"].any()
    assert (td["next", "reward"] == -1).all()
    assert BitFlippingEnv(4).max_steps == 4  # n_bits by default


def test_partial_reset_keeps_the_other_elements():
    env = BitFlippingEnv(8, batch_size=[4], max_steps=3, seed=4)
    td = env.reset()
    td = env.step_mdp(env.step(away(td)))
    before = td.clone()
    mask = torch.tensor([[True], [False], [True], [False]])
    after = env.reset(td.set("_reset", mask))
    keep = ~mask.squeeze(-1)
    for key in ("observation", "desired_goal"):
        assert torch.equal(after[key][keep], before[key][keep])
        assert not torch.equal(after[key][~keep], before[key][~keep])
    # The kept elements keep their step count: truncated after 2 more steps, the reset ones
    # after 3.
    flags = []
    for _ in range(3):
        out = env.step(away(after))
        flags.append(out["next", "truncated"][..., 0])
        after = env.step_mdp(out)
    assert not flags[0].any()
    assert flags[1].tolist() == [False, True, False, True]
    assert flags[2][~keep].all()


def test_seeding_is_reproducible():
    first = BitFlippingEnv(10, batch_size=[5], seed=7).rollout(
        30, greedy, break_when_any_done=False
    )
    again = BitFlippingEnv(10, batch_size=[5], seed=7).rollout(
        30, greedy, break_when_any_done=False
    )
    other = BitFlippingEnv(10, batch_size=[5], seed=8).rollout(
        30, greedy, break_when_any_done=False
    )
    assert (first == again).all()
    assert not torch.equal(first["desired_goal"], other["desired_goal"])
    env = BitFlippingEnv(10, batch_size=[5])
    assert torch.equal(env.reset(seed=7)["desired_goal"], first["desired_goal"][:, 0])


def test_one_bit_episodes_never_start_solved():
    env = BitFlippingEnv(1, batch_size=[256], seed=5)
    td = env.reset()
    assert (td["observation"] != td["desired_goal"]).all()
    out = env.step(td.set("action", torch.zeros(256, dtype=torch.long)))["next"]
    assert out["terminated"].all() and (out["reward"] == 0).all()


def test_compute_reward_is_vectorized_and_needs_no_env():
    achieved = torch.tensor([[[0.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 0.0]]])
    desired = torch.tensor([1.0, 1.0])
    reward = BitFlippingEnv.compute_reward(achieved, desired)
    assert reward.shape == (2, 2, 1) and reward.dtype == torch.float32
    assert reward.squeeze(-1).tolist() == [[-1.0, 0.0], [-1.0, -1.0]]
    terminated = BitFlippingEnv.compute_terminated(achieved, desired)
    assert terminated.dtype == torch.bool and torch.equal(terminated, reward == 0)


@pytest.mark.parametrize("kwargs", [{"n_bits": 0}, {"max_steps": 0}, {"n_bits": 2.5}])
def test_bad_sizes_are_refused(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"BitFlippingEnv.*{name}"):
        BitFlippingEnv(**kwargs)
