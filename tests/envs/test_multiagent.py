"""Agent groups: group maps, the native MultiAgentLineEnv, and generic env code with groups."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from rlblocks.envs import (
    EnvSpecError,
    InvalidActionError,
    MarlGroupMapType,
    MultiAgentLineEnv,
    ParallelEnv,
    RewardSum,
    SerialEnv,
    StepCounter,
    TransformedEnv,
    VecNorm,
    all_agents_done,
    check_env_specs,
    make_group_map,
)

AGENTS = ["adversary_0", "agent_0", "agent_1"]


# ---------------------------------------------------------------------- group maps
def test_group_map_policies():
    assert make_group_map(AGENTS) == {"agents": AGENTS}
    assert make_group_map(AGENTS, homogeneous=False) == {
        "adversary": ["adversary_0"],
        "agent": ["agent_0", "agent_1"],
    }
    per_agent = make_group_map(AGENTS, MarlGroupMapType.ONE_GROUP_PER_AGENT)
    assert per_agent == {name: [name] for name in AGENTS}
    assert make_group_map(AGENTS, "by_type") == make_group_map(AGENTS, homogeneous=False)
    custom = {"red": ["agent_1", "adversary_0"], "blue": ["agent_0"]}
    assert make_group_map(AGENTS, custom) == custom  # order within a group is kept


@pytest.mark.parametrize(
    ("group_map", "match"),
    [
        ({"team": ["agent_0", "ghost"]}, "group 'team' names agent 'ghost'.*agent_0"),
        ({"a": ["agent_0"], "b": ["agent_0", "agent_1", "adversary_0"]}, "in groups 'a' and 'b'"),
        ({"team": ["agent_0", "agent_1"]}, r"\['adversary_0'\] are in no group"),
        ({"next": AGENTS}, "group name 'next' is not allowed"),
        ({"team": []}, "must list one or more"),
        ("by_colour", "unknown group_map 'by_colour'"),
        (["agent_0"], "must be a MarlGroupMapType or a mapping"),
    ],
)
def test_bad_group_maps_name_the_problem(group_map, match):
    with pytest.raises(EnvSpecError, match=match):
        make_group_map(AGENTS, group_map, owner="MyEnv")


def test_all_agents_done():
    flags = torch.tensor([[[True], [True]], [[True], [False]]])
    assert all_agents_done(flags, batch_dims=1).tolist() == [[True], [False]]
    root = torch.tensor([[True], [False]])
    assert all_agents_done(root, batch_dims=1) is root


# ---------------------------------------------------------------------- the native env
def test_line_env_layout_and_specs():
    env = MultiAgentLineEnv(n_agents=3, batch_size=[4])
    assert env.group_map == {"agents": ["agent_0", "agent_1", "agent_2"]}
    check_env_specs(env, steps=20, seed=0)
    td = env.rollout(12, break_when_any_done=False)
    assert td.batch_size == (4, 12)
    assert td["agents"].batch_size == (4, 12, 3)  # the group keeps its agent dim
    assert td["next", "agents"].batch_size == (4, 12, 3)
    assert td["agents", "observation"].shape == (4, 12, 3, 3)
    assert td["agents", "action"].shape == (4, 12, 3)
    assert td["next", "agents", "reward"].shape == (4, 12, 3, 1)
    assert td["next", "agents", "done"].shape == (4, 12, 3, 1)
    assert td["next", "done"].shape == (4, 12, 1)
    assert env.group_map is not env._group_map  # a copy: callers cannot regroup the env


def test_finished_agents_stay_in_the_batch_masked():
    """An agent that reached its goal keeps its row: done flags set, reward 0, no move."""
    env = MultiAgentLineEnv(n_agents=3, length=6, max_steps=40, batch_size=[16])
    td = env.rollout(40, break_when_any_done=False, tensordict=env.reset(seed=3))
    done = td["next", "agents", "done"]
    reward = td["next", "agents", "reward"]
    # Some agent finished strictly before the episode did (the case to show).
    ends_early = done[..., 0] & ~td["next", "done"].expand_as(done[..., 0])
    assert ends_early.any()
    was_done = td["agents", "done"][..., 0]
    assert torch.all(reward[..., 0][was_done] == 0)
    position = td["agents", "observation"][..., 0]
    next_position = td["next", "agents", "observation"][..., 0]
    assert torch.equal(position[was_done], next_position[was_done])
    # The episode is over exactly when every agent is.
    assert torch.equal(td["next", "done"][..., 0], done[..., 0].all(-1))
    arrived = reward[..., 0] == 1.0
    assert torch.equal(
        arrived, done[..., 0] & ~was_done & td["next", "agents", "terminated"][..., 0]
    )


def test_line_env_seeding_and_partial_reset():
    env = MultiAgentLineEnv(batch_size=[3])
    a, b = env.reset(seed=7), env.reset(seed=7)
    assert torch.equal(a["agents", "observation"], b["agents", "observation"])
    td = env.rand_step(a)
    nxt = env.step_mdp(td)
    nxt["_reset"] = torch.tensor([[True], [False], [False]])
    out = env.reset(nxt)
    assert torch.equal(out["agents", "observation"][1:], nxt["agents", "observation"][1:])


def test_wrong_agent_dim_names_the_group_key():
    env = MultiAgentLineEnv(n_agents=3, batch_size=[2])
    # A policy that writes its group into a TensorDict of its own (batch [2], not [2, 3]).
    td = env.reset().exclude("agents")
    td["agents", "action"] = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(InvalidActionError, match=r"'agents', 'action'.*expected shape \[2, 3\]"):
        env.step(td)
    td["agents", "action"] = torch.full((2, 3), 5)
    with pytest.raises(InvalidActionError, match=r"'agents', 'action'.*Categorical"):
        env.step(td)


def test_step_mdp_carries_group_entries_and_drops_actions():
    env = MultiAgentLineEnv(batch_size=[2])
    td = env.reset()
    td["agents", "hidden"] = torch.ones(2, 3, 4)
    td = env.rand_step(td)
    nxt = env.step_mdp(td)
    assert ("agents", "hidden") in nxt.keys(True)
    assert ("agents", "action") not in nxt.keys(True)
    assert ("agents", "reward") not in nxt.keys(True)
    assert torch.equal(nxt["agents", "observation"], td["next", "agents", "observation"])
    nxt["agents", "extra"] = torch.zeros(2, 3)
    assert ("agents", "extra") not in td.keys(True)  # its groups are not shared
    assert ("agents", "extra") not in td["next"].keys(True)


def test_rollout_with_a_group_policy():
    env = MultiAgentLineEnv(n_agents=2, batch_size=[3])
    # Always step right: positions never decrease.
    policy = TensorDictModule(
        lambda obs: torch.full(obs.shape[:-1], 2, dtype=torch.long),
        in_keys=[("agents", "observation")],
        out_keys=[("agents", "action")],
    )
    td = env.rollout(10, policy, break_when_any_done=False)
    moved = td["next", "agents", "observation"][..., 0] - td["agents", "observation"][..., 0]
    started_over = td["next", "done"].expand_as(moved)  # the next row is a new episode
    assert (moved[~started_over] >= 0).all()


# ---------------------------------------------------------------------- batched envs
@pytest.mark.parametrize("batched", [SerialEnv, ParallelEnv])
def test_batched_envs_keep_groups(batched):
    env = batched(2, lambda: MultiAgentLineEnv(n_agents=3, batch_size=[2]))
    try:
        assert env.group_map == {"agents": ["agent_0", "agent_1", "agent_2"]}
        env.set_seed(0)
        td = env.rollout(15, break_when_any_done=False)
        assert td["next", "agents", "reward"].shape == (2, 2, 15, 3, 1)
        assert td["agents", "action"].shape == (2, 2, 15, 3)
        # Episodes restart per element: a done element's next row is a fresh episode.
        done = td["next", "done"][..., :-1, 0]
        fresh = ~td["agents", "done"][..., 1:, :, 0].all(-1)
        assert torch.all(fresh[done])
    finally:
        env.close()


def test_batched_env_rejects_sub_envs_grouped_differently():
    def make(group):
        def create():
            env = MultiAgentLineEnv(n_agents=2)
            if group:
                env.group_map = {"agents": ["agent_1", "agent_0"]}
            return env

        return create

    with pytest.raises(Exception, match="group"):
        SerialEnv(2, [make(False), make(True)])


# ---------------------------------------------------------------------- transforms
def test_reward_sum_per_agent_restarts_with_episodes():
    env = TransformedEnv(
        MultiAgentLineEnv(n_agents=3, batch_size=[4]),
        RewardSum(in_keys=[("agents", "reward")]),
    )
    check_env_specs(env, steps=10)
    for fast in (True, False):
        td = env.reset(seed=1)
        if fast:
            traj = env.rollout(40, break_when_any_done=False, tensordict=td, auto_reset=False)
        else:
            steps = []
            for _ in range(40):
                step, td = env.step_and_maybe_reset(env.rand_action(td))
                steps.append(step)
            traj = torch.stack(steps, dim=1)
        sums = traj["next", "agents", "episode_reward"]
        assert sums.shape == (4, 40, 3, 1)
        # Recompute by hand: a running sum restarted after every root done.
        reward = traj["next", "agents", "reward"]
        done = traj["next", "done"]
        expected = torch.zeros_like(reward)
        running = torch.zeros_like(reward[:, 0])
        for t in range(40):
            running = running + reward[:, t]
            expected[:, t] = running
            running = torch.where(done[:, t, None], torch.zeros_like(running), running)
        assert torch.allclose(sums, expected, atol=1e-5), fast


def test_step_counter_truncates_the_agents_too():
    """A loss reading the group's flags must see the cut: StepCounter sets them as well."""
    env = TransformedEnv(
        MultiAgentLineEnv(length=30, max_steps=100, batch_size=[2]), StepCounter(5)
    )
    fast = env.rollout(5, break_when_any_done=False)[:, -1]
    td = env.reset()
    for _ in range(5):
        stepped = env.rand_step(td)
        td = env.step_mdp(stepped)
    for last in (fast, stepped):
        assert last["next", "truncated"].all()
        assert last["next", "agents", "truncated"].all()
        assert last["next", "agents", "done"].all()
    before = env.rollout(4, break_when_any_done=False)
    assert not before["next", "agents", "truncated"].any()


def test_vec_norm_normalizes_per_agent_feature():
    env = TransformedEnv(
        MultiAgentLineEnv(batch_size=[8]), VecNorm(in_keys=[("agents", "observation")])
    )
    td = env.rollout(30, break_when_any_done=False)
    assert td["agents", "observation"].shape == (8, 30, 3, 3)
    check_env_specs(env, steps=5)


def test_rollout_output_goes_to_a_tensordict_of_its_own():
    env = MultiAgentLineEnv(batch_size=[2])
    td = env.fake_tensordict()
    assert isinstance(td, TensorDict)
    assert td["next", "agents", "reward"].shape == (2, 3, 1)
