"""Smoke tests of examples/: each script runs a few hundred frames and writes its run folder.

Learning itself is the job of benchmarks/learning.py; here only "it runs and writes its
outputs" is checked, in a subprocess, exactly as a user would start it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Flags that make each example short; off-policy ones start learning within the run.
OFFLINE = "--expert-frames 300 --dataset-steps 400 --total-frames 50 --batch-size 32"
SHORT = {
    "ppo.py": "--total-frames 512 --num-envs 4 --num-steps 64",
    "a2c.py": "--total-frames 256",
    "dqn.py": "--total-frames 512 --learning-starts 256 --gradient-steps 4 --double-dqn",
    "sac.py": "--total-frames 300 --learning-starts 200",
    "td3.py": "--total-frames 300 --learning-starts 200",
    "ddpg.py": "--total-frames 300 --learning-starts 200",
    # Offline and imitation: a 300-frame "expert", a 400-step dataset, 50 gradient steps.
    "iql_offline.py": OFFLINE,
    "td3bc_offline.py": OFFLINE,
    "cql_offline.py": OFFLINE,
    "dt_offline.py": OFFLINE + " --context 5 --batch-size 8",
    "gail.py": "--expert-frames 300 --dataset-steps 400 --total-frames 512 --num-envs 4 "
    "--num-steps 64 --update-epochs 1",
    "mappo_vmas.py": "--total-frames 400 --num-envs 4 --num-steps 100 --max-steps 20 "
    "--update-epochs 1 --minibatch-size 200",
    "qmix_pettingzoo.py": "--total-frames 600 --num-envs 2 --frames-per-batch 100 "
    "--learning-starts 300 --gradient-steps 2 --batch-size 32",
    "masac_vmas.py": "--total-frames 400 --num-envs 4 --frames-per-batch 80 --max-steps 20 "
    "--learning-starts 160 --gradient-steps 2 --batch-size 32",
    "rainbow.py": "--total-frames 512 --learning-starts 256 --gradient-steps 4",
    "her_bitflip.py": "--total-frames 512 --learning-starts 256 --gradient-steps 4",
    "impala.py": "--total-frames 2048 --num-envs 4 --num-steps 8",
    "redq.py": "--total-frames 300 --learning-starts 200",
    "crossq.py": "--total-frames 300 --learning-starts 200",
    "tqc.py": "--total-frames 300 --learning-starts 200",
    "ppo_lstm.py": "--total-frames 1024 --update-epochs 2",
    "dreamer.py": "--total-frames 3000 --seed-episodes 2 --updates 3",
    "grpo_arithmetic.py": "--total-frames 512 --sft-steps 50 --sft-target 0 --prompts-per-step 4 "
    "--group-size 4 --minibatch-size 16 --validation-size 50",
    "ppo_atari.py": "--total-frames 256 --num-envs 2 --num-steps 64 --update-epochs 1 "
    "--minibatch-size 64 --eval-max-steps 100 --threads 1",
}

# Flags that change an example only when given (benchmarks/learning.py's settings use them),
# with the hyper-parameter each sets in hparams.json; the smoke run of the script uses them.
OPT_IN = {
    "ppo.py": (
        "--anneal-clip --export pt2 --video gif",
        {"anneal_clip": True, "export": "pt2", "video": "gif"},
    ),
    "dqn.py": (
        "--target-update-frames 10 --loss-function smooth_l1 --max-grad-norm 10 --no-plot",
        {
            "target_update_frames": 10,
            "loss_function": "smooth_l1",
            "max_grad_norm": 10.0,
            "no_plot": True,
        },
    ),
    "sac.py": ("--loss-function l2", {"loss_function": "l2"}),
}


def _run(
    script: str, runs_dir: Path, *extra: str, datasets: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(EXAMPLES / script), "--runs-dir", str(runs_dir)]
    if script in OFFLINE_SCRIPTS and "--datasets-dir" not in extra:
        command += ["--datasets-dir", str(datasets or runs_dir.parent / "datasets")]
    command += ["--eval-episodes", "2", "--no-progress", *SHORT[script].split(), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


OFFLINE_SCRIPTS = {s for s, flags in SHORT.items() if "--expert-frames" in flags}


def test_every_example_is_smoke_tested() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(SHORT)


@pytest.fixture(scope="session")
def shared_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One expert and dataset for the offline smoke runs (per test process): recording them
    once is what a user's later runs do too (the reuse itself is tested below)."""
    return tmp_path_factory.mktemp("datasets")


