"""rlblocks-atari: make_atari_env against the ALE itself (ale-py ships the ROMs)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlblocks.atari import OBSERVATION, atari_env_id, list_games, make_atari_env
from rlblocks.core import UnknownComponentError, make_env
from rlblocks.envs import SerialEnv, check_env_specs


@pytest.fixture(autouse=True)
def _single_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pong_specs_and_a_rollout():
    env = make_atari_env("Pong")
    spec = env.observation_spec[OBSERVATION]
    assert spec.shape == (4, 84, 84) and spec.dtype == torch.uint8
    assert env.action_spec.n == 6
    check_env_specs(env)
    trajectory = env.rollout(300, break_when_any_done=False)
    assert trajectory[OBSERVATION].dtype == torch.uint8
    assert set(trajectory["next", "reward"].unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert trajectory["next", "end-of-life"].shape == (300, 1)


def test_frames_match_a_hand_written_loop_over_the_ale():
    # noop and FIRE off, no sticky actions: four frames per action, the max of the last
    # two grayscale screens, resized to 84x84 (torch's antialiased bilinear on uint8).
    env = make_atari_env(
        "Pong", noop_max=0, fire_reset=False, frame_stack=2, repeat_action_probability=0.0
    )
    raw = gym.make("ALE/Pong-v5", frameskip=1, obs_type="grayscale", repeat_action_probability=0.0)
    env.set_seed(5)
    td = env.reset()
    obs, _ = raw.reset(seed=5)
    actions = [2, 3, 0, 2, 2, 3, 1, 0] * 10

    def resized(screen: np.ndarray) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(screen))[None, None]
        return F.interpolate(image, size=(84, 84), mode="bilinear", antialias=True)[0, 0]

    previous = resized(obs)
    for action in actions:
        td = env.step(td.set("action", torch.tensor(action)))
        frames, total = [], 0.0
        for _ in range(4):
            screen, reward, *_ = raw.step(action)
            frames.append(screen)
            total += reward
        expected = resized(np.maximum(frames[-2], frames[-1]))
        stack = td["next", OBSERVATION]
        assert torch.equal(stack[-1], expected)
        assert torch.equal(stack[0], previous)
        assert td["next", "reward"].item() == np.sign(total)
        previous = expected
        td = env.step_mdp(td)


def test_end_of_life_is_flagged_when_a_life_is_lost_and_the_game_goes_on():
    env = make_atari_env("Breakout", repeat_action_probability=0.0)
    env.set_seed(0)
    trajectory = env.rollout(300, break_when_any_done=False)
    eol = trajectory["next", "end-of-life"].flatten()
    lives, next_lives = trajectory["lives"], trajectory["next", "lives"]
    done = trajectory["next", "done"].flatten()
    assert torch.equal(eol, (next_lives < lives) | done)
    assert (eol & ~done).any()  # lives lost inside a game


def test_fire_reset_launches_the_ball_in_breakout():
    def screens_change(fire_reset: bool) -> bool:
        env = make_atari_env("Breakout", noop_max=0, fire_reset=fire_reset, frame_stack=1)
        env.set_seed(0)
        trajectory = env.rollout(20, lambda td: td.set("action", torch.tensor(0)))
        frames = trajectory["next", OBSERVATION]
        return bool((frames != frames[0]).any())

    assert screens_change(True)  # the ball moves
    assert not screens_change(False)  # NOOPs alone never start the game


def test_game_ids_and_the_backend_entry_point():
    assert atari_env_id("Pong") == atari_env_id("Pong-v5") == "ALE/Pong-v5"
    assert "ALE/Breakout-v5" in list_games()
    env = make_env("atari:Pong", frame_stack=2)
    assert env.observation_spec[OBSERVATION].shape == (2, 84, 84)


def test_batched_games_in_a_serial_env():
    env = SerialEnv(2, lambda: make_atari_env("Pong", frame_stack=2))
    env.set_seed(0)
    trajectory = env.rollout(20)
    assert trajectory[OBSERVATION].shape == (2, 20, 2, 84, 84)


def test_bad_input_is_named():
    with pytest.raises(UnknownComponentError, match="did you mean ALE/Pong-v5"):
        make_atari_env("Pongg")
    with pytest.raises(TypeError, match="sets 'frameskip' itself"):
        make_atari_env("Pong", frameskip=4)
    with pytest.raises(Exception, match="frame_skip must be a positive int"):
        make_atari_env("Pong", frame_skip=0)
