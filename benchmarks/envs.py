"""rlblocks-envs speed, as ratios against raw gymnasium loops measured in the same run.

    python benchmarks/envs.py [--steps 10000] [--repeat 5]

Every figure compares an rlblocks loop with the raw gymnasium loop doing the same work
(CartPole-v1, uniformly random actions), timed alternately so that drifts in machine load
hit both alike; the printed ratio is the median over ``--repeat`` rounds. Targets (issue 3):

* ``GymEnv("CartPole-v1").rollout(N, break_when_any_done=False)`` per step <= 1.3x a raw
  ``env.step(env.action_space.sample())`` loop;
* a Python loop of ``env.step(td)`` + ``step_mdp`` <= 4x the raw loop;
* ``GymEnv(num_envs=8)`` and ``SerialEnv(8, ...)`` frames/s >= 0.9x a raw ``SyncVectorEnv``
  of 8, ``ParallelEnv(2, ...)`` of 4-env workers >= 0.9x a raw ``AsyncVectorEnv`` of 8;
* ``StepCounter`` + ``RewardSum`` + ``DoubleToFloat`` add <= 20% to a rollout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import gymnasium as gym
import torch

from rlblocks.core import step_mdp
from rlblocks.envs import (
    Compose,
    GymEnv,
    ParallelEnv,
    RewardSum,
    SerialEnv,
    StepCounter,
    TransformedEnv,
)
from rlblocks.envs.transforms import DoubleToFloat

ENV_ID = "CartPole-v1"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- raw gymnasium references ------------------------------------------------------------


def raw_single(steps: int) -> Callable[[], None]:
    env = gym.make(ENV_ID)
    env.reset(seed=0)

    def run() -> None:
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()

    return run


def raw_vector(steps: int, mode: str) -> Callable[[], None]:
    env = gym.make_vec(ENV_ID, 8, vectorization_mode=mode)
    env.reset(seed=0)

    def run() -> None:
        for _ in range(steps):
            env.step(env.action_space.sample())

    return run


# -- rlblocks loops ----------------------------------------------------------------------


def rollout(env, steps: int) -> Callable[[], None]:
    env.set_seed(0)
    return lambda: env.rollout(steps, break_when_any_done=False)


def policy_rollout(env, steps: int) -> Callable[[], None]:
    # A policy in the loop takes the per-step path (no whole-trajectory numpy loop): this is
    # what training with an actor costs, beyond the policy's own forward pass.
    env.set_seed(0)
    return lambda: env.rollout(steps, policy=env.rand_action, break_when_any_done=False)


def step_loop(env, steps: int) -> Callable[[], None]:
    def run() -> None:
        td = env.reset()
        for _ in range(steps):
            td = step_mdp(env.step(env.rand_action(td)))
            if td["done"].any():
                td = env.reset()

    return run


def step_and_maybe_reset_loop(env, steps: int) -> Callable[[], None]:
    def run() -> None:
        td = env.reset()
        for _ in range(steps):
            _, td = env.step_and_maybe_reset(env.rand_action(td))

    return run


def compare(
    name: str, ours: Callable[[], None], ref: Callable[[], None], repeat: int, target: str
) -> float:
    """Median of ``time(ours) / time(ref)`` over interleaved rounds (after a warm-up)."""
    ours()
    ref()
    ratios = []
    for _ in range(repeat):
        ratios.append(timed(ours) / timed(ref))
    ratio = statistics.median(ratios)
    print(f"{name:<62} {ratio:6.2f}x   target {target}")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="steps per single-env loop")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n, r = args.steps, args.repeat
    vec_steps = max(n // 8, 1)
    print(f"CartPole-v1, random actions; {n} steps per single-env loop, {vec_steps} per 8-env")
    print("time ratio, rlblocks / raw gymnasium (lower is better; frames/s ratio = 1 / this)\n")

    single_raw = raw_single(n)
    results = {}
    results["rollout"] = compare(
        "GymEnv.rollout(N, break_when_any_done=False) / raw step loop",
        rollout(GymEnv(ENV_ID), n),
        single_raw,
        r,
        "<= 1.3x",
    )
    compare(
        "GymEnv.rollout(N, policy=env.rand_action) / raw step loop",
        policy_rollout(GymEnv(ENV_ID), n),
        single_raw,
        r,
        "(info: per-step path)",
    )
    results["step"] = compare(
        "loop of env.step(td) + step_mdp / raw step loop",
        step_loop(GymEnv(ENV_ID), n),
        single_raw,
        r,
        "<= 4x",
    )
    compare(
        "loop of env.step_and_maybe_reset(td) / raw step loop",
        step_and_maybe_reset_loop(GymEnv(ENV_ID), n),
        single_raw,
        r,
        "(info)",
    )
    plain = GymEnv(ENV_ID)
    transformed = TransformedEnv(
        GymEnv(ENV_ID), Compose(StepCounter(500), RewardSum(), DoubleToFloat())
    )
    results["transforms"] = compare(
        "rollout with StepCounter+RewardSum+DoubleToFloat / without",
        rollout(transformed, n),
        rollout(plain, n),
        r,
        "<= 1.2x",
    )
    sync_raw = raw_vector(vec_steps, "sync")
    results["vector"] = compare(
        "GymEnv(num_envs=8).rollout / raw SyncVectorEnv(8) loop",
        rollout(GymEnv(ENV_ID, num_envs=8), vec_steps),
        sync_raw,
        r,
        "<= 1.11x (>= 0.9x frames/s)",
    )
    serial = SerialEnv(8, lambda: GymEnv(ENV_ID))
    results["serial"] = compare(
        "SerialEnv(8, GymEnv).rollout / raw SyncVectorEnv(8) loop",
        rollout(serial, vec_steps),
        sync_raw,
        r,
        "<= 1.11x (>= 0.9x frames/s)",
    )
    async_raw = raw_vector(vec_steps, "async")
    parallel = ParallelEnv(2, lambda: GymEnv(ENV_ID, num_envs=4))
    try:
        results["parallel"] = compare(
            "ParallelEnv(2 x GymEnv(num_envs=4)).rollout / raw AsyncVectorEnv(8)",
            rollout(parallel, vec_steps),
            async_raw,
            r,
            "<= 1.11x (>= 0.9x frames/s)",
        )
        compare(
            "ParallelEnv(2 x 4) step_and_maybe_reset loop / raw AsyncVectorEnv(8)",
            step_and_maybe_reset_loop(parallel, vec_steps),
            async_raw,
            r,
            "(info: lockstep, one round trip per step)",
        )
        compare(
            "SerialEnv(8) step_and_maybe_reset loop / raw SyncVectorEnv(8)",
            step_and_maybe_reset_loop(serial, vec_steps),
            sync_raw,
            r,
            "(info: TensorDict per step)",
        )
    finally:
        parallel.close()
    limits = {
        "rollout": 1.3,
        "step": 4.0,
        "transforms": 1.2,
        "vector": 1 / 0.9,
        "serial": 1 / 0.9,
        "parallel": 1 / 0.9,
    }
    missed = [k for k, v in results.items() if v > limits[k]]
    print(f"\ntargets {'all met' if not missed else 'MISSED: ' + ', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
