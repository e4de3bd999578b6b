"""VmasEnv and VmasWrapper against the real VMAS: specs, shapes, dynamics, resets, flags."""

from __future__ import annotations

import pytest
import torch
import vmas

from rlblocks.core import RESET
from rlblocks.envs import check_env_specs
from rlblocks.vmas import VmasEnv, VmasWrapper

N = 4  # envs simulated together


def navigation(**kwargs) -> VmasEnv:
    return VmasEnv("navigation", num_envs=N, n_agents=3, seed=0, **kwargs)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"continuous_actions": False},
        {"continuous_actions": False, "categorical_actions": False},
        {"continuous_actions": False, "multidiscrete_actions": True},
        {"continuous_actions": False, "multidiscrete_actions": True, "categorical_actions": False},
        {"max_steps": 2},
    ],
    ids=["continuous", "categorical", "one-hot", "multi-categorical", "multi-one-hot", "limit"],
)
def test_outputs_match_the_specs(options):
    env = navigation(**options)
    check_env_specs(env, steps=3)


def test_rollout_stacks_time_after_the_env_dim_and_agents_after_time():
    env = navigation(max_steps=3)
    traj = env.rollout(5, break_when_any_done=False)
    assert traj.batch_size == torch.Size([N, 5])
    assert traj["agents", "observation"].shape == torch.Size([N, 5, 3, 18])
    assert traj["agents", "action"].shape == torch.Size([N, 5, 3, 2])
    assert traj["next", "agents", "reward"].shape == torch.Size([N, 5, 3, 1])
    assert traj["next", "agents", "info", "pos_rew"].shape == torch.Size([N, 5, 3, 1])
    assert traj["next", "done"].shape == torch.Size([N, 5, 1])
    # Episodes of 3 steps: truncated on the 3rd, reset, and running again after it.
    expected = torch.tensor([False, False, True, False, False])
    assert torch.equal(traj["next", "truncated"][..., 0], expected.expand(N, 5))
    assert not traj["next", "terminated"].any()


def _raw_trajectory(seed: int, actions: list[list[torch.Tensor]], **kwargs):
    raw = vmas.make_env("navigation", num_envs=N, n_agents=3, seed=0, **kwargs)
    observations = [torch.stack(raw.reset(seed=seed), dim=1)]
    rewards, infos = [], []
    for action in actions:
        obs, rew, _, info = raw.step([a.clone() for a in action])
        observations.append(torch.stack(obs, dim=1))
        rewards.append(torch.stack(rew, dim=1).unsqueeze(-1))
        infos.append(torch.stack([i["pos_rew"] for i in info], dim=1).unsqueeze(-1))
    return observations, rewards, infos


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "discrete"])
def test_steps_match_the_raw_vmas_env_with_the_same_seed_and_actions(continuous):
    env = navigation(continuous_actions=continuous)
    td = env.reset(seed=7)
    observations, rewards, infos = [td["agents", "observation"]], [], []
    actions = []
    for _ in range(4):
        td = env.rand_action(td)
        action = td["agents", "action"]
        # VMAS's per-agent actions: [N, 2] continuous, [N, 1] discrete.
        actions.append([action[:, i] if continuous else action[:, i, None] for i in range(3)])
        td = env.step(td)
        observations.append(td["next", "agents", "observation"])
        rewards.append(td["next", "agents", "reward"])
        infos.append(td["next", "agents", "info", "pos_rew"])
        td = env.step_mdp(td)
    raw_obs, raw_rewards, raw_infos = _raw_trajectory(7, actions, continuous_actions=continuous)
    for ours, theirs in zip(observations + rewards + infos, raw_obs + raw_rewards + raw_infos):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert not torch.equal(observations[0], observations[-1])  # the agents did move


