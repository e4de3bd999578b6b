"""rlblocks-vmas speed, as frames/s ratios against the bare VMAS step loop in the same run.

    python benchmarks/rlvmas.py [--num-envs 1024] [--n-agents 3] [--steps 100] [--repeat 5]

VMAS ``navigation`` with ``--n-agents`` agents, ``--num-envs`` envs simulated together in
torch on the CPU, no step limit (random actions never end an episode, so neither side
resets inside the loop). Both sides reset once, then take ``--steps`` steps with the same
uniformly random continuous actions, drawn before the timed loops
(``[steps, num_envs, n_agents, 2]``). The reference is the physical limit: VMAS's own
``env.step(actions)`` called with the per-agent action tensors and nothing else in the
loop. Targets (issue 15), frames/s of rlblocks over frames/s of that loop:

* a loop of ``td.set(("agents", "action"), a); td = env.step_mdp(env.step(td))`` >= 0.8x;
* ``env.rollout(steps, policy=replay, break_when_any_done=False)``, the policy writing the
  pre-drawn actions one step at a time, >= 0.8x.

Both rlblocks loops validate the actions against the spec (``check_actions``, on by
default), as a user's loop would. Every figure is measured with this process at torch's
default thread count and at one thread, as the median over ``--repeat`` interleaved rounds.
Without VMAS (or without rlblocks-vmas) the script says so and measures nothing. (The file
is not named ``vmas.py``: run as a script from this folder, it would shadow the ``vmas``
package.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

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

SCENARIO = "navigation"
GROUP_ACTION = ("agents", "action")


def raw_loop(env: Any, actions: list[list[torch.Tensor]]) -> Callable[[], None]:
    """Reset, then the bare ``env.step`` calls; ``actions`` holds one per-agent list a step."""

    def run() -> None:
        env.reset()
        for step_actions in actions:
            env.step(step_actions)

    return run


def step_loop(env: Any, actions: torch.Tensor) -> Callable[[], None]:
    """Reset, then ``env.step`` + ``env.step_mdp`` on each row of ``actions``."""

    def run() -> None:
        td = env.reset()
        for action in actions:
            td.set(GROUP_ACTION, action)
            td = env.step_mdp(env.step(td))

    return run


def rollout(env: Any, actions: torch.Tensor) -> Callable[[], None]:
    return replay_rollout(env, len(actions), Replay(actions, GROUP_ACTION))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=1024, help="envs simulated together")
    parser.add_argument("--n-agents", type=int, default=3, help="agents per env")
    parser.add_argument("--steps", type=int, default=100, help="steps per loop")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure")
    args = parser.parse_args()
    try:
        import vmas
    except ImportError as err:
        print(f"vmas not installed ({err}); no figure measured")
        return 0
    try:
        from rlblocks.vmas import VmasEnv
    except ImportError as err:
        print(f"rlblocks-vmas not installed ({err}); no figure measured")
        return 0

    n, m, steps = args.num_envs, args.n_agents, args.steps
    print(
        f"VMAS {SCENARIO}, {n} envs x {m} agents on the CPU, {steps} steps per loop, "
        f"pre-drawn uniformly random actions; this process at "
        f"{' and at '.join(map(threads_label, thread_counts()))}"
    )
    print("frames/s, rlblocks vs bare VMAS env.step loop, and their ratio (higher is better)\n")
    ours = VmasEnv(SCENARIO, num_envs=n, n_agents=m, seed=0)
    raw = vmas.make_env(SCENARIO, num_envs=n, n_agents=m, seed=0)
    generator = torch.Generator().manual_seed(0)
    actions = torch.rand(steps, n, m, 2, generator=generator) * 2 - 1
    raw_actions = [list(a.unbind(1)) for a in actions]  # per step: m tensors [n, 2]
    frames = n * steps
    results: dict[str, tuple[float, Target]] = {}
    target = Target(0.8, at_least=True)
    compare_rates_at_thread_counts(
        results,
        "step",
        "a. env.step + env.step_mdp / bare env.step",
        step_loop(ours, actions),
        raw_loop(raw, raw_actions),
        frames,
        "frames/s",
        args.repeat,
        target,
        speed_ratio=True,
    )
    compare_rates_at_thread_counts(
        results,
        "rollout",
        "b. env.rollout(policy=replay) / bare env.step",
        rollout(ours, actions),
        raw_loop(raw, raw_actions),
        frames,
        "frames/s",
        args.repeat,
        target,
        speed_ratio=True,
    )
    print(f"\n{missed_targets(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
