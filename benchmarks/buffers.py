"""Replay-buffer speed: sampling, prioritized sampling, extend, and cost against capacity.

    python benchmarks/buffers.py                   # about a minute, 10M-row memmap included
    python benchmarks/buffers.py --large 1000000   # less disk for the large-capacity figure
    python benchmarks/buffers.py --quick           # small sizes, for a smoke run

Storage of CartPole-like transitions (observation f32[4], action i64[1], done/terminated/
truncated, and under "next" observation, reward and the three flags), batch 256, one torch
thread. Each figure is the median, over ``--repeats`` blocks, of the mean time per call in a
block. The candidates of one comparison are timed block after block in turn, so that a change
in machine load hits them alike, and ratios are medians of per-block ratios.

Targets and reference figures (TorchRL 0.14, cpprb) are the issue's, measured on the
reference machine (2 cores, CPU). If ``cpprb`` is importable (``pip install cpprb``) it is
measured in this run on the same data, and every figure is also shown scaled to the reference
machine (ours / cpprb's here * cpprb's there): the fair reading on a slower or busier machine.
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

import rlblocks.core as rc
from rlblocks.buffers import (
    LazyMemmapStorage,
    LazyTensorStorage,
    TensorDictPrioritizedReplayBuffer,
    TensorDictReplayBuffer,
)

BATCH = 256
# Issue targets, and cpprb's figures on the reference machine (to scale ours by).
TARGET_UNIFORM_US = 40.0
TARGET_PRIORITIZED_US = {"kernel": 150.0, "numpy": 600.0}
TARGET_EXTEND_PER_S = 5e6
TARGET_CAPACITY_RATIO = 2.0
CPPRB_THERE_US = {"uniform": 46.0, "prioritized": 293.0}
OTHERS = {"uniform": "TorchRL 287 us, cpprb 46 us", "prioritized": "TorchRL 683 us, cpprb 293 us"}


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


def verdict(ok: bool) -> str:
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


def prioritized_step(provider: str, capacity: int) -> Callable[[], None]:
    rb = TensorDictPrioritizedReplayBuffer(
        alpha=0.6, beta=0.4, storage=LazyTensorStorage(capacity), batch_size=BATCH,
        segment_tree=provider,
    )  # fmt: skip
    fill(rb, capacity)
    priorities = torch.rand(BATCH) * 10

    def step() -> None:
        batch = rb.sample()
        rb.update_priority(batch["index"], priorities)

    return step


def sampling(args: argparse.Namespace, calls: int) -> None:
    """Uniform and prioritized figures, cpprb (if installed) timed alongside."""
    uniform = TensorDictReplayBuffer(storage=LazyTensorStorage(args.capacity), batch_size=BATCH)
    fill(uniform, args.capacity)
    candidates = {"uniform": (uniform.sample, calls)}
    providers = [p for p in ("kernel", "numpy") if p in rc.list_segment_tree_providers()]
    for provider in providers:
        candidates[provider] = (prioritized_step(provider, args.capacity), calls // 2)
    candidates.update(cpprb_candidates(args.capacity, calls))
    blocks = timed(candidates, args.repeats)
    has_cpprb = "cpprb uniform" in blocks
    if has_cpprb:
        print(
            f"cpprb, this run: uniform {median_us(blocks['cpprb uniform']):.1f} us, prioritized "
            f"sample+update {median_us(blocks['cpprb prioritized']):.1f} us (reference machine: "
            f"{CPPRB_THERE_US['uniform']:.0f} us, {CPPRB_THERE_US['prioritized']:.0f} us)"
        )
    else:
        print("cpprb: not installed, no in-run reference (pip install cpprb)")

    def scaled(name: str, kind: str) -> str:
        if not has_cpprb:
            return ""
        ratio = paired_ratio(blocks[name], blocks[f"cpprb {kind}"])
        return f"; {ratio:.2f} x cpprb here -> ~{ratio * CPPRB_THERE_US[kind]:.0f} us there"

    value = median_us(blocks["uniform"])
    print(
        f"uniform sample():                     {value:7.1f} us  target <= {TARGET_UNIFORM_US:.0f}"
        f" us ({OTHERS['uniform']}){scaled('uniform', 'uniform')}"
    )
    for provider in ("kernel", "numpy"):
        if provider not in providers:
            print(f"prioritized sample+update ({provider}): not installed")
            continue
        value = median_us(blocks[provider])
        print(
            f"prioritized sample+update ({provider:6}): {value:7.1f} us  target <= "
            f"{TARGET_PRIORITIZED_US[provider]:.0f} us"
            + (f" ({OTHERS['prioritized']})" if provider == "kernel" else "")
            + scaled(provider, "prioritized")
        )
    if len(providers) == 2:
        ratio = paired_ratio(blocks["numpy"], blocks["kernel"])
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
    torch.set_num_threads(1)
    torch.manual_seed(0)
    started = time.perf_counter()
    print(
        f"segment-tree providers: {rc.list_segment_tree_providers()}, active: "
        f"{rc.active_segment_tree_provider()}; capacity {args.capacity:,}, batch {BATCH}, "
        f"1 torch thread\n"
    )
    sampling(args, calls)
    extending(args, calls)
    scratch = Path(tempfile.mkdtemp(prefix="rlblocks-bench-", dir=args.scratch_dir))
    try:
        capacity_cost(args, calls, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
