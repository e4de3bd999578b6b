"""CrossQ against SAC: the gradient steps each needs to reach a return on Pendulum-v1.

    python benchmarks/crossq_vs_sac.py                         # seeds 1 2 3, 20k frames
    python benchmarks/crossq_vs_sac.py --seeds 1 --total-frames 5000 --eval-every 1000
    python benchmarks/crossq_vs_sac.py --threads default --target -150 --runs-dir runs

The claim measured (Bhatt et al. 2024): CrossQ reaches SAC's result with fewer gradient
steps. ``examples/sac.py`` and ``examples/crossq.py`` run as subprocesses, one at a time, at
their own defaults but for the flags they are given alike here: env, seed, frames, one
frame per batch, the update-to-data ratio (``--utd``), the random frames first
(``--learning-starts``), the torch thread count and the evaluation (``--eval-every N``:
the examples' deterministic evaluation, ``--eval-episodes`` episodes, every ``N`` frames
and at the end; it draws nothing from torch's generator, so a run trains as without it).

Gradient steps to the target: at frame ``f`` both examples have taken
``utd * (f - learning_starts + 1)`` gradient steps (one critic update each; CrossQ's actor
moves on every third), so the figure is read at the first evaluation whose return is at
least ``--target``: it is exact to within ``--eval-every`` frames. A run that never gets
there counts as not reached, and a seed counts in the median ratio CrossQ/SAC only if
both got there. The final returns and each process's wall-clock are printed too.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
import tempfile
from pathlib import Path

from learning import final_return, run_script, threads_arg, torch_default_threads

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = {"SAC": "sac.py", "CrossQ": "crossq.py"}


def eval_curve(stdout: str) -> list[tuple[int, float]]:
    """``(frames, eval/return)`` of a run, read from the run folder it printed."""
    run_dir = Path(re.search(r"run folder: (.+)", stdout).group(1).strip())
    with open(run_dir / "scalars.csv", newline="", encoding="utf-8") as file:
        rows = [r for r in csv.DictReader(file) if r["name"] == "eval/return"]
    return [(int(r["step"]), float(r["value"])) for r in rows]


def steps_to_target(curve: list[tuple[int, float]], args: argparse.Namespace) -> int | None:
    """Gradient steps taken when the return first reached ``args.target`` (None: never)."""
    for frames, value in curve:
        if value >= args.target:
            return args.utd * max(0, frames - args.learning_starts + 1)
    return None


def run(name: str, seed: int, threads: int, runs_dir: str, args: argparse.Namespace) -> dict:
    """Train one example with the shared flags; its steps to the target, return, seconds."""
    command = [sys.executable, str(EXAMPLES / SCRIPTS[name]), "--env-id", args.env_id]
    command += ["--seed", str(seed), "--total-frames", str(args.total_frames)]
    command += ["--frames-per-batch", "1", "--utd", str(args.utd)]
    command += ["--learning-starts", str(args.learning_starts)]
    command += ["--eval-every", str(args.eval_every), "--eval-episodes", str(args.eval_episodes)]
    command += ["--threads", str(threads), "--runs-dir", runs_dir, "--no-progress"]
    stdout, seconds = run_script(command, f"{SCRIPTS[name]} seed {seed}")
    steps = steps_to_target(eval_curve(stdout), args)
    return {"steps": steps, "return": final_return(stdout), "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--threads",
        type=threads_arg,
        default="1",
        help="torch threads of every run: a number, or 'default' (torch's default count here)",
    )
    parser.add_argument("--env-id", default="Pendulum-v1")
    parser.add_argument("--total-frames", type=int, default=20_000)
    parser.add_argument("--utd", type=int, default=1, help="gradient steps per frame")
    parser.add_argument("--learning-starts", type=int, default=1000, help="random frames first")
    parser.add_argument("--eval-every", type=int, default=500, help="frames between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--target", type=float, default=-200.0, help="evaluation return")
    parser.add_argument(
        "--runs-dir", default=None, help="keep the run folders here (default: a temporary one)"
    )
    args = parser.parse_args()
    threads = torch_default_threads() if args.threads == "default" else args.threads
    print(
        f"{args.env_id}, {args.total_frames} frames, utd {args.utd}, learning starts "
        f"{args.learning_starts}, {threads} torch thread(s); evaluation every "
        f"{args.eval_every} frames, {args.eval_episodes} deterministic episodes; target "
        f"{args.target:g}; each example's other hyper-parameters at its defaults"
    )
    ratios = []
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = args.runs_dir or scratch
        for seed in args.seeds:
            results = {name: run(name, seed, threads, runs_dir, args) for name in SCRIPTS}
            cells = []
            for name, result in results.items():
                steps = "not reached" if result["steps"] is None else f"{result['steps']} steps"
                cells.append(
                    f"{name} {steps}, final return {result['return']:.1f} "
                    f"({result['seconds']:.0f} s)"
                )
            sac, crossq = results["SAC"]["steps"], results["CrossQ"]["steps"]
            ratio = crossq / sac if sac and crossq is not None else None
            ratios += [] if ratio is None else [ratio]
            shown = "n/a" if ratio is None else f"{ratio:.2f}"
            print(f"seed {seed}: " + "; ".join(cells) + f"; CrossQ/SAC {shown}", flush=True)
    if ratios:
        print(
            f"median CrossQ/SAC gradient steps to {args.target:g}: "
            f"{statistics.median(ratios):.2f} over {len(ratios)} of {len(args.seeds)} seeds "
            f"(below 1: CrossQ needs fewer)"
        )
    else:
        print(f"median CrossQ/SAC: n/a (no seed where both reached {args.target:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
