"""Learning results: the examples trained with fixed seeds on CPU, against their targets.

    python benchmarks/learning.py                        # every setting and algorithm, seeds 1 2 3
    python benchmarks/learning.py --settings ppo-zoo --seeds 1
    python benchmarks/learning.py --settings ppo-zoo ppo-example --threads default --no-sb3
    python benchmarks/learning.py --algos td3 a2c --jobs 1
    python benchmarks/learning.py --settings dqn-zoo --seeds 1 --total-frames-override 4000
    python benchmarks/learning.py --settings ppo-zoo --repeats 2   # each side's fastest of 2

Every run is a script in a fresh interpreter, as a user starts it; its final evaluation
return is read from its output and its wall-clock is the whole process, start to exit.

Settings (``--settings``, see ``SETTINGS``) compare the same work on three sides:
``examples/<algo>.py`` (rlblocks; run eager and with ``--compile``, its figure per seed the
faster of the two, unless ``--no-compile``), ``benchmarks/floors/<algo>.py`` (the same algorithm in
plain PyTorch: the floor) and Stable-Baselines3 (``benchmarks/floors/sb3.py``, which builds
SB3's arguments from the same flags and refuses flags SB3 cannot honour). Every side gets
the same hyper-parameter flags, frames, seed, torch thread count (``--threads``) and
evaluation protocol. These runs are timed, so they go one at a time, after the untimed
runs, a seed's three runs next to each other. Per setting the figures are the median
over seeds of the per-seed wall-clock ratios rlblocks/SB3 (target <= 0.7x) and
rlblocks/floor (target <= 1.15x), and rlblocks' return on every seed (target: 475 on
CartPole-v1, -200 on Pendulum-v1).

Algorithms (``--algos``; by default those no setting covers: td3, ddpg, a2c, the rest
of the model-free table and the examples whose plugin is installed) train at the example's
defaults and are checked for their return only. They run first and share the cores
(``--jobs``): their returns do not depend on load, their wall-clock does.

``--total-frames-override N`` is a smoke-test aid: every run trains N frames, and the
output says that its figures are not comparable to the targets (no verdicts). The last line
is a JSON summary (``LEARNING_SUMMARY {...}``) for run_all.py: one row per algorithm and,
under ``"settings"``, one row per setting.
"""

from __future__ import annotations

import argparse
import compileall
import csv
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
FLOORS = HERE / "floors"
EVAL_EPISODES = 10  # the examples' default, given to every side
SB3_TARGET = 0.7  # rlblocks wall-clock / SB3's, at most
FLOOR_TARGET = 1.15  # rlblocks wall-clock / the plain-PyTorch floor's, at most

