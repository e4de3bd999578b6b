"""DTypeCastTransform, DoubleToFloat and DeviceCastTransform."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.specs import Bounded, Composite, Unbounded
from rlblocks.envs import EnvBase, PendulumEnv, check_env_specs
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms import (
    DeviceCastTransform,
    DoubleToFloat,
    DTypeCastTransform,
    StepCounter,
    TransformedEnv,
)


class DoubleEnv(EnvBase):
    """float64 observation, action and reward; ``sim`` is also read back as state."""

    def __init__(self, batch_size=()) -> None:
        super().__init__(batch_size=batch_size)
        b, f64 = self.batch_size, torch.float64
        self.full_observation_spec = Composite(
            observation=Bounded(-1.0, 1.0, shape=(*b, 2), dtype=f64),
            sim=Unbounded(shape=(*b, 1), dtype=f64),
            shape=b,
        )
        self.full_state_spec = Composite(sim=Unbounded(shape=(*b, 1), dtype=f64), shape=b)
        self.action_spec = Bounded(-1.0, 1.0, shape=(*b, 1), dtype=f64)
        self.reward_spec = Unbounded(shape=(*b, 1), dtype=f64)
        self.actions: list[torch.Tensor] = []

    def _reset(self, tensordict, **kwargs):
        b = self.batch_size
        return TensorDict(
            observation=torch.zeros(*b, 2, dtype=torch.float64),
            sim=torch.full((*b, 1), 1 / 3, dtype=torch.float64),
            batch_size=b,
        )

    def _step(self, tensordict):
        action = tensordict.get("action")
        self.actions.append(action)
        sim = tensordict.get("sim") + action
        return TensorDict(
            observation=torch.cat([action, -action], -1).clamp(-1, 1),
            sim=sim,
            reward=action * 2,
            terminated=torch.zeros(*self.batch_size, 1, dtype=torch.bool),
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed):
        pass


@pytest.mark.parametrize("batch_size", [(), (3,)])
def test_double_to_float_finds_keys_from_the_specs(batch_size):
    base = DoubleEnv(batch_size)
    env = TransformedEnv(base, DoubleToFloat())
    check_env_specs(env)
    assert env.observation_spec["observation"].dtype == torch.float32
    assert env.reward_spec.dtype == torch.float32
    assert env.action_spec.dtype == torch.float32
    # The env's own state keeps its precision; actions reach the env in float64.
    assert env.observation_spec["sim"].dtype == torch.float64
    td = env.rollout(4)
    assert td["observation"].dtype == td["next", "reward"].dtype == torch.float32
    assert td["next", "sim"].dtype == torch.float64
    assert all(a.dtype == torch.float64 for a in base.actions)
    torch.testing.assert_close(td["next", "sim"][..., -1, :], 1 / 3 + td["action"].double().sum(-2))


def test_double_to_float_resolves_keys_on_reset_before_specs_are_read():
    env = TransformedEnv(DoubleEnv(), DoubleToFloat())
    td = env.reset()  # no spec accessed before
    assert td["observation"].dtype == torch.float32
    assert td["sim"].dtype == torch.float64
    assert env.transform[0].in_keys == ["reward", "observation"]
    assert env.transform[0].in_keys_inv == ["action"]


def test_double_to_float_outside_an_env_casts_every_double_entry():
    td = TensorDict(
        {
            "a": torch.zeros(2, dtype=torch.float64),
            "i": torch.zeros(2, dtype=torch.int64),
            "next": {"a": torch.zeros(2, dtype=torch.float64)},
        },
        batch_size=[2],
    )
    out = DoubleToFloat()(td)
    assert out["a"].dtype == out["next", "a"].dtype == torch.float32
    assert out["i"].dtype == torch.int64


def test_double_to_float_with_explicit_keys_casts_state_too():
    env = TransformedEnv(PendulumEnv(batch_size=[2]), DoubleToFloat(in_keys=["state"]))
    assert env.observation_spec["state"].dtype == torch.float32
    assert env.state_spec["state"].dtype == torch.float64
    assert env.reset()["state"].dtype == torch.float32


def test_explicit_key_of_the_wrong_dtype_is_refused():
    env = TransformedEnv(PendulumEnv(), DoubleToFloat(in_keys=["observation"]))
    with pytest.raises(TransformError, match=r"'observation' has dtype torch.float32"):
        env.observation_spec  # noqa: B018


def test_dtype_cast_up_and_back():
    base = PendulumEnv(batch_size=[2])
    env = TransformedEnv(base, DTypeCastTransform(torch.float32, torch.float64))
    check_env_specs(env)
    spec = env.observation_spec["observation"]
    assert isinstance(spec, Bounded) and spec.dtype == torch.float64
    assert env.action_spec == Bounded(-2.0, 2.0, shape=(2, 1), dtype=torch.float64)
    td = env.rollout(3)
    assert td["observation"].dtype == td["action"].dtype == torch.float64
    # The float64 action was cast back: the float32 env stepped as it would by itself.
    first = TensorDict(state=td["state"][:, 0], action=td["action"][:, 0].float(), batch_size=[2])
    expected = PendulumEnv(batch_size=[2]).step(first)["next", "state"]
    torch.testing.assert_close(td["next", "state"][:, 0], expected)


def test_dtype_cast_with_only_inverse_keys():
    t = DTypeCastTransform(torch.float64, torch.float32, in_keys_inv=["action"])
    env = TransformedEnv(DoubleEnv(), t)
    assert env.action_spec.dtype == torch.float32
    assert env.observation_spec["observation"].dtype == torch.float64
    env.rollout(2)
    assert env.base_env.actions[-1].dtype == torch.float64


def test_dtype_cast_rejects_non_dtypes():
    with pytest.raises(TransformError, match="dtype_out must be a torch.dtype"):
        DTypeCastTransform(torch.float32, "float64")


def test_device_cast_moves_data_and_specs():
    env = TransformedEnv(PendulumEnv(batch_size=[2]), DeviceCastTransform("cpu"))
    assert env.transform[0].transform_env_device(torch.device("cpu")) == torch.device("cpu")
    check_env_specs(env)
    assert env.rollout(3)["next", "observation"].device == torch.device("cpu")


def test_device_cast_on_a_plain_tensordict_to_the_meta_device():
    td = TensorDict({"x": torch.ones(2, 3), "next": {"x": torch.ones(2, 3)}}, batch_size=[2])
    out = DeviceCastTransform("meta")(td)
    assert out.device == torch.device("meta")
    assert out["next", "x"].device == torch.device("meta")
    spec = DeviceCastTransform("meta").transform_observation_spec(
        Composite(x=Unbounded(shape=(2, 3)), shape=[2])
    )
    assert spec.device == torch.device("meta") and spec["x"].device == torch.device("meta")


def test_device_cast_errors():
    with pytest.raises(TransformError, match="moves whole TensorDicts"):
        DeviceCastTransform("cpu", in_keys=["observation"])
    with pytest.raises(TransformError, match="must be devices"):
        DeviceCastTransform("not-a-device")
    with pytest.raises(TransformError, match="pass orig_device"):
        DeviceCastTransform("cpu").inv(TensorDict(batch_size=[]))


def test_casts_compose_with_other_transforms_in_a_rollout():
    env = TransformedEnv(DoubleEnv([4]), DoubleToFloat())
    env.append_transform(StepCounter(3))
    td = env.rollout(10, break_when_any_done=False)
    assert td["next", "observation"].dtype == torch.float32
    assert td["next", "step_count"].max() == 3


def test_state_cast_both_ways_survives_a_partial_reset():
    t = DoubleToFloat(in_keys=["state"], in_keys_inv=["state"])
    env = TransformedEnv(PendulumEnv(batch_size=[2]), t)
    assert env.state_spec["state"].dtype == torch.float32
    check_env_specs(env)
    current = env.step_mdp(env.rand_step(env.reset()))
    current.set("_reset", torch.tensor([[True], [False]]))
    out = env.reset(current)
    assert out["state"].dtype == torch.float32
    assert torch.equal(out["state"][1], current["state"][1])
