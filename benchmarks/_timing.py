"""Timing helpers shared by the benchmark scripts (not a benchmark: ``run_all.py`` skips it).

A figure is the median over interleaved rounds of ``time(ours) / time(reference)``, so that
drifts in machine load hit both sides alike, printed next to its target.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

#: torch's thread count before any script changes it (what a user gets by default).
DEFAULT_THREADS = torch.get_num_threads()


@dataclass(frozen=True)
class Target:
    """A bound on a ratio: ``<= bound`` (a time ratio), or ``>= bound`` with ``at_least``
    (a speed-up); ``note`` is printed after it (e.g. the bound as frames/s)."""

    bound: float
    at_least: bool = False
    note: str = ""

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.at_least else ratio <= self.bound

    def __str__(self) -> str:
        text = f"{'>=' if self.at_least else '<='} {self.bound:.3g}x"
        return f"{text} ({self.note})" if self.note else text


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(
    name: str,
    ours: Callable[[], object],
    ref: Callable[[], object],
    repeat: int,
    target: Target | str,
) -> float:
    """Median of ``time(ours) / time(ref)`` over interleaved rounds (after a warm-up).

    Args:
        name: What is compared, printed first.
        ours: One run of the measured side.
        ref: One run of the reference, doing the same work.
        repeat: Interleaved rounds.
        target: The bound the ratio must meet, or a note for an information-only figure.

    Returns:
        The median ratio; with the slower side as ``ours`` it is a speed-up, e.g.
        ``time(serial) / time(parallel)``.
    """
    ours()
    ref()
    ratios = [timed(ours) / timed(ref) for _ in range(repeat)]
    ratio = statistics.median(ratios)
    print(f"{name:<72} {ratio:6.2f}x   target {target}", flush=True)
    return ratio


def thread_counts() -> list[int]:
    """torch's default thread count, then 1 (once if they are the same)."""
    return list(dict.fromkeys([DEFAULT_THREADS, 1]))


def threads_label(threads: int) -> str:
    default = " (torch's default)" if threads == DEFAULT_THREADS else ""
    return f"{threads} torch thread{'s' if threads > 1 else ''}{default}"


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run this process's torch ops on ``threads`` threads, then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def compare_at_thread_counts(
    results: dict[str, tuple[float, Target]],
    key: str,
    name: str,
    ours: Callable[[], object],
    ref: Callable[[], object],
    repeat: int,
    target: Target | str,
) -> None:
    """:func:`compare` with this process at each of :func:`thread_counts`; the ratios
    are recorded in ``results`` as ``key@threads`` (unless ``target`` is only a note)."""
    for threads in thread_counts():
        with torch_threads(threads):
            ratio = compare(f"{name}, {threads} thr", ours, ref, repeat, target)
        if isinstance(target, Target):
            results[f"{key}@{threads}"] = (ratio, target)


def compare_rates_at_thread_counts(
    results: dict[str, tuple[float, Target]],
    key: str,
    name: str,
    ours: Callable[[], object],
    ref: Callable[[], object],
    count: int,
    unit: str,
    repeat: int,
    target: Target | str,
    *,
    speed_ratio: bool = False,
) -> None:
    """Both sides' rates (``count`` ``unit`` per run) and their ratio, at each of
    :func:`thread_counts`: the median over interleaved rounds (after a warm-up) of
    ``time(ours) / time(ref)``, or with ``speed_ratio`` of its inverse (higher is better).
    Recorded in ``results`` as ``key@threads`` when ``target`` is a :class:`Target`."""
    for threads in thread_counts():
        with torch_threads(threads):
            ours()
            ref()
            rounds = [(timed(ours), timed(ref)) for _ in range(repeat)]
        ratio = statistics.median(r / o if speed_ratio else o / r for o, r in rounds)
        ours_rate = count / statistics.median(o for o, _ in rounds)
        ref_rate = count / statistics.median(r for _, r in rounds)
        print(
            f"{name + f', {threads} thr':<58} {ours_rate:>10,.0f} vs {ref_rate:>10,.0f} {unit}"
            f"  {ratio:5.2f}x   target {target}",
            flush=True,
        )
        if isinstance(target, Target):
            results[f"{key}@{threads}"] = (ratio, target)


def missed_targets(results: dict[str, tuple[float, Target]]) -> str:
    """The closing verdict line: ``targets all met`` or the names of the missed ones."""
    missed = [key for key, (ratio, target) in results.items() if not target.met(ratio)]
    return f"targets {'all met' if not missed else 'MISSED: ' + ', '.join(missed)}"


class Replay:
    """A policy writing a fixed sequence of actions at ``key``, one per call, from the start
    again after :meth:`restart` (both sides of a figure then take the same actions)."""

    def __init__(self, actions: torch.Tensor, key: Any = "action") -> None:
        self.actions = actions
        self.key = key
        self.t = 0

    def restart(self) -> None:
        self.t = 0

    def __call__(self, tensordict: Any) -> Any:
        tensordict.set(self.key, self.actions[self.t])
        self.t += 1
        return tensordict


def replay_rollout(env: Any, steps: int, replay: Replay | None) -> Callable[[], None]:
    """``env.rollout(steps, policy=replay, break_when_any_done=False)``, replay restarted."""

    def run() -> None:
        if replay is not None:
            replay.restart()
        env.rollout(steps, policy=replay, break_when_any_done=False)

    return run
