"""Learning results: each example trained with fixed seeds on CPU, against its target.

    python benchmarks/learning.py                       # every algorithm, seeds 1 2 3
    python benchmarks/learning.py --jobs 1              # one run at a time
    python benchmarks/learning.py --algos ppo --seeds 1 2 3
    python benchmarks/learning.py --algos ppo dqn --seeds 1 --no-sb3

Each run is ``examples/<algo>.py`` in a subprocess (a fresh interpreter, as a user starts
it); its final evaluation return and wall-clock are read from its output. For PPO the
wall-clock is compared with Stable-Baselines3 PPO with the rl-zoo CartPole-v1
hyper-parameters for the same frames, measured in the same run when stable-baselines3 is
installed; those timed runs go alone at the end, each seed next to SB3's, while the other
runs share the cores (``--jobs``: their returns do not depend on load, their wall-clock
does). The last line is a JSON summary (``LEARNING_SUMMARY {...}``) for run_all.py.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# algo -> (script, env, frames, target evaluation return)
TARGETS = {
    "ppo": ("ppo.py", "CartPole-v1", 100_000, 475.0),
    "dqn": ("dqn.py", "CartPole-v1", 100_000, 475.0),
    "sac": ("sac.py", "Pendulum-v1", 20_000, -200.0),
    "td3": ("td3.py", "Pendulum-v1", 30_000, -200.0),
    "ddpg": ("ddpg.py", "Pendulum-v1", 30_000, -200.0),
    "a2c": ("a2c.py", "CartPole-v1", 200_000, 475.0),
}


def run_example(algo: str, seed: int, runs_dir: str) -> tuple[float, float]:
    """Train ``algo`` with ``seed``; return (final evaluation return, wall-clock seconds)."""
    script, env_id, frames, _ = TARGETS[algo]
    command = [sys.executable, str(EXAMPLES / script), "--env-id", env_id, "--seed", str(seed)]
    command += ["--total-frames", str(frames), "--runs-dir", runs_dir, "--no-progress"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    match = re.search(r"final evaluation return: (-?[\d.]+)", result.stdout)
    if result.returncode or not match:
        raise RuntimeError(f"{script} seed {seed} failed:\n{result.stderr[-2000:]}")
    return float(match.group(1)), elapsed


def run_sb3_ppo(seed: int, frames: int) -> float | None:
    """Wall-clock of SB3 PPO, rl-zoo CartPole-v1 hyper-parameters; None if SB3 is missing."""
    code = f"""
import time, torch
torch.set_num_threads(1)
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
start = time.perf_counter()
env = make_vec_env("CartPole-v1", n_envs=8, seed={seed})
model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98,
            n_epochs=20, ent_coef=0.0, learning_rate=lambda f: 1e-3 * f,
            clip_range=lambda f: 0.2 * f, seed={seed}, device="cpu", verbose=0)
model.learn(total_timesteps={frames})
print("SB3_SECONDS", time.perf_counter() - start)
"""
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return None
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"SB3 PPO failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - start  # whole process, like the rlblocks figure


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} +- {std:.1f} (min {min(values):.1f})"


def report(algo: str, runs: list[tuple[int, float, float]], sb3: list[float | None]) -> dict:
    """Print ``algo``'s figures against its target; return its summary row."""
    _, env_id, frames, target = TARGETS[algo]
    returns = [ret for _, ret, _ in runs]
    seconds = [sec for _, _, sec in runs]
    met = min(returns) >= target
    row = {"env": env_id, "frames": frames, "target": target, "returns": returns,
           "seconds": seconds, "met_all_seeds": met}  # fmt: skip
    verdict = "met on every seed" if met else "MISSED on at least one seed"
    print(f"{algo}: eval return {spread(returns)}, target >= {target} within {frames} "
          f"frames: {verdict}; wall-clock {spread(seconds)} s")  # fmt: skip
    if algo == "ppo" and sb3:
        if None in sb3:
            print("ppo: stable-baselines3 not installed, no SB3 comparison")
            return row
        ratio = statistics.fmean(seconds) / statistics.fmean(sb3)
        row.update(sb3_seconds=sb3, time_ratio_vs_sb3=ratio)
        verdict = "met" if ratio <= 0.5 else "MISSED"
        print(f"ppo: SB3 PPO (rl-zoo) wall-clock {spread(sb3)} s; rlblocks/SB3 = "
              f"{ratio:.2f}x (target <= 0.5x): {verdict}")  # fmt: skip
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--no-sb3", action="store_true", help="skip the SB3 PPO timing")
    parser.add_argument(
        "--jobs", type=int, default=2,
        help="runs at once, except PPO and its SB3 reference, which run alone at the end",
    )  # fmt: skip
    args = parser.parse_args()
    timed = "ppo" in args.algos and not args.no_sb3
    pooled = [(a, s) for a in args.algos for s in args.seeds if not (timed and a == "ppo")]
    results: dict[tuple[str, int], tuple[float, float]] = {}
    sb3: list[float | None] = []

    def record(algo: str, seed: int, ret: float, sec: float) -> None:
        results[(algo, seed)] = (ret, sec)
        print(f"{algo} {TARGETS[algo][1]} seed {seed}: eval return {ret:.1f} in {sec:.1f} s",
              flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory() as runs_dir:
        # Returns do not depend on load: these runs share the cores (their wall-clock does).
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = {pool.submit(run_example, a, s, runs_dir): (a, s) for a, s in pooled}
            for future in as_completed(futures):
                record(*futures[future], *future.result())
        if timed:  # alone, each seed next to SB3's run of the same seed
            for seed in args.seeds:
                record("ppo", seed, *run_example("ppo", seed, runs_dir))
                sb3.append(run_sb3_ppo(seed, TARGETS["ppo"][2]))
    summary = {}
    for algo in args.algos:
        runs = [(s, *results[(algo, s)]) for s in args.seeds]
        summary[algo] = report(algo, runs, sb3 if algo == "ppo" else [])
    print("LEARNING_SUMMARY " + json.dumps(summary))
    missed = [a for a, row in summary.items() if not row["met_all_seeds"]]
    missed += ["ppo time"] if summary.get("ppo", {}).get("time_ratio_vs_sb3", 0) > 0.5 else []
    print("\nBELOW TARGET: " + ", ".join(missed) if missed else "\nPASS")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
