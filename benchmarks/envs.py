"""rlblocks-envs speed, as ratios against raw gymnasium loops measured in the same run.

    python benchmarks/envs.py [--steps 10000] [--lockstep-steps 500] [--repeat 5]

Every figure compares an rlblocks loop with the raw gymnasium loop doing the same work
(CartPole-v1, uniformly random actions from the same source on both sides: drawn per step
on both, or drawn before the loop on both), timed alternately so that drifts in machine
load hit both alike; the printed ratio is the median over ``--repeat`` rounds. Targets
(issue 3):

* a Python loop of ``env.step(env.rand_action(td))`` + ``step_mdp`` <= 4x a raw
  ``env.step(env.action_space.sample())`` loop (the rollout without a policy, which draws
  its actions in one call, is compared with the bare ``env.step`` on pre-drawn actions in
  the third section);
* ``GymEnv(num_envs=8)`` and ``SerialEnv(8, ...)`` frames/s >= 0.9x a raw ``SyncVectorEnv``
  of 8, ``ParallelEnv(2, ...)`` of 4-env workers >= 0.9x a raw ``AsyncVectorEnv`` of 8,
  the raw loops stepping actions drawn before the loop, as the rollouts do;
* ``StepCounter`` + ``RewardSum`` + ``DoubleToFloat`` add <= 20% to a rollout.

These run with one torch thread. The second section (issue 14, the env backend protocol)
measures every figure twice, with this process at torch's default thread count and at one
thread (worker processes always use one). Both sides run ``--lockstep-steps`` lockstep
steps (one step of every sub-env per call) with the same action source; in a and c each
side resets first, in b both continue their episodes across batches of 128 steps:

* a. ``ParallelEnv(8, GymEnv("CartPole-v1"))``: a loop of ``env.step_and_maybe_reset(td)``
  vs gymnasium's ``AsyncVectorEnv`` of 8 CartPole, both fed the same pre-drawn random
  actions: time ratio <= 1.0;
* b. ``SyncDataCollector`` over that ``ParallelEnv(8)`` with an MLP(64, 64) policy vs a
  hand-written loop over ``AsyncVectorEnv(8)`` running the same MLP on each observation
  batch and storing the same transitions: time ratio <= 1.0;
* c. ``ParallelEnv(2, make)`` vs ``SerialEnv(2, make)`` step loops, where a step of the env
  sleeps 150 us: speed-up >= 1.7x. ``make`` builds a gymnasium env that sleeps, wrapped by
  ``GymWrapper`` (so the workers step it through its steppers); the same figure for
  ``SleepEnv``, an rlblocks env without steppers (every step through TensorDicts), is
  printed for information (benchmarks/_workloads.py has both).

The third section (issue 13) compares with the physical limit: the bare
``gymnasium.make("CartPole-v1").step`` called with pre-drawn random actions and nothing else
in the loop (a reset when an episode ends). Both sides get the same pre-drawn actions where
the rlblocks side takes actions from outside; at each thread count:

* ``GymEnv.rollout(N, break_when_any_done=False)`` (which draws its own actions, in one
  call) <= 1.2x the limit;
* a loop of ``td.set("action", a); td = step_mdp(env.step(td))`` with a reset when done
  <= 3x the limit.

The dm_control figure of issue 14 is in benchmarks/dmcontrol.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial

import gymnasium as gym
import numpy as np
import torch
from _timing import (
    Target,
    compare,
    compare_at_thread_counts,
    missed_targets,
    thread_counts,
    threads_label,
    torch_threads,
)
from _workloads import SLEEP_STEP_S, Actor, SleepEnv, VectorEnvLoop, make_sleep_gym
from tensordict.nn import TensorDictModule

from rlblocks.collectors import SyncDataCollector
from rlblocks.core import ACTION, OBSERVATION, step_mdp
from rlblocks.envs import (
    Compose,
    EnvBase,
    GymEnv,
    ParallelEnv,
    RewardSum,
    SerialEnv,
    StepCounter,
    TransformedEnv,
)
from rlblocks.envs.transforms import DoubleToFloat

ENV_ID = "CartPole-v1"
NUM_ENVS = 8
# Lockstep steps per collector batch (as benchmarks/collectors.py).
BATCH_STEPS = 128


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


def raw_vector(actions: np.ndarray, mode: str) -> Callable[[], None]:
    """A raw vector env of 8 stepping pre-drawn ``actions`` ([steps, 8])."""
    env = gym.make_vec(ENV_ID, 8, vectorization_mode=mode)
    env.reset(seed=0)

    def run() -> None:
        for action in actions:
            env.step(action)

    return run


def limit_single(actions: np.ndarray) -> Callable[[], None]:
    """The physical limit: the bare ``env.step`` on pre-drawn actions, a reset when done."""
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    step, reset = env.step, env.reset

    def run() -> None:
        for action in actions:
            _, _, terminated, truncated, _ = step(action)
            if terminated or truncated:
                reset()

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


def fed_step_loop(env: EnvBase, actions: torch.Tensor) -> Callable[[], None]:
    """``env.step`` + ``step_mdp`` on pre-drawn ``actions`` ([steps, *action shape])."""

    def run() -> None:
        td = env.reset()
        for action in actions:
            td.set(ACTION, action)
            td = step_mdp(env.step(td))
            if td["done"].any():
                td = env.reset()

    return run


def step_and_maybe_reset_loop(env, steps: int) -> Callable[[], None]:
    def run() -> None:
        td = env.reset()
        for _ in range(steps):
            _, td = env.step_and_maybe_reset(env.rand_action(td))

    return run


# -- issue 14: lockstep loops with pre-drawn actions -------------------------------------


def lockstep_loop(env: EnvBase, actions: torch.Tensor) -> Callable[[], None]:
    """Reset, then one ``step_and_maybe_reset`` per row of ``actions`` ([steps, *batch])."""

    def run() -> None:
        td = env.reset()
        for action in actions:
            td.set(ACTION, action)
            _, td = env.step_and_maybe_reset(td)

    return run


def raw_lockstep_loop(venv: gym.vector.VectorEnv, actions: np.ndarray) -> Callable[[], None]:
    """Reset, then one ``venv.step`` per row of ``actions`` (autoreset restarts episodes)."""

    def run() -> None:
        venv.reset()
        for action in actions:
            venv.step(action)

    return run


def batches_of(run_batch: Callable[[], object], batches: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(batches):
            run_batch()

    return run


def backend_protocol(steps: int, repeat: int) -> dict[str, tuple[float, Target]]:
    """Figures a-c of issue 14 (see the module docstring), at each thread count, with
    ``steps`` lockstep steps per loop."""
    results: dict[str, tuple[float, Target]] = {}
    parallel = ParallelEnv(NUM_ENVS, partial(GymEnv, ENV_ID))
    async_raw = gym.make_vec(ENV_ID, NUM_ENVS, vectorization_mode="async")
    collector = None
    sleepers: list[EnvBase] = []
    try:
        actions = parallel.action_spec.rand((steps,))  # the same ones on both sides
        compare_at_thread_counts(
            results,
            "a_parallel_step",
            "a. ParallelEnv(8) step_and_maybe_reset loop / AsyncVectorEnv(8)",
            lockstep_loop(parallel, actions),
            raw_lockstep_loop(async_raw, actions.numpy()),
            repeat,
            Target(1.0),
        )

        actor = Actor()  # the same MLP chooses the actions on both sides
        batch_steps = min(BATCH_STEPS, steps)
        batches = max(1, steps // batch_steps)
        collector = SyncDataCollector(
            parallel,
            TensorDictModule(actor, [OBSERVATION], [ACTION]),
            frames_per_batch=batch_steps * NUM_ENVS,
        )
        compare_at_thread_counts(
            results,
            "b_collector",
            "b. SyncDataCollector(ParallelEnv(8)) / MLP loop, AsyncVectorEnv(8)",
            batches_of(collector.next, batches),
            batches_of(VectorEnvLoop(actor, async_raw, batch_steps), batches),
            repeat,
            Target(1.0),
        )

        sleep_us = f"{SLEEP_STEP_S * 1e6:.0f} us"
        sleep_cases: list[tuple[str, str, Callable[[], EnvBase], Target | str]] = [
            ("c_sleep_speedup", f"c. {sleep_us} sleep gym env", make_sleep_gym, Target(1.7, True)),
            ("c_sleep_tensordict", f"   {sleep_us} SleepEnv", SleepEnv, "(info: no steppers)"),
        ]
        for key, name, make, target in sleep_cases:
            pair = [ParallelEnv(2, make), SerialEnv(2, make)]
            sleepers += pair
            actions = pair[1].action_spec.rand((steps,))
            compare_at_thread_counts(
                results,
                key,
                f"{name}: speed-up ParallelEnv(2) vs SerialEnv(2)",
                lockstep_loop(pair[1], actions),
                lockstep_loop(pair[0], actions),
                repeat,
                target,
            )
    finally:
        if collector is not None:
            collector.shutdown()
        for env in [parallel, *sleepers]:
            env.close()
        async_raw.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="steps per single-env loop")
    parser.add_argument(
        "--lockstep-steps", type=int, default=500, help="steps per loop of the issue 14 figures"
    )
    parser.add_argument("--repeat", type=int, default=5, help="rounds per figure")
    args = parser.parse_args()
    n, r = args.steps, args.repeat
    vec_steps = max(n // NUM_ENVS, 1)
    results: dict[str, tuple[float, Target]] = {}

    def record(
        key: str, name: str, ours: Callable[[], None], ref: Callable[[], None], target: Target
    ) -> None:
        results[key] = (compare(name, ours, ref, r, target), target)

    with torch_threads(1):
        print(f"CartPole-v1, random actions; {n} steps per single-env loop, {vec_steps} per 8-env")
        print("time ratio, rlblocks / raw gymnasium (lower is better; frames/s ratio = 1 / this)")
        print("1 torch thread\n")
        single_raw = raw_single(n)
        compare(
            "GymEnv.rollout(N, policy=env.rand_action) / raw step loop",
            policy_rollout(GymEnv(ENV_ID), n),
            single_raw,
            r,
            "(info: per-step path)",
        )
        record(
            "step",
            "loop of env.step(td) + step_mdp / raw step loop",
            step_loop(GymEnv(ENV_ID), n),
            single_raw,
            Target(4.0),
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
        record(
            "transforms",
            "rollout with StepCounter+RewardSum+DoubleToFloat / without",
            rollout(transformed, n),
            rollout(plain, n),
            Target(1.2),
        )
        vector = GymEnv(ENV_ID, num_envs=NUM_ENVS)
        vec_actions = vector.action_spec.rand((vec_steps,))  # [steps, 8], both sides
        sync_raw = raw_vector(vec_actions.numpy(), "sync")
        frames = Target(1 / 0.9, note=">= 0.9x frames/s")
        record(
            "vector",
            "GymEnv(num_envs=8).rollout / raw SyncVectorEnv(8) loop",
            rollout(vector, vec_steps),
            sync_raw,
            frames,
        )
        serial = SerialEnv(NUM_ENVS, lambda: GymEnv(ENV_ID))
        record(
            "serial",
            "SerialEnv(8, GymEnv).rollout / raw SyncVectorEnv(8) loop",
            rollout(serial, vec_steps),
            sync_raw,
            frames,
        )
        async_raw = raw_vector(vec_actions.numpy(), "async")
        parallel = ParallelEnv(2, lambda: GymEnv(ENV_ID, num_envs=4))
        try:
            record(
                "parallel",
                "ParallelEnv(2 x GymEnv(num_envs=4)).rollout / raw AsyncVectorEnv(8)",
                rollout(parallel, vec_steps),
                async_raw,
                frames,
            )
            compare(
                "ParallelEnv(2 x 4) step_and_maybe_reset loop / raw AsyncVectorEnv(8)",
                lockstep_loop(parallel, vec_actions.reshape(vec_steps, 2, 4)),
                async_raw,
                r,
                "(info: lockstep, one round trip per step)",
            )
            compare(
                "SerialEnv(8) step_and_maybe_reset loop / raw SyncVectorEnv(8)",
                lockstep_loop(serial, vec_actions),
                sync_raw,
                r,
                "(info: TensorDict per step)",
            )
        finally:
            parallel.close()
            serial.close()

    lockstep = args.lockstep_steps
    print(
        f"\nissue 14, env backend protocol: {lockstep} lockstep steps per loop, the same "
        f"actions or MLP on both sides;\n"
        f"this process at {' and at '.join(map(threads_label, thread_counts()))} "
        f"(workers: 1 thread)\na, b: time ratio, rlblocks / gymnasium (lower is better); "
        f"c: speed-up, SerialEnv time / ParallelEnv time (higher is better)\n"
    )
    results.update(backend_protocol(lockstep, r))

    print(
        f"\nissue 13, against the physical limit: bare gymnasium env.step on pre-drawn "
        f"actions, {n} steps per loop;\ntime ratio, rlblocks / limit (lower is better)\n"
    )
    env = GymEnv(ENV_ID)
    env.set_seed(0)
    actions = env.action_spec.rand((n,))
    limit = limit_single(actions.numpy())
    compare_at_thread_counts(
        results,
        "limit_rollout",
        "GymEnv.rollout(N, break_when_any_done=False) / limit",
        rollout(env, n),
        limit,
        r,
        Target(1.2),
    )
    compare_at_thread_counts(
        results,
        "limit_step",
        "loop of env.step(td) + step_mdp, same actions / limit",
        fed_step_loop(env, actions),
        limit,
        r,
        Target(3.0),
    )
    env.close()
    print(f"\n{missed_targets(results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
