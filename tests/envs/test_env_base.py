"""EnvBase: the TensorDict env API, on a minimal env defined in the tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlblocks.core import MissingKeyError, step_mdp
from rlblocks.core.specs import Bounded, Categorical, Composite, Unbounded
from rlblocks.envs import (
    BatchSizeError,
    EnvBase,
    EnvClosedError,
    EnvError,
    InvalidActionError,
)


def test_reset_fills_missing_done_flags(counting_env_cls):
    env = counting_env_cls()
    td = env.reset()
    assert td["observation"].item() == 0
    for key in ("done", "terminated", "truncated"):
        assert td[key].shape == (1,) and td[key].dtype == torch.bool and not td[key].any()


def test_step_completes_done_from_terminated(counting_env_cls):
    env = counting_env_cls(limit=2)
    td = env.reset()
    td = env.step(env.rand_action(td))
    assert not td["next", "done"].item()
    td = env.step(env.rand_action(step_mdp(td)))
    assert td["next", "done"].item() and td["next", "terminated"].item()
    assert not td["next", "truncated"].item()


def test_step_writes_next_in_place(counting_env_cls):
    env = counting_env_cls()
    td = env.rand_action(env.reset())
    out = env.step(td)
    assert out is td
    assert td["next", "observation"].item() == 1
    assert torch.equal(td["next", "reward"], td["action"])


def test_specs_have_batch_dims_and_full_forms(counting_env_cls):
    env = counting_env_cls(batch_size=[3])
    assert env.batch_size == (3,)
    assert env.action_spec == Bounded(-1.0, 1.0, shape=(3, 1))
    assert isinstance(env.full_action_spec, Composite)
    assert env.full_action_spec["action"] == env.action_spec
    assert env.reward_spec.shape == (3, 1)
    assert set(env.done_spec.keys()) == {"done", "terminated", "truncated"}
    assert env.observation_spec is env.full_observation_spec
    assert env.state_spec.keys() == []
    assert env.action_key == "action" and env.reward_key == "reward"
    assert set(env.output_spec.keys()) == {
        "observation",
        "reward",
        "done",
        "terminated",
        "truncated",
    }
    assert env.input_spec.keys() == ["action"]


def test_spec_setters_reject_wrong_batch_shape(counting_env_cls):
    env = counting_env_cls(batch_size=[3])
    with pytest.raises(EnvError, match=r"batch shape \[\].*batch_size is \[3\]"):
        env.full_observation_spec = Composite(observation=Unbounded(shape=(1,)))
    with pytest.raises(EnvError, match="must be a Composite"):
        env.full_observation_spec = Unbounded(shape=(3, 1))


def test_done_spec_setter_with_a_leaf(counting_env_cls):
    env = counting_env_cls()
    env.done_spec = Categorical(2, shape=(1,), dtype=torch.int64)
    assert env.done_keys == ["done", "terminated", "truncated"]
    assert env.done_spec["truncated"].dtype == torch.int64


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (torch.tensor([2.0]), r"'action'.*Bounded.*values in \[-1.0, 1.0\]"),
        (torch.tensor([0.5], dtype=torch.float64), "expected dtype torch.float32"),
        (torch.tensor([0.1, 0.2]), r"expected shape \[1\], got shape \[2\]"),
        (torch.tensor(float("nan")).reshape(1), "'action'"),
    ],
)
def test_step_rejects_bad_actions_with_key_spec_and_value(counting_env_cls, action, match):
    env = counting_env_cls()
    td = env.reset().set("action", action)
    with pytest.raises(InvalidActionError, match=match) as info:
        env.step(td)
    assert "CountingEnv.step()" in str(info.value) and "Fix" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert "next" not in td.keys()


def test_step_reports_missing_action(counting_env_cls):
    env = counting_env_cls()
    with pytest.raises(MissingKeyError, match="no action 'action'.*rand_action"):
        env.step(env.reset())


def test_action_check_can_be_turned_off(counting_env_cls):
    env = counting_env_cls()
    td = env.reset().set("action", torch.tensor([5.0]))
    assert env.step(td, check=False)["next", "reward"].item() == 5.0
    quiet = counting_env_cls()
    quiet.check_actions = False
    assert (
        quiet.step(quiet.reset().set("action", torch.tensor([5.0])))["next", "reward"].item() == 5
    )


def test_step_checks_batch_size(counting_env_cls):
    env = counting_env_cls(batch_size=[2])
    td = TensorDict({"action": torch.zeros(3, 1)}, batch_size=[3])
    with pytest.raises(BatchSizeError, match=r"batch size \[3\].*batch_size is \[2\]"):
        env.step(td)


def test_rand_action_and_rand_step(counting_env_cls):
    env = counting_env_cls(batch_size=[4])
    td = env.rand_action()
    assert td.batch_size == (4,) and env.action_spec.is_in(td["action"])
    td = env.rand_step(env.reset())
    assert td["next", "observation"].eq(1).all()


def test_step_and_maybe_reset_resets_finished_episodes(counting_env_cls):
    env = counting_env_cls(limit=2)
    td = env.reset()
    transition, td = env.step_and_maybe_reset(env.rand_action(td))
    assert td["observation"].item() == 1 and "action" not in td.keys()
    transition, td = env.step_and_maybe_reset(env.rand_action(td))
    assert transition["next", "done"].item()
    assert td["observation"].item() == 0 and not td["done"].item()


def test_partial_reset_resets_only_masked_elements(counting_env_cls):
    env = counting_env_cls(batch_size=[3], limit=100)
    td = env.reset()
    for _ in range(3):
        td = step_mdp(env.step(env.rand_action(td)))
    td.set("_reset", torch.tensor([[True], [False], [True]]))
    out = env.reset(td)
    assert out["observation"].flatten().tolist() == [0, 3, 0]
    assert "_reset" not in out.keys()


def test_reset_with_an_empty_mask_resets_nothing(counting_env_cls):
    env = counting_env_cls(batch_size=[2], limit=100)
    td = step_mdp(env.step(env.rand_action(env.reset())))
    out = env.reset(td.set("_reset", torch.zeros(2, 1, dtype=torch.bool)))
    assert out["observation"].flatten().tolist() == [1, 1] and "_reset" not in out.keys()


def test_reset_carries_other_entries(counting_env_cls):
    env = counting_env_cls()
    td = env.reset(TensorDict({"hidden": torch.ones(2)}, batch_size=[]))
    assert torch.equal(td["hidden"], torch.ones(2))


def test_fake_tensordict_matches_a_real_step(counting_env_cls):
    env = counting_env_cls(batch_size=[2])
    fake = env.fake_tensordict()
    real = env.rand_step(env.reset())
    assert set(fake.keys(True, True)) == set(real.keys(True, True))
    for key in fake.keys(True, True):
        assert fake[key].shape == real[key].shape and fake[key].dtype == real[key].dtype


def test_set_seed_returns_the_next_seed(counting_env_cls):
    env = counting_env_cls(batch_size=[3])
    assert env.set_seed(10) == 13
    assert env.set_seed(None) is None
    assert env.seeds == [10, None]


@pytest.mark.parametrize("bad", ["abc", -1, 1.5, True, [3]])
def test_set_seed_rejects_a_bad_seed_before_the_backend_sees_it(counting_env_cls, bad):
    """Issue 20, item 13: a bad seed is refused in EnvBase, so no backend stores it."""
    env = counting_env_cls()
    with pytest.raises(ValueError, match=r"CountingEnv.set_seed\(\): seed must be an int >= 0"):
        env.set_seed(bad)
    assert env.seeds == []  # the backend never saw it
    env.reset()  # and the env still works


def test_set_seed_accepts_numpy_ints_as_python_ints(counting_env_cls):
    env = counting_env_cls(batch_size=[2])
    assert env.set_seed(np.int64(4)) == 6
    assert env.seeds == [4] and type(env.seeds[0]) is int


def test_reset_with_a_seed_seeds_then_resets(counting_env_cls):
    """Issue 20, item 14: reset(seed=s) is set_seed(s) then the reset, for every env."""
    env = counting_env_cls(batch_size=[2])
    env.rand_step(env.reset())
    td = env.reset(seed=5)
    assert env.seeds == [5]
    assert td["observation"].eq(0).all()
    env.reset()  # no seed: nothing seeded
    assert env.seeds == [5]
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        env.reset(seed="abc")
    assert env.seeds == [5]


def test_an_action_on_another_device_names_the_key_and_both_devices(counting_env_cls):
    """Issue 20, item 12 (the "meta" device stands for another device on a CPU machine)."""

    class ReadsTheAction(counting_env_cls):
        def _step(self, tensordict):
            float(tensordict["action"].sum())  # as a backend handing it to a simulator
            return super()._step(tensordict)

    env = ReadsTheAction(batch_size=[2])
    td = TensorDict(dict(env.reset().items()), batch_size=[2])  # no device: keeps the action's
    td["action"] = torch.zeros(2, 1, device="meta")
    for check in (True, False):  # unchecked, the backend's own failure is translated
        with pytest.raises(InvalidActionError) as info:
            env.step(td, check=check)
        message = str(info.value)
        assert "action 'action'" in message and "Bounded" in message
        assert "the spec is on device cpu, the action on device meta" in message
        assert "td.to('cpu')" in message


def test_a_backend_error_that_is_not_about_devices_is_left_alone(counting_env_cls):
    env = counting_env_cls()
    td = env.reset()
    td["action"] = torch.zeros(1)
    env._step = lambda td: 1 / 0
    with pytest.raises(ZeroDivisionError):
        env.step(td)


def test_close_is_idempotent_and_blocks_use(counting_env_cls):
    with counting_env_cls() as env:
        env.reset()
    assert env.is_closed
    env.close()
    with pytest.raises(EnvClosedError, match=r"reset\(\) was called after close"):
        env.reset()
    with pytest.raises(EnvClosedError, match="step"):
        env.step(env.rand_action())


def test_subclass_without_methods_says_what_to_implement():
    class Empty(EnvBase):
        pass

    with pytest.raises(NotImplementedError, match="Empty must implement _reset"):
        Empty().reset()


def test_step_without_any_done_flag_is_an_error():
    class NoFlags(EnvBase):
        def _reset(self, td, **kw):
            return TensorDict(batch_size=[])

        def _step(self, td):
            return TensorDict({"reward": torch.zeros(1)}, batch_size=[])

    env = NoFlags()
    with pytest.raises(MissingKeyError, match="must return 'done' or 'terminated'"):
        env.step(env.reset())


def test_single_key_accessors_explain_several_keys(counting_env_cls):
    env = counting_env_cls()
    env.full_action_spec = Composite(a=Unbounded(shape=(1,)), b=Unbounded(shape=(1,)))
    assert env.action_keys == ["a", "b"]
    assert isinstance(env.action_spec, Composite)
    with pytest.raises(EnvError, match="2 action keys"):
        _ = env.action_key


def test_repr_names_keys(counting_env_cls):
    assert "observation_keys=['observation']" in repr(counting_env_cls())
