"""rlblocks-objectives against hand-written torch, in the same run.

    python benchmarks/objectives.py [--batch 64] [--steps 1000] [--repeat 50]

Value estimators: inputs are ``[batch, steps, 1]`` float32 with terminations and
truncations in the middle of the time axis, on the CPU with one torch thread (the reference
setting of DESIGN.md). The naive reference is the textbook reverse loop over time,
vectorized over the batch. Each figure is the median over ``--repeat`` calls after a
warm-up. Target: GAE on [64, 1000] <= 2 ms.

PPO gradient step: what examples/ppo.py does per minibatch (index a 256-frame minibatch,
``ClipPPOLoss`` with a ``ProbabilisticActor`` and a ``ValueOperator``, backward, gradient
clipping, fused Adam) against the same step written with plain tensors and
``log_softmax``/``gather``; the two alternate in rounds and are timed in CPU time of the
thread (one torch thread does all the work), so that other processes' load counts for
neither. No issue sets a target for it (the PPO target is end-to-end wall-clock against
SB3, in learning.py); it shows what the loss modules cost over plain tensors.

Shared cores: the estimators and both PPO steps again, in wall-clock time, at torch's default
thread count and at one thread, first on an idle machine, then with one other CPU-bound
process running (a pure-Python busy loop, as a collector worker or a second job would be).
Targets: each estimator <= 2 ms at the default thread count on the idle machine, and under
that contention within 2x of its own 1-thread figure under the same contention (a thread
pool that spins while its other core is taken can cost 10-100x). The PPO steps are info.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.core.specs import Categorical
from rlblocks.objectives import ClipPPOLoss, total_loss
from rlblocks.objectives.modules import MLP, ProbabilisticActor, ValueOperator
from rlblocks.objectives.value import (
    generalized_advantage_estimate,
    td0_return_estimate,
    td_lambda_return_estimate,
)

TARGET_GAE_MS = 2.0
TARGET_CONTENTION_RATIO = 2.0
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


def _burn(stop: object) -> None:
    while not stop.is_set():  # type: ignore[attr-defined]
        for _ in range(100_000):
            pass


@contextlib.contextmanager
def one_competitor() -> Iterator[None]:
    """One other CPU-bound process for the duration (spawned: never a fork of torch)."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    process = ctx.Process(target=_burn, args=(stop,), daemon=True)
    process.start()
    time.sleep(1.0)  # past its interpreter start-up: it is burning a core now
    try:
        yield
    finally:
        stop.set()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()


def shared_core_table(
    fns: dict[str, Callable[[], object]], threads: list[int], repeat: int
) -> dict[tuple[str, str, int], float]:
    """Wall-clock median ms of each of ``fns`` at each thread count, idle then with one
    competitor; keyed ``(name, "idle" | "loaded", threads)``."""
    out: dict[tuple[str, str, int], float] = {}
    before = torch.get_num_threads()
    for load in ("idle", "loaded"):
        with one_competitor() if load == "loaded" else contextlib.nullcontext():
            for n in threads:
                torch.set_num_threads(n)
                for name, fn in fns.items():
                    out[name, load, n] = median_ms(fn, repeat)
    torch.set_num_threads(before)
    return out


