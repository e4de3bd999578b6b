"""Transform, Compose and TransformedEnv: structure, specs, inverse, parent, plain TensorDicts."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.specs import Bounded, Unbounded
from rlblocks.envs import (
    CartPoleEnv,
    Compose,
    GymEnv,
    PendulumEnv,
    RewardSum,
    SerialEnv,
    StepCounter,
    Transform,
    TransformedEnv,
    TransformError,
    check_env_specs,
)
from rlblocks.envs.transforms import (
    DeviceCastTransform,
    DoubleToFloat,
    ObservationNorm,
    RenameTransform,
)

CPU, META = torch.device("cpu"), torch.device("meta")


class Scale(Transform):
    """Multiply observations by ``factor`` (a stateless per-key transform)."""

    stateless = True

    def __init__(self, factor=2.0, in_keys=("observation",), out_keys=None):
        super().__init__(in_keys=list(in_keys), out_keys=out_keys)
        self.register_buffer("factor", torch.tensor(factor))

    def _apply_transform(self, value):
        return value * self.factor

    def _apply_transform_spec(self, spec):
        return Unbounded(shape=spec.shape, dtype=spec.dtype, device=spec.device)


class HalfAction(Transform):
    """The policy acts in [-1, 1]; the wrapped env gets twice that (an inverse transform)."""

    def __init__(self):
        super().__init__(in_keys_inv=["action"], out_keys_inv=["policy_action"])

    def _inv_apply_transform(self, value):
        return value * 2

    def _inv_apply_transform_spec(self, spec):
        return Bounded(-1.0, 1.0, shape=spec.shape, device=spec.device)


def test_stateless_transform_edits_outputs_and_specs():
    env = TransformedEnv(PendulumEnv(), Scale(10.0))
    assert isinstance(env.observation_spec["observation"], Unbounded)
    assert isinstance(env.base_env.observation_spec["observation"], Bounded)
    td = env.rand_step(env.reset())
    assert td["observation"].abs().max() > 1.0  # cos/sin scaled by 10
    assert td["next", "observation"].abs()[:2].max() <= 10.0
    check_env_specs(env)


def test_out_keys_write_new_entries():
    env = TransformedEnv(PendulumEnv(), Scale(3.0, out_keys=["scaled"]))
    assert {"observation", "scaled"} <= set(env.observation_keys)
    td = env.reset()
    torch.testing.assert_close(td["scaled"], td["observation"] * 3)


def test_transform_works_on_plain_tensordicts():
    td = TensorDict(
        {"observation": torch.ones(4, 3), "next": {"observation": torch.ones(4, 3)}}, [4]
    )
    out = Scale(5.0)(td)
    assert out["observation"].eq(5).all() and out["next", "observation"].eq(5).all()


def test_inverse_transform_maps_the_policys_action(counting_env_cls):
    env = TransformedEnv(counting_env_cls(), HalfAction())
    assert env.action_keys == ["policy_action"]
    assert env.action_spec == Bounded(-1.0, 1.0, shape=(1,))
    td = env.reset().set("policy_action", torch.tensor([0.25]))
    td = env.step(td)
    assert td["next", "reward"].item() == 0.5  # the base env received 0.5
    assert "action" not in td.keys()  # the caller's TensorDict is not polluted
    assert env.rollout(3)["next", "reward"].abs().max() <= 2.0


def test_compose_structure_and_order():
    first, second = Scale(2.0), Scale(3.0)
    compose = Compose(first)
    compose.append(second)
    compose.insert(0, Scale(5.0, in_keys=["other"]))
    assert len(compose) == 3 and compose[1] is first and list(compose)[2] is second
    td = compose(TensorDict({"observation": torch.ones(1), "other": torch.ones(1)}, []))
    assert td["observation"].item() == 6.0 and td["other"].item() == 5.0
    with pytest.raises(TransformError, match="out of range"):
        compose.insert(5, Scale())
    with pytest.raises(TransformError, match="Transform instances"):
        compose.append(lambda td: td)


def test_a_transform_sits_in_one_place_only():
    scale = Scale()
    TransformedEnv(PendulumEnv(), scale)
    with pytest.raises(TransformError, match=r"already belongs to Compose.*transform.clone\(\)"):
        TransformedEnv(PendulumEnv(), scale)
    copy = scale.clone()
    assert copy.container is None and scale.container is not None
    assert TransformedEnv(PendulumEnv(), copy).transform[0] is copy


def test_key_lists_must_pair_up():
    with pytest.raises(TransformError, match="same length"):
        Transform(in_keys=["a", "b"], out_keys=["c"])


def test_parent_is_the_env_seen_by_the_transform():
    counter, summer, scale = StepCounter(), RewardSum(), Scale()
    assert counter.parent is None
    env = TransformedEnv(CartPoleEnv(), counter)
    env.append_transform(summer).insert_transform(0, scale)
    assert scale.parent is env.base_env
    parent = summer.parent
    assert isinstance(parent, TransformedEnv) and parent.base_env is env.base_env
    assert "step_count" in parent.observation_keys
    assert "episode_reward" not in parent.observation_keys
    assert isinstance(counter.parent.observation_spec["observation"], Unbounded)
    # Building the parent does not steal the transforms.
    assert counter.container is env.transform and len(env.transform) == 3


def test_parent_inside_a_nested_compose():
    inner = StepCounter()
    env = TransformedEnv(CartPoleEnv(), Compose(Scale(), Compose(RewardSum(), inner)))
    parent = inner.parent
    assert {"observation", "episode_reward"} <= set(parent.observation_keys)
    assert "step_count" not in parent.observation_keys
    assert "step_count" in env.observation_keys


# ---------------------------------------------------------------------- parent views
def test_parent_views_are_cached_until_the_composition_changes():
    counter, summer = StepCounter(), RewardSum()
    env = TransformedEnv(CartPoleEnv(), Compose(counter, summer))
    parent = summer.parent
    assert summer.parent is parent and counter.parent is env.base_env
    scale = Scale(out_keys=["scaled"])
    env.append_transform(scale)
    assert summer.parent is not parent
    assert {"step_count", "episode_reward"} <= set(scale.parent.observation_keys)
    env.insert_transform(0, RenameTransform(["observation"], ["obs"]))
    assert "obs" in summer.parent.observation_keys
    assert "obs" in scale.parent.observation_keys
    assert "observation" not in scale.parent.observation_keys


def test_parent_views_follow_spec_changes():
    norm, counter = ObservationNorm(0.0, 1.0), StepCounter()
    env = TransformedEnv(PendulumEnv(), Compose(norm, counter))
    before = counter.parent
    high = before.observation_spec["observation"].high
    norm.set_stats(0.0, 10.0)
    after = counter.parent
    assert after is not before
    torch.testing.assert_close(after.observation_spec["observation"].high, high * 10)
    env.invalidate_specs()
    assert counter.parent is not after


def test_parent_views_in_a_nested_compose_follow_the_outer_compose():
    inner_counter = StepCounter()
    env = TransformedEnv(CartPoleEnv(), Compose(Scale(), Compose(RewardSum(), inner_counter)))
    parent = inner_counter.parent
    assert inner_counter.parent is parent
    env.insert_transform(0, Scale(out_keys=["extra"]))
    assert inner_counter.parent is not parent
    assert {"extra", "episode_reward"} <= set(inner_counter.parent.observation_keys)
    # Copies of the transforms do not take the cached views (nor the env they hold).
    assert env.transform._parent_views and not env.transform.clone()._parent_views


def test_appending_updates_the_specs():
    env = TransformedEnv(CartPoleEnv())
    assert "step_count" not in env.observation_keys
    env.append_transform(StepCounter())
    assert "step_count" in env.observation_keys


def test_transformed_env_specs_are_read_only():
    env = TransformedEnv(CartPoleEnv(), StepCounter())
    with pytest.raises(TransformError, match="base_env.full_observation_spec"):
        env.full_observation_spec = env.base_env.full_observation_spec


def test_transformed_env_needs_an_rlblocks_env():
    with pytest.raises(TransformError, match="GymWrapper"):
        TransformedEnv(object())


def test_nested_transformed_envs():
    inner = TransformedEnv(CartPoleEnv(batch_size=[2]), StepCounter(5))
    env = TransformedEnv(inner, RewardSum())
    td = env.rollout(12, break_when_any_done=False)
    assert td["next", "step_count"].max() == 5
    assert td["next", "episode_reward"].max() <= 5
    check_env_specs(env)


def test_state_dict_round_trip():
    env = TransformedEnv(PendulumEnv(), Scale(4.0))
    state = env.state_dict()
    assert torch.equal(state["transforms.0.factor"], torch.tensor(4.0))
    other = TransformedEnv(PendulumEnv(), Scale(1.0))
    other.load_state_dict(state)
    assert other.transform[0].factor.item() == 4.0


def test_close_and_seed_reach_the_base_env(counting_env_cls):
    base = counting_env_cls(batch_size=[2])
    env = TransformedEnv(base, StepCounter())
    assert env.set_seed(3) == 5 and base.seeds == [3]
    env.close()
    assert base.is_closed


# ---------------------------------------------------------------------- reset inputs
class RecordingPendulum(PendulumEnv):
    """A PendulumEnv that keeps what its ``_reset`` received."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.reset_inputs = []

    def _reset(self, tensordict, **kwargs):
        self.reset_inputs.append(tensordict)
        return super()._reset(tensordict, **kwargs)


