"""Value estimators of rlblocks-objectives against a naive loop over time, in the same run.

    python benchmarks/objectives.py [--batch 64] [--steps 1000] [--repeat 50]

Inputs are ``[batch, steps, 1]`` float32 with terminations and truncations in the middle of
the time axis, on the CPU with one torch thread (the reference setting of DESIGN.md). The
naive reference is the textbook reverse loop over time, vectorized over the batch. Each
figure is the median over ``--repeat`` calls after a warm-up. Target: GAE on [64, 1000]
<= 2 ms (TorchRL 0.14's vectorized GAE measures ~55 ms on this kind of machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from rlblocks.objectives.value import (
    generalized_advantage_estimate,
    td0_return_estimate,
    td_lambda_return_estimate,
)

TARGET_GAE_MS = 2.0
GAMMA, LMBDA = 0.99, 0.95


def naive_gae(value, next_value, reward, done, terminated):
    advantage = torch.empty_like(reward)
    running = torch.zeros_like(reward[:, 0])
    not_done, not_term = (~done).float(), (~terminated).float()
    for t in reversed(range(reward.shape[1])):
        delta = reward[:, t] + GAMMA * not_term[:, t] * next_value[:, t] - value[:, t]
        running = delta + GAMMA * LMBDA * not_done[:, t] * running
        advantage[:, t] = running
    return advantage, advantage + value


def naive_td_lambda(next_value, reward, done, terminated):
    ret = torch.empty_like(reward)
    not_done, not_term = (~done).float(), (~terminated).float()
    running = next_value[:, -1]
    for t in reversed(range(reward.shape[1])):
        mixed = (1 - LMBDA) * next_value[:, t] + LMBDA * running
        bootstrap = not_done[:, t] * mixed + (1 - not_done[:, t]) * next_value[:, t]
        running = reward[:, t] + GAMMA * not_term[:, t] * bootstrap
        ret[:, t] = running
    return ret


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.steps, 1)
    reward, value, next_value = (torch.randn(shape, generator=g) for _ in range(3))
    terminated = torch.rand(shape, generator=g) < 0.005
    done = terminated | (torch.rand(shape, generator=g) < 0.005)

    # Same results first: a benchmark of a wrong answer is worthless.
    fast, _ = generalized_advantage_estimate(
        GAMMA, LMBDA, value, next_value, reward, done, terminated
    )
    torch.testing.assert_close(fast, naive_gae(value, next_value, reward, done, terminated)[0],
                               atol=1e-4, rtol=1e-4)  # fmt: skip

    naive_repeat = max(3, args.repeat // 10)
    rows = [
        (
            "GAE",
            median_ms(
                lambda: generalized_advantage_estimate(
                    GAMMA, LMBDA, value, next_value, reward, done, terminated
                ),
                args.repeat,
            ),
            median_ms(lambda: naive_gae(value, next_value, reward, done, terminated), naive_repeat),
        ),
        (
            "TD(lambda)",
            median_ms(
                lambda: td_lambda_return_estimate(
                    GAMMA, LMBDA, next_value, reward, done, terminated
                ),
                args.repeat,
            ),
            median_ms(lambda: naive_td_lambda(next_value, reward, done, terminated), naive_repeat),
        ),
        (
            "TD(0)",
            median_ms(
                lambda: td0_return_estimate(GAMMA, next_value, reward, terminated), args.repeat
            ),
            float("nan"),
        ),
    ]
    print(f"value estimators on [{args.batch}, {args.steps}, 1] float32, 1 torch thread")
    print(f"{'estimator':<12}{'rlblocks':>12}{'naive loop':>14}{'speed-up':>10}")
    for name, ours, naive in rows:
        ratio = naive / ours if naive == naive else float("nan")
        naive_txt = f"{naive:11.2f} ms" if naive == naive else f"{'-':>14}"
        ratio_txt = f"{ratio:9.1f}x" if ratio == ratio else f"{'-':>10}"
        print(f"{name:<12}{ours:9.3f} ms{naive_txt}{ratio_txt}")
    gae_ms = rows[0][1]
    if (args.batch, args.steps) == (64, 1000):
        verdict = "met" if gae_ms <= TARGET_GAE_MS else "MISSED"
        print(f"GAE target <= {TARGET_GAE_MS:.1f} ms on [64, 1000]: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