def ppo_steps(frames: int = 256, hidden: int = 64) -> tuple[Callable[[], None], ...]:
    """``(rlblocks step, hand-written step)`` on the same CartPole-sized random batch."""
    obs = torch.randn(frames, 4)
    action = torch.randint(0, 2, (frames,))
    old_log_prob = torch.randn(frames) * 0.1 - 0.7
    advantage, value_target = torch.randn(frames, 1), torch.randn(frames, 1)

    def adam(params):
        return torch.optim.Adam(params, lr=1e-3, eps=1e-5, fused=True)

    actor = ProbabilisticActor(
        TensorDictModule(MLP(4, 2, num_cells=[hidden] * 2), ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        spec=Categorical(2),
        return_log_prob=True,
    )
    critic = ValueOperator(MLP(4, 1, num_cells=[hidden] * 2))
    loss = ClipPPOLoss(
        actor,
        critic,
        entropy_coef=0.0,
        critic_coef=0.5,
        loss_critic_type="l2",
        normalize_advantage=True,
    )
    params = list(loss.parameters())
    optim = adam(params)
    data = TensorDict(
        observation=obs,
        action=action,
        sample_log_prob=old_log_prob,
        advantage=advantage,
        value_target=value_target,
        batch_size=[frames],
    )

    def rlblocks_step() -> None:
        out = loss(data[torch.randperm(frames)])
        optim.zero_grad()
        total_loss(out).backward()
        nn.utils.clip_grad_norm_(params, 0.5, foreach=True)
        optim.step()

    pi, v = MLP(4, 2, num_cells=[hidden] * 2), MLP(4, 1, num_cells=[hidden] * 2)
    raw_params = [*pi.parameters(), *v.parameters()]
    raw_optim = adam(raw_params)

    def raw_step() -> None:
        index = torch.randperm(frames)
        batch = (obs, action, old_log_prob, advantage, value_target)
        o, a, old, adv, target = (x[index] for x in batch)
        log_pi = pi(o).log_softmax(-1)
        entropy = -(log_pi.exp() * log_pi).sum(-1).mean()
        ratio = (log_pi.gather(-1, a.unsqueeze(-1)) - old.unsqueeze(-1)).exp()
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
        v_loss = 0.5 * (v(o) - target).pow(2).mean()
        raw_optim.zero_grad()
        (pg_loss + v_loss - 0.0 * entropy).backward()
        nn.utils.clip_grad_norm_(raw_params, 0.5, foreach=True)
        raw_optim.step()

    return rlblocks_step, raw_step


def interleaved_ms(fns: tuple[Callable[[], object], ...], rounds: int, calls: int) -> list[float]:
    """Median per-call CPU time of each of ``fns``, in alternating rounds of ``calls``."""
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        for _ in range(calls):
            fn()  # warm-up
    for _ in range(rounds):
        for fn, out in zip(fns, times):
            start = time.thread_time()
            for _ in range(calls):
                fn()
            out.append((time.thread_time() - start) / calls)
    return [1e3 * statistics.median(t) for t in times]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per figure")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
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

    missed = (args.batch, args.steps) == (64, 1000) and gae_ms > TARGET_GAE_MS

    rlblocks_step, raw_step = ppo_steps()
    ours_ms, raw_ms = interleaved_ms((rlblocks_step, raw_step), rounds=args.repeat, calls=20)
    ratio = ours_ms / raw_ms
    print(f"PPO gradient step, 256 frames, 4-64-64 MLPs: rlblocks {ours_ms:.2f} ms, "
          f"hand-written torch {raw_ms:.2f} ms, ratio {ratio:.2f}x (info)")  # fmt: skip

    estimators = {
        "GAE": lambda: generalized_advantage_estimate(
            GAMMA, LMBDA, value, next_value, reward, done, terminated
        ),
        "TD(lambda)": lambda: td_lambda_return_estimate(
            GAMMA, LMBDA, next_value, reward, done, terminated
        ),
    }
    steps = {"PPO step rlblocks": rlblocks_step, "PPO step hand-written": raw_step}
    threads = sorted({default_threads, 1}, reverse=True)
    table = shared_core_table({**estimators, **steps}, threads, args.repeat)
    print()
    print(f"shared cores: wall-clock ms, idle and with one other CPU-bound process; torch's "
          f"default is {default_threads} threads")  # fmt: skip
    header = "".join(f"{f'{load} {n} thr':>14}" for load in ("idle", "loaded") for n in threads)
    print(f"{'':<24}{header}")
    for name in (*estimators, *steps):
        cells = "".join(
            f"{table[name, load, n]:11.2f} ms" for load in ("idle", "loaded") for n in threads
        )
        print(f"{name:<24}{cells}")
    for name in estimators:
        idle = table[name, "idle", default_threads]
        loaded = table[name, "loaded", default_threads] / table[name, "loaded", 1]
        ok = idle <= TARGET_GAE_MS and loaded <= TARGET_CONTENTION_RATIO
        missed |= not ok
        print(f"{name}: {idle:.2f} ms idle at {default_threads} threads (target <= "
              f"{TARGET_GAE_MS:.0f} ms); loaded {default_threads} threads / loaded 1 thread "
              f"{loaded:.2f}x (target <= {TARGET_CONTENTION_RATIO:.0f}x): "
              f"{'met' if ok else 'MISSED'}")  # fmt: skip
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