def _partial_reset_input(env, reset):
    """A step's follow-up input with a ``"_reset"`` mask, as ``step_and_maybe_reset`` builds."""
    current = env.step_mdp(env.rand_step(env.reset()))
    return current.set("_reset", torch.tensor(reset).reshape(-1, 1))


def test_partial_reset_keeps_the_renamed_state_of_the_other_elements():
    both_ways = RenameTransform(["state"], ["sim"], in_keys_inv=["state"], out_keys_inv=["sim"])
    env = TransformedEnv(PendulumEnv(batch_size=[2]), both_ways)
    current = _partial_reset_input(env, [True, False])
    out = env.reset(current)
    # The base env read its state back, so the element not reset keeps a consistent
    # observation (it used to be resampled from scratch).
    assert torch.equal(out["sim"][1], current["sim"][1])
    assert torch.equal(out["observation"][1], current["observation"][1])
    assert not torch.equal(out["sim"][0], current["sim"][0])


def test_reset_input_reaches_the_base_env_through_the_inverse():
    rename = RenameTransform(["state"], ["sim"], in_keys_inv=["state"], out_keys_inv=["sim"])
    cast = DoubleToFloat(in_keys=["sim"], in_keys_inv=["sim"])
    base = RecordingPendulum(batch_size=[2])
    env = TransformedEnv(base, Compose(rename, cast))
    current = _partial_reset_input(env, [False, True])
    assert current["sim"].dtype == torch.float32 and "state" not in current.keys()
    out = env.reset(current)
    seen = base.reset_inputs[-1]
    assert seen["state"].dtype == torch.float64
    assert torch.equal(seen["state"], current["sim"].double())
    assert out["sim"].dtype == torch.float32 and torch.equal(out["sim"][0], current["sim"][0])
    # The caller's TensorDict is left as it was.
    assert "state" not in current.keys() and current["sim"].dtype == torch.float32


