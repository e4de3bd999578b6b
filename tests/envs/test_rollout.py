"""EnvBase.rollout: preallocated storage, breaking, auto-reset, policies, checks."""

from __future__ import annotations

import pytest
import torch
from tensordict import NonTensorStack

from rlblocks.envs import CartPoleEnv, InvalidActionError, PendulumEnv


def test_rollout_shape_time_last(counting_env_cls):
    env = counting_env_cls(batch_size=[2], limit=100)
    td = env.rollout(7)
    assert td.batch_size == (2, 7)
    assert td["observation"][0, :, 0].tolist() == list(range(7))
    assert td["next", "observation"][1, :, 0].tolist() == list(range(1, 8))
    assert td["observation"].is_contiguous()


def test_rollout_breaks_on_first_done(counting_env_cls):
    env = counting_env_cls(limit=3)
    td = env.rollout(10)
    assert td.batch_size == (3,)
    assert td["next", "done"][:, 0].tolist() == [False, False, True]


def test_rollout_without_break_resets_and_runs_max_steps(counting_env_cls):
    env = counting_env_cls(limit=3)
    td = env.rollout(8, break_when_any_done=False)
    assert td.batch_size == (8,)
    assert td["observation"][:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert td["next", "done"][:, 0].tolist() == [False, False, True] * 2 + [False, False]


def test_rollout_partial_resets_of_batched_env():
    env = CartPoleEnv(batch_size=[4])
    torch.manual_seed(0)
    env.set_seed(0)
    td = env.rollout(200, break_when_any_done=False)
    done = td["next", "done"][..., 0]
    assert done.any() and td.batch_size == (4, 200)
    # After a done, the next root state is a fresh start (|state| <= 0.05), not the final one.
    b, t = done[:, :-1].nonzero()[0].tolist()
    assert td["state"][b, t + 1].abs().max() <= 0.05
    assert not torch.equal(td["state"][b, t + 1], td["next", "state"][b, t])


def test_rollout_with_policy_records_its_outputs(counting_env_cls):
    env = counting_env_cls(limit=100)

    def policy(td):
        td.set("action", torch.full((1,), 0.5))
        td.set("log_prob", torch.zeros(()))
        return td

    td = env.rollout(4, policy)
    assert td["action"].eq(0.5).all() and td["log_prob"].shape == (4,)
    assert td["next", "reward"].eq(0.5).all()


def test_rollout_records_non_tensor_data_per_step():
    # A policy that writes strings (a language model's decoded text, say): each step's are
    # kept, stacked with the batch and time dims like the tensors.
    env = CartPoleEnv(batch_size=[2])
    calls = iter(range(100))

    def policy(td):
        td.set("action", torch.zeros(2, dtype=torch.int64))
        step = next(calls)
        td.set("note", NonTensorStack.from_list([f"env0 step{step}", f"env1 step{step}"]))
        return td

    td = env.rollout(3, policy, break_when_any_done=False)
    assert td.batch_size == (2, 3)
    assert td["note"].tolist() == [
        ["env0 step0", "env0 step1", "env0 step2"],
        ["env1 step0", "env1 step1", "env1 step2"],
    ]


def test_rollout_check_validates_actions(counting_env_cls):
    env = counting_env_cls()

    def bad(td):
        return td.set("action", torch.full((1,), 3.0))

    # One setting for step and rollout: the env's check_actions (on by default).
    with pytest.raises(InvalidActionError, match="'action'"):
        env.rollout(2, bad)
    with pytest.raises(InvalidActionError, match="'action'"):
        env.step(bad(env.reset()))
    assert env.rollout(2, bad, check=False).batch_size == (2,)
    unchecked = counting_env_cls(check_actions=False)
    assert unchecked.rollout(2, bad).batch_size == (2,)
    assert unchecked.step(bad(unchecked.reset()))["next", "reward"].shape == (1,)


def test_rollout_continues_from_a_tensordict(counting_env_cls):
    env = counting_env_cls(limit=100)
    first = env.rollout(3)
    start = first[-1]["next"].clone()
    second = env.rollout(2, auto_reset=False, tensordict=start)
    assert second["observation"][:, 0].tolist() == [3, 4]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_steps": 0}, ValueError, "max_steps must be a positive int"),
        ({"max_steps": 2, "policy": 3}, TypeError, "policy must be callable"),
        ({"max_steps": 2, "auto_reset": False}, ValueError, "needs the starting tensordict"),
    ],
)
def test_rollout_argument_errors(counting_env_cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        counting_env_cls().rollout(**kwargs)


def test_short_rollout_does_not_keep_max_steps_storage():
    env = PendulumEnv()
    td = env.rollout(1000, break_when_any_done=True, policy=lambda t: env.rand_action(t))
    assert td.batch_size == (1000,)  # pendulum never terminates
    env = CartPoleEnv()
    td = env.rollout(1000)
    assert td.batch_size[0] < 1000
    assert td["observation"].untyped_storage().nbytes() == td["observation"].numel() * 4
