"""Replay-buffer speed: sampling, prioritized sampling, extend, and cost against capacity.

    python benchmarks/buffers.py                   # about a minute, 10M-row memmap included
    python benchmarks/buffers.py --large 1000000   # less disk for the large-capacity figure
    python benchmarks/buffers.py --quick           # small sizes, for a smoke run

Storage of CartPole-like transitions (observation f32[4], action i64[1], done/terminated/
truncated, and under "next" observation, reward and the three flags), batch 256, at torch's
default thread count and at one thread. Each figure is the median, over ``--repeats``
blocks, of the mean time per call in a block. The candidates of one comparison are timed
block after block in turn, so that a change in machine load hits them alike, and ratios are
medians of per-block ratios.

References are measured in this run, on the same data, or not shown: ``cpprb`` when it is
importable (``pip install cpprb``; ``nox -s bench`` installs it) and TorchRL when it is
importable (its buffers take the same constructor calls as ours, so one function builds
both). Each comparison prints our figure, theirs, and the median of the per-block ratios;
a missing library prints "not installed", never a figure from another machine or run.
The large-capacity figure writes ``--large`` rows (56 bytes each: 0.6 GB for 10M) to a
memory-mapped file under ``--scratch-dir``, read back through the page cache.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

import rlblocks.buffers
import rlblocks.core as rc
from rlblocks.buffers import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer

BATCH = 256
# Issue targets.
TARGET_UNIFORM_US = 40.0
TARGET_PRIORITIZED_US = {"kernel": 150.0, "numpy": 600.0}
TARGET_EXTEND_PER_S = 5e6
TARGET_CAPACITY_RATIO = 2.0


def transitions(n: int) -> TensorDict:
    done = torch.rand(n, 1) < 0.05
    return TensorDict(
        {
            "observation": torch.randn(n, 4),
            "action": torch.randint(2, (n, 1)),
            "done": torch.zeros(n, 1, dtype=torch.bool),
            "terminated": torch.zeros(n, 1, dtype=torch.bool),
            "truncated": torch.zeros(n, 1, dtype=torch.bool),
            "next": {
                "observation": torch.randn(n, 4),
                "reward": torch.ones(n, 1),
                "done": done,
                "terminated": done,
                "truncated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        batch_size=[n],
    )


def fill(rb: TensorDictReplayBuffer, count: int, chunk: int = 200_000) -> None:
    data = transitions(min(chunk, count))
    for start in range(0, count, chunk):
        rb.extend(data[: min(chunk, count - start)])


def timed(candidates: dict[str, tuple[Callable[[], Any], int]], repeats: int) -> dict[str, list]:
    """Seconds per call of each ``(fn, calls)``, one block each in turn, ``repeats`` times."""
    for fn, calls in candidates.values():
        for _ in range(max(3, calls // 10)):
            fn()
    blocks: dict[str, list] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, (fn, calls) in candidates.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            blocks[name].append((time.perf_counter() - start) / calls)
    return blocks


def median_us(blocks: list[float]) -> float:
    return statistics.median(blocks) * 1e6


def paired_ratio(ours: list[float], theirs: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(ours, theirs))


MISSED: list[bool] = []  # one entry per missed target: the exit status reports them


def verdict(ok: bool) -> str:
    if not ok:
        MISSED.append(True)
    return "met" if ok else "MISSED"


def cpprb_candidates(capacity: int, calls: int) -> dict[str, tuple[Callable[[], Any], int]]:
    """cpprb's uniform and prioritized sample (+ update) on the same data, if installed."""
    try:
        import cpprb
    except ImportError:
        return {}
    flag = {"dtype": np.bool_}
    env = {
        "obs": {"shape": 4}, "act": {"shape": 1, "dtype": np.int64}, "done": flag,
        "terminated": flag, "truncated": flag, "next_obs": {"shape": 4}, "rew": {},
        "next_done": flag, "next_terminated": flag, "next_truncated": flag,
    }  # fmt: skip
    chunk = min(capacity, 200_000)
    data = {
        key: np.zeros((chunk, *np.atleast_1d(spec.get("shape", 1))), spec.get("dtype", np.float32))
        for key, spec in env.items()
    }
    uniform, prioritized = (
        cpprb.ReplayBuffer(capacity, env),
        cpprb.PrioritizedReplayBuffer(capacity, env),
    )
    for _ in range(-(-capacity // chunk)):
        uniform.add(**data)
        prioritized.add(**data)
    priorities = np.random.rand(BATCH)

    def prioritized_step() -> None:
        prioritized.update_priorities(prioritized.sample(BATCH)["indexes"], priorities)

    return {
        "cpprb uniform": (lambda: uniform.sample(BATCH), calls),
        "cpprb prioritized": (prioritized_step, calls // 2),
    }


def library_candidates(
    module: Any, label: str, capacity: int, calls: int, **prioritized_kwargs: Any
) -> dict[str, tuple[Callable[[], Any], int]]:
    """Uniform sample and prioritized sample + priority update, built from ``module``'s
    ``TensorDictReplayBuffer``, ``TensorDictPrioritizedReplayBuffer`` and
    ``LazyTensorStorage`` (rlblocks.buffers, or torchrl.data: the same calls)."""
    uniform = module.TensorDictReplayBuffer(
        storage=module.LazyTensorStorage(capacity), batch_size=BATCH
    )
    fill(uniform, capacity)
    prioritized = module.TensorDictPrioritizedReplayBuffer(
        alpha=0.6, beta=0.4, storage=module.LazyTensorStorage(capacity), batch_size=BATCH,
        **prioritized_kwargs,
    )  # fmt: skip
    fill(prioritized, capacity)
    priorities = torch.rand(BATCH) * 10

    def prioritized_step() -> None:
        batch = prioritized.sample()
        prioritized.update_priority(batch["index"], priorities)

    return {
        f"{label} uniform": (uniform.sample, calls),
        f"{label} prioritized": (prioritized_step, calls // 2),
    }


def torchrl_candidates(capacity: int, calls: int) -> dict[str, tuple[Callable[[], Any], int]]:
    """TorchRL's buffers on the same data, if TorchRL is installed."""
    try:
        import torchrl.data
    except ImportError:
        return {}
    return library_candidates(torchrl.data, "TorchRL", capacity, calls)


def sampling(args: argparse.Namespace, calls: int) -> None:
    """Uniform and prioritized figures, cpprb and TorchRL (if installed) timed alongside."""
    providers = [p for p in ("kernel", "numpy") if p in rc.list_segment_tree_providers()]
    candidates = {}
    for provider in providers:
        candidates.update(
            library_candidates(
                rlblocks.buffers, provider, args.capacity, calls, segment_tree=provider
            )
        )
    references = {"cpprb": cpprb_candidates, "TorchRL": torchrl_candidates}
    for build in references.values():
        candidates.update(build(args.capacity, calls))
    blocks = timed(candidates, args.repeats)
    ours = providers[0]  # the active provider's uniform sample does not depend on the tree

    def against(name: str, kind: str) -> str:
        parts = []
        for ref in references:
            if f"{ref} {kind}" not in blocks:
                parts.append(f"{ref}: not installed")
                continue
            theirs = median_us(blocks[f"{ref} {kind}"])
            ratio = paired_ratio(blocks[name], blocks[f"{ref} {kind}"])
            parts.append(f"{ref} {theirs:.1f} us, ours/{ref} {ratio:.2f}x")
        return "; ".join(parts)

    value = median_us(blocks[f"{ours} uniform"])
    print(
        f"uniform sample():                     {value:7.1f} us  target <= {TARGET_UNIFORM_US:.0f}"
        f" us: {verdict(value <= TARGET_UNIFORM_US)} ({against(f'{ours} uniform', 'uniform')})"
    )
    for provider in ("kernel", "numpy"):
        if provider not in providers:
            print(f"prioritized sample+update ({provider}): not installed")
            continue
        value = median_us(blocks[f"{provider} prioritized"])
        target = TARGET_PRIORITIZED_US[provider]
        print(
            f"prioritized sample+update ({provider:6}): {value:7.1f} us  target <= {target:.0f} "
            f"us: {verdict(value <= target)} "
            f"({against(f'{provider} prioritized', 'prioritized')})"
        )
    if len(providers) == 2:
        ratio = paired_ratio(blocks["numpy prioritized"], blocks["kernel prioritized"])
        print(f"numpy fallback / kernel:              {ratio:7.2f} x")


def extending(args: argparse.Namespace, calls: int) -> None:
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(args.capacity))
    data = transitions(1000)
    rb.extend(data)
    blocks = timed({"extend": (lambda: rb.extend(data), calls)}, args.repeats)
    rate = 1000 / statistics.median(blocks["extend"])
    print(
        f"extend(1000) into LazyTensorStorage: {rate / 1e6:5.2f} M transitions/s  target >= "
        f"{TARGET_EXTEND_PER_S / 1e6:.0f} M/s: {verdict(rate >= TARGET_EXTEND_PER_S)}"
    )


def capacity_cost(args: argparse.Namespace, calls: int, scratch: Path) -> None:
    buffers = {}
    for size in (args.small, args.large):
        storage = LazyMemmapStorage(size, scratch / f"memmap-{size}")
        buffers[size] = TensorDictReplayBuffer(storage=storage, batch_size=BATCH)
        fill(buffers[size], size)
    blocks = timed({size: (rb.sample, calls) for size, rb in buffers.items()}, args.repeats)
    small, large = median_us(blocks[args.small]), median_us(blocks[args.large])
    ratio = paired_ratio(blocks[args.large], blocks[args.small])
    print(
        f"LazyMemmapStorage sample(): {args.small:,} stored {small:.1f} us, {args.large:,} "
        f"stored {large:.1f} us: {ratio:.2f} x  target <= {TARGET_CAPACITY_RATIO:.0f} x: "
        f"{verdict(ratio <= TARGET_CAPACITY_RATIO)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="storage size")
    parser.add_argument("--small", type=int, default=100_000, help="small memmap capacity")
    parser.add_argument("--large", type=int, default=10_000_000, help="large memmap capacity")
    parser.add_argument("--scratch-dir", type=Path, default=None, help="for the memmap files")
    parser.add_argument("--repeats", type=int, default=7, help="timed blocks per figure")
    parser.add_argument("--quick", action="store_true", help="small sizes, few calls")
    args = parser.parse_args()
    if args.quick:
        args.capacity, args.small, args.large, args.repeats = 100_000, 10_000, 200_000, 3
    calls = 200 if args.quick else 1000
    torch.manual_seed(0)
    started = time.perf_counter()
    print(
        f"segment-tree providers: {rc.list_segment_tree_providers()}, active: "
        f"{rc.active_segment_tree_provider()}; capacity {args.capacity:,}, batch {BATCH}"
    )
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        torch.set_num_threads(threads)
        print(f"\n{threads} torch thread{'s' if threads > 1 else ''}")
        sampling(args, calls)
        extending(args, calls)
        scratch = Path(tempfile.mkdtemp(prefix="rlblocks-bench-", dir=args.scratch_dir))
        try:
            capacity_cost(args, calls, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 1 if MISSED else 0


if __name__ == "__main__":
    sys.exit(main())
