"""``Trainer``: the collect / optimize loop with hooks, progress bar, logging and checkpoints.

The trainer holds no algorithm: the loss module, the optimizer, the replay buffer and a
target-network updater are objects used through small protocols, so any implementation
fits (rlblocks-objectives and rlblocks-buffers are the usual ones, but nothing here imports
them):

* loss module: an ``nn.Module`` called on a batch, returning a TensorDict (or dict) whose
  ``loss_*`` entries are summed and minimized;
* optimizer: ``zero_grad()``, ``step()``, ``state_dict()``, ``load_state_dict()``;
* replay buffer: ``extend(batch)``, ``sample()`` / ``sample(batch_size)``, ``dumps(path)``,
  ``loads(path)``;
* target-network updater: ``step()``, optionally ``state_dict()``/``load_state_dict()``.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn

from rlblocks.collectors._base import DataCollectorBase, extend_buffer
from rlblocks.collectors._checkpoint import (
    BUFFER_FOLDER,
    KIND,
    STATE_FILE,
    read_trainer_checkpoint,
    resolve_checkpoint,
    rng_state,
    set_rng_state,
    write_latest,
)
from rlblocks.collectors._episodes import EpisodeTracker
from rlblocks.collectors.errors import CheckpointError, CollectorConfigError, TrainerError
from rlblocks.core.checkpoint import CheckpointWriter, write_checkpoint
from rlblocks.core.loggers import Logger
from rlblocks.core.utils import check_int

__all__ = ["Trainer", "STAGES"]

STAGES = (
    "batch_process",
    "pre_optim_steps",
    "process_optim_batch",
    "post_loss",
    "post_optim",
    "post_steps",
)
"""Hook stages, in the order they run for each collected batch."""


def _stateful(fn: Callable[..., Any]) -> Any:
    """The object whose state a hook carries (``fn`` itself, or a bound method's owner)."""
    for owner in (fn, getattr(fn, "__self__", None)):
        if callable(getattr(owner, "state_dict", None)) and callable(
            getattr(owner, "load_state_dict", None)
        ):
            return owner
    return None


class Trainer:
    """Collect batches, optimize a loss on them, log, and checkpoint; resumable exactly.

    For every batch the collector yields: the ``batch_process`` hooks run, the batch is
    written to the replay buffer (if any), then ``optim_steps_per_batch`` times: a
    sub-batch is drawn (sampled from the buffer, or from the batch), the
    ``process_optim_batch`` hooks run, the loss module is called, the ``post_loss`` hooks
    see its output, the sum of its ``loss_*`` terms is back-propagated (gradients clipped
    to ``clip_grad_norm``), the optimizer steps, the target updater steps and the
    ``post_optim`` hooks run. Then the ``post_steps`` hooks run and the collector's policy
    weights are updated.

    Hooks (``register_op(stage, fn)``), in order of the stages:

    * ``batch_process(batch) -> batch | None``: transform the collected batch (e.g.
      compute advantages); returning ``None`` keeps it.
    * ``pre_optim_steps() -> None``
    * ``process_optim_batch(sub_batch) -> sub_batch | None``
    * ``post_loss(losses) -> None``: sees the loss module's output.
    * ``post_optim() -> None``: after each optimizer step (e.g. ``scheduler.step``).
    * ``post_steps() -> Mapping | None``: a returned mapping of scalars is logged.

    A hook that is (or is a bound method of) an object with ``state_dict`` and
    ``load_state_dict`` — a learning-rate scheduler, say — is saved in checkpoints.

    Resuming: a checkpoint holds the loss module's parameters and buffers (target
    networks included), the optimizer, the target updater, stateful hooks, the
    collector's state, the replay buffer (via its ``dumps``), the counters and the torch,
    CUDA, numpy and Python random states. Loading it into a trainer built the same way
    and training on gives the same parameters as never stopping, provided the env can
    save its state too (see :meth:`SyncDataCollector.state_dict`): otherwise the
    restored collector starts new episodes, and the run continues correctly but not
    identically.

    Args:
        collector: Any rlblocks collector.
        loss_module: ``nn.Module`` mapping a batch to a TensorDict of ``loss_*`` terms.
        optimizer: A ``torch.optim.Optimizer`` over the loss module's parameters.
        replay_buffer: Store batches here and train on samples from it; without one the
            trainer trains on the collected batch itself.
        optim_steps_per_batch: Optimizer steps per collected batch.
        batch_size: Size of each sub-batch: passed to ``replay_buffer.sample``, or the
            number of frames drawn at random from the batch; ``None`` uses the buffer's
            default, or the whole batch.
        clip_grad_norm: Clip the gradients' global norm to this value before each step.
        logger: An rlblocks logger (``rlblocks.core.loggers``); metrics are logged per
            batch at ``step=frames``.
        progress_bar: Show a tqdm bar with frames, frames/s and the episode reward.
        checkpoint_dir: Folder for checkpoints (``checkpoint_<frames>`` sub-folders and a
            ``latest`` pointer).
        checkpoint_interval: Save every this many collected frames (and at the end of
            :meth:`train`); needs ``checkpoint_dir``.
        target_net_updater: An object whose ``step()`` runs after each optimizer step.

    Raises:
        CollectorConfigError: An argument is invalid.

    Example:
        >>> trainer = Trainer(collector, loss_module, torch.optim.Adam(loss_module.parameters()),
        ...                   replay_buffer=buffer, optim_steps_per_batch=8, batch_size=256,
        ...                   logger=CSVLogger("dqn"), checkpoint_dir="ckpt",
        ...                   checkpoint_interval=50_000)
        >>> trainer.register_op("post_optim", scheduler.step)
        >>> trainer.train()
        >>> # later, in a new process with the same objects built again:
        >>> trainer.load("ckpt")
        >>> trainer.train()
    """

    def __init__(
        self,
        collector: DataCollectorBase,
        loss_module: nn.Module,
        optimizer: Any,
        replay_buffer: Any = None,
        optim_steps_per_batch: int = 1,
        batch_size: int | None = None,
        clip_grad_norm: float | None = None,
        logger: Logger | None = None,
        progress_bar: bool = True,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_interval: int | None = None,
        *,
        target_net_updater: Any = None,
    ) -> None:
        _check_args(
            collector, loss_module, optimizer, replay_buffer, clip_grad_norm, logger,
            checkpoint_dir, checkpoint_interval, target_net_updater,
        )  # fmt: skip
        self.collector = collector
        self.loss_module = loss_module
        self.optimizer = optimizer
        self.replay_buffer = replay_buffer
        bad = CollectorConfigError
        self.optim_steps_per_batch = check_int(
            optim_steps_per_batch, "optim_steps_per_batch", "Trainer", error=bad
        )
        self.batch_size = check_int(batch_size, "batch_size", "Trainer", allow=(None,), error=bad)
        self.clip_grad_norm = clip_grad_norm
        self.logger = logger
        self.progress_bar = progress_bar
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_interval = checkpoint_interval
        self.target_net_updater = target_net_updater
        self._hooks: dict[str, list[Callable[..., Any]]] = {stage: [] for stage in STAGES}
        self.frames = 0
        self.batches = 0
        self.optim_steps = 0
        self._collector_frames = collector.frames
        self._last_checkpoint_frames = 0
        self._episodes = EpisodeTracker()
        self.last_episode_reward: float | None = None

    # ------------------------------------------------------------------ hooks
    def register_op(self, stage: str, fn: Callable[..., Any]) -> None:
        """Run ``fn`` at ``stage`` (see the class docstring for stages and signatures).

        Raises:
            CollectorConfigError: Unknown stage or non-callable ``fn``.
        """
        if stage not in self._hooks:
            close = difflib.get_close_matches(str(stage), STAGES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise CollectorConfigError(
                f"Trainer.register_op: unknown stage {stage!r}; {hint}the stages are "
                f"{list(STAGES)}."
            )
        if not callable(fn):
            raise CollectorConfigError(
                f"Trainer.register_op: fn must be callable, got {type(fn).__name__}."
            )
        self._hooks[stage].append(fn)

    def _transform(self, stage: str, value: Any) -> Any:
        """Run the hooks of a stage that may replace ``value``."""
        for fn in self._hooks[stage]:
            out = fn(value)
            if out is not None:
                value = out
        return value

    def _notify(self, stage: str, *args: Any) -> dict[str, Any]:
        """Run the hooks of a stage; merge the mappings they return."""
        merged: dict[str, Any] = {}
        for fn in self._hooks[stage]:
            out = fn(*args)
            if isinstance(out, Mapping):
                merged.update(out)
        return merged

    # ------------------------------------------------------------------ training
    def train(self, num_batches: int | None = None) -> None:
        """Run until the collector is exhausted, or for ``num_batches`` batches.

        Can be called again to continue. With a ``checkpoint_dir``, a checkpoint is saved
        every ``checkpoint_interval`` frames and when the call returns.
        """
        if num_batches is not None:
            check_int(
                num_batches, "num_batches", "Trainer.train", minimum=0, error=CollectorConfigError
            )
        bar = self._make_bar()
        start, start_frames = time.perf_counter(), self.frames
        done = 0
        try:
            while (num_batches is None or done < num_batches) and not self.collector.finished:
                metrics = self.step(self.collector.next())
                done += 1
                elapsed = max(time.perf_counter() - start, 1e-9)
                metrics["train/frames_per_s"] = (self.frames - start_frames) / elapsed
                self._report(bar, metrics)
                if self._checkpoint_due():
                    self.save()
        finally:
            if bar is not None:
                bar.close()
        if self.checkpoint_dir is not None and self._last_checkpoint_frames != self.frames:
            self.save()

    def step(self, batch: TensorDictBase | None) -> dict[str, float]:
        """Process one collected batch (hooks, buffer, optimizer steps); return its metrics."""
        new_frames = self.collector.frames - self._collector_frames
        self._collector_frames = self.collector.frames
        self.frames += new_frames
        self.batches += 1
        metrics: dict[str, float] = {}
        if batch is not None:
            batch = self._transform("batch_process", batch)
            returns = self._episodes.update(batch)
            if returns:
                self.last_episode_reward = sum(returns) / len(returns)
                metrics["train/episode_reward"] = self.last_episode_reward
            if self.replay_buffer is not None:
                extend_buffer(self.replay_buffer, batch)
        elif self.replay_buffer is None:
            raise TrainerError(
                "Trainer: the collector yielded None (it writes into its own replay buffer), "
                "but the trainer has no replay_buffer to sample from. Fix: pass the same "
                "buffer as Trainer(replay_buffer=...)."
            )
        self._notify("pre_optim_steps")
        totals: dict[str, float] = {}
        for _ in range(self.optim_steps_per_batch):
            for key, value in self._optim_step(batch).items():
                totals[key] = totals.get(key, 0.0) + value
        metrics.update({k: v / self.optim_steps_per_batch for k, v in totals.items()})
        metrics.update(self._notify("post_steps"))
        self.collector.update_policy_weights_()
        return metrics

    def _optim_step(self, batch: TensorDictBase | None) -> dict[str, float]:
        sub_batch = self._transform("process_optim_batch", self._sample(batch))
        losses = self.loss_module(sub_batch)
        self._notify("post_loss", losses)
        terms = {k: v for k, v in losses.items() if isinstance(k, str) and k.startswith("loss_")}
        if not terms:
            raise TrainerError(
                f"Trainer: the loss module {type(self.loss_module).__name__} returned no "
                f"'loss_*' entry (keys: {sorted(map(str, losses.keys()))}). The trainer "
                f"minimizes the sum of the 'loss_*' entries. Fix: name the losses to "
                f"minimize 'loss_<name>'."
            )
        loss = sum(v.sum() if v.numel() > 1 else v.reshape(()) for v in terms.values())
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_grad_norm is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        self.optimizer.step()
        if self.target_net_updater is not None:
            self.target_net_updater.step()
        self.optim_steps += 1
        self._notify("post_optim")
        return {f"train/{k}": float(v.detach().sum()) for k, v in terms.items()}

    def _sample(self, batch: TensorDictBase | None) -> TensorDictBase:
        if self.replay_buffer is not None:
            if self.batch_size is None:
                return self.replay_buffer.sample()
            return self.replay_buffer.sample(self.batch_size)
        assert batch is not None
        if self.batch_size is None:
            return batch
        flat = batch.reshape(-1)
        index = torch.randint(flat.numel(), (self.batch_size,), device=flat.device)
        return flat[index]

    # ------------------------------------------------------------------ reporting
    def _make_bar(self) -> Any:
        if not self.progress_bar:
            return None
        from tqdm import tqdm

        total = self.collector.total_frames
        return tqdm(
            total=total if total > 0 else None,
            initial=self.frames,
            unit="frames",
            unit_scale=True,
            dynamic_ncols=True,
        )

    def _report(self, bar: Any, metrics: dict[str, float]) -> None:
        if bar is not None:
            bar.update(self.frames - bar.n)
            postfix = {"frames/s": f"{metrics['train/frames_per_s']:.0f}"}
            if self.last_episode_reward is not None:
                postfix["episode_reward"] = f"{self.last_episode_reward:.2f}"
            bar.set_postfix(postfix, refresh=False)
        if self.logger is not None:
            metrics["train/optim_steps"] = self.optim_steps
            self.logger.log_metrics(metrics, step=self.frames)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_due(self) -> bool:
        interval = self.checkpoint_interval
        return interval is not None and self.frames - self._last_checkpoint_frames >= interval

    def _stateful_hooks(self) -> list[Any]:
        return [_stateful(fn) for stage in STAGES for fn in self._hooks[stage] if _stateful(fn)]

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`save` writes except the replay buffer."""
        updater = self.target_net_updater
        return {
            "format": "rlblocks-trainer",
            "version": 1,
            "counters": {
                "frames": self.frames,
                "batches": self.batches,
                "optim_steps": self.optim_steps,
                "collector_frames": self._collector_frames,
            },
            "loss_module": self.loss_module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "target_net_updater": (
                updater.state_dict() if callable(getattr(updater, "state_dict", None)) else None
            ),
            "hooks": [hook.state_dict() for hook in self._stateful_hooks()],
            "collector": self.collector.state_dict(),
            "episodes": self._episodes.state_dict(),
            "rng": rng_state(),
        }

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write a checkpoint folder and return its path; the path always holds a complete one.

        Every file (``trainer.pt`` and the replay buffer's) is listed with its size and
        CRC-32 in the checkpoint's manifest (:mod:`rlblocks.core.checkpoint`). Saving over
        an existing checkpoint writes the new version beside it and switches a pointer
        atomically, so an interrupted save leaves the previous checkpoint loadable.

        Args:
            path: Where to write; default ``<checkpoint_dir>/checkpoint_<frames>``, which
                also becomes the ``latest`` checkpoint of ``checkpoint_dir``.

        Raises:
            CollectorConfigError: No ``path`` and no ``checkpoint_dir``.
            CheckpointError: ``path`` exists and is not a trainer checkpoint (it is never
                overwritten then).
        """
        if path is None:
            if self.checkpoint_dir is None:
                raise CollectorConfigError(
                    "Trainer.save: no path given and the trainer has no checkpoint_dir. Fix: "
                    "call save(path) or build the Trainer with checkpoint_dir=..."
                )
            target = self.checkpoint_dir / f"checkpoint_{self.frames:012d}"
        else:
            target = Path(path)
        state = self.state_dict()

        def fill(writer: CheckpointWriter) -> None:
            torch.save(state, writer.folder / STATE_FILE)
            if self.replay_buffer is not None:
                self.replay_buffer.dumps(writer.folder / BUFFER_FOLDER)

        written = write_checkpoint(
            target,
            fill,
            kind=KIND,
            who="Trainer.save",
            error=CheckpointError,
        )
        if path is None:
            write_latest(written.parent, written.name)
        self._last_checkpoint_frames = self.frames
        return written

    def load(self, path: str | os.PathLike[str]) -> Trainer:
        """Restore a checkpoint into this trainer and its objects; returns ``self``.

        All or nothing: the whole checkpoint (every file's size and CRC-32, the replay
        buffer's included) is verified and checked against this trainer before anything
        changes, and if restoring a part still fails (an optimizer or a buffer that refuses
        the saved state), everything restored so far is put back as it was.

        Args:
            path: A checkpoint folder (as returned by :meth:`save`) or a checkpoint_dir
                (its ``latest`` checkpoint is loaded).

        Raises:
            CheckpointError: The checkpoint is missing, incomplete or corrupt, or was saved
                by a trainer with other modules, optimizer, hooks or buffer; the trainer
                is unchanged.
        """
        folder, state = read_trainer_checkpoint(resolve_checkpoint(path))
        self._check_fits(folder, state)
        previous = copy.deepcopy(self.state_dict())
        try:
            self._restore(state)
            if self.replay_buffer is not None:
                self.replay_buffer.loads(folder / BUFFER_FOLDER)
        except Exception as err:
            try:
                self._restore(previous)
            except Exception as restore_err:
                raise CheckpointError(
                    f"Trainer.load: the checkpoint {folder} does not match this trainer "
                    f"({err}), and putting the previous state back failed too "
                    f"({restore_err}): the trainer is partially loaded. Fix: load a "
                    f"checkpoint that fits it."
                ) from err
            raise CheckpointError(
                f"Trainer.load: the checkpoint {folder} does not match this trainer: {err}. "
                f"The trainer is unchanged. Fix: build the loss module, optimizer, collector "
                f"and replay buffer as in the saved run."
            ) from err
        counters = state["counters"]
        self.frames = counters["frames"]
        self.batches = counters["batches"]
        self.optim_steps = counters["optim_steps"]
        self._collector_frames = counters["collector_frames"]
        self._last_checkpoint_frames = self.frames
        set_rng_state(state["rng"])
        return self

    def _check_fits(self, folder: Path, state: dict[str, Any]) -> None:
        """The checks that need no change to the trainer: raise before anything changes."""
        hooks = self._stateful_hooks()
        if len(hooks) != len(state["hooks"]):
            raise CheckpointError(
                f"Trainer.load: the checkpoint has {len(state['hooks'])} stateful hooks, this "
                f"trainer {len(hooks)}. Fix: register the same hooks before loading."
            )
        has_buffer = (folder / BUFFER_FOLDER).exists()
        if (self.replay_buffer is not None) != has_buffer:
            raise CheckpointError(
                f"Trainer.load: the checkpoint {folder} "
                f"{'has' if has_buffer else 'has no'} replay buffer but this "
                f"trainer {'has none' if self.replay_buffer is None else 'has one'}. Fix: "
                f"build the trainer as the one that saved the checkpoint."
            )
        current, saved = self.loss_module.state_dict(), state["loss_module"]
        differ = sorted(current.keys() ^ saved.keys()) + sorted(
            key
            for key in current.keys() & saved.keys()
            if getattr(saved[key], "shape", None) != getattr(current[key], "shape", None)
        )
        if differ:
            raise CheckpointError(
                f"Trainer.load: the checkpoint {folder} does not match this trainer: the loss "
                f"module's parameters and buffers differ in name or shape at {differ[:5]}. "
                f"The trainer is unchanged. Fix: build the loss module as in the saved run."
            )

    def _restore(self, state: dict[str, Any]) -> None:
        """Load the parts of :meth:`state_dict` that live in other objects."""
        self.loss_module.load_state_dict(state["loss_module"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["target_net_updater"] is not None:
            self.target_net_updater.load_state_dict(state["target_net_updater"])
        for hook, hook_state in zip(self._stateful_hooks(), state["hooks"]):
            hook.load_state_dict(hook_state)
        self.collector.load_state_dict(state["collector"])
        self._episodes.load_state_dict(state["episodes"])

    def __repr__(self) -> str:
        return (
            f"Trainer(loss_module={type(self.loss_module).__name__}, frames={self.frames}, "
            f"optim_steps={self.optim_steps})"
        )


def _check_args(
    collector: Any,
    loss_module: Any,
    optimizer: Any,
    replay_buffer: Any,
    clip_grad_norm: Any,
    logger: Any,
    checkpoint_dir: Any,
    checkpoint_interval: Any,
    target_net_updater: Any,
) -> None:
    def bad(what: str) -> CollectorConfigError:
        return CollectorConfigError(f"Trainer: {what}")

    if not isinstance(collector, DataCollectorBase):
        raise bad(
            f"collector must be an rlblocks collector, got {type(collector).__name__}. Fix: "
            f"pass e.g. SyncDataCollector(make_env, policy, frames_per_batch=...)."
        )
    if not isinstance(loss_module, nn.Module):
        raise bad(
            f"loss_module must be an nn.Module returning a TensorDict of 'loss_*' terms, got "
            f"{type(loss_module).__name__}."
        )
    for method in ("zero_grad", "step", "state_dict", "load_state_dict"):
        if not callable(getattr(optimizer, method, None)):
            raise bad(
                f"optimizer must be a torch optimizer (it has no {method}()), got "
                f"{type(optimizer).__name__}. Fix: torch.optim.Adam(loss_module.parameters())."
            )
    if replay_buffer is not None:
        missing = [
            m for m in ("extend", "sample", "dumps", "loads")
            if not callable(getattr(replay_buffer, m, None))
        ]  # fmt: skip
        if missing:
            raise bad(
                f"replay_buffer must have extend, sample, dumps and loads; "
                f"{type(replay_buffer).__name__} lacks {missing}."
            )
    if clip_grad_norm is not None and (
        isinstance(clip_grad_norm, bool)
        or not isinstance(clip_grad_norm, (int, float))
        or not math.isfinite(clip_grad_norm)
        or clip_grad_norm <= 0
    ):
        raise bad(f"clip_grad_norm must be a positive number or None, got {clip_grad_norm!r}.")
    if logger is not None and not isinstance(logger, Logger):
        raise bad(
            f"logger must be an rlblocks logger (rlblocks.core.loggers), got "
            f"{type(logger).__name__}. Fix: pass e.g. CSVLogger('my_run')."
        )
    if checkpoint_interval is not None:
        check_int(checkpoint_interval, "checkpoint_interval", "Trainer", error=CollectorConfigError)
        if checkpoint_dir is None:
            raise bad("checkpoint_interval needs a checkpoint_dir to save into.")
    if target_net_updater is not None and not callable(getattr(target_net_updater, "step", None)):
        raise bad(
            f"target_net_updater must have a step() method, got "
            f"{type(target_net_updater).__name__}."
        )
