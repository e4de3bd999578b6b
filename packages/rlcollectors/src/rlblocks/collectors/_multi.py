"""``MultiSyncDataCollector`` and ``MultiaSyncDataCollector``: one worker process per env.

Each worker runs a :class:`SyncDataCollector` and writes its batches into a buffer in shared
memory, sent to the parent once; afterwards a batch costs the parent one small message and
one copy. Policy weights travel the other way through a shared-memory copy of the policy's
parameters: ``update_policy_weights_()`` writes it in place and bumps a version number, and
a worker reloads the weights before its next batch when the version changed.

Faults: the parent waits on the workers' pipes *and* their process sentinels at once, so a
worker that raises (its traceback arrives as a message) or dies (killed by a signal, a
crash) is noticed immediately, and one that stays silent for ``timeout`` seconds (stuck in
its env) when the timeout runs out; the collector then shuts every worker down and raises
:class:`CollectorWorkerError`. ``shutdown()`` asks workers to leave, then terminates and
finally kills those still alive, within a few seconds in total.

Threads: one lock serializes the calls that talk to the workers. ``shutdown()`` from another
thread wakes a thread waiting for the workers (through a pipe it also waits on), lets it
leave with :class:`CollectorClosedError`, and only then closes the pipes it was reading.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch.multiprocessing
from tensordict import TensorDictBase

from rlblocks.collectors._base import EnvFactory
from rlblocks.collectors._policy import policy_weights
from rlblocks.collectors._pool import DEFAULT_TIMEOUT_S, EnvCopy, PoolCollectorBase
from rlblocks.collectors._worker import worker_main
from rlblocks.collectors.errors import (
    CollectorClosedError,
    CollectorConfigError,
    CollectorWorkerError,
)
from rlblocks.core import ExplorationType
from rlblocks.core.utils import check_timeout, stop_processes

__all__ = ["MultiSyncDataCollector", "MultiaSyncDataCollector"]


#: How long ``shutdown()`` from another thread waits for a thread talking to the workers
#: to leave before it stops the workers anyway (that thread is woken at once, so it only
#: waits this long if the thread is stuck elsewhere).
_LEAVE_S = 5.0


class _Worker:
    """The parent's handle on one worker process."""

    __slots__ = (
        "asked",
        "buffer",
        "conn",
        "fault_path",
        "index",
        "pid",
        "process",
        "requested",
        "state",
    )

    def __init__(self, index: int, process: Any, conn: Any, fault_path: str) -> None:
        self.index = index
        self.process = process
        self.pid: int = process.pid  # kept: a closed Process no longer tells it
        self.conn = conn
        self.fault_path = fault_path
        self.buffer: TensorDictBase | None = None
        self.state = "idle"  # idle | busy (a batch was asked for) | holding (batch not taken)
        self.requested = 0  # when the batch in flight was asked for (a request counter)
        self.asked = time.monotonic()  # when the message it must answer was sent


def _request_order(worker: _Worker) -> int:
    return worker.requested


def _send_close(conn: Any) -> None:
    conn.send(("close",))


def _stop_workers(processes: list[Any], conns: list[Any], tmpdir: str, wake: Any) -> None:
    """Stop the workers within a bounded time (close, terminate, kill); remove their files."""
    stop_processes(processes, conns, send_close=_send_close)
    shutil.rmtree(tmpdir, ignore_errors=True)
    for conn in wake:
        conn.close()


