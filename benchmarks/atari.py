"""rlblocks-atari's preprocessing speed, as a ratio against gymnasium's own Atari wrappers.

    python benchmarks/atari.py [--game Pong] [--steps 1000] [--repeat 5]

Target (issue 19): ``make_atari_env(game)`` steps at >= 0.8x the frames/s of the same
preprocessing done with gymnasium's wrappers in the same run: ``FrameStackObservation(
TransformReward(AtariPreprocessing(gym.make(id, frameskip=1)), np.sign), 4)``.
Both sides: the same game and ALE settings (sticky actions 0.25, the minimal action set),
up to 30 NOOP frames after a reset, 4 frames per step with the screen max-pooled over the
last two, the ALE's grayscale screen resized to 84x84 (gymnasium: OpenCV's area filter;
rlblocks: torch's antialiased bilinear filter on uint8), 4 frames stacked, rewards clipped
to their sign. Both loops take the same pre-drawn uniformly random actions, one step per
call, and reset when an episode ends; neither keeps the observations. rlblocks also adds
the end-of-life flag and presses FIRE after resets in games that need it (counted against
it). An information figure runs ``env.rollout`` (which stores the trajectory) instead.

Every figure is measured at torch's default thread count and at one thread, as the median
over ``--repeat`` interleaved rounds. Without ale-py, OpenCV or rlblocks-atari the script
says so and measures nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _timing import (
    Replay,
    Target,
    compare_rates_at_thread_counts,
    missed_targets,
    replay_rollout,
    thread_counts,
    threads_label,
)

FRAME_SKIP = 4


def rlblocks_loop(env: Any, actions: torch.Tensor) -> Callable[[], None]:
    """Reset, then one ``step_and_maybe_reset`` per pre-drawn action."""

    def run() -> None:
        td = env.reset()
        for action in actions:
            td.set("action", action)
            _, td = env.step_and_maybe_reset(td)

    return run


def gymnasium_loop(env: Any, actions: np.ndarray) -> Callable[[], None]:
    """Reset, then one ``env.step`` per pre-drawn action, resetting at an episode's end."""

    def run() -> None:
        env.reset()
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Pong", help="ALE game")
    parser.add_argument("--steps", type=int, default=1000, help="agent steps per loop")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure")
    args = parser.parse_args()
    try:
        import cv2  # noqa: F401  (gymnasium's AtariPreprocessing resizes with OpenCV)
        import gymnasium as gym
        from gymnasium.wrappers import (
            AtariPreprocessing,
            FrameStackObservation,
            TransformReward,
        )

        from rlblocks.atari import atari_env_id, make_atari_env
    except ImportError as err:
        print(f"ale-py, OpenCV or rlblocks-atari not installed ({err}); no figure measured")
        return 0

    n, r = args.steps, args.repeat
    env_id = atari_env_id(args.game)
    ours = make_atari_env(env_id)
    ours.set_seed(0)
    raw = gym.make(env_id, frameskip=1, repeat_action_probability=0.25)
    preprocessed = AtariPreprocessing(
        raw, noop_max=30, frame_skip=FRAME_SKIP, screen_size=84, grayscale_obs=True
    )
    reference = FrameStackObservation(TransformReward(preprocessed, np.sign), 4)
    reference.reset(seed=0)
    actions = ours.action_spec.rand((n,))
    print(
        f"{env_id}, {FRAME_SKIP} frames per step, {n} steps per loop, uniformly random "
        f"actions; this process at {' and at '.join(map(threads_label, thread_counts()))}"
    )
    print("frames/s (game frames), rlblocks vs gymnasium's wrappers, and their ratio\n")
    results: dict[str, tuple[float, Target]] = {}
    frames = n * FRAME_SKIP
    try:
        compare_rates_at_thread_counts(
            results,
            "atari_step",
            "make_atari_env step loop / gymnasium wrappers",
            rlblocks_loop(ours, actions),
            gymnasium_loop(reference, actions.numpy()),
            frames,
            "frames/s",
            r,
            Target(0.8, at_least=True),
            speed_ratio=True,
        )
        compare_rates_at_thread_counts(
            results,
            "atari_rollout",
            "make_atari_env rollout (stores it) / gymnasium",
            replay_rollout(ours, n, Replay(actions)),
            gymnasium_loop(reference, actions.numpy()),
            frames,
            "frames/s",
            r,
            "(info: rollout path)",
            speed_ratio=True,
        )
    finally:
        ours.close()
        reference.close()
    print(f"\n{missed_targets(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
