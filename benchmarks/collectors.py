"""Collector throughput, as ratios against references measured in the same run.

    python benchmarks/collectors.py [--repeat 5] [--batches 20]

1. ``SyncDataCollector`` over ``GymEnv("CartPole-v1", num_envs=8)`` against a
   hand-written loop over gymnasium's ``SyncVectorEnv`` that runs the same network on each
   observation batch and records the same transitions into preallocated tensors (CleanRL
   style), with two policies: a user's plain ``TensorDictModule(nn.Module)`` (an MLP(64, 64)
   taking the greedy action; the hand loop calls the same module), and the library's
   ``ProbabilisticActor`` sampling a categorical action from the MLP's logits (the hand loop
   samples ``torch.distributions.Categorical(logits=...)``; the collector also stores the
   logits the actor writes, which the hand loop does not: a little more work on our side).
   Target: >= 0.9x, with this process at torch's default thread count and at one thread.
2. ``MultiSyncDataCollector`` with 2 worker processes against one ``SyncDataCollector``,
   on an env whose step costs ~150 us of CPU work. Target: >= 1.6x on a 2-core machine.

Each figure is the median over ``--repeat`` interleaved measurements (so drifts in machine
load hit both sides alike). Figure 2's worker processes use one torch thread each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch
from _timing import thread_counts, threads_label, torch_threads
from _workloads import Actor, VectorEnvLoop
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.collectors import MultiSyncDataCollector, SyncDataCollector
from rlblocks.core.specs import Categorical
from rlblocks.envs import CartPoleEnv, GymEnv
from rlblocks.objectives.modules import ProbabilisticActor

NUM_ENVS = 8
SYNC_TARGET = 0.9
MULTI_TARGET = 1.6
SLOW_STEP_S = 150e-6


def hand_rate(loop: VectorEnvLoop, batches: int) -> float:
    """Frames/s of a hand-written gymnasium vector-env loop storing what a collector stores."""
    start = time.perf_counter()
    for _ in range(batches):
        loop()
    return batches * loop.frames / (time.perf_counter() - start)


def collector_rate(collector, batches: int) -> float:
    collector.next()  # warm-up: first reset, policy probing
    start = time.perf_counter()
    frames = 0
    for _ in range(batches):
        frames += collector.next().numel()
    return frames / (time.perf_counter() - start)


class SampledActor(nn.Module):
    """The hand loop's side of the library actor: the same logits, a categorical sample."""

    def __init__(self, logits: nn.Module) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Categorical(logits=self.logits(observation)).sample()


def policies() -> dict[str, tuple[nn.Module, TensorDictModule]]:
    """name -> (the hand loop's actor, the collector's policy), sharing their network."""
    greedy = Actor()
    logits = Actor().mlp  # obs -> logits
    library = ProbabilisticActor(
        TensorDictModule(logits, ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        spec=Categorical(2),
    )
    return {
        "plain TensorDictModule, greedy": (
            greedy,
            TensorDictModule(greedy, ["observation"], ["action"]),
        ),
        "ProbabilisticActor, sampled": (SampledActor(logits), library),
    }


def sync_vs_hand(actor: nn.Module, policy: TensorDictModule, repeat: int, batches: int) -> float:
    steps = 128
    collector = SyncDataCollector(
        lambda: GymEnv("CartPole-v1", num_envs=NUM_ENVS),
        policy,
        frames_per_batch=steps * NUM_ENVS,
    )
    venv = gym.make_vec("CartPole-v1", num_envs=NUM_ENVS, vectorization_mode="sync")
    loop = VectorEnvLoop(actor, venv, steps)
    ratios = []
    try:
        for _ in range(repeat):
            reference = hand_rate(loop, batches)
            ours = collector_rate(collector, batches)
            ratios.append(ours / reference)
            print(f"  hand loop {reference:9.0f} frames/s   SyncDataCollector {ours:9.0f} frames/s")
    finally:
        collector.shutdown()
        venv.close()
    return statistics.median(ratios)


class SlowCartPole(CartPoleEnv):
    """CartPole whose step also burns ~150 us of CPU (a costly simulator)."""

    def _step(self, tensordict):
        deadline = time.perf_counter() + SLOW_STEP_S
        while time.perf_counter() < deadline:
            pass
        return super()._step(tensordict)


def multi_vs_sync(repeat: int, batches: int) -> float:
    frames_per_batch = 400
    single = SyncDataCollector(SlowCartPole, frames_per_batch=frames_per_batch)
    multi = MultiSyncDataCollector([SlowCartPole] * 2, frames_per_batch=frames_per_batch)
    ratios = []
    try:
        for _ in range(repeat):
            one = collector_rate(single, max(1, batches // 4))
            two = collector_rate(multi, max(1, batches // 4))
            ratios.append(two / one)
            print(f"  SyncDataCollector {one:7.0f} frames/s   MultiSync(2) {two:7.0f} frames/s")
    finally:
        single.shutdown()
        multi.shutdown()
    return statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="interleaved measurements")
    parser.add_argument("--batches", type=int, default=20, help="batches per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    print("SyncDataCollector vs hand-written gymnasium SyncVectorEnv loop (8 CartPole, MLP 64x64)")
    sync_ratios = []
    for name, (actor, policy) in policies().items():
        for threads in thread_counts():
            print(f"{name}, {threads_label(threads)}")
            with torch_threads(threads):
                ratio = sync_vs_hand(actor, policy, args.repeat, args.batches)
            sync_ratios.append(ratio)
            print(f"=> ratio {ratio:.2f}x (target >= {SYNC_TARGET}x)\n")
    torch.set_num_threads(1)

    print(
        f"MultiSyncDataCollector(2 workers) vs SyncDataCollector, {SLOW_STEP_S * 1e6:.0f} us step"
    )
    multi_ratio = multi_vs_sync(args.repeat, args.batches)
    print(f"=> ratio {multi_ratio:.2f}x (target >= {MULTI_TARGET}x)")
    ok = min(sync_ratios) >= SYNC_TARGET and multi_ratio >= MULTI_TARGET
    print("\nPASS" if ok else "\nBELOW TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
