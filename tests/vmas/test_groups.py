"""Agent groups, action encodings and bad input of the VMAS backend."""

from __future__ import annotations

import pytest
import torch
import vmas
from tensordict import TensorDict

from rlblocks.core.specs import Bounded, Categorical, MultiCategorical, OneHot
from rlblocks.envs import MarlGroupMapType, check_env_specs
from rlblocks.envs.errors import EnvSpecError, InvalidActionError
from rlblocks.vmas import UnknownScenarioError, VmasEnv, VmasWrapper

N = 3


def test_agents_with_equal_spaces_share_one_group():
    env = VmasEnv("navigation", num_envs=N, n_agents=3)
    assert env.group_map == {"agents": ["agent_0", "agent_1", "agent_2"]}
    spec = env.full_action_spec["agents", "action"]
    assert isinstance(spec, Bounded) and spec.shape == torch.Size([N, 3, 2])
    assert env.full_observation_spec["agents"].shape == torch.Size([N, 3])


def test_agents_of_different_types_are_grouped_by_type():
    env = VmasEnv("simple_tag", num_envs=N, seed=0)
    assert env.group_map == {
        "adversary": ["adversary_0", "adversary_1", "adversary_2"],
        "agent": ["agent_0"],
    }
    check_env_specs(env)
    td = env.rand_step(env.reset())
    assert td["adversary", "observation"].shape == torch.Size([N, 3, 16])
    assert td["agent", "observation"].shape == torch.Size([N, 1, 14])
    assert td["next", "adversary", "reward"].shape == torch.Size([N, 3, 1])
    assert td["next", "agent", "reward"].shape == torch.Size([N, 1, 1])
    assert td["next", "done"].shape == torch.Size([N, 1])


def test_an_explicit_group_map_orders_the_agent_dim():
    env = VmasEnv(
        "navigation",
        num_envs=N,
        n_agents=3,
        seed=0,
        group_map={"left": ["agent_2", "agent_0"], "right": ["agent_1"]},
    )
    check_env_specs(env)
    td = env.reset()
    positions = [agent.state.pos for agent in env.env.agents]
    # The observation starts with the agent's position: agent_2 first in "left".
    assert torch.equal(td["left", "observation"][:, 0, :2], positions[2])
    assert torch.equal(td["left", "observation"][:, 1, :2], positions[0])
    assert torch.equal(td["right", "observation"][:, 0, :2], positions[1])


def test_one_group_per_agent():
    env = VmasEnv(
        "simple_speaker_listener", num_envs=N, group_map=MarlGroupMapType.ONE_GROUP_PER_AGENT
    )
    assert env.group_map == {"speaker_0": ["speaker_0"], "listener_0": ["listener_0"]}
    check_env_specs(env)
    # The speaker's communication dims have bounds [0, 1], its motion dims [-1, 1].
    spec = env.full_action_spec["speaker_0", "action"]
    assert spec.low[0, 0].tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0]


def test_discrete_actions_are_categorical_or_one_hot():
    categorical = VmasEnv("navigation", num_envs=N, n_agents=2, continuous_actions=False)
    one_hot = VmasEnv(
        "navigation", num_envs=N, n_agents=2, continuous_actions=False, categorical_actions=False
    )
    spec = categorical.full_action_spec["agents", "action"]
    assert isinstance(spec, Categorical) and spec.shape == torch.Size([N, 2]) and spec.n == 9
    spec = one_hot.full_action_spec["agents", "action"]
    assert isinstance(spec, OneHot) and spec.shape == torch.Size([N, 2, 9])
    # The same choices, encoded both ways, move the agents the same way.
    a, b = categorical.reset(seed=5), one_hot.reset(seed=5)
    index = torch.tensor([[1, 2], [3, 4], [5, 6]])
    a.set(("agents", "action"), index)
    b.set(("agents", "action"), torch.nn.functional.one_hot(index, 9).bool())
    a, b = categorical.step(a)["next"], one_hot.step(b)["next"]
    assert torch.equal(a["agents", "observation"], b["agents", "observation"])


def test_multidiscrete_actions_are_multicategorical():
    env = VmasEnv(
        "navigation", num_envs=N, n_agents=2, continuous_actions=False, multidiscrete_actions=True
    )
    spec = env.full_action_spec["agents", "action"]
    assert isinstance(spec, MultiCategorical) and spec.shape == torch.Size([N, 2, 2])


def test_an_action_with_the_wrong_agent_dim_names_the_key_and_shape():
    env = VmasEnv("navigation", num_envs=N, n_agents=3)
    # Actions for 2 agents where the group has 3 (a TensorDict of the env's batch size
    # only: the group entries of env.reset()'s output would refuse it themselves).
    td = TensorDict({"agents": {"action": torch.zeros(N, 2, 2)}}, batch_size=[N])
    with pytest.raises(
        InvalidActionError, match=r"\('agents', 'action'\).*expected shape \[3, 3, 2\]"
    ):
        env.step(td)
    td = env.reset()
    td.set(("agents", "action"), torch.full((N, 3, 2), 5.0))  # outside [-1, 1]
    with pytest.raises(InvalidActionError, match=r"\('agents', 'action'\)"):
        env.step(td)


def test_a_group_map_naming_an_unknown_agent_names_it():
    with pytest.raises(EnvSpecError, match=r"'agent_7'.*agent_0"):
        VmasEnv("navigation", num_envs=N, n_agents=2, group_map={"agents": ["agent_0", "agent_7"]})


def test_a_group_of_agents_with_different_spaces_is_refused():
    with pytest.raises(EnvSpecError, match=r"group 'agents'.*observation spaces differ"):
        VmasEnv("simple_tag", num_envs=N, group_map=MarlGroupMapType.ALL_IN_ONE_GROUP.value)


def test_unknown_scenario_suggests_close_names():
    with pytest.raises(UnknownScenarioError, match=r"Did you mean 'simple_tag'"):
        VmasEnv("simple_tagg", num_envs=N)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_envs": 0}, ValueError, "num_envs"),
        ({"num_envs": N, "max_steps": 0}, ValueError, "max_steps"),
        ({"num_envs": N, "terminated_truncated": False}, TypeError, "VmasWrapper"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        VmasEnv("navigation", **kwargs)


def test_wrapper_refuses_what_is_not_a_vmas_environment():
    with pytest.raises(TypeError, match="vmas.make_env"):
        VmasWrapper(object())
    gym_env = vmas.make_env("navigation", num_envs=1, wrapper="gym")
    with pytest.raises(TypeError, match="without wrapper"):
        VmasWrapper(gym_env)


def test_wrapper_refuses_another_device_than_vmas():
    with pytest.raises(ValueError, match="simulates on cpu"):
        VmasWrapper(vmas.make_env("navigation", num_envs=N), device="meta")