# algo -> (script, env, frames, target evaluation return), at the example's defaults
TARGETS = {
    "ppo": ("ppo.py", "CartPole-v1", 100_000, 475.0),
    "dqn": ("dqn.py", "CartPole-v1", 100_000, 475.0),
    "sac": ("sac.py", "Pendulum-v1", 20_000, -200.0),
    "td3": ("td3.py", "Pendulum-v1", 30_000, -200.0),
    "ddpg": ("ddpg.py", "Pendulum-v1", 30_000, -200.0),
    "a2c": ("a2c.py", "CartPole-v1", 200_000, 475.0),
    # Multi-agent, mean over envs (and agents) of each env's first episode return. VMAS
    # navigation (3 agents, episodes end when all are on their goals or after 100 steps):
    # random actions -0.5 to 0.0, standing still 0.0. MPE simple_spread (3 agents, 25
    # steps), team return = the agents' mean reward summed: random actions about -26, an
    # untrained greedy policy about -50.
    "mappo_vmas": ("mappo_vmas.py", "navigation", 60_000, 2.5),
    "masac_vmas": ("masac_vmas.py", "navigation", 100_000, 2.5),
    "vdn_pettingzoo": ("qmix_pettingzoo.py", "mpe2.simple_spread_v3", 100_000, -22.0),
    # Offline RL and imitation, scored by D4RL's normalized score (0 random actions, 1 the
    # expert; examples/_offline.py): each seed's first run trains a SAC expert (8k frames)
    # and records a medium-quality dataset from it (its mean action plus noise, random
    # actions on half the steps: normalized score about 0.55), or for GAIL 50 expert
    # episodes. Frames are gradient steps for the offline examples, env steps for GAIL.
    # The Decision Transformer's bar is lower: a return-conditioned behaviour cloner that
    # cannot stitch trajectories, it scores near the behaviour policy on medium data (Chen
    # et al. 2021, Table 2), and this dataset's episodes barely differ in return; 0.6 asks
    # it to beat the data it learns from.
    "td3bc_offline": ("td3bc_offline.py", "Pendulum-v1", 10_000, 0.8),
    "iql_offline": ("iql_offline.py", "Pendulum-v1", 20_000, 0.8),
    "cql_offline": ("cql_offline.py", "Pendulum-v1", 10_000, 0.8),
    "dt_offline": ("dt_offline.py", "Pendulum-v1", 6_000, 0.6),
    "gail": ("gail.py", "Pendulum-v1", 400_000, 0.8),
    # The rest of the model-free table (issue 17). Rainbow: C51 + dueling + noisy nets +
    # 3-step returns + prioritized replay + double Q. HER: DQN on 15-bit flipping, scored by
    # the success rate of greedy episodes on fresh targets (the same DQN without
    # relabelling stays at 0: `examples/her_bitflip.py --her-k 0`).
    # Critic ensembles on Pendulum-v1 (each docstring says where it departs from its paper
    # to fit a 20k-frame CPU run; benchmarks/crossq_vs_sac.py compares CrossQ's gradient
    # steps with SAC's).
    "redq": ("redq.py", "Pendulum-v1", 20_000, -200.0),
    "crossq": ("crossq.py", "Pendulum-v1", 20_000, -200.0),
    "tqc": ("tqc.py", "Pendulum-v1", 20_000, -200.0),
    "rainbow": ("rainbow.py", "CartPole-v1", 100_000, 475.0),
    "her_bitflip": ("her_bitflip.py", "BitFlippingEnv", 40_000, 0.9),
    # IMPALA: 2 worker processes (MultiaSyncDataCollector), one learner update per batch in
    # arrival order, V-trace; batches arrive in timing order, so runs do not repeat.
    "impala": ("impala.py", "CartPole-v1", 300_000, 475.0),
    # Recurrent PPO (issue 19) on CartPole-v1 with the velocities masked out (a POMDP); the
    # same script with an MLP instead of the LSTM (`examples/ppo_lstm.py --no-lstm`) stays
    # below 60.
    "ppo_lstm": ("ppo_lstm.py", "CartPole-v1", 100_000, 475.0),
    # Language-model post-training (issue 21): a 2-layer GPT-2 briefly trained by SFT, then
    # GRPO with the exact-sum reward on two-digit addition; the figure is the gain in greedy
    # accuracy on 1000 held-out problems over the SFT-only model, in points. Frames are the
    # completions GRPO samples.
    "grpo_arithmetic": ("grpo_arithmetic.py", "arithmetic", 153_600, 20.0),
    # Model-based (issue 18): Dreamer from states on dm_control cartpole/swingup, frames as
    # physics steps (action repeat 8). The target is Dreamer's own score from pixels after
    # 100k frames, 326 +- 27 (Hafner et al. 2020's curves, tabulated in Laskin et al. 2020,
    # CURL, Table 1). Uniform random actions score 133 on average at this action repeat (20
    # episodes, 29 to 238), constant full force about 75.
    "dreamer": ("dreamer.py", "cartpole/swingup", 100_000, 326.0),
}
# The examples whose figure is the normalized score they print, not the evaluation return.
SCORED = {"td3bc_offline", "iql_offline", "cql_offline", "dt_offline", "gail"}
# Every example whose figure is not the evaluation return: the label it prints it with.
FIGURE_LABEL = {
    **dict.fromkeys(sorted(SCORED), "normalized score"),
    "her_bitflip": "final success rate",
    "grpo_arithmetic": "GRPO gain over SFT only",
}
# The plugin each multi-agent example needs: it runs by default only where it is installed.
NEEDS_PLUGIN = {
    "mappo_vmas": "rlblocks.vmas",
    "masac_vmas": "rlblocks.vmas",
    "vdn_pettingzoo": "rlblocks.pettingzoo",
    **dict.fromkeys(sorted(SCORED), "rlblocks.minari"),  # their datasets are Minari's
    "grpo_arithmetic": "rlblocks.llm",
    "dreamer": "rlblocks.dmcontrol",
}
DEFAULT_ALGOS = ["td3", "ddpg", "a2c", "redq", "crossq", "tqc", "rainbow", "her_bitflip", "impala"]
DEFAULT_ALGOS += ["ppo_lstm"]
DEFAULT_ALGOS += list(NEEDS_PLUGIN)