def test_reset_input_moves_to_the_base_envs_device():
    # Data can go to "meta" but not come back: the wrapped env reads on "meta" here.
    base = RecordingPendulum()
    env = TransformedEnv(base, DeviceCastTransform("cpu", orig_device="meta"))
    env.reset(TensorDict(batch_size=[]))
    assert base.reset_inputs[-1].device == META


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_partial_reset_through_a_device_cast():
    env = TransformedEnv(PendulumEnv(batch_size=[2], device="cpu"), DeviceCastTransform("cuda"))
    current = _partial_reset_input(env, [True, False])
    out = env.reset(current)
    assert out.device.type == "cuda"
    assert torch.equal(out["state"][1], current["state"][1])


# ---------------------------------------------------------------------- device
def test_device_comes_from_the_transforms():
    env = TransformedEnv(PendulumEnv(batch_size=[2]), StepCounter())
    assert env.device == CPU
    env.append_transform(DeviceCastTransform("meta"))
    assert env.device == META
    action = env.rand_action()
    assert action.device == META and action["action"].device == META
    env.append_transform(RewardSum())
    assert env.transform[1].parent.device == CPU and env.transform[2].parent.device == META


def test_transform_env_device_chains_through_compose():
    assert StepCounter().transform_env_device(META) == META  # the default: unchanged
    assert Compose(DeviceCastTransform("meta"), StepCounter()).transform_env_device(CPU) == META
    there_and_back = Compose(DeviceCastTransform("meta"), DeviceCastTransform("cpu"))
    assert there_and_back.transform_env_device(CPU) == CPU


