"""Plumbing shared by the example scripts: run folder, logger, evaluation, checkpoint, plot.

The algorithm scripts stay readable top to bottom because what every one of them does the
same way (where outputs go, how the final policy is scored, how the curve is drawn) lives
here, once.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from tqdm import tqdm

from rlblocks.buffers import LazyTensorStorage, TensorDictReplayBuffer
from rlblocks.core import ExplorationType, TensorSpec, set_exploration_type
from rlblocks.core.loggers import CSVLogger
from rlblocks.envs import GymEnv, RewardSum, TransformedEnv, VideoRecorder, export_policy
from rlblocks.objectives import SoftUpdate, UpdateStep, make_update_step
from rlblocks.objectives.modules import (
    MLP,
    NormalParamExtractor,
    ProbabilisticActor,
    TanhDelta,
    TanhNormal,
    ValueOperator,
)

Policy = Callable[[TensorDictBase], TensorDictBase]


def base_parser(description: str, env_id: str, total_frames: int) -> argparse.ArgumentParser:
    """The flags every example has; each script adds its own hyper-parameters."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--env-id", default=env_id, help="gymnasium environment id")
    parser.add_argument("--seed", type=int, default=1, help="seed of torch and the envs")
    parser.add_argument("--total-frames", type=int, default=total_frames, help="env steps")
    parser.add_argument("--eval-episodes", type=int, default=10, help="final evaluation")
    parser.add_argument("--runs-dir", default="runs", help="parent of the run folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--no-plot",
        action="store_true",
        help="skip learning_curve.png (and importing matplotlib, about half a second)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile each gradient update with torch.compile (eager after a warning if "
        "compiling fails)",
    )
    return parser


def add_off_policy_args(parser: argparse.ArgumentParser) -> None:
    """The replay and target-network flags the continuous-control examples share."""
    parser.add_argument("--num-envs", type=int, default=1, help="envs stepped together")
    parser.add_argument("--frames-per-batch", type=int, default=1, help="frames between updates")
    parser.add_argument("--batch-size", type=int, default=256, help="transitions per update")
    parser.add_argument("--buffer-size", type=int, default=100_000, help="replay capacity")
    parser.add_argument("--learning-starts", type=int, default=1000, help="random frames first")
    parser.add_argument("--gamma", type=float, default=0.99, help="discount")
    parser.add_argument("--tau", type=float, default=0.005, help="target network update weight")
    parser.add_argument("--hidden", type=int, default=256, help="cells per hidden layer")


def add_ship_args(parser: argparse.ArgumentParser) -> None:
    """``--export`` and ``--video``: what :func:`finish` adds to the run folder on request."""
    parser.add_argument(
        "--export",
        choices=["pt2", "onnx"],
        help="also write the final policy as policy.pt2 (torch.export) or policy.onnx "
        "(pip install 'rlblocks-envs[onnx]'), observation transforms included",
    )
    parser.add_argument(
        "--video",
        choices=["gif", "mp4"],
        help="record one evaluation episode to videos/eval_video_<frames>.<format> (needs "
        "'rlblocks-core[video]'; mp4 also imageio-ffmpeg)",
    )


def setup(args: argparse.Namespace, name: str) -> CSVLogger:
    """Seed torch, set its thread count and open the run folder ``<runs-dir>/<name>-<time>``."""
    torch.manual_seed(args.seed)
    # Small networks on CPU: one thread avoids the cost of waking a pool for tiny matmuls.
    torch.set_num_threads(args.threads)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    video_format = getattr(args, "video", None) or "mp4"
    logger = CSVLogger(
        f"{name}-{stamp}-seed{args.seed}", log_dir=args.runs_dir, video_format=video_format
    )
    logger.log_hparams(vars(args))
    return logger


def make_train_env(env_id: str, num_envs: int, seed: int) -> TransformedEnv:
    """``num_envs`` gymnasium copies batched in one vector env, summing episode returns."""
    env = TransformedEnv(GymEnv(env_id, num_envs=num_envs), RewardSum())
    env.set_seed(seed)
    return env