@dataclass(frozen=True)
class Setting:
    """One comparison: the flags every side runs, its budget and its return target."""

    algo: str
    env_id: str
    frames: int
    target: float
    flags: str  # hyper-parameter flags of examples/<algo>.py, given to every side
    source: str


SETTINGS = {
    "ppo-zoo": Setting(
        algo="ppo",
        env_id="CartPole-v1",
        frames=100_000,
        target=475.0,
        flags="--num-envs 8 --num-steps 32 --update-epochs 20 --minibatch-size 256 --lr 1e-3 "
        "--anneal-clip --clip-coef 0.2 --gamma 0.98 --gae-lambda 0.8 --ent-coef 0.0 "
        "--vf-coef 0.5 --max-grad-norm 0.5 --hidden 64",
        source="rl-baselines3-zoo hyperparams/ppo.yml CartPole-v1 (n_timesteps 1e5; lr and "
        "clip range linear to 0; SB3's defaults otherwise)",
    ),
    "ppo-example": Setting(
        algo="ppo",
        env_id="CartPole-v1",
        frames=100_000,
        target=475.0,
        flags="--num-envs 64 --num-steps 16 --update-epochs 20 --minibatch-size 1024 --lr 2e-3 "
        "--clip-coef 0.2 --gamma 0.98 --gae-lambda 0.8 --ent-coef 0.0 --vf-coef 0.5 "
        "--max-grad-norm 0.5 --hidden 64",
        source="examples/ppo.py's defaults (lr linear to 0, constant clip range)",
    ),
    "dqn-zoo": Setting(
        algo="dqn",
        env_id="CartPole-v1",
        frames=100_000,
        target=475.0,
        flags="--num-envs 1 --frames-per-batch 256 --gradient-steps 128 --batch-size 64 "
        "--buffer-size 100000 --learning-starts 1000 --lr 2.3e-3 --gamma 0.99 "
        "--target-update-frames 10 --exploration-fraction 0.16 --eps-end 0.04 --hidden 256 "
        "--loss-function smooth_l1 --max-grad-norm 10",
        source="rl-baselines3-zoo hyperparams/dqn.yml CartPole-v1 (the zoo trains 5e4 frames, "
        "here the 1e5 of the DQN target; SB3's fixed Huber loss and default max_grad_norm 10)",
    ),
    "sac-zoo": Setting(
        algo="sac",
        env_id="Pendulum-v1",
        frames=20_000,
        target=-200.0,
        flags="--num-envs 1 --frames-per-batch 1 --utd 1 --batch-size 256 --buffer-size 1000000 "
        "--learning-starts 100 --lr 1e-3 --gamma 0.99 --tau 0.005 --hidden 256 "
        "--loss-function l2",
        source="rl-baselines3-zoo hyperparams/sac.yml Pendulum-v1 (n_timesteps 2e4, lr 1e-3; "
        "SB3's defaults otherwise, its critic loss the squared error)",
    ),
}
# "compiled" is the rlblocks example with --compile; rlblocks' figure per seed is the
# faster of its eager and compiled runs (its targets say "best of eager and --compile").
SIDES = ("rlblocks", "compiled", "floor", "sb3")
SIDE_NAMES = {"rlblocks": "rlblocks", "compiled": "rlblocks --compile", "floor": "floor",
              "sb3": "SB3"}  # fmt: skip
