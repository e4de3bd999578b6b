"""Loading offline datasets: 1M transitions from a D4RL-format HDF5 file and from Minari.

    python benchmarks/datasets.py                  # 1M transitions, HalfCheetah's sizes
    python benchmarks/datasets.py --transitions 100000

Each format's dataset is written first (synthetic data: 17 observation and 6 action
features, 1000-step episodes, as D4RL's halfcheetah-medium; the Minari one with
``minari.create_dataset_from_buffers``), then opened three ways in the same run:

- the limit: the bare read of every array of the file with h5py (D4RL) or
  ``iterate_episodes`` (Minari), converting nothing and writing nothing;
- rlblocks' first load: that read plus the conversion into a memory-mapped cache;
- rlblocks' second load: reopening that cache.

Targets: a first load of 1M transitions in <= 10 s, a second in <= 1 s (it must reuse the
cache, not read the file again). Measured with torch's default threads and with 1 thread
(loading runs no torch kernel worth threading; both are printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import thread_counts, threads_label, torch_threads

FIRST_LOAD_S = 10.0
SECOND_LOAD_S = 1.0
OBS, ACT, EPISODE = 17, 6, 1000
MINARI_ID = "bench/halfcheetah-synthetic-v0"


def write_d4rl(path: Path, n: int) -> None:
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["observations"] = rng.standard_normal((n, OBS), dtype=np.float32)
        f["next_observations"] = rng.standard_normal((n, OBS), dtype=np.float32)
        f["actions"] = rng.uniform(-1, 1, (n, ACT)).astype(np.float32)
        f["rewards"] = rng.standard_normal(n, dtype=np.float32)
        f["terminals"] = np.zeros(n, dtype=bool)
        f["timeouts"] = (np.arange(n) % EPISODE) == EPISODE - 1


def write_minari(root: Path, dataset_id: str, n: int) -> None:
    import os

    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    os.environ["MINARI_DATASETS_PATH"] = str(root)
    rng = np.random.default_rng(0)
    buffers = []
    for number in range(n // EPISODE):
        truncations = np.zeros(EPISODE, dtype=bool)
        truncations[-1] = True
        buffers.append(
            EpisodeBuffer(
                id=number,
                observations=rng.standard_normal((EPISODE + 1, OBS), dtype=np.float32),
                actions=rng.uniform(-1, 1, (EPISODE, ACT)).astype(np.float32),
                rewards=rng.standard_normal(EPISODE).astype(np.float64),
                terminations=np.zeros(EPISODE, dtype=bool),
                truncations=truncations,
                infos={},
            )
        )
    space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    minari.create_dataset_from_buffers(
        dataset_id,
        buffers,
        observation_space=space,
        action_space=gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32),
        algorithm_name="synthetic",
        description="benchmarks/datasets.py",
    )


def bare_d4rl(path: Path) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        for key in f:
            f[key][:]


def bare_minari(root: Path, dataset_id: str) -> None:
    from minari import MinariDataset

    for episode in MinariDataset(root / dataset_id / "data").iterate_episodes():
        episode.observations  # noqa: B018 (iterating reads every array)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, work: Path, cache: Path, n: int) -> tuple[float, float, float]:
    """(bare read, first load, second load) of format ``name``, in seconds."""
    if name == "d4rl":
        from rlblocks.d4rl import D4RLExperienceReplay

        def bare() -> None:
            bare_d4rl(work / "data.hdf5")

        def load() -> object:
            return D4RLExperienceReplay(work / "data.hdf5", root=cache)
    else:
        from rlblocks.minari import MinariExperienceReplay

        def bare() -> None:
            bare_minari(work / "minari", MINARI_ID)

        def load() -> object:
            return MinariExperienceReplay(MINARI_ID, minari_root=work / "minari", root=cache)

    limit, first, second = timed(bare), timed(load), timed(load)
    assert len(load()) == n
    shutil.rmtree(cache)
    return limit, first, second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.transitions
    formats = [name for name in ("d4rl", "minari") if importlib.util.find_spec(f"rlblocks.{name}")]
    if not formats:
        print("rlblocks-d4rl and rlblocks-minari: not installed; nothing to measure")
        return 0
    work = Path(tempfile.mkdtemp(prefix="rlblocks-bench-datasets-"))
    missed = []
    try:
        if "d4rl" in formats:
            write_d4rl(work / "data.hdf5", n)
        if "minari" in formats:
            write_minari(work / "minari", MINARI_ID, n)
        print(
            f"{n:,} transitions ({OBS} observation, {ACT} action features, {EPISODE}-step episodes)"
        )
        for name in formats:  # imports and a first small load, outside the figures
            measure(name, work, work / "warm-up", n)
        for threads in thread_counts():
            with torch_threads(threads):
                for name in formats:
                    limit, first, second = measure(name, work, work / f"cache-{name}", n)
                    ok_first, ok_second = first <= FIRST_LOAD_S, second <= SECOND_LOAD_S
                    if not (ok_first and ok_second):
                        missed.append(f"{name} {threads_label(threads)}")
                    print(
                        f"{name:6s} {threads_label(threads)}: bare read {limit:.2f} s; "
                        f"rlblocks first load {first:.2f} s ({first / limit:.1f}x the bare "
                        f"read; target <= {FIRST_LOAD_S:.0f} s: "
                        f"{'met' if ok_first else 'MISSED'}), second load {second:.3f} s "
                        f"(target <= {SECOND_LOAD_S:.0f} s: {'met' if ok_second else 'MISSED'})"
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if missed:
        print(f"MISSED: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
