"""Learning results: each example trained with fixed seeds on CPU, against its target.

    python benchmarks/learning.py                       # every algorithm, seeds 1 2 3
    python benchmarks/learning.py --algos ppo --seeds 1 2 3
    python benchmarks/learning.py --algos ppo dqn --seeds 1 --no-sb3

Each run is ``examples/<algo>.py`` in a subprocess (a fresh interpreter, as a user starts
it); its final evaluation return and wall-clock are read from its output. For PPO the
wall-clock is compared with Stable-Baselines3 PPO with the rl-zoo CartPole-v1
hyper-parameters for the same frames, measured in the same run when stable-baselines3 is
installed. The last line is a JSON summary (``LEARNING_SUMMARY {...}``) for run_all.py.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--no-sb3", action="store_true", help="skip the SB3 PPO timing")
    args = parser.parse_args()
    summary: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as runs_dir:
        for algo in args.algos:
            _, env_id, frames, target = TARGETS[algo]
            returns, seconds = [], []
            for seed in args.seeds:
                ret, sec = run_example(algo, seed, runs_dir)
                returns.append(ret)
                seconds.append(sec)
                print(f"{algo} {env_id} seed {seed}: eval return {ret:.1f} in {sec:.1f} s")
            met = min(returns) >= target
            row = {"env": env_id, "frames": frames, "target": target, "returns": returns,
                   "seconds": seconds, "met_all_seeds": met}  # fmt: skip
            print(f"{algo}: eval return {spread(returns)}, target >= {target} within "
                  f"{frames} frames: {'met' if met else 'MISSED'} on every seed; "
                  f"wall-clock {spread(seconds)} s")  # fmt: skip
            if algo == "ppo" and not args.no_sb3:
                sb3 = [run_sb3_ppo(seed, frames) for seed in args.seeds]
                if None not in sb3:
                    ratio = statistics.fmean(seconds) / statistics.fmean(sb3)
                    row.update(sb3_seconds=sb3, time_ratio_vs_sb3=ratio)
                    verdict = "met" if ratio <= 0.5 else "MISSED"
                    print(f"ppo: SB3 PPO (rl-zoo) wall-clock {spread(sb3)} s; rlblocks/SB3 = "
                          f"{ratio:.2f}x (target <= 0.5x): {verdict}")  # fmt: skip
                else:
                    print("ppo: stable-baselines3 not installed, no SB3 comparison")
            summary[algo] = row
    print("LEARNING_SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