# What each side imports before it starts, and the Adam optimizer every side builds: a
# fixed cost inside each of its wall-clocks. Building the first torch optimizer imports
# torch._dynamo (~1 s) unless something did before (tensordict does, at import).
_ADAM = "; import torch; torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])"
STARTUP_IMPORTS = {
    "rlblocks": f"import sys; sys.path.insert(0, {str(EXAMPLES)!r}); import _common, "
    "rlblocks.collectors, rlblocks.objectives" + _ADAM,
    "compiled": f"import sys; sys.path.insert(0, {str(EXAMPLES)!r}); import _common, "
    "rlblocks.collectors, rlblocks.objectives" + _ADAM,
    "floor": "import gymnasium, numpy, torch" + _ADAM,
    "sb3": "import gymnasium, numpy, torch, stable_baselines3" + _ADAM,
}


@dataclass
class Run:
    """What one run printed and how long its process took."""

    eval_return: float
    seconds: float
    frames: int | None
    sb3_call: str | None = None


def run_script(command: list[str], label: str) -> tuple[str, float]:
    """Run ``command``; return its stdout and its wall-clock seconds."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode or "final evaluation return:" not in result.stdout:
        raise RuntimeError(f"{label} failed:\n{result.stdout[-1000:]}\n{result.stderr[-2000:]}")
    return result.stdout, elapsed


def final_return(stdout: str) -> float:
    return float(re.search(r"final evaluation return: (-?[\d.]+)", stdout).group(1))


def example_frames(stdout: str) -> int | None:
    """The frames an example trained: the step of ``eval/return`` in its run folder's log."""
    match = re.search(r"run folder: (.+)", stdout)
    if not match:
        return None
    with open(Path(match.group(1).strip()) / "scalars.csv", newline="", encoding="utf-8") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row["name"] == "eval/return"]
    return steps[-1] if steps else None


def run_example(algo: str, seed: int, runs_dir: str, frames: int) -> tuple[float, float]:
    """Train ``algo`` at its defaults with ``seed``; return (final return or normalized
    score, wall-clock)."""
    script, env_id, _, _ = TARGETS[algo]
    command = [sys.executable, str(EXAMPLES / script), "--env-id", env_id, "--seed", str(seed)]
    command += ["--total-frames", str(frames), "--runs-dir", runs_dir, "--no-progress"]
    if algo in SCORED:  # the offline examples of one seed share its expert and dataset
        command += ["--datasets-dir", str(Path(runs_dir) / "datasets")]
    stdout, seconds = run_script(command, f"{script} seed {seed}")
    if algo in FIGURE_LABEL:
        label = FIGURE_LABEL[algo]
        return float(re.search(rf"{label}: (-?[\d.]+)", stdout).group(1)), seconds
    return final_return(stdout), seconds