def env_specs(env_id: str) -> tuple[int, TensorSpec]:
    """Observation size and action spec of one copy of ``env_id`` (no batch dims): the
    shapes the models are built for, whatever the number of envs they later act in."""
    with GymEnv(env_id) as env:
        return env.observation_spec["observation"].shape[-1], env.action_spec


def progress(args: argparse.Namespace) -> tqdm:
    """The progress bar over frames."""
    return tqdm(total=args.total_frames, unit="frames", disable=args.no_progress, ncols=100)


def episode_returns(batch: TensorDictBase, key: NestedKey = "episode_reward") -> torch.Tensor:
    """Returns of the episodes that ended in ``batch`` (written by ``RewardSum`` at ``key``;
    per agent ``[episodes, n_agents, 1]`` for a group's sums)."""
    return batch["next", key][batch["next", "done"].squeeze(-1)]


def evaluate(policy: Policy, env_id: str, episodes: int, seed: int) -> float:
    """Mean return of ``episodes`` deterministic episodes on the gymnasium env ``env_id``.

    All episodes run at once in one vector env; each copy's first episode is the one
    counted, so the rollout lasts the env's time limit.
    """
    max_steps = gym.spec(env_id).max_episode_steps or 1000
    with GymEnv(env_id, num_envs=episodes) as env:
        env.set_seed(seed + 10_000)  # never the training seeds
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            traj = env.rollout(max_steps, policy, break_when_any_done=False)
    return first_episode_return(traj, "reward")


def first_episode_return(trajectory: TensorDictBase, reward_key: NestedKey) -> float:
    """Mean undiscounted return of each env's first episode in a rollout (time last).

    Steps after an env's first ``done`` are left out, so an env that starts a second
    episode within the rollout counts once. Per-agent rewards ``[*batch, T, n_agents, 1]``
    are averaged over the agents.
    """
    reward, done = trajectory["next", reward_key], trajectory["next", "done"]
    time = trajectory.batch_dims - 1
    # A step counts while no earlier step of its env was done.
    before_end = ((done.cumsum(time) - done.int()) == 0).float()
    before_end = before_end.reshape(*before_end.shape[:-1], *([1] * (reward.ndim - done.ndim)), 1)
    return (reward * before_end).sum(time).mean().item()


class Metrics:
    """Averages of the values logged between two ``flush`` calls."""

    def __init__(self) -> None:
        self._values: dict[str, list[float]] = defaultdict(list)

    def add(self, **values: float | torch.Tensor) -> None:
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.detach()
            self._values[key].append(float(value))

    def flush(self, logger: CSVLogger, step: int) -> dict[str, float]:
        means = {key: sum(v) / len(v) for key, v in self._values.items() if v}
        logger.log_metrics(means, step=step)
        self._values.clear()
        return means


def log_episodes(
    logger: CSVLogger,
    bar: tqdm,
    batch: TensorDictBase,
    frames: int,
    key: NestedKey = "episode_reward",
) -> None:
    """Log the mean return of the episodes finished in ``batch`` (over agents too, for a
    group's sums at ``key``) and show it on the bar."""
    returns = episode_returns(batch, key)
    if returns.numel():
        mean = returns.mean().item()
        logger.log_scalar("train/episode_return", mean, step=frames)
        bar.set_postfix(episode_return=f"{mean:.1f}")
    bar.update(batch.numel())


