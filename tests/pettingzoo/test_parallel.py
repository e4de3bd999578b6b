"""PettingZoo's parallel API through PettingZooWrapper/PettingZooEnv, on the real MPE tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mpe2 import simple_adversary_v3, simple_spread_v3

from rlblocks.envs import MarlGroupMapType, SerialEnv, check_env_specs
from rlblocks.pettingzoo import PettingZooEnv, PettingZooWrapper

AGENTS = ["agent_0", "agent_1", "agent_2"]


def stacked(values: dict, agents: list[str]) -> torch.Tensor:
    return torch.as_tensor(np.stack([values[a] for a in agents]))


def test_spread_layout_and_specs(spread):
    assert spread.parallel
    assert spread.group_map == {"agents": AGENTS}
    assert spread.full_action_spec["agents", "action"].shape == (3,)
    assert spread.full_action_spec["agents", "action"].n == 5
    assert spread.full_observation_spec["agents", "observation"].shape == (3, 18)
    assert spread.full_reward_spec["agents", "reward"].shape == (3, 1)
    assert spread.full_done_spec["agents", "terminated"].shape == (3, 1)
    assert spread.full_done_spec["done"].shape == (1,)
    # The parallel API needs no "mask" by default: the done flags say who left.
    assert ("agents", "mask") not in spread.full_observation_spec.keys(True, True)
    check_env_specs(spread, seed=0)


def test_spread_equals_a_raw_pettingzoo_run_across_an_episode_end(spread):
    """Same seed and actions: the same observations, rewards and flags, reset included."""
    raw = simple_spread_v3.parallel_env(N=3, max_cycles=25)
    obs, _ = raw.reset(seed=7)
    td = spread.reset(seed=7)
    torch.testing.assert_close(td["agents", "observation"], stacked(obs, AGENTS))
    actions = np.random.default_rng(0).integers(0, 5, (30, 3))
    ends = []
    for t, action in enumerate(actions):
        td["agents", "action"] = torch.as_tensor(action)
        td = spread.step(td)
        obs, rewards, terms, truncs, _ = raw.step(dict(zip(AGENTS, action.tolist())))
        nxt = td["next"]
        torch.testing.assert_close(nxt["agents", "observation"], stacked(obs, AGENTS))
        expected_reward = torch.tensor([[rewards[a]] for a in AGENTS], dtype=torch.float32)
        torch.testing.assert_close(nxt["agents", "reward"], expected_reward)
        assert nxt["agents", "truncated"].squeeze(-1).tolist() == [truncs[a] for a in AGENTS]
        assert nxt["agents", "terminated"].squeeze(-1).tolist() == [terms[a] for a in AGENTS]
        if nxt["done"].item():
            ends.append(t)
            assert nxt["truncated"].item() and not nxt["terminated"].item()
            obs, _ = raw.reset()  # no seed: both continue the seeded generator
        td = spread.maybe_reset(spread.step_mdp(td))
        torch.testing.assert_close(td["agents", "observation"], stacked(obs, AGENTS))
    assert ends == [24]  # max_cycles=25


def test_seeded_resets_are_reproducible(spread):
    first = spread.reset(seed=3)["agents", "observation"]
    assert torch.equal(spread.reset(seed=3)["agents", "observation"], first)
    assert not torch.equal(spread.reset(seed=4)["agents", "observation"], first)


def test_rollout_runs_through_episode_ends(spread):
    traj = spread.rollout(60, break_when_any_done=False)
    assert traj.batch_size == (60,)
    assert traj["next", "agents", "reward"].shape == (60, 3, 1)
    assert traj["next", "done"].squeeze(-1).nonzero().flatten().tolist() == [24, 49]
    # the env-level flags are all_agents_done of the per-agent ones
    every = traj["next", "agents", "done"].all(-2)
    assert torch.equal(traj["next", "done"], every)


def test_adversary_is_grouped_by_type():
    env = PettingZooEnv("mpe2.simple_adversary_v3", return_state=True)
    assert env.group_map == {"adversary": ["adversary_0"], "agent": ["agent_0", "agent_1"]}
    assert env.full_observation_spec["adversary", "observation"].shape == (1, 8)
    assert env.full_observation_spec["agent", "observation"].shape == (2, 10)
    assert env.full_reward_spec["agent", "reward"].shape == (2, 1)
    assert env.full_observation_spec["state"].shape == (28,)
    check_env_specs(env, seed=0)
    traj = env.rollout(5)
    assert traj["next", "adversary", "reward"].shape == (5, 1, 1)
    assert traj["state"].shape == (5, 28)


def test_adversary_equals_raw_rewards_and_state():
    raw = simple_adversary_v3.parallel_env()
    raw.reset(seed=1)
    env = PettingZooWrapper(simple_adversary_v3.parallel_env(), return_state=True)
    td = env.reset(seed=1)
    assert np.array_equal(td["state"].numpy(), raw.state())
    for action in np.random.default_rng(1).integers(0, 5, (5, 3)):
        td["adversary", "action"] = torch.as_tensor(action[:1])
        td["agent", "action"] = torch.as_tensor(action[1:])
        td = env.step(td)
        names = ["adversary_0", "agent_0", "agent_1"]
        obs, rewards, _, _, _ = raw.step(dict(zip(names, action.tolist())))
        nxt = td["next"]
        assert nxt["adversary", "reward"].flatten().tolist() == pytest.approx(
            [rewards["adversary_0"]]
        )
        assert nxt["agent", "reward"].flatten().tolist() == pytest.approx(
            [rewards["agent_0"], rewards["agent_1"]]
        )
        torch.testing.assert_close(nxt["agent", "observation"], stacked(obs, names[1:]))
        assert np.array_equal(nxt["state"].numpy(), raw.state())
        td = env.step_mdp(td)


def test_explicit_group_maps():
    env = PettingZooEnv(
        "mpe2.simple_spread_v3", N=2, group_map=MarlGroupMapType.ONE_GROUP_PER_AGENT
    )
    assert env.group_map == {"agent_0": ["agent_0"], "agent_1": ["agent_1"]}
    assert env.rollout(3)["next", "agent_1", "reward"].shape == (3, 1, 1)
    custom = PettingZooEnv("mpe2.simple_spread_v3", N=2, group_map={"team": ["agent_1", "agent_0"]})
    td = custom.reset(seed=0)
    raw = simple_spread_v3.parallel_env(N=2)
    obs, _ = raw.reset(seed=0)
    # the agent dim follows the group map's order
    torch.testing.assert_close(td["team", "observation"], stacked(obs, ["agent_1", "agent_0"]))


def test_one_hot_actions():
    env = PettingZooEnv("mpe2.simple_spread_v3", N=2, categorical_actions=False)
    spec = env.full_action_spec["agents", "action"]
    assert spec.shape == (2, 5) and spec.dtype == torch.bool
    raw = simple_spread_v3.parallel_env(N=2)
    raw.reset(seed=0)
    td = env.reset(seed=0)
    td["agents", "action"] = torch.nn.functional.one_hot(torch.tensor([4, 1]), 5).bool()
    nxt = env.step(td)["next"]
    obs, *_ = raw.step({"agent_0": 4, "agent_1": 1})
    torch.testing.assert_close(nxt["agents", "observation"], stacked(obs, ["agent_0", "agent_1"]))


def test_use_mask_marks_the_agents_that_act():
    env = PettingZooEnv("mpe2.simple_spread_v3", N=2, max_cycles=3, use_mask=True)
    traj = env.rollout(4, break_when_any_done=False)
    assert traj["agents", "mask"].all()  # everyone acts on every step...
    # ...except after the last step of an episode, where nobody does
    assert traj["next", "agents", "mask"].any(-1).tolist() == [True, True, False, True]


def test_serial_env_batches_two_envs():
    env = SerialEnv(2, lambda: PettingZooEnv("mpe2.simple_spread_v3", N=3, max_cycles=5))
    assert env.group_map == {"agents": AGENTS}
    env.set_seed(0)
    traj = env.rollout(12, break_when_any_done=False)
    assert traj.batch_size == (2, 12)
    assert traj["next", "agents", "observation"].shape == (2, 12, 3, 18)
    assert traj["next", "done"].squeeze(-1).sum(-1).tolist() == [2, 2]  # steps 4 and 9
    # seeds s and s + 1: two different episodes
    assert not torch.equal(traj[0]["agents", "observation"], traj[1]["agents", "observation"])


def test_device_and_close():
    env = PettingZooEnv("mpe2.simple_spread_v3", N=2, device="cpu")
    td = env.rand_step(env.reset())
    assert td["next", "agents", "observation"].device == torch.device("cpu")
    env.close()
    assert env.is_closed
