"""What the collectors driving several workers share, whatever carries the messages.

A pool collector owns ``num_workers`` :class:`~rlblocks.collectors._worker.CollectorWorker`
objects, in processes (:mod:`._multi`) or Ray actors (:mod:`._ray`). This module checks the
arguments, builds each worker's configuration, and implements seeding, weight publishing and
state dicts on top of two transport methods: ``_call(index, method, *args)`` (run a worker
method, return its result) and ``_publish(weights)`` (make weights available to workers).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from torch import nn

from rlblocks.collectors._base import (
    DataCollectorBase,
    EnvFactory,
    check_device,
    check_traj_limit,
)
from rlblocks.collectors._policy import (
    as_weights,
    check_compile_policy,
    check_policy,
    policy_weights,
)
from rlblocks.collectors.errors import CollectorConfigError
from rlblocks.core import ExplorationType
from rlblocks.envs import EnvBase

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "EnvCopy",
    "PoolCollectorBase",
    "check_factories",
    "per_worker_devices",
]

#: Default ``timeout`` of the multi-process and Ray collectors: how long a worker may take
#: to answer (a whole batch, or building its env). Generous, since a batch is many env
#: steps, but finite: a stuck worker surfaces as an error instead of a hang.
DEFAULT_TIMEOUT_S = 600.0


class EnvCopy:
    """The env factory of a worker given an env instance: the worker's copy of that env.

    A forked worker inherits the instance; other start methods (and Ray) pickle it. Either
    way the worker owns a copy, which it closes at shutdown; the caller's instance is left
    as it is.
    """

    def __init__(self, env: EnvBase) -> None:
        self.env = env

    def __call__(self) -> EnvBase:
        return self.env

    def __getstate__(self) -> dict[str, bytes]:
        # The plain pickler copies tensors by value. Multiprocessing's would move them to
        # shared memory instead, so the "copy" would share its state with the original.
        return {"env": pickle.dumps(self.env)}

    def __setstate__(self, state: dict[str, bytes]) -> None:
        self.env = pickle.loads(state["env"])

    def __repr__(self) -> str:
        return f"EnvCopy({type(self.env).__name__})"


def check_factories(owner: str, create_env_fn: Any) -> list[EnvFactory]:
    """Return ``create_env_fn`` as one env factory per worker, or raise naming the fix.

    An env instance stands for a copy of itself in its worker (TorchRL accepts instances).
    """
    if callable(create_env_fn) or isinstance(create_env_fn, EnvBase):
        raise CollectorConfigError(
            f"{owner}: create_env_fn must be a list of env factories (one per worker), got "
            f"{type(create_env_fn).__name__}. Fix: pass e.g. [make_env] * 4."
        )
    factories = list(create_env_fn)
    if not factories:
        raise CollectorConfigError(
            f"{owner}: create_env_fn is empty; give one env factory per worker."
        )
    for i, factory in enumerate(factories):
        if isinstance(factory, EnvBase):
            factories[i] = EnvCopy(_check_copyable(owner, i, factory))
        elif not callable(factory):
            raise CollectorConfigError(
                f"{owner}: create_env_fn[{i}] must be an env or a callable returning one, got "
                f"{type(factory).__name__}. Fix: pass the function that creates the env, e.g. "
                f"lambda: GymEnv('CartPole-v1')."
            )
    return factories


def _check_copyable(owner: str, index: int, env: EnvBase) -> EnvBase:
    """``env`` if a worker can take a copy of it; else raise naming the fix."""
    fix = (
        f"Fix: pass a callable that builds the env in its worker instead, e.g. "
        f"EnvCreator(lambda: {type(env).__name__}(...))."
    )
    if env.is_closed:
        raise CollectorConfigError(f"{owner}: create_env_fn[{index}] is a closed env. {fix}")
    # A copy of an env that drives worker processes would talk to the same processes as the
    # original (and as any other copy): stepping them from two places corrupts both.
    if getattr(env, "worker_pids", None):
        raise CollectorConfigError(
            f"{owner}: create_env_fn[{index}] is a {type(env).__name__} running worker "
            f"processes; a collector worker cannot take a copy of it. {fix}"
        )
    return env


def per_worker_devices(owner: str, name: str, value: Any, num_workers: int) -> list[Any]:
    """One normalized device per worker, from one device or a list/tuple of them.

    Raises:
        CollectorConfigError: A device is invalid, or the list's length is not
            ``num_workers``.
    """
    if not isinstance(value, (list, tuple)):
        return [check_device(owner, name, value)] * num_workers
    if len(value) != num_workers:
        raise CollectorConfigError(
            f"{owner}: {name} has {len(value)} entries for {num_workers} workers. Fix: pass "
            f"one device for all workers, or a list with one per worker."
        )
    return [check_device(owner, f"{name}[{i}]", d) for i, d in enumerate(value)]


class PoolCollectorBase(DataCollectorBase):
    """Base of the collectors that drive one worker per env factory.

    Args:
        create_env_fn: One env factory per worker.
        policy: As for :class:`SyncDataCollector`; each worker runs its own copy.
        sync: Batches gather all workers (``frames_per_batch`` split between them) or come
            from one worker at a time (``frames_per_batch`` each).
        Other arguments: as for :class:`SyncDataCollector`.
    """

    def __init__(
        self,
        create_env_fn: Sequence[EnvFactory],
        policy: Callable[[TensorDictBase], TensorDictBase] | None,
        *,
        sync: bool,
        frames_per_batch: int,
        total_frames: int,
        max_frames_per_traj: int | None,
        init_random_frames: int,
        reset_at_each_iter: bool,
        split_trajs: bool,
        postproc: Callable[[TensorDictBase], TensorDictBase] | None,
        exploration_type: ExplorationType,
        device: Any,
        storing_device: Any,
        replay_buffer: Any,
        compile_policy: bool | Mapping[str, Any] = False,
    ) -> None:
        owner = type(self).__name__
        compile_options = check_compile_policy(owner, compile_policy)
        super().__init__(
            frames_per_batch=frames_per_batch,
            total_frames=total_frames,
            init_random_frames=init_random_frames,
            split_trajs=split_trajs,
            postproc=postproc,
            exploration_type=exploration_type,
            replay_buffer=replay_buffer,
        )
        self._factories = check_factories(owner, create_env_fn)
        check_policy(owner, policy)
        max_frames_per_traj = check_traj_limit(owner, max_frames_per_traj)
        self.sync = sync
        self.num_workers = n = len(self._factories)
        self.policy = policy
        devices = per_worker_devices(owner, "device", device, n)
        storing = per_worker_devices(owner, "storing_device", storing_device, n)
        # One device stays one device; a list gives a tuple with one per worker.
        self.device = tuple(devices) if isinstance(device, (list, tuple)) else devices[0]
        if isinstance(storing_device, (list, tuple)):
            self.storing_device: Any = tuple(storing)
        else:
            self.storing_device = storing[0]
        self.max_frames_per_traj = max_frames_per_traj
        self.env_batch_size = torch.Size()
        common = {
            "frames_per_batch": self._worker_frames(),
            "max_frames_per_traj": max_frames_per_traj,
            "reset_at_each_iter": reset_at_each_iter,
            "exploration_type": exploration_type,
            "compile_policy": compile_options,  # each worker compiles its own copy
        }
        self._worker_configs = [
            {**common, "device": devices[i], "storing_device": storing[i] or devices[i]}
            for i in range(n)
        ]
        self._version = 0  # bumped by every update_policy_weights_

    def _worker_frames(self) -> int:
        if not self.sync:
            return self.frames_per_batch
        if self.frames_per_batch % self.num_workers:
            low = self.frames_per_batch // self.num_workers * self.num_workers
            raise CollectorConfigError(
                f"{type(self).__name__}: frames_per_batch={self.frames_per_batch} is not a "
                f"multiple of the {self.num_workers} workers. Fix: use frames_per_batch="
                f"{low or self.num_workers}."
            )
        return self.frames_per_batch // self.num_workers

    def _check_batch_sizes(self, batch_sizes: list[list[int]]) -> None:
        """Record the workers' env batch size; they must agree (batches are stacked)."""
        if any(size != batch_sizes[0] for size in batch_sizes):
            raise CollectorConfigError(
                f"{type(self).__name__}: the envs of the workers have different batch sizes "
                f"{batch_sizes}; the workers' batches are stacked, so every env must have the "
                f"same batch size. Fix: build all envs with the same number of sub-envs."
            )
        self.env_batch_size = torch.Size(batch_sizes[0])

    def _stack(self, batches: Sequence[TensorDictBase]) -> TensorDictBase:
        """The workers' batches of a sync batch, stacked (on the CPU if their devices differ,
        as TorchRL does with per-worker storing devices)."""
        if len({batch.device for batch in batches}) > 1:
            batches = [batch.cpu() for batch in batches]
        return torch.stack(list(batches), dim=0)

    def _output(self, batch: TensorDictBase) -> TensorDictBase:
        device = self.storing_device
        if isinstance(device, torch.device) and batch.device != device:
            return batch.to(device)
        return batch

    # ------------------------------------------------------------------ transport
    def _call(self, index: int, method: str, *args: Any) -> Any:
        """Run ``CollectorWorker.<method>(*args)`` on worker ``index``; return the result."""
        raise NotImplementedError

    def _publish(self, weights: TensorDictBase) -> None:
        """Make ``weights`` the ones workers load before their next batch."""
        raise NotImplementedError

    # ------------------------------------------------------------------ public API
    def update_policy_weights_(
        self, weights: Mapping[str, Any] | TensorDictBase | None = None
    ) -> None:
        """Publish the policy's current weights (or ``weights``) to the workers.

        Each worker loads them before its next batch; a batch already under way keeps the
        weights it started with.

        Args:
            weights: Parameters and buffers to publish instead of the policy's own (a
                TensorDict as from ``TensorDict.from_module(policy)``, or a ``state_dict``).
        """
        self._check_open("update_policy_weights_")
        source = policy_weights(self.policy) if weights is None else as_weights(weights)
        if source is None:
            return  # a policy without weights
        self._publish(source)
        self._version += 1

    def set_seed(self, seed: int) -> int:
        """Seed every worker's env (and its torch generator) with non-overlapping seeds.

        Worker ``i`` gets the seed following worker ``i - 1``'s; each starts its next
        batch from a fresh reset.

        Returns:
            The next unused seed.
        """
        self._check_open("set_seed")
        for index in range(self.num_workers):
            seed = self._call(index, "set_seed", seed)
        return seed

    def state_dict(self) -> dict[str, Any]:
        """Counters, the policy's weights and every worker's state (collector, generator)."""
        self._check_open("state_dict")
        policy = self.policy
        return {
            **self._base_state(),
            "policy": policy.state_dict() if isinstance(policy, nn.Module) else None,
            "workers": [self._call(i, "state_dict") for i in range(self.num_workers)],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (same number of workers)."""
        self._check_open("load_state_dict")
        states = state_dict["workers"]
        if len(states) != self.num_workers:
            raise CollectorConfigError(
                f"{type(self).__name__}.load_state_dict: the state has {len(states)} workers, "
                f"this collector {self.num_workers}. Fix: build the collector with the same "
                f"list of env factories as the one that was saved."
            )
        self._load_base_state(state_dict)
        if state_dict["policy"] is not None and isinstance(self.policy, nn.Module):
            self.policy.load_state_dict(state_dict["policy"])
            self.update_policy_weights_()
        for index, state in enumerate(states):
            self._call(index, "load_state_dict", state)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_workers={self.num_workers}, "
            f"frames_per_batch={self.frames_per_batch}, total_frames={self.total_frames}, "
            f"frames={self._frames})"
        )
