"""Agents that leave the episode early keep their rows: flags set, reward 0, observation
frozen, ``mask`` off, and their actions are no longer sent to PettingZoo."""

from __future__ import annotations

import pytest
import torch

from rlblocks.envs import SerialEnv, check_env_specs
from rlblocks.pettingzoo import PettingZooWrapper

AGENTS = ["walker_0", "walker_1", "walker_2"]


def run(env, steps: int, action: int = 1):
    """Step ``steps`` times with the same action for everyone; the ``next`` TensorDicts."""
    td = env.reset()
    out = []
    for _ in range(steps):
        td["agents", "action"] = torch.full((3,), action)
        td = env.step(td)
        out.append(td["next"])
        td = env.step_mdp(td)
    return out


def test_parallel_agent_leaves_and_the_batch_stays_whole(leaving_parallel):
    raw = leaving_parallel(leave_at=2, length=4)
    env = PettingZooWrapper(raw, use_mask=True)
    steps = run(env, 4, action=1)
    walker_1 = 1
    # step 2 (index 1): walker_1 terminates, with its reward and observation of that step
    two = steps[1]["agents"]
    assert two["terminated"].squeeze(-1).tolist() == [False, True, False]
    assert two["reward"].squeeze(-1).tolist() == [2.0, 3.0, 4.0]
    assert two["observation"][walker_1].tolist() == [2.0, 1.0, 1.0]
    assert two["mask"].tolist() == [True, False, True]
    # step 3: still there, frozen, rewarded 0, flags kept, no action sent to PettingZoo
    three = steps[2]["agents"]
    assert three["observation"].shape == (3, 3)
    assert three["observation"][walker_1].tolist() == [2.0, 1.0, 1.0]
    assert three["observation"][0].tolist() == [3.0, 0.0, 1.0]
    assert three["reward"].squeeze(-1).tolist() == [2.0, 0.0, 4.0]
    assert three["done"].squeeze(-1).tolist() == [False, True, False]
    assert three["mask"].tolist() == [True, False, True]
    assert sorted(raw.received[2]) == ["walker_0", "walker_2"]
    assert not steps[2]["done"].item()
    # step 4: the others are truncated: the episode is over, not terminated by everyone
    four = steps[3]
    assert four["agents", "truncated"].squeeze(-1).tolist() == [True, False, True]
    assert four["agents", "terminated"].squeeze(-1).tolist() == [False, True, False]
    assert four["done"].item() and four["truncated"].item() and not four["terminated"].item()
    assert not four["agents", "mask"].any()


def test_done_on_any_ends_the_episode_with_the_first_agent(leaving_parallel):
    env = PettingZooWrapper(leaving_parallel(leave_at=2, length=4), done_on_any=True)
    steps = run(env, 2)
    assert not steps[0]["done"].item()
    assert steps[1]["done"].item() and steps[1]["terminated"].item()


def test_specs_and_rollouts_with_leaving_agents(leaving_parallel):
    env = PettingZooWrapper(leaving_parallel(leave_at=2, length=4), use_mask=True)
    check_env_specs(env, steps=6)
    traj = env.rollout(8, break_when_any_done=False)
    assert traj["next", "agents", "observation"].shape == (8, 3, 3)
    assert traj["next", "done"].squeeze(-1).tolist() == [False, False, False, True] * 2
    assert traj["next", "agents", "reward"][:, 1].squeeze(-1).tolist()[2:4] == [0.0, 0.0]
    batched = SerialEnv(2, lambda: PettingZooWrapper(leaving_parallel(), use_mask=True))
    traj = batched.rollout(5, break_when_any_done=False)
    assert traj["next", "agents", "mask"].shape == (2, 5, 3)
    assert traj["next", "agents", "mask"][:, 2].tolist() == [[True, False, True]] * 2


def test_aec_agent_leaves_after_its_dead_step(leaving_aec):
    """walker_1 terminates on its 2nd move (move 5); PettingZoo's dead step removes it."""
    raw = leaving_aec(length=8)
    env = PettingZooWrapper(raw)
    steps = run(env, 7, action=0)
    movers = [s["agents", "mask"].nonzero().flatten().tolist() for s in steps]
    # who is on turn after each move: walker_1 never again once it left
    assert movers == [[1], [2], [0], [1], [2], [0], [2]]
    five = steps[4]["agents"]
    assert five["terminated"].squeeze(-1).tolist() == [False, True, False]
    assert five["reward"].squeeze(-1).tolist() == [0.25, 1.0, 0.25]
    assert five["observation"][1].tolist() == [5.0, 2.0]
    assert "walker_1" not in raw.agents  # dead-stepped right away
    six = steps[5]["agents"]
    assert six["reward"].squeeze(-1).tolist() == [0.25, 0.0, 1.0]  # walker_2 moved
    assert six["observation"][1].tolist() == [5.0, 2.0]  # frozen at its last move
    assert six["observation"][0].tolist() == [6.0, 2.0]
    assert not steps[6]["done"].item()
    check_env_specs(PettingZooWrapper(leaving_aec(length=8)), steps=9)


def test_aec_rewards_match_a_raw_agent_iter_loop(leaving_aec):
    raw = leaving_aec(length=8)
    raw.reset()
    totals = dict.fromkeys(AGENTS, 0.0)
    for agent in raw.agent_iter():
        _, reward, terminated, truncated, _ = raw.last()
        totals[agent] += reward
        raw.step(None if terminated or truncated else 1)
    env = PettingZooWrapper(leaving_aec(length=8))
    traj = env.rollout(
        20, policy=lambda td: td.set(("agents", "action"), torch.ones(3, dtype=torch.int64))
    )
    assert traj.batch_size == (8,)  # 8 moves, then everyone is done
    assert traj["next", "done"][-1].item() and traj["next", "truncated"][-1].item()
    total = traj["next", "agents", "reward"].sum(0).squeeze(-1)
    assert total.tolist() == pytest.approx([totals[a] for a in AGENTS])