def _read_dump(path: str) -> str:
    """The Python traceback a worker's faulthandler wrote (on a crash or SIGTERM), if any."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


class _MultiCollectorBase(PoolCollectorBase):
    """Shared machinery of the multi-process collectors (see the public subclasses)."""

    _sync: bool

    def __init__(
        self,
        create_env_fn: Sequence[EnvFactory],
        policy: Callable[[TensorDictBase], TensorDictBase] | None = None,
        *,
        frames_per_batch: int,
        total_frames: int = -1,
        max_frames_per_traj: int | None = None,
        init_random_frames: int = 0,
        reset_at_each_iter: bool = False,
        split_trajs: bool = False,
        postproc: Callable[[TensorDictBase], TensorDictBase] | None = None,
        exploration_type: ExplorationType = ExplorationType.RANDOM,
        device: Any = None,
        storing_device: Any = None,
        replay_buffer: Any = None,
        compile_policy: bool | Mapping[str, Any] = False,
        mp_start_method: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._workers: list[_Worker] = []
        self._finalizer: Any = None
        self.timeout = check_timeout(
            timeout, "timeout", type(self).__name__, error=CollectorConfigError
        )
        # Talking to the workers is one thread's at a time; shutdown() from another thread
        # writes to _wake_send so that a thread waiting for the workers leaves at once.
        self._lock = threading.RLock()
        self._wake_recv, self._wake_send = multiprocessing.Pipe(duplex=False)
        super().__init__(
            create_env_fn,
            policy,
            sync=self._sync,
            frames_per_batch=frames_per_batch,
            total_frames=total_frames,
            max_frames_per_traj=max_frames_per_traj,
            init_random_frames=init_random_frames,
            reset_at_each_iter=reset_at_each_iter,
            split_trajs=split_trajs,
            postproc=postproc,
            exploration_type=exploration_type,
            device=device,
            storing_device=storing_device,
            replay_buffer=replay_buffer,
            compile_policy=compile_policy,
        )
        weights = policy_weights(policy)
        self._shared_weights = None if weights is None else weights.clone().share_memory_()
        self._holding: collections.deque[_Worker] = collections.deque()
        self._requests = 0
        self._start(mp_start_method)

    # ------------------------------------------------------------------ processes
    def _start(self, mp_start_method: str | None) -> None:
        owner = type(self).__name__
        ctx = torch.multiprocessing.get_context(mp_start_method)
        tmpdir = tempfile.mkdtemp(prefix="rlblocks-collector-")
        processes: list[Any] = []
        conns: list[Any] = []
        n = self.num_workers
        # The finalizer holds the processes, never self, so an abandoned collector is
        # still cleaned up when it is garbage collected or when the interpreter exits.
        wake = (self._wake_recv, self._wake_send)
        self._finalizer = weakref.finalize(self, _stop_workers, processes, conns, tmpdir, wake)
        try:
            if ctx.get_start_method() != "fork":
                _check_picklable_envs(owner, self._factories, ctx.get_start_method())
            for index, factory in enumerate(self._factories):
                parent_conn, child_conn = ctx.Pipe()
                conns.append(parent_conn)
                fault_path = os.path.join(tmpdir, f"worker{index}.fault")
                process = ctx.Process(
                    target=worker_main,
                    args=(
                        child_conn,
                        (factory, self.policy, self._worker_configs[index], index, n),
                        self._shared_weights,
                        fault_path,
                    ),
                    name=f"{owner}-worker-{index}",
                    daemon=False,  # a worker may start processes of its own (ParallelEnv)
                )
                _start_process(owner, process, ctx)
                processes.append(process)
                child_conn.close()
                self._workers.append(_Worker(index, process, parent_conn, fault_path))
            replies = [self._reply(w, "ok", "starting its env") for w in self._workers]
            self._check_batch_sizes(replies)
        except BaseException:
            self.shutdown()
            raise

    def _send(self, worker: _Worker, *message: Any) -> None:
        try:
            worker.conn.send(message)
        except (OSError, ValueError):
            self._raise_dead(worker)
        worker.asked = time.monotonic()

    def _reply(self, worker: _Worker, expected: str, what: str) -> Any:
        """Wait for ``worker``'s next reply (to a request for ``what``); return its payload."""
        _, (kind, payload) = self._wait_any([worker], what)
        if kind != expected:
            raise CollectorWorkerError(
                f"{type(self).__name__}: worker {worker.index} answered {kind!r} where "
                f"{expected!r} was expected; the protocol is out of step. Shut the collector "
                f"down and create a new one."
            )
        return payload

    def _wait_any(self, workers: Sequence[_Worker], what: str) -> tuple[_Worker, tuple[str, Any]]:
        """The first reply of any of ``workers``; raises if one raised, died, stayed silent
        for :attr:`timeout` seconds since it was asked (``what`` says for what), or if the
        collector was shut down from another thread meanwhile."""
        by_conn = {w.conn: w for w in workers}
        by_sentinel = {w.process.sentinel: w for w in workers}
        waited_on = [*by_conn, *by_sentinel, self._wake_recv]
        timeout = self.timeout
        while True:
            if self._closed:
                raise self._closed_error(what)
            if timeout is None:
                ready = multiprocessing.connection.wait(waited_on)
            else:
                deadline = min(w.asked for w in workers) + timeout
                ready = multiprocessing.connection.wait(
                    waited_on, max(0.0, deadline - time.monotonic())
                )
                # Checked even when others answered: in the async collector a fast worker
                # would otherwise keep hiding a stuck one.
                now = time.monotonic()
                for worker in workers:
                    answered = worker.conn in ready or worker.process.sentinel in ready
                    if not answered and now - worker.asked >= timeout:
                        self._raise_silent(worker, now - worker.asked, what)
            if self._closed:
                raise self._closed_error(what)
            # Replies first: a worker that sent its traceback and exited is ready twice.
            for obj in ready:
                worker = by_conn.get(obj)
                if worker is None:
                    continue
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    self._raise_dead(worker)
                if message[0] == "error":
                    self._raise_failed(worker, f"raised an exception:\n{message[1]}")
                return worker, message
            for obj in ready:
                worker = by_sentinel.get(obj)
                if worker is not None and not worker.conn.poll():
                    self._raise_dead(worker)

    def _closed_error(self, what: str) -> CollectorClosedError:
        return CollectorClosedError(
            f"{type(self).__name__}: shutdown() was called while this call was waiting for "
            f"the workers ({what}), e.g. from another thread; the collector is closed. Create "
            f"a new collector to collect more."
        )

    def _raise_silent(self, worker: _Worker, waited: float, what: str) -> None:
        # Stop the workers before reading the silent one's fault file: SIGTERM makes its
        # faulthandler write its stack there, which says where it is stuck.
        workers = self._workers
        stop_processes(
            [w.process for w in workers], [w.conn for w in workers], send_close=_send_close
        )
        dump = _read_dump(worker.fault_path)
        detail = f"\nPython traceback when it was stopped:\n{dump}" if dump else ""
        self._raise_failed(
            worker,
            f"sent nothing for {waited:.1f} s while {what} (timeout={self.timeout:g} s; is "
            f"it stuck? Pass a larger timeout if it is only slow){detail}",
        )

    def _raise_dead(self, worker: _Worker) -> None:
        if self._closed:
            # The pipes were closed under us by shutdown() from another thread.
            raise self._closed_error("reading a reply")
        process = worker.process
        process.join(1.0)
        code = process.exitcode
        if code is not None and code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited unexpectedly with exit code {code}"
        dump = _read_dump(worker.fault_path)
        detail = f"\nPython traceback at the time of death:\n{dump}" if dump else ""
        self._raise_failed(worker, how + detail)

    def _raise_failed(self, worker: _Worker, what: str) -> None:
        self.shutdown()
        raise CollectorWorkerError(
            f"{type(self).__name__}: worker {worker.index} (pid {worker.pid}) {what}\n"
            f"All workers were shut down; fix the cause and create a new collector."
        )

    def _take_batch(self, worker: _Worker, buffer: TensorDictBase | None) -> None:
        if buffer is not None:
            worker.buffer = buffer
        worker.state = "holding"

    def _drain(self, worker: _Worker) -> None:
        """Receive a batch ``worker`` is producing, keeping it for later delivery."""
        if worker.state == "busy":
            self._take_batch(worker, self._reply(worker, "batch", "collecting a batch"))
            self._holding.append(worker)

    def _call(self, index: int, method: str, *args: Any) -> Any:
        with self._lock:
            if self._closed:
                self._check_open(method)
            worker = self._workers[index]
            self._drain(worker)
            self._send(worker, method, *args)
            return self._reply(worker, "ok", f"running {method}()")

    def _collect(self) -> TensorDictBase:
        with self._lock:
            if self._closed:  # by another thread, since next() checked
                raise self._closed_error("collecting a batch")
            return self._gather()

    def _gather(self) -> TensorDictBase:
        """One batch from the workers (called with the lock held)."""
        raise NotImplementedError

    def _publish(self, weights: TensorDictBase) -> None:
        if self._shared_weights is not None:
            self._shared_weights.update_(weights)

    def _request(self, worker: _Worker, random: bool) -> None:
        self._send(worker, "collect", random, self._version)
        worker.state = "busy"
        self._requests += 1
        worker.requested = self._requests

    # ------------------------------------------------------------------ public API
    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (empty after :meth:`shutdown`)."""
        return [] if self._closed else [w.pid for w in self._workers]

    def _shutdown(self) -> None:
        # A thread waiting for the workers also waits on this pipe: wake it, and let it leave
        # before its pipes are closed. Bounded: a thread stuck elsewhere is not waited for.
        with contextlib.suppress(OSError, ValueError):
            self._wake_send.send_bytes(b"")
        locked = self._lock.acquire(timeout=_LEAVE_S)
        try:
            self._holding.clear()
            for worker in self._workers:
                worker.buffer = None
            if self._finalizer is not None:
                self._finalizer()
        finally:
            if locked:
                self._lock.release()


class MultiSyncDataCollector(_MultiCollectorBase):
    """Collect from several envs in worker processes; each batch holds all of them.

    Every batch asks each worker for ``frames_per_batch / num_workers`` frames and stacks
    the answers: batches are ``[num_workers, *env.batch_size, T]``. Workers wait between
    batches, so weights published with :meth:`update_policy_weights_` are used by the whole
    next batch. Trajectory ids are unique across workers (worker ``i`` hands out ids
    ``i, i + num_workers, ...``).

    Args:
        create_env_fn: One entry per worker: a callable returning an rlblocks env, or an
            env instance, of which the worker runs its own copy (a forked worker inherits
            it, other start methods pickle it; the instance itself is left open and
            unused, and copies start with its state, random generators included, so seed
            them with :meth:`set_seed`). An env running worker processes of its own
            (``ParallelEnv``) cannot be copied: pass a callable building it. Every env must
            have the same batch size. With the ``"spawn"`` or ``"forkserver"`` start
            methods entries must be picklable (a module-level function,
            ``functools.partial`` or a picklable env; not a lambda).
        policy: As for :class:`SyncDataCollector`; each worker runs its own copy.
        frames_per_batch: Frames per batch, over all workers; a multiple of
            ``num_workers * env.batch_size.numel()``.
        total_frames: See :class:`SyncDataCollector`.
        max_frames_per_traj: Truncate episodes after this many steps; ``None`` or ``-1``
            (TorchRL's spelling): no limit. See :class:`SyncDataCollector`.
        init_random_frames: See :class:`SyncDataCollector`.
        reset_at_each_iter: See :class:`SyncDataCollector`.
        split_trajs: See :class:`SyncDataCollector`.
        postproc: See :class:`SyncDataCollector` (runs in this process).
        exploration_type: See :class:`SyncDataCollector`.
        device: Device the workers run the policy on: one for all, or a list/tuple with
            one per worker.
        storing_device: Device of the yielded batches (default: ``device``, else where
            the workers' envs produce them). A list/tuple gives each worker's own; a
            :class:`MultiSyncDataCollector` batch gathering several devices is stacked on
            the CPU (as TorchRL does).
        replay_buffer: See :class:`SyncDataCollector` (written from this process).
        compile_policy: See :class:`SyncDataCollector`; each worker compiles its copy.
        mp_start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None`` uses the
            platform's default.
        timeout: Seconds a worker may take to answer: to build its env, to collect one
            batch (all of its ``frames_per_batch`` share), or to run a ``set_seed`` or
            state-dict call. A worker silent for longer is taken for stuck: every worker
            is shut down and :class:`CollectorWorkerError` names it, with the Python stack
            where it was stuck. ``None`` waits forever. The default (10 minutes) is
            generous because a batch is many env steps; lower it to notice a stuck env
            sooner.

    Raises:
        CollectorConfigError: A bad argument.
        CollectorWorkerError: A worker failed to build its env or collector (the message
            holds its traceback), now or in a later batch, died, or stayed silent for
            ``timeout`` seconds.
        CollectorClosedError: The collector was shut down, also when :meth:`shutdown` is
            called from another thread while this one iterates (its loop ends with it).

    Example:
        >>> collector = MultiSyncDataCollector(
        ...     [make_env, make_env], policy, frames_per_batch=2000, total_frames=1_000_000
        ... )
        >>> with collector:
        ...     for batch in collector:  # batch.batch_size == [2, 1000] for unbatched envs
        ...         train(batch)
        ...         collector.update_policy_weights_()
    """

    _sync = True

    def _gather(self) -> TensorDictBase:
        for worker in self._workers:
            self._drain(worker)  # a batch left in flight by an interrupted call is dropped
        self._holding.clear()
        random = self._random_phase()
        for worker in self._workers:
            self._request(worker, random)
        busy = list(self._workers)
        while busy:
            worker, (_, buffer) = self._wait_any(busy, "collecting a batch")
            self._take_batch(worker, buffer)
            busy.remove(worker)
        batch = self._stack([w.buffer for w in self._workers])  # type: ignore[misc]
        for worker in self._workers:
            worker.state = "idle"
        self._holding.clear()
        return self._output(batch)


class MultiaSyncDataCollector(_MultiCollectorBase):
    """Collect from several envs in worker processes; yield each worker's batch when ready.

    Every worker collects ``frames_per_batch`` frames at a time; iteration yields whichever
    batch is ready first (``[*env.batch_size, T]``), and the worker starts its next batch
    when the following one is asked for (so weights published in between are used).
    Workers never wait for each other, which helps when their envs run at uneven speeds.
    Arguments are those of :class:`MultiSyncDataCollector`, except that
    ``frames_per_batch`` is the size of each yielded batch.

    Batches still being collected when :meth:`state_dict` is called are received first and
    delivered by the next iterations; a collector restored from that state does not have
    them. The order of batches depends on timing, so runs are not reproducible batch for
    batch.

    Example:
        >>> collector = MultiaSyncDataCollector([make_env] * 4, policy, frames_per_batch=500)
        >>> with collector:
        ...     for i, batch in zip(range(100), collector):
        ...         train(batch)
        ...         collector.update_policy_weights_()
    """

    _sync = False

    def _gather(self) -> TensorDictBase:
        if not self._holding:
            random = self._random_phase()
            for worker in self._workers:
                if worker.state == "idle":
                    self._request(worker, random)
            busy = sorted((w for w in self._workers if w.state == "busy"), key=_request_order)
            first, (_, buffer) = self._wait_any(busy, "collecting a batch")
            self._take_batch(first, buffer)
            # Take every batch that is ready, oldest request first: otherwise the fastest
            # worker would be served again and again while finished ones wait.
            for worker in busy:
                if worker is not first and worker.conn.poll():
                    self._take_batch(worker, self._reply(worker, "batch", "collecting a batch"))
            self._holding.extend(w for w in busy if w.state == "holding")
        worker = self._holding.popleft()
        batch = worker.buffer.clone()  # type: ignore[union-attr]
        worker.state = "idle"
        return self._output(batch)


def _check_picklable_envs(owner: str, factories: list[Any], method: str) -> None:
    """Raise naming the fix if an env instance cannot travel to a spawned worker."""
    for index, factory in enumerate(factories):
        if not isinstance(factory, EnvCopy):
            continue
        try:
            pickle.dumps(factory)
        except Exception as err:
            raise CollectorConfigError(
                f"{owner}: create_env_fn[{index}] is a {type(factory.env).__name__} instance, "
                f"which a worker started with {method!r} receives pickled, and it cannot be "
                f"pickled: {err}. Fix: pass a callable that builds the env in the worker "
                f"instead (a module-level function, functools.partial or EnvCreator), or "
                f"mp_start_method='fork'."
            ) from err


def _start_process(owner: str, process: Any, ctx: Any) -> None:
    try:
        process.start()
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        if ctx.get_start_method() == "fork":
            raise
        raise CollectorConfigError(
            f"{owner}: cannot send the env factory or the policy to a worker started with "
            f"{ctx.get_start_method()!r}: {err}. Fix: use module-level functions or "
            f"functools.partial instead of lambdas and local functions, or "
            f"mp_start_method='fork'."
        ) from err