def plot_learning_curve(run_dir: Path) -> Path:
    """Draw the returns logged in ``scalars.csv`` into ``learning_curve.png``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed (CI, ssh)
    import matplotlib.pyplot as plt

    curves: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    with open(run_dir / "scalars.csv", newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            if row["name"] in ("train/episode_return", "eval/return"):
                curves[row["name"]][0].append(int(row["step"]))
                curves[row["name"]][1].append(float(row["value"]))
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (steps, values) in sorted(curves.items()):
        ax.plot(steps, values, marker="o" if name == "eval/return" else None, label=name)
    ax.set(xlabel="frames", ylabel="return", title=run_dir.name)
    ax.legend()
    ax.grid(alpha=0.3)
    path = run_dir / "learning_curve.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def add_eval_every_arg(parser: argparse.ArgumentParser) -> None:
    """``--eval-every N``: an evaluation every ``N`` frames during training (opt-in)."""
    parser.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="frames between evaluations during training, logged as eval/return (0: the "
        "final one only)",
    )


def evaluate_every(
    logger: CSVLogger, args: argparse.Namespace, policy: Policy, frames: int, new_frames: int
) -> None:
    """With ``--eval-every N``, log ``eval/return`` (the final evaluation's protocol) when
    the last ``new_frames`` frames crossed a multiple of ``N`` before the last frame (the
    final evaluation scores that one). It draws nothing from torch's generator, so the
    training run is the same with or without it."""
    every = args.eval_every
    if every and frames < args.total_frames and frames % every < new_frames:
        eval_return = evaluate(policy, args.env_id, args.eval_episodes, args.seed)
        logger.log_scalar("eval/return", eval_return, step=frames)


def record_episode(logger: CSVLogger, args: argparse.Namespace, policy: Policy, step: int) -> None:
    """Render one deterministic evaluation episode into the run folder's ``videos/``."""
    recorder = VideoRecorder(logger, "eval/video")
    env = TransformedEnv(GymEnv(args.env_id, from_pixels=True, pixels_only=False), recorder)
    env.set_seed(args.seed + 10_000)
    try:
        with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
            env.rollout(gym.spec(args.env_id).max_episode_steps or 1000, policy)
    finally:
        env.close()
    recorder.dump(step=step)


def finish(
    logger: CSVLogger,
    args: argparse.Namespace,
    policy: Policy,
    frames: int,
    modules: dict[str, nn.Module],
    eval_return: float | None = None,
) -> float:
    """Evaluate the final policy, save the checkpoint and the curve, print where they are.

    ``eval_return`` is the evaluation of a script that scores its policy itself (on an env
    that is not a gymnasium one); by default the policy is evaluated on ``args.env_id``.
    """
    if eval_return is None:
        eval_return = evaluate(policy, args.env_id, args.eval_episodes, args.seed)
    logger.log_scalar("eval/return", eval_return, step=frames)
    if getattr(args, "video", None):
        record_episode(logger, args, policy, frames)
    logger.close()
    run_dir = logger.log_dir
    if getattr(args, "export", None):
        with GymEnv(args.env_id) as env:
            print(
                f"exported policy: {export_policy(policy, env, run_dir / f'policy.{args.export}')}"
            )
    checkpoint = {name: module.state_dict() for name, module in modules.items()}
    torch.save({"frames": frames, "args": vars(args), **checkpoint}, run_dir / "checkpoint.pt")
    torch.save(policy, run_dir / "policy.pt")  # the whole module: torch.load(weights_only=False)
    if not getattr(args, "no_plot", False):
        plot_learning_curve(run_dir)
    print(f"final evaluation return: {eval_return:.1f} ({args.eval_episodes} episodes)")
    print(f"run folder: {run_dir}")
    return eval_return


def ppo_epochs(
    update: UpdateStep, data: TensorDictBase, args: argparse.Namespace
) -> TensorDictBase:
    """``args.update_epochs`` passes over the flat batch ``data`` in shuffled minibatches of
    ``args.minibatch_size``; returns the last gradient step's output (what CleanRL logs).

    A PPO loss computes its diagnostics (KL, ESS, clip fraction) for that last step only,
    the one logged: in eager mode they cost ~4% of each step. A compiled step keeps them on
    every step (switching would compile a second graph; fused, they cost next to nothing).
    """
    loss = update.loss_module
    logged = getattr(loss, "diagnostics", None)
    switch = logged is not None and not update.compiled
    steps = [
        index
        for _epoch in range(args.update_epochs)
        for index in torch.randperm(data.shape[0]).split(args.minibatch_size)
    ]
    for number, index in enumerate(steps, 1):
        if switch:
            loss.diagnostics = logged and number == len(steps)
        out = update(data[index])
    return out


def make_replay_buffer(size: int, batch_size: int) -> TensorDictReplayBuffer:
    """A uniform replay buffer of ``size`` transitions kept in RAM."""
    return TensorDictReplayBuffer(storage=LazyTensorStorage(size), batch_size=batch_size)


def store(replay_buffer: TensorDictReplayBuffer, batch: TensorDictBase, loss: nn.Module) -> None:
    """Add the collected ``batch``, flat, to ``replay_buffer``: only the entries the ``loss``
    reads (its ``in_keys``). The collector also records what the policy computed at each step
    (Q-values, distribution parameters...), which the loss recomputes; left out, each sample
    gathers fewer entries (DQN at batch 64: 24 -> 14 us)."""
    replay_buffer.extend(batch.reshape(-1).select(*loss.in_keys))


def make_qvalue(
    obs_dim: int, action_dim: int, hidden: int, *, num_outputs: int = 1, **mlp_kwargs: Any
) -> ValueOperator:
    """A critic ``Q(s, a)`` reading ``observation`` and ``action``, writing
    ``state_action_value`` (``num_outputs`` values: TQC's quantiles); ``mlp_kwargs`` go to
    the :class:`MLP` (CrossQ's ``norm_class``)."""
    net = MLP(
        obs_dim + action_dim,
        num_outputs,
        num_cells=[hidden] * 2,
        activation_class=nn.ReLU,
        **mlp_kwargs,
    )
    return ValueOperator(net, in_keys=["observation", "action"])


def make_tanh_normal_actor(
    obs_dim: int, action_spec: TensorSpec, hidden: int, *, return_log_prob: bool = False
) -> Policy:
    """``pi(a|s)``: a Gaussian squashed by tanh into the action bounds (SAC's policy);
    ``return_log_prob`` also writes the action's ``sample_log_prob`` (what PPO needs)."""
    net = nn.Sequential(
        MLP(obs_dim, 2 * action_spec.shape[-1], num_cells=[hidden] * 2, activation_class=nn.ReLU),
        NormalParamExtractor(),  # loc and a positive scale
    )
    return ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        spec=action_spec,
        return_log_prob=return_log_prob,
    )