def run_side(
    side: str, setting: Setting, seed: int, frames: int, threads: int, runs_dir: str
) -> Run:
    """One side of ``setting`` for ``seed``: the same flags, frames, threads and evaluation."""
    common = ["--env-id", setting.env_id, "--seed", str(seed), "--total-frames", str(frames)]
    common += ["--eval-episodes", str(EVAL_EPISODES), "--threads", str(threads)]
    common += setting.flags.split()
    script = f"{setting.algo}.py"
    if side in ("rlblocks", "compiled"):
        command = [sys.executable, str(EXAMPLES / script), *common]
        # No learning-curve plot (matplotlib's import and a PNG: about 0.4 s), which the
        # floor and SB3 do not draw either.
        command += ["--runs-dir", runs_dir, "--no-progress", "--no-plot"]
        command += ["--compile"] if side == "compiled" else []
    elif side == "floor":
        command = [sys.executable, str(FLOORS / script), *common]
    else:
        command = [sys.executable, str(FLOORS / "sb3.py"), setting.algo, *common]
    stdout, seconds = run_script(command, f"{side} {script} seed {seed}")
    if side in ("rlblocks", "compiled"):
        trained = example_frames(stdout)
    else:
        trained = int(re.search(r"^frames: (\d+)", stdout, re.MULTILINE).group(1))
    call = re.search(r"^SB3 call: (.+)$", stdout, re.MULTILINE)
    return Run(final_return(stdout), seconds, trained, call.group(1) if call else None)


def byte_compile_sources() -> list[str]:
    """Byte-compile the installed packages, rlblocks' sources, the examples and the floors
    (``__pycache__``; files already compiled are skipped).

    pip compiles what it installs, uv does not by default (``nox -s bench`` installs with
    uv), and an editable rlblocks is never compiled at install. On a machine that sets
    ``PYTHONDONTWRITEBYTECODE`` (this one does) every timed process would then compile
    from source what it imports: measured here, ``import tensordict`` took 7.2 s instead of
    2.9 s, a cost that falls on the sides unevenly. Returns the folders compiled.
    """
    spec = importlib.util.find_spec("rlblocks")
    folders = [
        sysconfig.get_paths()["purelib"],
        *(spec.submodule_search_locations or [] if spec else []),
        EXAMPLES,
        FLOORS,
    ]
    for folder in folders:
        compileall.compile_dir(folder, quiet=2, workers=0)
    return [str(f) for f in folders]


def startup_seconds(side: str, repeats: int = 3) -> float:
    """Median wall-clock of a fresh interpreter that only imports what ``side`` imports and
    builds an optimizer (``STARTUP_IMPORTS``)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", STARTUP_IMPORTS[side]], capture_output=True, check=True
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def threads_arg(value: str) -> int | str:
    """``--threads``: a positive number or ``default``."""
    if value == "default" or (value.isdigit() and int(value) > 0):
        return value if value == "default" else int(value)
    raise argparse.ArgumentTypeError(f"expected a positive number or 'default', got {value!r}")


def torch_default_threads() -> int:
    """Torch's default intra-op thread count in a fresh interpreter here."""
    code = "import torch; print(torch.get_num_threads())"
    return int(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )


def run_untimed(
    algos: list[str], seeds: list[int], jobs: int, runs_dir: str, frames_override: int | None
) -> dict[tuple[str, int], tuple[float, float]]:
    """Train each of ``algos`` at its defaults with each seed, ``jobs`` runs at once."""
    results = {}
    if algos:
        print(f"Untimed runs (examples at their defaults, {max(1, jobs)} at once):")
    # Returns do not depend on load: these runs share the cores (their wall-clock does).
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {
            pool.submit(run_example, a, s, runs_dir, frames_override or TARGETS[a][2]): (a, s)
            for a in algos
            for s in seeds
        }
        for future in as_completed(futures):
            algo, seed = futures[future]
            results[(algo, seed)] = ret, sec = future.result()
            what, digits = figure_name(algo)
            print(
                f"{algo} {TARGETS[algo][1]} seed {seed}: {what} {ret:.{digits}f} in {sec:.1f} s",
                flush=True,
            )
    return results


def figure_name(algo: str) -> tuple[str, int]:
    """What an algorithm's figure is, and the decimals it is printed with."""
    return (FIGURE_LABEL[algo], 3) if algo in FIGURE_LABEL else ("eval return", 1)


