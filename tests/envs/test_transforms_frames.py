"""CatFrames: stacking, padding, partial resets, plain trajectories and specs."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.specs import Bounded
from rlblocks.envs import CartPoleEnv, GymEnv, PendulumEnv, SerialEnv, check_env_specs
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms import CatFrames, Compose, InitTracker, StepCounter, TransformedEnv


def _stack_env(counting_env_cls, batch_size=(), limit=100, **kwargs):
    frames = CatFrames(3, dim=-1, in_keys=["observation"], out_keys=["stack"], **kwargs)
    return TransformedEnv(counting_env_cls(batch_size=batch_size, limit=limit), frames)


def test_stack_after_reset_and_steps(counting_env_cls):
    env = _stack_env(counting_env_cls)
    td = env.reset()
    assert td["stack"].tolist() == [0, 0, 0]  # padded with the first frame
    rows = []
    for _ in range(3):
        td = env.step_mdp(env.rand_step(td))
        rows.append(td["stack"].tolist())
    assert rows == [[0, 0, 1], [0, 1, 2], [1, 2, 3]]
    assert td["observation"].tolist() == [3]  # the frame itself is kept (out_keys)


def test_constant_padding(counting_env_cls):
    env = _stack_env(counting_env_cls, padding="constant", padding_value=-1)
    td = env.reset()
    assert td["stack"].tolist() == [-1, -1, 0]
    assert env.step_mdp(env.rand_step(td))["stack"].tolist() == [-1, 0, 1]


def test_partial_reset_restarts_only_the_reset_elements(counting_env_cls):
    env = _stack_env(counting_env_cls, batch_size=[2])
    td = env.reset()
    for _ in range(2):
        td = env.step_mdp(env.rand_step(td))
    assert td["stack"].tolist() == [[0, 1, 2], [0, 1, 2]]
    td.set("_reset", torch.tensor([[True], [False]]))
    td = env.reset(td)
    assert td["stack"].tolist() == [[0, 0, 0], [0, 1, 2]]
    td = env.step_mdp(env.rand_step(td))
    assert td["stack"].tolist() == [[0, 0, 1], [1, 2, 3]]


def test_rollout_restarts_stacks_at_episode_ends(counting_env_cls):
    env = _stack_env(counting_env_cls, batch_size=[2], limit=3)
    td = env.rollout(7, break_when_any_done=False)
    expected_root = [[0, 0, 0], [0, 0, 1], [0, 1, 2], [0, 0, 0], [0, 0, 1], [0, 1, 2], [0, 0, 0]]
    assert td["stack"][1].tolist() == expected_root
    assert td["next", "stack"][1, 2].tolist() == [1, 2, 3]


def test_plain_trajectory_matches_stepping(counting_env_cls):
    env = _stack_env(counting_env_cls, batch_size=[2], limit=3)
    stepped = env.rollout(8, break_when_any_done=False)
    raw = counting_env_cls(batch_size=[2], limit=3).rollout(8, break_when_any_done=False)
    stacked = CatFrames(3, dim=-1, in_keys=["observation"], out_keys=["stack"])(raw)
    assert torch.equal(stacked["stack"], stepped["stack"])
    assert torch.equal(stacked["next", "stack"], stepped["next", "stack"])


def test_plain_trajectory_of_images_with_constant_padding():
    frames = torch.arange(5.0).reshape(5, 1, 1, 1).expand(5, 1, 2, 2)
    done = torch.tensor([False, True, False, False, False]).reshape(5, 1)
    td = TensorDict(
        {"pixels": frames, "next": {"pixels": frames + 1, "done": done}}, batch_size=[5]
    )
    out = CatFrames(2, dim=-3, padding="constant", padding_value=-1.0)(td)
    assert out["pixels"].shape == (5, 2, 2, 2)
    assert out["pixels"][:, :, 0, 0].tolist() == [[-1, 0], [0, 1], [-1, 2], [2, 3], [3, 4]]
    assert out["next", "pixels"][:, :, 0, 0].tolist() == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]


def test_single_transition_without_time_dim():
    td = TensorDict({"pixels": torch.ones(1, 2, 2), "next": {"pixels": torch.zeros(1, 2, 2)}}, [])
    out = CatFrames(3, dim=-3)(td)
    assert out["pixels"].shape == (3, 2, 2) and out["pixels"].eq(1).all()
    assert out["next", "pixels"][:, 0, 0].tolist() == [1, 1, 0]


def test_fast_gym_rollout_matches_the_trajectory_form():
    env = TransformedEnv(
        GymEnv("CartPole-v1"),
        Compose(StepCounter(6), CatFrames(2, dim=-1, in_keys=["observation"], out_keys=["s"])),
    )
    td = env.rollout(20, break_when_any_done=False)
    obs, stack, done = td["observation"], td["s"], td["next", "done"].squeeze(-1)
    for t in range(20):
        previous = obs[t] if t == 0 or done[t - 1] else obs[t - 1]
        assert torch.equal(stack[t], torch.cat([previous, obs[t]]))
    torch.testing.assert_close(td["next", "s"][:, 4:], td["next", "observation"])


def test_specs_repeat_bounds_and_widen_them_for_padding():
    env = TransformedEnv(PendulumEnv(batch_size=[3]), CatFrames(4, -1, ["observation"]))
    check_env_specs(env)
    spec = env.observation_spec["observation"]
    assert isinstance(spec, Bounded) and spec.shape == (3, 12)
    assert spec.high[0].tolist() == [1.0, 1.0, 8.0] * 4
    padded = TransformedEnv(
        PendulumEnv(),
        CatFrames(2, -1, ["observation"], padding="constant", padding_value=-20.0),
    )
    assert padded.observation_spec["observation"].low.tolist() == [-20.0] * 6
    check_env_specs(padded)


def test_batched_cartpole_check_env_specs():
    env = TransformedEnv(CartPoleEnv(batch_size=[5]), CatFrames(3, -1, ["observation"]))
    check_env_specs(env)
    assert env.rollout(40, break_when_any_done=False)["next", "observation"].shape == (5, 40, 12)


def test_rand_step_without_a_previous_stack_starts_a_new_one(counting_env_cls):
    env = _stack_env(counting_env_cls)
    env.reset()
    assert env.rand_step()["next", "stack"].tolist() == [1, 1, 1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"N": 0, "dim": -1}, "N must be a positive int"),
        ({"N": 2, "dim": -1, "padding": "reflect"}, "padding must be one of"),
        ({"N": 2, "dim": 1.0}, "dim must be an int"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(TransformError, match=match):
        CatFrames(**kwargs)


def test_dim_outside_the_observation_is_reported_at_spec_time():
    env = TransformedEnv(PendulumEnv(), CatFrames(2, dim=-3, in_keys=["observation"]))
    with pytest.raises(TransformError, match=r"dim -3 is not a feature dim of 'observation'"):
        env.observation_spec  # noqa: B018


def test_partial_resets_of_a_serial_env_with_different_episode_lengths(counting_env_cls):
    base = SerialEnv(2, counting_env_cls, [{"limit": 2}, {"limit": 3}])
    frames = CatFrames(2, dim=-1, in_keys=["observation"], out_keys=["stack"])
    env = TransformedEnv(base, Compose(frames, InitTracker()))
    td = env.rollout(6, break_when_any_done=False)
    assert td["stack"][0].tolist() == [[0, 0], [0, 1], [0, 0], [0, 1], [0, 0], [0, 1]]
    assert td["stack"][1].tolist() == [[0, 0], [0, 1], [1, 2], [0, 0], [0, 1], [1, 2]]
    assert td["is_init"][1].flatten().tolist() == [True, False, False, True, False, False]
    env.close()
