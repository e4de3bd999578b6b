"""UnsqueezeTransform, SqueezeTransform, FlattenObservation and CatTensors."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.specs import Bounded, Unbounded
from rlblocks.envs import GymEnv, PendulumEnv, check_env_specs
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms import (
    CatTensors,
    Compose,
    FlattenObservation,
    RenameTransform,
    SqueezeTransform,
    TransformedEnv,
    UnsqueezeTransform,
)


# ---------------------------------------------------------------------- Unsqueeze / Squeeze
@pytest.mark.parametrize(("dim", "shape"), [(-1, (4, 3, 1)), (-2, (4, 1, 3)), (0, (4, 1, 3))])
def test_unsqueeze_in_an_env(dim, shape):
    env = TransformedEnv(PendulumEnv(batch_size=[4]), UnsqueezeTransform(dim, ["observation"]))
    check_env_specs(env)
    spec = env.observation_spec["observation"]
    assert isinstance(spec, Bounded) and spec.shape == shape
    td = env.rollout(3)
    assert td["observation"].shape == (4, 3, *shape[1:])
    assert td["next", "observation"].shape == (4, 3, *shape[1:])


def test_non_negative_dims_count_after_the_tensordict_batch_dims():
    t = UnsqueezeTransform(0, ["x"])
    td = TensorDict({"x": torch.zeros(5, 2, 7), "next": {"x": torch.zeros(5, 2, 7)}}, [5, 2])
    out = t(td)
    assert out["x"].shape == out["next", "x"].shape == (5, 2, 1, 7)


def test_unsqueeze_action_through_inv():
    base = PendulumEnv(batch_size=[2])
    env = TransformedEnv(base, UnsqueezeTransform(-1, in_keys_inv=["action"]))
    assert env.action_spec == Bounded(-2.0, 2.0, shape=(2, 1, 1))
    check_env_specs(env)
    td = env.reset().set("action", torch.full((2, 1, 1), 2.0))
    td = env.step(td)
    # The env saw the squeezed action: compare with stepping it directly.
    direct = base.step(env.reset().set("action", torch.full((2, 1), 2.0)).set("state", td["state"]))
    torch.testing.assert_close(td["next", "state"], direct["next", "state"])


def test_squeeze_reward():
    env = TransformedEnv(PendulumEnv(batch_size=[3]), SqueezeTransform(-1, in_keys=["reward"]))
    check_env_specs(env)
    assert env.reward_spec == Unbounded(shape=(3,))
    assert env.rollout(2)["next", "reward"].shape == (3, 2)


def test_squeeze_a_dim_that_is_not_one_fails_with_the_shape():
    env = TransformedEnv(PendulumEnv(), SqueezeTransform(-1, ["observation"]))
    with pytest.raises(TransformError, match=r"cannot squeeze dim -1 of 'observation'.*size 3"):
        env.observation_spec  # noqa: B018
    with pytest.raises(TransformError, match="size 3"):
        SqueezeTransform(-1, ["x"])(TensorDict(x=torch.zeros(2, 3), batch_size=[2]))


def test_unsqueeze_dim_outside_the_feature_dims():
    t = UnsqueezeTransform(-3, ["x"])
    with pytest.raises(TransformError, match=r"dim -3 is not a feature dim of 'x'.*\[-2, 1\]"):
        t(TensorDict(x=torch.zeros(4, 3), batch_size=[4]))


def test_unsqueeze_argument_errors():
    with pytest.raises(TransformError, match="give the entries to edit"):
        UnsqueezeTransform(-1)
    with pytest.raises(TransformError, match="dim must be an int"):
        UnsqueezeTransform(1.5, ["x"])


# ---------------------------------------------------------------------- Flatten
def test_flatten_observation_in_an_env_keeps_bounds():
    env = TransformedEnv(
        PendulumEnv(batch_size=[2]),
        Compose(
            UnsqueezeTransform(-2, ["observation"]), FlattenObservation(-2, -1, ["observation"])
        ),
    )
    check_env_specs(env)
    assert (
        env.observation_spec["observation"]
        == PendulumEnv(batch_size=[2]).observation_spec["observation"]
    )


def test_flatten_on_a_plain_tensordict_with_positive_dims():
    t = FlattenObservation(0, 1, in_keys=["pixels"])
    td = TensorDict(pixels=torch.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5), batch_size=[2])
    out = t(td)["pixels"]
    assert out.shape == (2, 12, 5)
    assert torch.equal(out[1, 4], torch.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)[1, 1, 0])


def test_flatten_errors():
    with pytest.raises(TransformError, match="must not come after last_dim"):
        FlattenObservation(-1, -2)
    t = FlattenObservation(1, -2, in_keys=["x"])
    with pytest.raises(TransformError, match="first_dim 1 comes after last_dim -2"):
        t(TensorDict(x=torch.zeros(2, 3, 4), batch_size=[2]))
    with pytest.raises(TransformError, match="'x' has no feature dims"):
        t(TensorDict(x=torch.zeros(2, 3), batch_size=[2, 3]))
    with pytest.raises(TransformError, match="dim 1 is not a feature dim of 'state'"):
        TransformedEnv(PendulumEnv(), FlattenObservation(0, 1, ["state"])).observation_spec  # noqa: B018


# ---------------------------------------------------------------------- CatTensors
def test_cat_tensors_in_an_env_promotes_and_keeps_state_inputs():
    env = TransformedEnv(PendulumEnv(batch_size=[2]), CatTensors(["state", "observation"], "vec"))
    check_env_specs(env)
    spec = env.observation_spec
    assert spec["vec"] == Unbounded(shape=(2, 5), dtype=torch.float64)
    assert "observation" not in spec and "state" in spec  # the env reads "state" back
    td = env.rollout(3)
    # Sorted key order: observation ([cos, sin, speed] of the state) first, then state.
    state = td["next", "state"]
    obs = torch.stack([state[..., 0].cos(), state[..., 0].sin(), state[..., 1]], -1)
    torch.testing.assert_close(td["next", "vec"][..., :3], obs.float().double())
    torch.testing.assert_close(td["next", "vec"][..., 3:], state)


def test_cat_tensors_of_bounded_entries_is_bounded():
    env = TransformedEnv(
        PendulumEnv(),
        Compose(
            RenameTransform(["observation"], ["copy"], create_copy=True),
            CatTensors(["observation", "copy"], "both", del_keys=False),
        ),
    )
    spec = env.observation_spec["both"]
    assert isinstance(spec, Bounded)
    assert spec.high.tolist() == [1.0, 1.0, 8.0, 1.0, 1.0, 8.0]
    assert {"observation", "copy"} <= set(env.observation_spec.keys())
    check_env_specs(env)


def test_cat_tensors_on_a_plain_tensordict_unsqueezes_scalars():
    td = TensorDict(
        {
            "b": torch.ones(4, 2),
            "a": torch.zeros(4),
            "next": {"a": torch.zeros(4), "b": torch.ones(4, 2)},
        },
        batch_size=[4],
    )
    out = CatTensors(["b", "a"], out_key="v")(td)
    assert out["v"].shape == out["next", "v"].shape == (4, 3)
    assert out["v"][0].tolist() == [0.0, 1.0, 1.0]  # sorted: "a" then "b"
    assert "a" not in out.keys() and "b" not in out["next"].keys()
    unsorted = CatTensors(["b", "a"], out_key="v", sort=False, unsqueeze_if_needed=True)
    assert unsorted(TensorDict(a=torch.zeros(1), b=torch.ones(1, 2), batch_size=[1]))["v"][
        0
    ].tolist() == [1.0, 1.0, 0.0]


def test_cat_tensors_with_a_gym_dict_observation(dict_env_id):
    env = TransformedEnv(GymEnv(dict_env_id), CatTensors(["position", ("sensors", "bumps")], "vec"))
    check_env_specs(env)
    assert env.observation_spec["vec"].shape == (6,)
    assert env.reset()["vec"].shape == (6,)


def test_cat_tensors_errors():
    with pytest.raises(TransformError, match="in_keys must name the entries"):
        CatTensors()
    t = CatTensors(["a", "b"], "v")
    with pytest.raises(TransformError, match=r"missing \['b'\]"):
        t(TensorDict(a=torch.zeros(2, 1), batch_size=[2]))
    with pytest.raises(TransformError, match="differ in another dim"):
        t(TensorDict(a=torch.zeros(2, 1, 3), b=torch.zeros(2, 2, 2), batch_size=[2]))
    env = TransformedEnv(PendulumEnv(), CatTensors(["observation", "velocity"], "v"))
    with pytest.raises(TransformError, match=r"\['velocity'\] are not observations of the env"):
        env.observation_spec  # noqa: B018