def make_deterministic_actor(obs_dim: int, action_spec: TensorSpec, hidden: int) -> Policy:
    """``mu(s)``: an MLP squashed by tanh into the action bounds (a ``TanhDelta``)."""
    net = MLP(obs_dim, action_spec.shape[-1], num_cells=[hidden] * 2, activation_class=nn.ReLU)
    return ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["param"]),
        in_keys=["param"],
        distribution_class=TanhDelta,
        spec=action_spec,
    )


def update_step(
    loss_module: nn.Module,
    optimizer: torch.optim.Optimizer,
    args: argparse.Namespace,
    *,
    terms: tuple[str, ...] | None = None,
    max_grad_norm: float | None = None,
) -> UpdateStep:
    """One gradient step on the sum of the loss ``terms`` (default: every term), compiled
    with ``--compile``.

    The losses freeze the networks a term must not train (the critics in the actor term),
    so one optimizer over every parameter is enough; parameters a step leaves without a
    gradient (the actor on a critic-only step) are skipped by the optimizer.
    """
    return make_update_step(
        loss_module, optimizer, max_grad_norm=max_grad_norm, compile=args.compile, terms=terms
    )


def td3_step(
    loss_module: nn.Module,
    optimizer: torch.optim.Optimizer,
    target_updater: SoftUpdate | None,
    args: argparse.Namespace,
) -> Callable[[int, TensorDictBase], TensorDictBase]:
    """TD3's delayed updates, one call per gradient step ``number`` (from 1): the critics
    every step, the actor (and temperature) and the target networks every
    ``args.policy_delay`` steps. CrossQ delays its actor the same way and has no targets
    (``target_updater=None``)."""
    critic_update = update_step(loss_module, optimizer, args, terms=("loss_qvalue",))
    full_update = update_step(loss_module, optimizer, args)

    def step(number: int, batch: TensorDictBase) -> TensorDictBase:
        if number % args.policy_delay:
            return critic_update(batch)
        out = full_update(batch)
        if target_updater is not None:
            target_updater.step()
        return out

    return step


def schedulable(value: float, args: argparse.Namespace) -> float | torch.Tensor:
    """A learning rate (or clip range) that a schedule changes: a tensor when compiled, so
    that the compiled step reads it instead of recompiling at every change."""
    return torch.tensor(value) if args.compile else value


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Set the learning rate of every param group, in place when it is a tensor."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value