def test_set_seed_makes_resets_reproducible():
    env = navigation()
    first = env.reset(seed=3)["agents", "observation"]
    other = env.reset(seed=4)["agents", "observation"]
    again = env.reset(seed=3)["agents", "observation"]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_partial_reset_restarts_only_the_masked_envs():
    env = navigation()
    td = env.reset(seed=1)
    for _ in range(3):
        td = env.step_mdp(env.rand_step(td))
    before = td["agents", "observation"].clone()
    mask = torch.tensor([True, False, True, False]).unsqueeze(-1)
    td.set(RESET, mask)
    out = env.reset(td)
    after = out["agents", "observation"]
    kept = ~mask[:, 0]
    assert torch.equal(after[kept], before[kept])
    assert not torch.equal(after[~kept], before[~kept])
    assert env.env.steps.tolist() == [0, 3, 0, 3]
    assert out.batch_size == torch.Size([N]) and not out["done"].any()


def test_a_mask_selecting_every_env_resets_them_all():
    env = navigation()
    td = env.step_mdp(env.rand_step(env.reset(seed=1)))
    td.set(RESET, torch.ones(N, 1, dtype=torch.bool))
    env.reset(td)
    assert env.env.steps.tolist() == [0] * N


def test_step_and_maybe_reset_restarts_truncated_episodes():
    env = navigation(max_steps=2)
    td = env.reset(seed=0)
    for step in range(1, 5):
        transition, td = env.step_and_maybe_reset(env.rand_action(td))
        assert bool(transition["next", "truncated"].all()) == (step % 2 == 0)
    assert env.env.steps.tolist() == [0] * N


def test_terminated_and_truncated_come_from_vmas(countdown):
    env = VmasEnv(countdown(), num_envs=2, end_at=2, seed=0)
    td = env.step_mdp(env.rand_step(env.reset()))
    assert not td["done"].any()
    td = env.rand_step(td)["next"]
    assert td["terminated"].all() and not td["truncated"].any() and td["done"].all()
    both = VmasEnv(countdown(), num_envs=2, end_at=2, max_steps=2, seed=0)
    td = both.rollout(2, break_when_any_done=False)["next"][:, -1]
    assert td["terminated"].all() and td["truncated"].all() and td["done"].all()


def test_wrapper_splits_a_single_vmas_done_with_the_step_count(countdown):
    # Built without terminated_truncated: VMAS ORs its step limit into one done flag.
    raw = vmas.make_env(countdown(), num_envs=2, max_steps=2, seed=0, end_at=5)
    env = VmasWrapper(raw)
    last = env.rollout(2, break_when_any_done=False)["next"][:, -1]
    assert last["truncated"].all() and not last["terminated"].any()
    raw = vmas.make_env(countdown(), num_envs=2, max_steps=9, seed=0, end_at=2)
    last = VmasWrapper(raw).rollout(2, break_when_any_done=False)["next"][:, -1]
    assert last["terminated"].all() and not last["truncated"].any()
    raw = vmas.make_env(countdown(), num_envs=2, seed=0, end_at=1)
    last = VmasWrapper(raw).rollout(1)["next"][:, -1]
    assert last["terminated"].all() and not last["truncated"].any()


def test_dict_observations_nest_under_the_group(countdown):
    env = VmasEnv(countdown(), num_envs=3, seed=0)
    check_env_specs(env)
    td = env.reset()
    assert td["agents", "observation", "pos"].shape == torch.Size([3, 2, 2])
    assert td["agents", "observation", "vel"].shape == torch.Size([3, 2, 2])
    positions = torch.stack([a.state.pos for a in env.env.agents], dim=1)
    assert torch.equal(td["agents", "observation", "pos"], positions)
    assert "info" not in td["agents"].keys()  # the scenario reports no info


def test_dict_spaces_give_the_same_outputs_as_tuples():
    ours = VmasWrapper(vmas.make_env("navigation", num_envs=N, n_agents=2, dict_spaces=True))
    plain = VmasWrapper(vmas.make_env("navigation", num_envs=N, n_agents=2))
    check_env_specs(ours)
    a, b = ours.reset(seed=2), plain.reset(seed=2)
    action = ours.rand_action(a)["agents", "action"]
    b.set(("agents", "action"), action.clone())
    a, b = ours.step(a)["next"], plain.step(b)["next"]
    assert torch.equal(a["agents", "observation"], b["agents", "observation"])
    assert torch.equal(a["agents", "reward"], b["agents", "reward"])
