"""ChainWalkEnv: specs, dynamics, rewards, episode ends, seeding and partial resets."""

from __future__ import annotations

import pytest
import torch

from rlblocks.core import NEXT
from rlblocks.core.specs import Bounded, Categorical
from rlblocks.envs import check_env_specs
from rlblocks.envs.transforms import StepCounter, TransformedEnv
from rlblocks.template import ChainWalkEnv


def always(action):
    def policy(td):
        return td.set("action", torch.full(td.batch_size, action, dtype=torch.int64))

    return policy


@pytest.mark.parametrize("batch_size", [[], [3], [2, 2]])
def test_specs_hold_for_any_batch_size(batch_size):
    env = ChainWalkEnv(length=6, batch_size=batch_size)
    assert env.observation_spec["observation"] == Bounded(0.0, 1.0, shape=(*batch_size, 6))
    assert env.action_spec == Categorical(2, shape=batch_size)
    check_env_specs(env, steps=10, seed=0)


def test_walking_right_reaches_the_rewarding_end():
    env = ChainWalkEnv(length=7, batch_size=[16])
    env.set_seed(0)
    traj = env.rollout(10, policy=always(1))
    start = traj["observation"][:, 0].argmax(-1)
    assert ((start >= 1) & (start <= 5)).all()  # walks start on inner states
    # walker i needs 6 - start_i steps; the rollout stops when the first one arrives
    assert traj.batch_size[-1] == int((6 - start).min())
    arrived = traj[NEXT, "terminated"][:, -1, 0]
    assert torch.equal(arrived, start == int(start.max()))
    assert torch.equal(traj[NEXT, "reward"][:, -1, 0], arrived.float())
    assert traj[NEXT, "reward"][:, :-1].sum() == 0


def test_walking_left_terminates_without_reward():
    env = ChainWalkEnv(length=4)
    traj = env.rollout(10, policy=always(0))
    assert traj[NEXT, "terminated"][-1].item()
    assert traj[NEXT, "observation"][-1].argmax().item() == 0
    assert traj[NEXT, "reward"].sum() == 0


def test_seeding_makes_starts_reproducible():
    env = ChainWalkEnv(length=9, batch_size=[32])
    env.set_seed(3)
    first = env.reset()["observation"]
    env.set_seed(3)
    assert torch.equal(env.reset()["observation"], first)
    env.set_seed(4)
    assert not torch.equal(env.reset()["observation"], first)


def test_partial_reset_restarts_only_finished_walkers():
    env = ChainWalkEnv(length=9, batch_size=[2])
    env.set_seed(0)
    td = env.reset()
    for _ in range(100):  # walker 0 walks left, walker 1 right, until only one has ended
        td["action"] = torch.tensor([0, 1])
        transition, td = env.step_and_maybe_reset(td)
        ended = transition[NEXT, "terminated"][:, 0]
        if ended.any() and not ended.all():
            break
    else:
        pytest.fail("the walkers always ended together")
    # the walker that ended restarts on an inner state; the other one walks on
    restarted = td["observation"][ended].argmax(-1)
    assert ((restarted >= 1) & (restarted <= 7)).all()
    assert torch.equal(td["observation"][~ended], transition[NEXT, "observation"][~ended])


def test_a_time_limit_comes_from_step_counter():
    env = TransformedEnv(ChainWalkEnv(length=7), StepCounter(max_steps=5))

    def toward_the_middle(td):  # never reaches an end, wherever the walk starts
        return td.set("action", (td["observation"].argmax(-1) < 3).long())

    traj = env.rollout(50, policy=toward_the_middle)
    assert traj.batch_size == torch.Size([5])
    assert traj[NEXT, "truncated"][-1].item() and not traj[NEXT, "terminated"].any()


def test_length_is_validated():
    with pytest.raises(ValueError, match="length must be an int >= 3"):
        ChainWalkEnv(length=2)