# ---------------------------------------------------------------------- random rollouts
def replay(env, actions):
    steps = iter(range(actions.batch_size[-1]))

    def policy(td):
        t = next(steps)
        return td.set("action", actions[..., t]["action"])

    return policy


@pytest.mark.parametrize(
    "make",
    [
        lambda: GymEnv("CartPole-v1"),
        lambda: GymEnv("Pendulum-v1"),
        lambda: SerialEnv(3, lambda: GymEnv("CartPole-v1")),
        lambda: CartPoleEnv(batch_size=[3]),
    ],
    ids=["cartpole", "pendulum", "serial", "native"],
)
@pytest.mark.parametrize("max_steps", [None, 9])
@pytest.mark.parametrize("break_when_any_done", [False, True])
def test_random_rollout_of_transformed_env_equals_stepping(make, max_steps, break_when_any_done):
    # Without a policy, transforms are applied to the whole trajectory at once; the result
    # must be what stepping through them gives.
    env = TransformedEnv(make(), Compose(StepCounter(max_steps), RewardSum(), Scale(0.5)))
    env.set_seed(0)
    torch.manual_seed(0)
    fast = env.rollout(80, break_when_any_done=break_when_any_done)
    env.set_seed(0)
    slow = env.rollout(80, replay(env, fast), break_when_any_done=break_when_any_done)
    assert fast.batch_size == slow.batch_size
    assert set(fast.keys(True, True)) == set(slow.keys(True, True))
    for key in fast.keys(True, True):
        assert fast[key].dtype == slow[key].dtype, key
        torch.testing.assert_close(fast[key], slow[key], msg=str(key))
    if max_steps is not None:
        assert fast["next", "step_count"].max() <= max_steps
    env.close()


def test_a_partial_reset_is_not_a_fresh_start_for_the_fast_rollout():
    from rlblocks.envs import GymEnv, RewardSum

    env = TransformedEnv(GymEnv("CartPole-v1", num_envs=2), RewardSum())
    env.set_seed(0)
    td = env.rollout(40, break_when_any_done=True)  # stops as soon as one env is done
    carry = env.step_mdp(td[:, -1])  # holds the running sums the partial reset must keep
    after = env.maybe_reset(carry)
    assert env.__dict__.get("_last_reset") is None  # not a fresh reset of every env
    kept = ~td["next", "done"][:, -1, 0]
    assert torch.equal(after["episode_reward"][kept], td["next", "episode_reward"][:, -1][kept])
    # The continuing rollout carries the sums of the env that kept running.
    more = env.rollout(5, tensordict=after, auto_reset=False, break_when_any_done=False)
    first = more["episode_reward"][:, 0]
    assert torch.equal(first, after["episode_reward"])


@pytest.mark.parametrize("nested", [False, True])
def test_a_policy_never_reads_observations_a_transform_would_edit(nested):
    # ObservationNorm has a trajectory form, but a policy in the base env's numpy loop would
    # read the raw observation: such envs keep policies on the generic loop, also when the
    # transform hides inside a nested Compose.
    from tensordict.nn import TensorDictModule

    from rlblocks.envs import GymEnv, ObservationNorm, RewardSum

    norm = ObservationNorm(loc=0.0, scale=100.0, in_keys=["observation"])
    transform = Compose(Compose(norm), RewardSum()) if nested else Compose(norm, RewardSum())
    env = TransformedEnv(GymEnv("CartPole-v1"), transform)
    seen = []

    def act(observation):
        seen.append(observation.clone())
        return torch.zeros((), dtype=torch.int64)

    policy = TensorDictModule(act, ["observation"], ["action"])
    env.set_seed(0)
    assert env.fast_rollout(5, env.reset(), policy=policy, break_when_any_done=False) is None
    seen.clear()
    td = env.rollout(20, policy)
    # What the policy read is the normalized (x100) observation the rollout recorded.
    assert torch.equal(torch.stack(seen), td["observation"])
    assert td["observation"].abs().max() > 3.0  # raw CartPole values stay below ~2.5 here
    env.close()