def spread(values: list[float], digits: int = 1) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} +- {std:.{digits}f} (min {min(values):.{digits}f})"


def report_algo(algo: str, runs: list[tuple[int, float, float]], frames: int, smoke: bool) -> dict:
    """Print an untimed algorithm's figures against its target; return its summary row."""
    _, env_id, _, target = TARGETS[algo]
    returns = [ret for _, ret, _ in runs]
    seconds = [sec for _, _, sec in runs]
    met = min(returns) >= target
    row = {
        "env": env_id,
        "frames": frames,
        "target": target,
        "returns": returns,
        "seconds": seconds,
        "met_all_seeds": met,
    }
    verdict = (
        "(smoke test: no verdict)"
        if smoke
        else ("met on every seed" if met else "MISSED on at least one seed")
    )
    what, digits = figure_name(algo)
    print(
        f"{algo}: {what} {spread(returns, digits)}, target >= {target} within {frames} "
        f"frames: {verdict}; wall-clock {spread(seconds)} s (shared cores)"
    )
    return row


def ratio_line(name: str, ratios: list[float], target: float, smoke: bool) -> bool:
    """Print the median ratio against ``target``; return whether it is met."""
    median = statistics.median(ratios)
    per_seed = ", ".join(f"{r:.2f}" for r in ratios)
    met = median <= target
    verdict = "(smoke test: no verdict)" if smoke else ("met" if met else "MISSED")
    print(
        f"  {name} wall-clock = {median:.2f}x, median over seeds ({per_seed}) "
        f"(target <= {target}x): {verdict}"
    )
    return met


def print_setting_header(name: str, setting: Setting, frames: int, sb3_status: str) -> None:
    print(f"\n== {name}: {setting.algo.upper()} {setting.env_id}, {frames} frames requested")
    print(f"  source: {setting.source}")
    print(f"  flags, the same on every side: {setting.flags}")
    print(
        f"  rlblocks: examples/{setting.algo}.py --no-plot (also writes its run folder: CSV "
        f"log, checkpoint)"
    )
    print(f"  floor: benchmarks/floors/{setting.algo}.py (plain PyTorch, no logging)")
    if sb3_status:
        print(f"  {sb3_status}")