@pytest.mark.parametrize("script", sorted(SHORT))
def test_example_runs_and_writes_its_run_folder(
    script: str, tmp_path: Path, shared_datasets: Path
) -> None:
    # Scripts with opt-in flags run with them (the default path is the same code minus a
    # branch or two; one run each keeps CI time down).
    flags, hparams = OPT_IN.get(script, ("", {}))
    result = _run(script, tmp_path / "runs", *flags.split(), datasets=shared_datasets)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    recorded = json.loads((run_dir / "hparams.json").read_text())
    assert {key: recorded[key] for key in hparams} == hparams
    assert run_dir.name.startswith(script.removesuffix(".py").removesuffix("_offline"))
    for name in ("scalars.csv", "hparams.json", "checkpoint.pt"):
        assert (run_dir / name).stat().st_size > 0, name
    curve = run_dir / "learning_curve.png"
    assert curve.exists() != hparams.get("no_plot", False)  # --no-plot: no curve drawn
    assert not curve.exists() or curve.stat().st_size > 0
    assert "eval/return" in (run_dir / "scalars.csv").read_text()
    assert "final evaluation return:" in result.stdout
    assert f"run folder: {run_dir}" in result.stdout
    if script in OFFLINE_SCRIPTS:
        assert "normalized score:" in result.stdout
    if "export" in hparams:  # the deployable policy and a rendered evaluation episode
        assert (run_dir / f"policy.{hparams['export']}").stat().st_size > 0
        assert list((run_dir / "videos").glob(f"eval_video_*.{hparams['video']}"))


@pytest.mark.parametrize("fmt", ["minari", "d4rl"])
def test_offline_examples_record_once_then_reuse_the_expert_and_dataset(fmt, tmp_path) -> None:
    datasets = ["--datasets-dir", str(tmp_path / "datasets"), "--dataset-format", fmt]
    first = _run("td3bc_offline.py", tmp_path / "a", *datasets)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "training the expert" in first.stdout and "recording 400 steps" in first.stdout
    second = _run("iql_offline.py", tmp_path / "b", *datasets)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "training the expert" not in second.stdout and "recording" not in second.stdout
    prefix = "minari:pendulum-v1/medium-seed1-v0" if fmt == "minari" else "d4rl:"
    assert f"dataset {prefix}" in second.stdout and ": 400 transitions" in second.stdout


def test_impala_runs_its_workers_on_ray(tmp_path: Path) -> None:
    result = _run("impala.py", tmp_path / "runs", "--collector", "ray")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final evaluation return:" in result.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "hparams.json").read_text())["collector"] == "ray"
    assert "policy_lag" in (run_dir / "scalars.csv").read_text()


def _final_return(result: subprocess.CompletedProcess[str]) -> str:
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("final evaluation return:")]
    return line


@pytest.mark.parametrize(("script", "flags"), [("ppo.py", ["--anneal-clip"]), ("td3.py", [])])
def test_compile_runs_compiled_without_falling_back(script: str, flags: list[str], tmp_path):
    """--compile: every update step compiled (no fallback warning); PPO learns exactly as
    eager does (td3 only runs: inductor's float rounding may differ from eager's)."""
    compiled = _run(script, tmp_path / "compiled", "--compile", *flags)
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    assert "runs eager now" not in compiled.stderr, compiled.stderr[-3000:]
    (run_dir,) = (tmp_path / "compiled").iterdir()
    assert json.loads((run_dir / "hparams.json").read_text())["compile"] is True
    if script == "ppo.py":
        eager = _run(script, tmp_path / "eager", *flags)
        assert _final_return(compiled) == _final_return(eager)


def test_dreamer_runs_from_pixels(tmp_path: Path) -> None:
    # The benchmarked run learns from states (a pixel update costs ~100x one from states on
    # a CPU); --pixels swaps in the convolutional encoder and decoder on rendered frames.
    small = ["--batch-size", "4", "--slice-len", "20", "--horizon", "5"]
    result = _run("dreamer.py", tmp_path / "runs", "--pixels", *small)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "hparams.json").read_text())["pixels"] is True
    assert "final evaluation return:" in result.stdout
