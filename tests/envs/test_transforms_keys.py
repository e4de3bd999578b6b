"""RenameTransform, SelectTransform and ExcludeTransform."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.envs import GymEnv, PendulumEnv, check_env_specs
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms import (
    Compose,
    ExcludeTransform,
    RenameTransform,
    SelectTransform,
    StepCounter,
    TransformedEnv,
)


def _plain() -> TensorDict:
    return TensorDict(
        {
            "observation": torch.zeros(2, 3),
            "extra": torch.ones(2),
            "action": torch.ones(2, 1),
            "done": torch.zeros(2, 1, dtype=torch.bool),
            "next": {
                "observation": torch.ones(2, 3),
                "extra": torch.ones(2),
                "reward": torch.ones(2, 1),
            },
        },
        batch_size=[2],
    )


# ---------------------------------------------------------------------- Rename
@pytest.mark.parametrize("batch_size", [(), (3,)])
def test_rename_outputs(batch_size):
    env = TransformedEnv(
        PendulumEnv(batch_size=batch_size), RenameTransform(["observation", "reward"], ["obs", "r"])
    )
    check_env_specs(env)
    assert "obs" in env.observation_spec and "observation" not in env.observation_spec
    assert env.reward_keys == ["r"]
    td = env.rollout(3)
    assert "obs" in td.keys() and ("next", "r") in td.keys(True)
    assert "observation" not in td["next"].keys()


def test_rename_with_copy_and_swap():
    swapped = RenameTransform(["observation", "extra"], ["extra", "observation"])(_plain())
    assert swapped["extra"].shape == (2, 3) and swapped["observation"].shape == (2,)
    copied = RenameTransform(["extra"], ["extra_copy"], create_copy=True)(_plain())
    assert torch.equal(copied["extra"], copied["extra_copy"])
    assert ("next", "extra_copy") in copied.keys(True)


def test_rename_the_action_through_inv():
    env = TransformedEnv(
        PendulumEnv(), RenameTransform([], [], in_keys_inv=["action"], out_keys_inv=["torque"])
    )
    assert env.action_keys == ["torque"]
    check_env_specs(env)
    td = env.rollout(3)
    assert "torque" in td.keys() and "action" not in td.keys()


def test_renaming_state_one_way_is_refused_and_both_ways_works():
    env = TransformedEnv(PendulumEnv(), RenameTransform(["state"], ["sim"]))
    with pytest.raises(TransformError, match="'state' is read back by the env"):
        env.observation_spec  # noqa: B018
    both = RenameTransform(["state"], ["sim"], in_keys_inv=["state"], out_keys_inv=["sim"])
    env = TransformedEnv(PendulumEnv(batch_size=[2]), both)
    check_env_specs(env)
    td = env.rollout(3)
    assert not torch.equal(td["next", "sim"][:, 0], td["next", "sim"][:, 2])  # it did step
    # A partial reset keeps the renamed state of the elements it does not reset.
    current = env.step_mdp(td[:, -1])
    current.set("_reset", torch.tensor([[True], [False]]))
    out = env.reset(current)
    assert torch.equal(out["sim"][1], current["sim"][1])
    assert not torch.equal(out["sim"][0], current["sim"][0])


def test_rename_length_mismatch():
    with pytest.raises(TransformError, match="same length"):
        RenameTransform(["a", "b"], ["c"])


# ---------------------------------------------------------------------- Select
def test_select_keeps_selected_rewards_dones_and_state():
    env = TransformedEnv(
        PendulumEnv(batch_size=[2]), Compose(StepCounter(), SelectTransform("observation"))
    )
    check_env_specs(env)
    assert sorted(env.observation_spec.keys()) == ["observation", "state"]
    td = env.rollout(3)
    assert "step_count" not in td.keys() and "step_count" not in td["next"].keys()
    assert ("next", "reward") in td.keys(True) and "done" in td.keys()


def test_select_without_rewards():
    env = TransformedEnv(PendulumEnv(), SelectTransform("observation", keep_rewards=False))
    assert env.reward_keys == []
    assert "reward" not in env.rollout(2)["next"].keys()


def test_select_on_a_plain_tensordict():
    out = SelectTransform(["observation"])(_plain())
    assert sorted(out.keys()) == ["action", "done", "next", "observation"]
    assert sorted(out["next"].keys()) == ["observation", "reward"]


def test_select_nested_keys(dict_env_id):
    env = TransformedEnv(GymEnv(dict_env_id), SelectTransform("sensors"))
    assert env.observation_keys == [("sensors", "bumps")]
    check_env_specs(env)


def test_select_errors():
    with pytest.raises(TransformError, match="name the entries to keep"):
        SelectTransform()
    env = TransformedEnv(PendulumEnv(), SelectTransform("pixels"))
    with pytest.raises(TransformError, match=r"\['pixels'\] are not entries of the env"):
        env.observation_spec  # noqa: B018
    env = TransformedEnv(PendulumEnv(), SelectTransform("observation", keep_dones=False))
    with pytest.raises(TransformError, match="needs its done flags"):
        env.reset()


# ---------------------------------------------------------------------- Exclude
def test_exclude_in_an_env():
    env = TransformedEnv(
        PendulumEnv(batch_size=[2]), Compose(StepCounter(), ExcludeTransform("step_count"))
    )
    check_env_specs(env)
    assert "step_count" not in env.observation_spec
    assert "step_count" not in env.rollout(2)["next"].keys()


def test_exclude_reward_and_plain_tensordict():
    env = TransformedEnv(PendulumEnv(), ExcludeTransform("reward"))
    assert env.reward_keys == []
    assert "reward" not in env.rollout(2)["next"].keys()
    out = ExcludeTransform("extra")(_plain())
    assert "extra" not in out.keys() and "extra" not in out["next"].keys()
    assert "observation" in out["next"].keys()


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("done", "is a done flag"),
        ("state", "is read back by the env"),
        ("pixels", "is not an output of the env"),
    ],
)
def test_exclude_errors(key, match):
    env = TransformedEnv(PendulumEnv(), ExcludeTransform(key))
    with pytest.raises(TransformError, match=match):
        env.reset()


def test_fast_gym_rollout_keeps_the_env_rules():
    env = TransformedEnv(
        GymEnv("Pendulum-v1"), Compose(StepCounter(), ExcludeTransform("step_count"))
    )
    td = env.rollout(5)
    assert "step_count" not in td.keys() and "observation" in td.keys()
    env = TransformedEnv(GymEnv("Pendulum-v1"), SelectTransform("observation"))
    td = env.rollout(5)
    assert ("next", "reward") in td.keys(True) and "observation" in td.keys()