def report_setting(
    setting: Setting, runs: dict[int, dict[str, Run]], sb3_status: str, smoke: bool
) -> dict:
    """Print a setting's medians, ratios and verdicts; return its summary row."""
    seeds = sorted(runs)
    sides = [s for s in SIDES if all(s in runs[seed] for seed in seeds)]
    if "sb3" in sides:
        print(f"  SB3: {runs[seeds[0]]['sb3'].sb3_call}")
    frames = {s: [runs[seed][s].frames for seed in seeds] for s in sides}
    same = len({f for values in frames.values() for f in values}) == 1
    print(
        f"  frames trained: {'; '.join(f'{SIDE_NAMES[s]} {frames[s]}' for s in sides)}"
        f" ({'the same on every side' if same else 'NOT the same on every side'})"
    )
    medians = {s: statistics.median(runs[seed][s].seconds for seed in seeds) for s in sides}
    print("  wall-clock median: " + ", ".join(f"{SIDE_NAMES[s]} {medians[s]:.1f} s" for s in sides))
    row: dict = {
        "algo": setting.algo,
        "env": setting.env_id,
        "target": setting.target,
        "flags": setting.flags,
        "same_frames": same,
        "smoke_test": smoke,
    }
    for side in sides:
        row[side] = {
            "returns": [runs[seed][side].eval_return for seed in seeds],
            "seconds": [runs[seed][side].seconds for seed in seeds],
            "frames": frames[side],
        }
    returns = row["rlblocks"]["returns"]
    row["met_return"] = min(returns) >= setting.target
    verdict = "(smoke test: no verdict)" if smoke else ("met" if row["met_return"] else "MISSED")
    print(
        f"  rlblocks return >= {setting.target} on every seed ({', '.join(map(str, returns))})"
        f": {verdict}"
    )
    for side in ("compiled", "floor", "sb3"):
        if side in sides:
            print(
                f"  {SIDE_NAMES[side]} returns, for reference: "
                f"{', '.join(map(str, row[side]['returns']))}"
            )
    ours = {seed: min(runs[seed][s].seconds for s in ("rlblocks", "compiled") if s in sides)
            for seed in seeds}  # fmt: skip
    if "compiled" in sides:
        faster = [runs[seed]["compiled"].seconds / runs[seed]["rlblocks"].seconds for seed in seeds]
        print(f"  rlblocks --compile / eager wall-clock: median {statistics.median(faster):.2f}x; "
              f"rlblocks below = the faster of the two per seed")  # fmt: skip
    if "sb3" in sides:
        ratios = [ours[seed] / runs[seed]["sb3"].seconds for seed in seeds]
        row["ratio_vs_sb3"] = statistics.median(ratios)
        row["met_vs_sb3"] = ratio_line("rlblocks/SB3", ratios, SB3_TARGET, smoke)
    else:
        row["sb3"] = {"status": sb3_status}
        print(f"  rlblocks/SB3: not measured; {sb3_status}")
    ratios = [ours[seed] / runs[seed]["floor"].seconds for seed in seeds]
    row["ratio_vs_floor"] = statistics.median(ratios)
    row["met_vs_floor"] = ratio_line("rlblocks/floor", ratios, FLOOR_TARGET, smoke)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=list(SETTINGS),
        help="timed comparisons (default: all, unless only --algos is given)",
    )
    parser.add_argument(
        "--algos",
        nargs="+",
        choices=list(TARGETS),
        help="untimed runs at the example's defaults (default: td3 ddpg a2c and the "
        "multi-agent examples, unless only --settings is given)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--threads",
        type=threads_arg,
        default="1",
        help="torch threads on every side of a setting: a number, or 'default' "
        "(torch's default count here)",
    )
    parser.add_argument("--no-sb3", action="store_true", help="skip the SB3 side")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the rlblocks --compile side"
    )
    parser.add_argument("--jobs", type=int, default=2, help="untimed runs at once")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        metavar="N",
        help="timed runs per side and seed, in rounds (every side once, then again); each "
        "side's figure for the seed is its fastest run, on every side alike (for a machine "
        "whose speed drifts between runs)",
    )
    parser.add_argument(
        "--total-frames-override",
        type=int,
        default=None,
        metavar="N",
        help="smoke test: every run trains N frames; the figures are then not "
        "comparable to the targets and no verdicts are given",
    )
    args = parser.parse_args()
    if args.settings is None and args.algos is None:
        args.settings, args.algos = list(SETTINGS), DEFAULT_ALGOS
    for algo, module in NEEDS_PLUGIN.items():
        if algo in (args.algos or []) and importlib.util.find_spec(module) is None:
            guide = "docs/offline.md" if algo in SCORED else "docs/multiagent.md"
            print(f"{algo}: skipped, {module} is not installed (see {guide})")
            args.algos = [a for a in args.algos if a != algo]
    settings, algos = args.settings or [], args.algos or []
    threads = torch_default_threads() if args.threads == "default" else args.threads
    smoke = args.total_frames_override is not None
    if args.no_sb3:
        sb3_status = "SB3: skipped (--no-sb3)"
    elif importlib.util.find_spec("stable_baselines3") is None:
        sb3_status = "SB3: not installed"
    else:
        sb3_status = ""
    sides = [s for s in SIDES if s != "sb3" or not sb3_status]
    sides = [s for s in sides if s != "compiled" or not args.no_compile]

    if smoke:
        print(
            f"SMOKE TEST (--total-frames-override {args.total_frames_override}): every run "
            f"trains {args.total_frames_override} frames, not its target's budget; the "
            f"figures below are NOT comparable to the targets and carry no verdicts."
        )
    missed: list[str] = []
    setting_rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as runs_dir:
        results = run_untimed(algos, args.seeds, args.jobs, runs_dir, args.total_frames_override)
        algo_rows = {}
        for algo in algos:
            algo_runs = [(s, *results[(algo, s)]) for s in args.seeds]
            frames = args.total_frames_override or TARGETS[algo][2]
            algo_rows[algo] = report_algo(algo, algo_runs, frames, smoke)
            missed += [] if algo_rows[algo]["met_all_seeds"] else [algo]
        if settings:
            threads_note = " (torch's default here)" if args.threads == "default" else ""
            seeds = " ".join(map(str, args.seeds))
            repeats = (
                f" Each side ran {args.repeats} times per seed, in rounds; its figure per "
                f"seed is its fastest run."
                if args.repeats > 1
                else ""
            )
            print(
                f"\nSettings, timed: one run at a time, no other run of this script beside "
                f"it, a seed's runs next to each other.{repeats} Every side: the same flags and "
                f"frames, seeds {seeds}, {threads} torch thread(s){threads_note}; "
                f"final evaluation: mean return of {EVAL_EPISODES} deterministic "
                f"episodes, the first of each of {EVAL_EPISODES} envs seeded from seed + "
                f"10000; wall-clock: the whole process, start to exit."
            )
            compiled = byte_compile_sources()
            print(
                f"Byte-compiled first, as pip compiles what it installs: site-packages, "
                f"rlblocks, the examples and the floors ({len(compiled)} folders)."
            )
            startup = {side: startup_seconds(side) for side in sides}
            print(
                "Start-up, imports and a first Adam optimizer (median of 3 fresh "
                "interpreters), inside every wall-clock below: "
                + ", ".join(f"{SIDE_NAMES[s]} {sec:.2f} s" for s, sec in startup.items())
            )
        for name in settings:
            setting = SETTINGS[name]
            frames = args.total_frames_override or setting.frames
            print_setting_header(name, setting, frames, sb3_status)
            runs = {}
            for seed in args.seeds:
                rounds = [
                    {s: run_side(s, setting, seed, frames, threads, runs_dir) for s in sides}
                    for _ in range(max(1, args.repeats))
                ]
                runs[seed] = {
                    s: min((r[s] for r in rounds), key=lambda r: r.seconds) for s in sides
                }
                print(
                    f"  seed {seed}: "
                    + " | ".join(
                        f"{SIDE_NAMES[s]} return {r.eval_return:.1f} in {r.seconds:.1f} s"
                        + (
                            f" (fastest of {' / '.join(f'{x[s].seconds:.1f}' for x in rounds)})"
                            if len(rounds) > 1
                            else ""
                        )
                        for s, r in runs[seed].items()
                    ),
                    flush=True,
                )
            row = report_setting(setting, runs, sb3_status, smoke)
            setting_rows[name] = {
                **row,
                "threads": threads,
                "seeds": args.seeds,
                "eval_episodes": EVAL_EPISODES,
                "startup_seconds": startup,
            }
            missed += [f"{name} return"] if not row["met_return"] else []
            missed += [f"{name} vs SB3"] if row.get("met_vs_sb3") is False else []
            missed += [f"{name} vs floor"] if not row["met_vs_floor"] else []

    summary: dict = {**algo_rows, "settings": setting_rows} if settings else algo_rows
    if smoke:
        print("\nSMOKE TEST: not comparable to the targets, no verdict")
    else:
        print("\nBELOW TARGET: " + ", ".join(missed) if missed else "\nPASS")
    print("LEARNING_SUMMARY " + json.dumps(summary))
    return 1 if missed and not smoke else 0


if __name__ == "__main__":
    sys.exit(main())
