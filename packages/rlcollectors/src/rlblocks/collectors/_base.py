"""What every collector shares: argument checks, the iteration protocol and batch delivery.

A collector yields batches until ``total_frames`` frames were collected (forever when
``total_frames=-1``). Each batch is post-processed in the same order everywhere: trajectory
splitting, then ``postproc``; then it is either yielded or, when a ``replay_buffer`` was
given, written to the buffer (and ``None`` is yielded, so the loop still drives collection).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tensordict import TensorDictBase

from rlblocks.collectors._trajectories import MASK, split_trajectories
from rlblocks.collectors.errors import CollectorClosedError, CollectorConfigError
from rlblocks.core import ExplorationType
from rlblocks.core.utils import as_optional_device, check_int
from rlblocks.envs import EnvBase

__all__ = [
    "DataCollectorBase",
    "EnvFactory",
    "check_device",
    "check_traj_limit",
    "make_env",
    "extend_buffer",
]

EnvFactory = Callable[[], EnvBase]


def check_device(owner: str, name: str, value: Any) -> torch.device | None:
    """Normalize the device argument ``name`` (``None`` stays ``None``), or raise naming it.

    Raises:
        CollectorConfigError: ``value`` names no device, or one this machine does not have.
    """
    try:
        return as_optional_device(value)
    except ValueError as err:
        raise CollectorConfigError(
            f"{owner}: {name} must be a torch.device, a str such as 'cpu' or 'cuda:0', an int "
            f"or None, got {value!r}. Fix: pass e.g. {name}='cpu'."
        ) from err
    except RuntimeError as err:
        raise CollectorConfigError(
            f"{owner}: {name}={value!r} is not available on this machine ({err}). Fix: pass "
            f"a device it has, e.g. {name}='cpu'."
        ) from err


def check_traj_limit(owner: str, value: Any) -> int | None:
    """``max_frames_per_traj`` as an int, or ``None`` for no limit (``None`` or ``-1``).

    ``-1`` is TorchRL's spelling of "no limit".

    Raises:
        CollectorConfigError: ``value`` is not an int >= 1, ``None`` or ``-1``.
    """
    limit = check_int(
        value, "max_frames_per_traj", owner, allow=(None, -1), error=CollectorConfigError
    )
    return None if limit == -1 else limit


def make_env(owner: str, create_env_fn: EnvFactory | EnvBase) -> tuple[EnvBase, bool]:
    """Build the env from ``create_env_fn``.

    Returns:
        ``(env, owned)``: ``owned`` is True when the collector created the env (and so
        closes it on shutdown); an env instance given directly stays the caller's.
    """
    if isinstance(create_env_fn, EnvBase):
        return create_env_fn, False
    if not callable(create_env_fn):
        raise CollectorConfigError(
            f"{owner}: create_env_fn must be an rlblocks env or a callable returning one, got "
            f"{type(create_env_fn).__name__}. Fix: pass e.g. lambda: GymEnv('CartPole-v1')."
        )
    env = create_env_fn()
    if not isinstance(env, EnvBase):
        raise CollectorConfigError(
            f"{owner}: create_env_fn returned {type(env).__name__}, not an rlblocks EnvBase. "
            f"Fix: return an rlblocks env (wrap a gymnasium env with GymWrapper(env))."
        )
    return env, True


def extend_buffer(replay_buffer: Any, batch: TensorDictBase) -> None:
    """Write a collector batch to ``replay_buffer``: one element per frame, or per trajectory.

    A batch split into trajectories (it holds ``("collector", "mask")``) is written as one
    element per trajectory; any other batch is flattened to one element per frame.
    """
    if batch.get(MASK, None) is None:
        batch = batch.reshape(-1)
    replay_buffer.extend(batch)


class DataCollectorBase:
    """Base class of the collectors: iteration, frame counting and batch delivery.

    Subclasses implement :meth:`_collect` (one raw batch with trajectory ids),
    :meth:`_shutdown`, :meth:`update_policy_weights_`, :meth:`set_seed` and the
    state-dict methods (calling :meth:`_base_state` / :meth:`_load_base_state`).
    """

    def __init__(
        self,
        *,
        frames_per_batch: int,
        total_frames: int,
        init_random_frames: int,
        split_trajs: bool,
        postproc: Callable[[TensorDictBase], TensorDictBase] | None,
        exploration_type: ExplorationType,
        replay_buffer: Any,
    ) -> None:
        owner = type(self).__name__
        bad = CollectorConfigError
        self.frames_per_batch = check_int(frames_per_batch, "frames_per_batch", owner, error=bad)
        self.total_frames = check_int(total_frames, "total_frames", owner, allow=(-1,), error=bad)
        self.init_random_frames = check_int(
            init_random_frames, "init_random_frames", owner, minimum=0, error=bad
        )
        if postproc is not None and not callable(postproc):
            raise CollectorConfigError(
                f"{owner}: postproc must be a callable TensorDict -> TensorDict or None, got "
                f"{type(postproc).__name__}."
            )
        if not isinstance(exploration_type, ExplorationType):
            raise CollectorConfigError(
                f"{owner}: exploration_type must be an rlblocks.core.ExplorationType, got "
                f"{exploration_type!r}. Fix: pass e.g. ExplorationType.RANDOM."
            )
        if replay_buffer is not None and not callable(getattr(replay_buffer, "extend", None)):
            raise CollectorConfigError(
                f"{owner}: replay_buffer must have an extend(batch) method, got "
                f"{type(replay_buffer).__name__}. Fix: pass an rlblocks ReplayBuffer or None."
            )
        self.split_trajs = bool(split_trajs)
        self.postproc = postproc
        self.exploration_type = exploration_type
        self.replay_buffer = replay_buffer
        self._frames = 0
        self._batches = 0
        self._closed = False

    # ------------------------------------------------------------------ counters
    @property
    def frames(self) -> int:
        """Number of frames collected so far (restored by :meth:`load_state_dict`)."""
        return self._frames

    @property
    def batches(self) -> int:
        """Number of batches collected so far."""
        return self._batches

    @property
    def finished(self) -> bool:
        """Whether ``total_frames`` frames were collected (never, for ``total_frames=-1``)."""
        return self.total_frames > 0 and self._frames >= self.total_frames

    @property
    def num_batches(self) -> int | None:
        """How many batches a full iteration yields, or ``None`` for ``total_frames=-1``."""
        if self.total_frames < 0:
            return None
        return math.ceil(self.total_frames / self.frames_per_batch)

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._closed

    def _random_phase(self) -> bool:
        """Whether the next batch is still within ``init_random_frames``."""
        return self._frames < self.init_random_frames

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[TensorDictBase | None]:
        """Yield batches until ``total_frames`` is reached.

        All state lives in the collector, so breaking out of a loop and iterating again
        continues where the first loop stopped.
        """
        while not self.finished:
            yield self.next()

    def next(self) -> TensorDictBase | None:
        """Collect and return one batch (``None`` when a replay buffer receives it).

        Raises:
            CollectorClosedError: The collector was shut down.
            StopIteration: ``total_frames`` frames were already collected.
        """
        self._check_open("next")
        if self.finished:
            raise StopIteration
        batch = self._collect()
        self._frames += batch.numel()
        self._batches += 1
        return self._deliver(batch)

    def _deliver(self, batch: TensorDictBase) -> TensorDictBase | None:
        if self.split_trajs:
            batch = split_trajectories(batch)
        if self.postproc is not None:
            batch = self.postproc(batch)
        if self.replay_buffer is not None:
            extend_buffer(self.replay_buffer, batch)
            return None
        return batch

    def _collect(self) -> TensorDictBase:
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self) -> None:
        """Free the collector's envs and workers; idempotent. The collector cannot be used
        afterwards."""
        if self._closed:
            return
        self._closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        """Subclass cleanup, called once."""

    def __enter__(self) -> DataCollectorBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise CollectorClosedError(
                f"{type(self).__name__}.{method}() was called after shutdown(); create a new "
                f"collector."
            )

    # ------------------------------------------------------------------ state
    def _base_state(self) -> dict[str, Any]:
        return {"frames": self._frames, "batches": self._batches}

    def _load_base_state(self, state: dict[str, Any]) -> None:
        self._frames = int(state["frames"])
        self._batches = int(state["batches"])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume collection (see the subclass for what it holds)."""
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        raise NotImplementedError

    def update_policy_weights_(self, weights: Any = None) -> None:
        """Make the policy the collector runs use the latest weights."""
        raise NotImplementedError

    def set_seed(self, seed: int) -> int:
        """Seed the envs; returns the next unused seed."""
        raise NotImplementedError
