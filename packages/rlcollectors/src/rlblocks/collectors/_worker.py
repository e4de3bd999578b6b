"""The worker side of the distributed collectors (a process, or a Ray actor).

:class:`CollectorWorker` wraps a :class:`SyncDataCollector` and does what every worker
kind needs: numbering trajectories so that ids never collide between workers, loading new
policy weights between batches, and seeding its own process's generators.

:func:`worker_main` is the loop of a worker process. It answers one reply per command, in
order, over a pipe; any exception is sent back as its formatted traceback before the worker
exits, and the worker leaves when its parent process dies, even without a ``close``.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing
import multiprocessing.connection
import signal
import traceback
from typing import Any

import torch
from tensordict import TensorDictBase

from rlblocks.collectors._policy import policy_weights
from rlblocks.collectors._sync import SyncDataCollector
from rlblocks.collectors._trajectories import TrajectoryIds

__all__ = ["CollectorWorker", "worker_main"]

# CollectorWorker methods a parent may call by name.
_CALLABLE = ("set_seed", "state_dict", "load_state_dict")


class CollectorWorker:
    """A :class:`SyncDataCollector` driven by a parent collector.

    Args:
        create_env_fn: The env factory of this worker.
        policy: The worker's copy of the policy (or ``None``).
        config: Keyword arguments of :class:`SyncDataCollector`.
        index: This worker's index; its trajectory ids are ``index + num_workers * k``.
        num_workers: Number of workers of the parent collector.
    """

    def __init__(
        self,
        create_env_fn: Any,
        policy: Any,
        config: dict[str, Any],
        index: int,
        num_workers: int,
    ) -> None:
        self.collector = SyncDataCollector(create_env_fn, policy, **config)
        env = self.collector.env
        self.collector._traj = TrajectoryIds(
            env.batch_size, self.collector.storing_device, offset=index, stride=num_workers
        )
        # Forked workers start with their parent's RNG state: give each its own stream.
        torch.seed()

    @property
    def env_batch_size(self) -> list[int]:
        """The batch size of the worker's env."""
        return list(self.collector.env.batch_size)

    def collect(self, random: bool, weights: TensorDictBase | None = None) -> TensorDictBase:
        """Load ``weights`` (if given) into the policy, then collect one raw batch."""
        collector = self.collector
        if weights is not None:
            target = policy_weights(collector.policy)
            if target is not None:
                target.update_(weights)
        batch = collector._collect_batch(random)
        collector._frames += batch.numel()
        collector._batches += 1
        return batch

    def set_seed(self, seed: int) -> int:
        """Seed the env and this process's torch generator; returns the next free seed."""
        torch.manual_seed(seed)
        return self.collector.set_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped collector's state and this process's torch generator state.

        The worker owns its process, so its generator (random actions, sampling policies)
        is part of what resuming needs.
        """
        return {"collector": self.collector.state_dict(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.collector.load_state_dict(state["collector"])
        torch.set_rng_state(state["torch_rng"])

    def shutdown(self) -> None:
        """Close the env."""
        self.collector.shutdown()


def worker_main(
    conn: multiprocessing.connection.Connection,
    worker_args: tuple[Any, ...],
    shared_weights: TensorDictBase | None,
    fault_path: str,
) -> None:
    """Entry point of a worker process (see the module docstring for the protocol).

    ``worker_args`` are the arguments of :class:`CollectorWorker`.

    Commands (tuples) and replies:

    * ``("collect", random, weights_version)`` -> ``("batch", buffer_or_None)``: the batch
      is written to the worker's shared buffer; the buffer itself is sent the first time.
    * ``(method, *args)`` for ``set_seed``, ``state_dict`` and ``load_state_dict`` ->
      ``("ok", result)``
    * ``("close",)`` -> no reply; the worker exits.

    Errors are answered with ``("error", traceback_text)`` and the worker exits.
    """
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # workers share the machine's cores
    with open(fault_path, "w") as fault_file:
        faulthandler.enable(file=fault_file, all_threads=True)
        if hasattr(signal, "SIGTERM"):
            faulthandler.register(signal.SIGTERM, file=fault_file, all_threads=True, chain=True)
        _serve(conn, worker_args, shared_weights)


def _serve(
    conn: multiprocessing.connection.Connection,
    worker_args: tuple[Any, ...],
    shared_weights: TensorDictBase | None,
) -> None:
    parent = multiprocessing.parent_process()
    watched = [conn] if parent is None else [conn, parent.sentinel]
    worker = None
    try:
        worker = CollectorWorker(*worker_args)
        conn.send(("ok", worker.env_batch_size))
        buffer: TensorDictBase | None = None
        version = 0
        while True:
            ready = multiprocessing.connection.wait(watched)
            if conn not in ready:
                return  # the parent died without closing us
            command, *args = conn.recv()
            if command == "collect":
                random, wanted = args
                weights = None
                if wanted != version and shared_weights is not None:
                    weights, version = shared_weights, wanted
                batch = worker.collect(random, weights)
                if buffer is None:
                    buffer = batch.share_memory_()
                    conn.send(("batch", buffer))
                else:
                    buffer.update_(batch)
                    conn.send(("batch", None))
            elif command in _CALLABLE:
                conn.send(("ok", getattr(worker, command)(*args)))
            elif command == "close":
                return
            else:
                raise ValueError(f"unknown command {command!r}")
    except (EOFError, BrokenPipeError):
        return  # the parent is gone
    except BaseException:
        with contextlib.suppress(OSError, EOFError):
            conn.send(("error", traceback.format_exc()))
    finally:
        if worker is not None:
            worker.shutdown()
        conn.close()
