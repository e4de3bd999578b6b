"""rlblocks-pettingzoo speed, as time ratios against the raw PettingZoo loop in the same run.

    python benchmarks/rlpettingzoo.py [--steps 20000] [--repeat 5]

MPE ``simple_spread_v3`` (``N=3``, ``max_cycles=25``) through PettingZoo's parallel API.
The reference is the physical limit: the raw loop calling ``env.step(actions)`` with the
per-agent action dicts built before the timed loop, and ``env.reset()`` when the episode is
over (``env.agents`` empty), nothing else. Both sides reset with seed 0, then take
``--steps`` steps with the same uniformly random actions, drawn before the timed loops
(``[steps, 3]``). Target (issue 15), time of rlblocks over time of that loop:

* a. ``env.rollout(steps, policy=replay, break_when_any_done=False)``, the policy writing
  the pre-drawn actions one step at a time: <= 1.5x;
* b. a loop of ``td.set(("agents", "action"), a); td = env.step_mdp(env.step(td))`` with
  ``env.reset()`` when ``td["done"]`` is set: printed for information.

Both rlblocks loops validate the actions against the spec (``check_actions``, on by
default), as a user's loop would. Every figure is measured with this process at torch's
default thread count and at one thread, as the median over ``--repeat`` interleaved rounds.
Without PettingZoo, mpe2 or rlblocks-pettingzoo the script says so and measures nothing.
(The file is not named ``pettingzoo.py``: run as a script from this folder, it would shadow
the ``pettingzoo`` package.)
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

N_AGENTS, MAX_CYCLES = 3, 25
GROUP_ACTION = ("agents", "action")


def raw_loop(env: Any, actions: list[dict[str, int]]) -> Callable[[], None]:
    """Reset with seed 0, then the bare ``env.step`` calls, resetting when the episode ends."""

    def run() -> None:
        env.reset(seed=0)
        step, reset = env.step, env.reset
        for step_actions in actions:
            step(step_actions)
            if not env.agents:
                reset()

    return run


def rollout(env: Any, actions: torch.Tensor) -> Callable[[], None]:
    return replay_rollout(env, len(actions), Replay(actions, GROUP_ACTION))


def step_loop(env: Any, actions: torch.Tensor) -> Callable[[], None]:
    """Reset with seed 0, then ``env.step`` + ``env.step_mdp`` on each row of ``actions``."""

    def run() -> None:
        td = env.reset(seed=0)
        for action in actions:
            td.set(GROUP_ACTION, action)
            td = env.step_mdp(env.step(td))
            if td["done"].item():
                td = env.reset()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="steps per loop")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure")
    args = parser.parse_args()
    try:
        from mpe2 import simple_spread_v3
    except ImportError as err:
        print(f"PettingZoo or mpe2 not installed ({err}); no figure measured")
        return 0
    try:
        from rlblocks.pettingzoo import PettingZooWrapper
    except ImportError as err:
        print(f"rlblocks-pettingzoo not installed ({err}); no figure measured")
        return 0

    steps = args.steps
    print(
        f"PettingZoo MPE simple_spread_v3 (N={N_AGENTS}, max_cycles={MAX_CYCLES}), parallel "
        f"API, {steps} steps per loop, pre-drawn uniformly random actions; this process at "
        f"{' and at '.join(map(threads_label, thread_counts()))}"
    )
    print("steps/s, rlblocks vs raw PettingZoo step loop; time ratio (lower is better)\n")
    ours = PettingZooWrapper(simple_spread_v3.parallel_env(N=N_AGENTS, max_cycles=MAX_CYCLES))
    raw = simple_spread_v3.parallel_env(N=N_AGENTS, max_cycles=MAX_CYCLES)
    agents = ours.group_map["agents"]
    draws = np.random.default_rng(0).integers(0, 5, (steps, N_AGENTS))
    actions = torch.as_tensor(draws)
    raw_actions = [dict(zip(agents, row)) for row in draws.tolist()]
    results: dict[str, tuple[float, Target]] = {}
    try:
        compare_rates_at_thread_counts(
            results,
            "rollout",
            "a. env.rollout(policy=replay) / raw step loop",
            rollout(ours, actions),
            raw_loop(raw, raw_actions),
            steps,
            "steps/s",
            args.repeat,
            Target(1.5),
        )
        compare_rates_at_thread_counts(
            results,
            "step",
            "b. env.step + env.step_mdp loop / raw step loop",
            step_loop(ours, actions),
            raw_loop(raw, raw_actions),
            steps,
            "steps/s",
            args.repeat,
            "(info)",
        )
    finally:
        ours.close()
        raw.close()
    print(f"\n{missed_targets(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
