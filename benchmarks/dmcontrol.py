"""rlblocks-dmcontrol speed, as a ratio against the bare dm_control loop in the same run.

    python benchmarks/dmcontrol.py [--steps 1000] [--repeat 5]

Target (issue 14, d): ``SerialEnv(4, DMControlEnv("cartpole", "swingup"))``'s
``rollout(N, break_when_any_done=False)`` takes <= 1.3x the time of the physical limit:
four ``dm_control.suite.load("cartpole", "swingup")`` envs stepped in a Python loop, the
bare ``env.step(action)`` call and nothing else in the loop (dm_env restarts an episode by
itself on the step after its last), with uniformly random actions pre-drawn outside the
timed loop. Both sides reset every env, then run N lockstep steps of the four.

The rollout draws its own uniformly random actions from the action spec (the generic
rollout's own action source, counted against it). An information figure feeds the rollout
the reference's very actions through a policy instead (the per-step path).

Every figure is measured with this process at torch's default thread count and at one
thread, as the median over ``--repeat`` interleaved rounds. Without dm_control (or without
rlblocks-dmcontrol) the script says so and measures nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from _timing import (
    Replay,
    Target,
    compare_at_thread_counts,
    missed_targets,
    replay_rollout,
    thread_counts,
    threads_label,
)

from rlblocks.envs import SerialEnv

DOMAIN, TASK = "cartpole", "swingup"
NUM_ENVS = 4


def raw_loop(envs: list[Any], actions: np.ndarray) -> Callable[[], None]:
    """Reset every env, then the bare step calls: ``actions`` is ``[steps, envs, *action]``."""

    def run() -> None:
        for env in envs:
            env.reset()
        for row in actions:
            for env, action in zip(envs, row):
                env.step(action)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="lockstep steps per loop")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure")
    args = parser.parse_args()
    try:
        from dm_control import suite
    except ImportError as err:
        print(f"dm_control not installed ({err}); no figure measured")
        return 0
    try:
        from rlblocks.dmcontrol import DMControlEnv
    except ImportError as err:
        print(f"rlblocks-dmcontrol not installed ({err}); no figure measured")
        return 0

    n, r = args.steps, args.repeat
    print(
        f"dm_control {DOMAIN}/{TASK}, {NUM_ENVS} envs, {n} lockstep steps per loop, uniformly "
        f"random actions; this process at {' and at '.join(map(threads_label, thread_counts()))}"
    )
    print("time ratio, rlblocks / bare dm_control step loop (lower is better)\n")
    ours = SerialEnv(NUM_ENVS, partial(DMControlEnv, DOMAIN, TASK))
    raw_envs = [suite.load(DOMAIN, TASK, task_kwargs={"random": seed}) for seed in range(NUM_ENVS)]
    actions = ours.action_spec.rand((n,))  # [n, 4, 1], float64 in [-1, 1]
    results: dict[str, tuple[float, Target]] = {}
    try:
        compare_at_thread_counts(
            results,
            "d_rollout",
            "d. SerialEnv(4, DMControlEnv).rollout / bare dm_control step loop",
            replay_rollout(ours, n, None),
            raw_loop(raw_envs, actions.numpy()),
            r,
            Target(1.3),
        )
        compare_at_thread_counts(
            results,
            "d_rollout_replay",
            "   rollout(policy=replay of the reference's actions) / bare loop",
            replay_rollout(ours, n, Replay(actions)),
            raw_loop(raw_envs, actions.numpy()),
            r,
            "(info: per-step path)",
        )
    finally:
        ours.close()
        for env in raw_envs:
            env.close()
    print(f"\n{missed_targets(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
