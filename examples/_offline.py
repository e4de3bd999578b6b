"""What the offline examples share: an expert trained briefly, a dataset recorded from it.

The first offline example run with a seed trains the expert (``examples/sac.py``, a few
thousand frames, or the script an example names), records a dataset from it (a medium one:
the expert's mean action plus Gaussian noise, a uniformly random action on a share of the
steps; or the expert's own actions) with Minari's ``DataCollector`` (``--dataset-format
minari``) or in D4RL's HDF5 layout (``d4rl``), and measures the reference returns. All of it
lives in ``<datasets-dir>/<env id>-seed<seed>/``; later runs with that seed reuse it, and
every dataset opens through ``rlblocks.core.make_dataset``.

The score offline examples report is D4RL's normalized score:
``(return - random) / (expert - random)``, 1.0 being the expert, 0.0 random actions.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import (
    Metrics,
    Policy,
    base_parser,
    env_specs,
    evaluate,
    make_train_env,
    progress,
    setup,
)
from tensordict import TensorDictBase

from rlblocks.buffers import DatasetReplayBuffer
from rlblocks.collectors import SyncDataCollector
from rlblocks.core import ExplorationType, make_dataset, set_exploration_type
from rlblocks.core.loggers import CSVLogger
from rlblocks.envs import GymEnv

HERE = Path(__file__).parent


def offline_parser(description: str, updates: int) -> argparse.ArgumentParser:
    """The Pendulum-v1 offline examples' options: :func:`_common.base_parser`'s (where
    ``--total-frames`` counts gradient steps, ``updates`` by default), the dataset's, and the
    learner's that TD3+BC, IQL and CQL share (the papers' MuJoCo values)."""
    parser = base_parser(description, env_id="Pendulum-v1", total_frames=updates)
    add_dataset_args(parser)
    parser.add_argument("--batch-size", type=int, default=256, help="transitions per update")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate")
    parser.add_argument("--gamma", type=float, default=0.99, help="discount")
    parser.add_argument("--tau", type=float, default=0.005, help="target network update weight")
    parser.add_argument("--hidden", type=int, default=256, help="cells per hidden layer")
    return parser


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """The dataset's options: where it lives, its format, how it is recorded."""
    group = parser.add_argument_group("dataset (recorded on first use, then reused)")
    group.add_argument("--datasets-dir", default="runs/datasets", help="experts, data, caches")
    group.add_argument("--dataset-format", default="minari", choices=["minari", "d4rl"])
    group.add_argument("--dataset-steps", type=int, default=50_000, help="transitions recorded")
    group.add_argument("--expert-frames", type=int, default=8_000, help="expert training frames")
    group.add_argument("--noise", type=float, default=0.5, help="action noise std (x bound)")
    group.add_argument("--random-share", type=float, default=0.5, help="steps acting randomly")


class NoisyPolicy:
    """The expert's mean action plus Gaussian noise; a uniform random action on a share of
    the steps: how a medium-quality dataset is recorded."""

    def __init__(self, expert: Policy, action_spec: Any, noise: float, random_share: float):
        self.expert, self.spec = expert, action_spec
        self.noise, self.random_share = noise, random_share
        self.high = action_spec.high

    @torch.no_grad()
    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            action = self.expert(td.clone(False))["action"]
        action = action + self.noise * self.high * torch.randn_like(action)
        random = self.spec.rand(td.batch_size).to(action.dtype)
        pick = torch.rand(*td.batch_size, 1) < self.random_share
        td["action"] = self.spec.project(torch.where(pick, random, action))
        return td


class Deterministic:
    """The expert itself, acting on its mean (or most likely) action."""

    def __init__(self, expert: Policy) -> None:
        self.expert = expert

    @torch.no_grad()
    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            return self.expert(td)


