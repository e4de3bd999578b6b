"""DMControlEnv and DMControlWrapper on real dm_control tasks: specs, rollouts, seeding,
episode ends, frame skip, batching and transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlblocks.core import DONE, NEXT, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.specs import Bounded, Categorical, Composite, Unbounded
from rlblocks.dmcontrol import DISCOUNT, DMControlEnv, DMControlError, DMControlWrapper
from rlblocks.envs import EnvClosedError, SerialEnv, TransformedEnv, check_env_specs
from rlblocks.envs.errors import InvalidActionError, UnsupportedEnvOperationError
from rlblocks.envs.transforms import DoubleToFloat


def constant_actions(env, value, steps):
    """A fixed action sequence: the same ``value`` every step."""
    action = torch.full(env.action_spec.shape, value, dtype=env.action_spec.dtype)
    return [action.clone() for _ in range(steps)]


def run(env, actions):
    """Reset and step ``env`` through ``actions``; return the stacked transitions."""
    td = env.reset()
    out = []
    for action in actions:
        td["action"] = action
        td = env.step(td)
        out.append(td.clone())
        td = env.step_mdp(td)
    return torch.stack(out)


# -- specs ---------------------------------------------------------------------------------


def test_cartpole_specs_come_from_dm_env_specs(cartpole):
    obs = cartpole.full_observation_spec
    assert isinstance(obs, Composite)
    assert set(obs.keys()) == {"position", "velocity", DISCOUNT}
    assert obs["position"] == Unbounded(shape=(3,), dtype=torch.float64)
    assert obs["velocity"] == Unbounded(shape=(2,), dtype=torch.float64)
    assert obs[DISCOUNT] == Bounded(0.0, 1.0, shape=(1,), dtype=torch.float64)
    action = cartpole.action_spec
    assert isinstance(action, Bounded) and action.shape == (1,)
    assert action.dtype == torch.float64
    assert action.low.tolist() == [-1.0] and action.high.tolist() == [1.0]
    assert cartpole.reward_spec == Unbounded(shape=(1,), dtype=torch.float64)
    assert cartpole.batch_size == torch.Size([])


@pytest.mark.parametrize(
    ("domain", "task"), [("cartpole", "swingup"), ("walker", "walk"), ("lqr", "lqr_2_1")]
)
def test_check_env_specs_passes_on_real_tasks(domain, task):
    with DMControlEnv(domain, task) as env:
        check_env_specs(env, steps=5, seed=0)


def test_scalar_observations_get_shape_one():
    with DMControlEnv("walker", "walk") as env:
        assert env.full_observation_spec["height"].shape == (1,)
        assert env.reset()["height"].shape == (1,)


def test_nested_observation_dicts_become_a_nested_composite(countdown):
    env = DMControlWrapper(countdown())
    obs = env.full_observation_spec
    assert isinstance(obs["sensors"], Composite)
    assert obs["sensors", "level"] == Bounded(0.0, 1.0, shape=(2,), dtype=torch.float32)
    assert obs["counter"] == Unbounded(shape=(1,), dtype=torch.int64)
    assert env.action_spec == Categorical(3, dtype=torch.int64)
    check_env_specs(env, steps=3)
    td = env.reset()
    assert td["sensors", "level"].tolist() == [1.0, 1.0]
    assert td["counter"].tolist() == [5]


# -- rollouts ------------------------------------------------------------------------------


def test_rollout_of_a_real_task_moves_the_cart(cartpole):
    cartpole.set_seed(1)
    traj = cartpole.rollout(50)
    assert traj.batch_size == torch.Size([50])
    assert traj[NEXT, "position"].shape == (50, 3)
    assert torch.isfinite(traj[NEXT, REWARD]).all()
    # swingup's reward is smooth and in [0, 1]; the cart moves under random pushes
    assert ((traj[NEXT, REWARD] >= 0) & (traj[NEXT, REWARD] <= 1)).all()
    assert not torch.equal(traj["position"][0], traj[NEXT, "position"][-1])
    assert not traj[NEXT, DONE].any()
    assert (traj[NEXT, DISCOUNT] == 1).all()
    # consecutive steps chain: the next observation is the following root observation
    assert torch.equal(traj[NEXT, "position"][:-1], traj["position"][1:])


def test_policy_actions_reach_the_physics(cartpole):
    cartpole.set_seed(0)
    right = run(cartpole, constant_actions(cartpole, 1.0, 30))
    cartpole.set_seed(0)
    left = run(cartpole, constant_actions(cartpole, -1.0, 30))
    # position[0] is the cart position: pushing right moves it right, left moves it left
    assert right[NEXT, "position"][-1, 0] > 0.1 > -0.1 > left[NEXT, "position"][-1, 0]


def test_invalid_actions_are_rejected(cartpole):
    td = cartpole.reset()
    td["action"] = torch.tensor([2.0], dtype=torch.float64)
    with pytest.raises(InvalidActionError, match="action"):
        cartpole.step(td)


# -- seeding -------------------------------------------------------------------------------


def test_same_seed_same_trajectory_other_seed_other_start(cartpole):
    actions = [a * 0.5 for a in constant_actions(cartpole, 1.0, 20)]
    assert cartpole.set_seed(7) == 8
    first = run(cartpole, actions)
    cartpole.set_seed(7)
    second = run(cartpole, actions)
    assert torch.equal(first["position"], second["position"])
    assert torch.equal(first[NEXT, REWARD], second[NEXT, REWARD])
    cartpole.set_seed(8)
    third = run(cartpole, actions)
    assert not torch.equal(first["position"][0], third["position"][0])


def test_set_seed_matches_dm_control_random_argument():
    with DMControlEnv("cartpole", "swingup", task_kwargs={"random": 3}) as seeded:
        expected = seeded.reset()["position"]
    with DMControlEnv("cartpole", "swingup") as env:
        env.set_seed(3)
        assert torch.equal(env.reset()["position"], expected)
        env.set_seed(3 + 2**32)  # numpy's RandomState takes 32-bit seeds
        assert torch.equal(env.reset()["position"], expected)


def test_seeding_an_env_without_a_random_state_is_unsupported(countdown):
    env = DMControlWrapper(countdown())
    with pytest.raises(UnsupportedEnvOperationError, match="RandomState"):
        env.set_seed(0)


# -- episode ends --------------------------------------------------------------------------


def test_time_limit_is_truncation_not_termination():
    # 0.1 s at cartpole's 0.01 s control step: the 10th step is the last
    with DMControlEnv("cartpole", "balance", task_kwargs={"time_limit": 0.1}) as env:
        traj = env.rollout(50)
    assert traj.batch_size == torch.Size([10])
    assert traj[NEXT, TRUNCATED][-1].item() and not traj[NEXT, TERMINATED].any()
    assert not traj[NEXT, DONE][:-1].any() and traj[NEXT, DONE][-1].item()
    assert traj[NEXT, DISCOUNT][-1].item() == 1.0


def test_last_step_with_zero_discount_is_termination():
    # lqr ends the episode (discount 0) when the state is at the origin: put it there
    with DMControlEnv("lqr", "lqr_2_1") as env:
        td = env.reset()
        physics = env.physics
        with physics.reset_context():
            physics.data.qpos[:] = 0.0
            physics.data.qvel[:] = 0.0
        td["action"] = torch.zeros(env.action_spec.shape, dtype=torch.float64)
        out = env.step(td)[NEXT]
    assert out[TERMINATED].item() and not out[TRUNCATED].item() and out[DONE].item()
    assert out[DISCOUNT].item() == 0.0


def test_termination_and_truncation_of_a_dm_env_environment(countdown):
    terminating = DMControlWrapper(countdown(start=4))
    td = terminating.reset()
    td["action"] = torch.tensor(2)
    flags = []
    for _ in range(2):
        td = terminating.step(td)
        flags.append([td[NEXT, k].item() for k in (TERMINATED, TRUNCATED, DONE)])
        td = terminating.step_mdp(td)
        td["action"] = torch.tensor(2)
    assert flags == [[False, False, False], [True, False, True]]

    truncating = DMControlWrapper(countdown(start=50, max_steps=3))
    traj = truncating.rollout(10, policy=lambda t: t.set("action", torch.tensor(1)))
    assert traj.batch_size == torch.Size([3])
    assert traj[NEXT, TRUNCATED][:, 0].tolist() == [False, False, True]
    assert not traj[NEXT, TERMINATED].any()
    assert traj[NEXT, REWARD].sum().item() == 3.0


def test_rollout_restarts_episodes_after_they_end():
    with DMControlEnv("cartpole", "balance", task_kwargs={"time_limit": 0.05}) as env:
        traj = env.rollout(12, break_when_any_done=False)
    assert traj.batch_size == torch.Size([12])
    assert traj[NEXT, TRUNCATED][:, 0].nonzero().flatten().tolist() == [4, 9]
    # the step after an end starts from a reset, not from the last observation
    assert not torch.equal(traj["position"][5], traj[NEXT, "position"][4])


def test_step_after_the_episode_ended_needs_a_reset(countdown):
    env = DMControlWrapper(countdown(start=2))
    td = env.reset()
    td["action"] = torch.tensor(2)
    td = env.step_mdp(env.step(td))
    td["action"] = torch.tensor(1)
    with pytest.raises(DMControlError, match="call reset"):
        env.step(td)
    with pytest.raises(DMControlError, match="call reset"):
        DMControlWrapper(countdown()).rand_step()


# -- frame skip ----------------------------------------------------------------------------


def test_frame_skip_repeats_the_action_and_sums_rewards():
    kwargs = {"task_kwargs": {"time_limit": 0.1, "random": 0}}
    with DMControlEnv("cartpole", "balance", frame_skip=2, **kwargs) as skipping:
        actions = [torch.tensor([v], dtype=torch.float64) for v in (0.3, -0.5, 1.0, 0.0, 0.7)]
        skipped = run(skipping, actions)
    with DMControlEnv("cartpole", "balance", **kwargs) as plain:
        full = run(plain, [a for a in actions for _ in range(2)])
    assert torch.allclose(skipped[NEXT, "position"], full[NEXT, "position"][1::2])
    assert torch.allclose(skipped[NEXT, REWARD][:, 0], full[NEXT, REWARD].view(5, 2).sum(-1))
    # the 10-step time limit arrives after 5 skipping steps
    assert skipped[NEXT, TRUNCATED][:, 0].tolist() == [False] * 4 + [True]


def test_frame_skip_stops_at_the_end_of_an_episode(countdown):
    env = DMControlWrapper(countdown(start=3), frame_skip=4)
    td = env.reset()
    td["action"] = torch.tensor(1)
    out = env.step(td)[NEXT]
    assert out[TERMINATED].item() and out[REWARD].item() == 3.0


# -- composition ---------------------------------------------------------------------------


def test_double_to_float_gives_a_float32_view():
    env = TransformedEnv(DMControlEnv("cartpole", "swingup"), DoubleToFloat())
    assert env.full_observation_spec["position"].dtype == torch.float32
    assert env.action_spec.dtype == torch.float32
    check_env_specs(env, steps=3, seed=0)
    traj = env.rollout(5)
    assert traj["position"].dtype == torch.float32 and traj["action"].dtype == torch.float32
    env.close()


def test_serial_env_batches_dm_control_tasks():
    env = SerialEnv(2, lambda: DMControlEnv("cartpole", "swingup"))
    try:
        assert env.set_seed(0) == 2
        traj = env.rollout(5)
        assert traj.batch_size == torch.Size([2, 5])
        assert traj[NEXT, "position"].shape == (2, 5, 3)
        # sub-env i is seeded with 0 + i: different starts
        assert not torch.equal(traj["position"][0, 0], traj["position"][1, 0])
    finally:
        env.close()


def test_device_is_honoured():
    with DMControlEnv("cartpole", "swingup", device=torch.device("cpu")) as env:
        assert env.device == torch.device("cpu")
        traj = env.rollout(3)
        assert all(v.device == env.device for v in traj.values(True, True))
        assert all(s.device == env.device for s in env.full_observation_spec.values(True, True))


# -- construction and lifetime -------------------------------------------------------------


def test_wrapper_takes_a_suite_env_and_rejects_other_objects():
    from dm_control import suite

    env = DMControlWrapper(suite.load("cartpole", "swingup"))
    assert env.env.physics is env.physics
    assert env.rollout(3).batch_size == torch.Size([3])
    with pytest.raises(TypeError, match=r"dm_env\.Environment.*DMControlEnv"):
        DMControlWrapper(object())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frame_skip": 0}, "frame_skip must be a positive int"),
        ({"height": 2.5}, "height must be a positive int"),
        ({"pixels_only": True}, "pixels_only=True needs from_pixels=True"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DMControlEnv("cartpole", "swingup", **kwargs)


def test_dm_control_errors_name_the_task_and_kwargs():
    with pytest.raises(TypeError) as info:
        DMControlEnv("cartpole", "swingup", task_kwargs={"no_such_argument": 1})
    assert "cartpole/swingup" in "\n".join(info.value.__notes__)


def test_pixels_need_physics(countdown):
    with pytest.raises(UnsupportedEnvOperationError, match="no MuJoCo physics"):
        DMControlWrapper(countdown(), from_pixels=True)


def test_close_is_idempotent_and_final(cartpole):
    cartpole.close()
    cartpole.close()
    with pytest.raises(EnvClosedError):
        cartpole.reset()


def test_repr_names_the_task(cartpole):
    assert repr(cartpole).startswith("DMControlEnv('cartpole', 'swingup'")


def test_discount_is_kept_for_every_step(countdown):
    env = DMControlWrapper(countdown(start=2))
    traj = env.rollout(5, policy=lambda t: t.set("action", torch.tensor(1)))
    assert traj[DISCOUNT][:, 0].tolist() == [1.0, 1.0]
    assert traj[NEXT, DISCOUNT][:, 0].tolist() == [1.0, 0.0]
    assert np.isclose(traj[NEXT, REWARD].sum().item(), 2.0)
