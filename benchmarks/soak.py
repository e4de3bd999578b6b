"""Resident memory of a long collection run: growth over 1M frames must stay <= 50 MB.

    python benchmarks/soak.py [--frames 1000000] [--collector sync|multisync]

Collects CartPole frames with an MLP policy (``GymEnv("CartPole-v1", num_envs=8)`` in
this process, or two ``MultiSyncDataCollector`` workers), dropping every batch, and
measures the resident set size (RSS) of this process plus its workers after a warm-up
(the first 5% of the frames: allocator pools, lazy imports) and at the end. The growth
between the two is what a week-long run would accumulate per million frames.
"""

from __future__ import annotations

import argparse
import time

import psutil
import torch
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.collectors import MultiSyncDataCollector, SyncDataCollector
from rlblocks.envs import GymEnv

TARGET_MB = 50.0


def make_env() -> GymEnv:
    return GymEnv("CartPole-v1", num_envs=8)


class Actor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)
        )

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Categorical(logits=self.mlp(observation)).sample()


def rss_mb(pids: list[int]) -> float:
    """Total resident memory of ``pids``, in MB."""
    return sum(psutil.Process(pid).memory_info().rss for pid in pids) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--collector", choices=["sync", "multisync"], default="sync")
    parser.add_argument("--frames-per-batch", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    policy = TensorDictModule(Actor(), ["observation"], ["action"])
    if args.collector == "sync":
        collector = SyncDataCollector(
            make_env, policy, frames_per_batch=args.frames_per_batch, total_frames=args.frames
        )
        pids = [psutil.Process().pid]
    else:
        collector = MultiSyncDataCollector(
            [make_env] * 2,
            policy,
            frames_per_batch=2 * args.frames_per_batch,
            total_frames=args.frames,
        )
        pids = [psutil.Process().pid, *collector.worker_pids]
    warmup = args.frames // 20
    start_rss = peak = None
    start = time.perf_counter()
    try:
        for _ in collector:
            if start_rss is None and collector.frames >= warmup:
                start_rss = rss_mb(pids)
                peak = start_rss
            elif start_rss is not None:
                peak = max(peak, rss_mb(pids))
            collector.update_policy_weights_()
        end_rss = rss_mb(pids)
    finally:
        collector.shutdown()
    elapsed = time.perf_counter() - start
    growth = end_rss - start_rss
    print(
        f"{args.collector}: {collector.frames} frames in {elapsed:.0f} s "
        f"({collector.frames / elapsed:.0f} frames/s)"
    )
    print(f"RSS after warm-up {start_rss:.1f} MB, at the end {end_rss:.1f} MB, peak {peak:.1f} MB")
    print(f"=> growth {growth:+.1f} MB (target <= {TARGET_MB:.0f} MB)")
    return 0 if growth <= TARGET_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