def _train_expert(args: argparse.Namespace, folder: Path, script: str) -> Policy:
    saved = folder / "expert.pt"
    if not saved.exists():
        print(f"training the expert: examples/{script}, {args.expert_frames} frames")
        runs = folder / "runs"
        command = [sys.executable, str(HERE / script), "--env-id", args.env_id]
        command += ["--seed", str(args.seed), "--total-frames", str(args.expert_frames)]
        command += ["--hidden", "64", "--runs-dir", str(runs), "--no-progress"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        run = max(runs.glob(f"{Path(script).stem}-*"), key=lambda p: p.stat().st_mtime)
        (run / "policy.pt").replace(saved)
    return torch.load(saved, weights_only=False)


def _record(args: argparse.Namespace, folder: Path, behaviour: Policy, quality: str) -> str:
    """Record the dataset; return what ``make_dataset`` opens it by."""
    if args.dataset_format == "minari":
        from rlblocks.minari import record_minari_dataset

        dataset_id = f"{args.env_id.lower()}/{quality}-seed{args.seed}-v0"
        marker = folder / "minari" / dataset_id / "data" / "metadata.json"
        if not marker.exists():
            print(f"recording {args.dataset_steps} steps with minari.DataCollector")
            record_minari_dataset(
                dataset_id,
                args.env_id,
                behaviour,
                total_steps=args.dataset_steps,
                seed=args.seed,
                minari_root=folder / "minari",
                algorithm_name=f"{quality} ({type(behaviour).__name__})",
            )
        return f"minari:{dataset_id}"
    from rlblocks.d4rl import save_d4rl_hdf5

    path = folder / f"{quality}.hdf5"
    if not path.exists():
        print(f"recording {args.dataset_steps} steps in D4RL's HDF5 layout")
        collector = SyncDataCollector(
            make_train_env(args.env_id, 1, args.seed),
            behaviour,
            frames_per_batch=min(1000, args.dataset_steps),
            total_frames=args.dataset_steps,
        )
        save_d4rl_hdf5(torch.cat([b.reshape(-1) for b in collector]), path)
        collector.shutdown()
    return f"d4rl:{path}"


def start(
    args: argparse.Namespace, name: str, **buffer_kwargs: Any
) -> tuple[CSVLogger, int, Any, DatasetReplayBuffer, dict[str, float]]:
    """What every offline example does first: :func:`_common.setup` (seed, threads, run
    folder ``name-...``), the env's observation size and action spec, and
    :func:`open_dataset` with ``buffer_kwargs``."""
    logger = setup(args, name)
    obs_dim, action_spec = env_specs(args.env_id)
    dataset, refs = open_dataset(args, action_spec, **buffer_kwargs)
    return logger, obs_dim, action_spec, dataset, refs


def open_dataset(
    args: argparse.Namespace,
    action_spec: Any,
    *,
    expert_script: str = "sac.py",
    quality: str = "medium",
    **buffer_kwargs: Any,
) -> tuple[DatasetReplayBuffer, dict[str, float]]:
    """The dataset (recorded first if needed) and the reference returns: ``expert``,
    ``random``, ``behaviour`` (the dataset's mean episode return) and ``best`` (its best).

    ``quality="medium"`` records the :class:`NoisyPolicy` of the expert (continuous actions),
    ``"expert"`` the expert's deterministic actions (demonstrations, for imitation).
    """
    folder = Path(args.datasets_dir) / f"{args.env_id}-seed{args.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    # Examples run at once with one seed (benchmarks/learning.py --jobs 2) wait for the
    # first to make the expert and the dataset, then reuse them.
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        expert = _train_expert(args, folder, expert_script)
        behaviour = (
            NoisyPolicy(expert, action_spec, args.noise, args.random_share)
            if quality == "medium"
            else Deterministic(expert)
        )
        name = _record(args, folder, behaviour, quality)
        options = {"minari_root": folder / "minari"} if name.startswith("minari:") else {}
        dataset = make_dataset(name, root=folder / "cache", **options, **buffer_kwargs)
        with GymEnv(args.env_id) as env:
            dataset.check_specs(env)  # names any key whose shape or dtype differs
        refs_file = folder / "references.json"
        if not refs_file.exists():
            refs = {
                "expert": evaluate(expert, args.env_id, 20, args.seed),
                "random": evaluate(None, args.env_id, 50, args.seed),
            }
            refs_file.write_text(json.dumps(refs))
    refs = json.loads(refs_file.read_text())
    # Training starts from the same random state whether this run recorded the data (which
    # draws random numbers) or found it recorded by an earlier one.
    torch.manual_seed(args.seed)
    refs["behaviour"] = dataset.episode_returns.mean().item()
    refs["best"] = dataset.episode_returns.max().item()
    print(
        f"dataset {name}: {len(dataset)} transitions, {dataset.num_episodes} episodes; "
        f"returns: expert {refs['expert']:.1f}, behaviour {refs['behaviour']:.1f} "
        f"(score {normalized(refs['behaviour'], refs):.2f}), random {refs['random']:.1f}"
    )
    return dataset, refs


def train(
    args: argparse.Namespace,
    logger: CSVLogger,
    dataset: DatasetReplayBuffer,
    step: Callable[[int, TensorDictBase], TensorDictBase],
    terms: tuple[str, ...],
) -> None:
    """``args.total_frames`` gradient steps ``step(number, batch)`` on dataset batches,
    logging the loss ``terms`` every 500 steps (a step may return only some of them)."""
    metrics, bar = Metrics(), progress(args)
    for number in range(1, args.total_frames + 1):
        out = step(number, dataset.sample())
        metrics.add(**{key: out[key] for key in terms if key in out.keys()})
        if number % 500 == 0 or number == args.total_frames:
            metrics.flush(logger, number)
        bar.update(1)
    bar.close()


def soft_updated(
    update: Callable[[TensorDictBase], TensorDictBase], target_updater: Any
) -> Callable[[int, TensorDictBase], TensorDictBase]:
    """A :func:`train` step: ``update(batch)``, then the target networks' soft update."""

    def step(number: int, batch: TensorDictBase) -> TensorDictBase:
        out = update(batch)
        target_updater.step()
        return out

    return step


def normalized(value: float, refs: dict[str, float]) -> float:
    """D4RL's normalized score: 0 for random actions, 1 for the expert."""
    return (value - refs["random"]) / (refs["expert"] - refs["random"])


def report(eval_return: float, refs: dict[str, float]) -> None:
    """Print the final score the learning benchmark reads."""
    print(f"normalized score: {normalized(eval_return, refs):.3f}")
