"""Bad input fails early, with messages that name the object, the problem and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv
from tensordict import TensorDict

from rlblocks.core.errors import MissingKeyError
from rlblocks.envs import check_env_specs
from rlblocks.envs.errors import EnvSpecError, InvalidActionError, UnsupportedEnvOperationError
from rlblocks.pettingzoo import (
    EpisodeOverError,
    PettingZooEnv,
    PettingZooError,
    PettingZooWrapper,
    UnknownTaskError,
)


class InfoMaskEnv(ParallelEnv):
    """Two agents that may each take only actions ``< 2 + step`` (mask given in infos)."""

    metadata = {"name": "info_mask_v0"}  # noqa: RUF012 (PettingZoo's class attribute)

    def __init__(self) -> None:
        self.possible_agents = ["a_0", "a_1"]
        self.agents: list[str] = []
        self.t = 0
        self.received: list[dict] = []

    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 10.0, (1,), np.float32)

    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(4)

    def _out(self) -> tuple[dict, dict]:
        mask = (np.arange(4) < 2 + self.t).astype(np.int8)
        obs = {a: np.array([self.t], np.float32) for a in self.agents}
        return obs, {a: {"action_mask": mask} for a in self.agents}

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return self._out()

    def step(self, actions):
        self.received.append(dict(actions))
        self.t += 1
        obs, infos = self._out()
        flags = dict.fromkeys(self.agents, self.t >= 3)
        rewards = dict.fromkeys(self.agents, 1.0)
        if self.t >= 3:
            self.agents = []
        return obs, rewards, dict.fromkeys(flags, False), flags, infos


def test_action_under_an_agent_name_instead_of_its_group(spread):
    td = spread.rand_action(spread.reset())
    td["agent_1"] = TensorDict({"action": torch.tensor(0)}, [])
    with pytest.raises(InvalidActionError) as info:
        spread.step(td)
    message = str(info.value)
    assert "'agent_1' is an agent (row 1 of group 'agents')" in message
    assert "('agents', 'action') of shape [3]" in message


def test_action_for_a_group_the_env_does_not_have(spread):
    td = spread.rand_action(spread.reset())
    td["team"] = TensorDict({"action": torch.zeros(3, dtype=torch.int64)}, [3])
    with pytest.raises(InvalidActionError, match="no group 'team'.*'agents'"):
        spread.step(td)


def test_missing_group_action(spread):
    with pytest.raises(MissingKeyError, match=r"\('agents', 'action'\)"):
        spread.step(spread.reset())


def test_wrong_agent_dim_names_the_group_key_and_the_shape(spread):
    bad = TensorDict({"agents": TensorDict({"action": torch.zeros(4, dtype=torch.int64)}, [])}, [])
    with pytest.raises(InvalidActionError) as info:
        spread.step(bad)
    assert "('agents', 'action')" in str(info.value)
    assert "expected shape [3], got shape [4]" in str(info.value)
    td = spread.reset()
    td["agents", "action"] = torch.full((3,), 5)  # 5 actions: 0..4
    with pytest.raises(InvalidActionError, match=r"\('agents', 'action'\).*\[0, 5\)"):
        spread.step(td)


def test_info_masks_are_exposed_and_enforced():
    raw = InfoMaskEnv()
    env = PettingZooWrapper(raw)
    assert env.full_observation_spec["agents", "action_mask"].shape == (2, 4)
    td = env.reset()
    assert td["agents", "action_mask"][0].tolist() == [True, True, False, False]
    td["agents", "action"] = torch.tensor([1, 2])
    with pytest.raises(InvalidActionError) as info:
        env.step(td)
    message = str(info.value)
    assert "agent 'a_1'" in message and "action 2" in message and "[0, 1]" in message
    assert raw.received == []  # checked before PettingZoo was stepped
    td["agents", "action"] = torch.tensor([1, 1])
    td = env.step_mdp(env.step(td))
    assert td["agents", "action_mask"][1].tolist() == [True, True, True, False]
    for _ in range(20):  # random actions respect the masks
        assert env.rand_action(td)["agents", "action"].max() <= 2
    check_env_specs(env, steps=2)


def test_group_map_naming_an_unknown_agent():
    with pytest.raises(EnvSpecError, match="'agent_9'.*agent_0"):
        PettingZooEnv("mpe2.simple_spread_v3", group_map={"agents": ["agent_0", "agent_9"]})


def test_group_stacking_agents_with_different_spaces():
    group_map = {"everyone": ["adversary_0", "agent_0", "agent_1"]}
    with pytest.raises(EnvSpecError, match="'everyone'.*'adversary_0' and 'agent_0'.*BY_TYPE"):
        PettingZooEnv("mpe2.simple_adversary_v3", group_map=group_map)


def test_unknown_task_suggests_close_ids():
    with pytest.raises(UnknownTaskError) as info:
        PettingZooEnv("mpe2.simple_sprad_v3")
    assert "tried to import the module 'mpe2.simple_sprad_v3'" in str(info.value)
    assert "Did you mean 'mpe2.simple_spread_v3'?" in str(info.value)
    with pytest.raises(UnknownTaskError, match="registry id 'classic/tictactoe_v9'.*v3"):
        PettingZooEnv("classic.tictactoe_v9")
    with pytest.raises(UnknownTaskError, match="'<package>.<module>'.*'classic.tictactoe_v3'"):
        PettingZooEnv("tictactoe")
    with pytest.raises(UnknownTaskError, match="Did you mean 'mpe2.simple_spread_v3'"):
        PettingZooEnv("mpe.simple_spread_v3")  # MPE moved to mpe2


def test_task_constructor_errors_name_the_task():
    with pytest.raises(TypeError) as info:
        PettingZooEnv("mpe2.simple_spread_v3", bogus=1)
    assert "PettingZooEnv('mpe2.simple_spread_v3'" in info.value.__notes__[0]


def test_parallel_api_requested_for_a_turn_based_game():
    with pytest.raises(UnsupportedEnvOperationError, match="only the AEC.*parallel=False"):
        PettingZooEnv("classic.tictactoe_v3", parallel=True)


def test_state_needs_a_state_space():
    with pytest.raises(PettingZooError, match="state_space"):
        PettingZooEnv("classic.tictactoe_v3", return_state=True)


def test_not_a_pettingzoo_env():
    with pytest.raises(TypeError, match="ParallelEnv or pettingzoo.AECEnv"):
        PettingZooWrapper(object())


def test_step_before_reset_and_bad_reset_arguments(spread):
    td = spread.rand_action(TensorDict({}, []))
    with pytest.raises(EpisodeOverError, match="reset"):
        spread.step(td)
    with pytest.raises(TypeError, match="seed= and options="):
        spread.reset(render=True)
