"""``RayCollector``: the collectors' iteration API over Ray actors.

Each env factory becomes one Ray actor running a :class:`CollectorWorker` (a
:class:`SyncDataCollector` inside), placed by Ray anywhere in the cluster the driver is
connected to. Policy weights go through the Ray object store: ``update_policy_weights_()``
puts them there once and each actor fetches them with its next batch request. Batches come
back as Ray objects. Needs ``pip install 'rlblocks-collectors[ray]'``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tensordict import TensorDict, TensorDictBase

from rlblocks.collectors._base import EnvFactory, extend_buffer
from rlblocks.collectors._pool import DEFAULT_TIMEOUT_S, PoolCollectorBase
from rlblocks.collectors._trajectories import split_trajectories
from rlblocks.collectors._worker import CollectorWorker
from rlblocks.collectors.errors import CollectorConfigError, CollectorWorkerError
from rlblocks.core import ExplorationType
from rlblocks.core.errors import missing_dependency
from rlblocks.core.utils import check_timeout

__all__ = ["RayCollector"]

_ANSI_COLOR = re.compile(r"\x1b\[[0-9;]*m")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise missing_dependency("RayCollector", "ray", "rlblocks-collectors[ray]") from err
    return ray


class _ActorWorker(CollectorWorker):
    """A :class:`CollectorWorker` with the extra methods Ray calls need."""

    _sink: tuple[Any, bool, Any] | None = None

    def batch_size(self) -> list[int]:
        return self.env_batch_size

    def write_to(self, replay_buffer: Any, split_trajs: bool, postproc: Any) -> None:
        """From now on, write each batch to ``replay_buffer`` here (after splitting and
        ``postproc``, as the driver would) and send back only its shape."""
        self._sink = (replay_buffer, split_trajs, postproc)

    def collect(self, random: bool, weights: TensorDictBase | None = None) -> TensorDictBase:
        batch = super().collect(random, weights)
        if self._sink is None:
            return batch
        replay_buffer, split_trajs, postproc = self._sink
        receipt = TensorDict({}, batch_size=batch.batch_size)
        if split_trajs:
            batch = split_trajectories(batch)
        if postproc is not None:
            batch = postproc(batch)
        extend_buffer(replay_buffer, batch)
        return receipt


class RayCollector(PoolCollectorBase):
    """Collect with one Ray actor per env factory; iterate like any rlblocks collector.

    With ``sync=True`` every batch gathers all actors (``frames_per_batch`` split between
    them, ``[num_workers, *env.batch_size, T]``); with ``sync=False`` each batch is one
    actor's (``frames_per_batch`` frames, ``[*env.batch_size, T]``), yielded as soon as it
    is ready, and the actor starts its next batch when the following one is asked for.

    Ray must be initialized (``ray.init(...)``, or ``ray.init(address="auto")`` to join a
    cluster); if it is not, the collector calls ``ray.init(**ray_init_config)``. Shutting the
    collector down kills its actors and leaves Ray running.

    Args:
        create_env_fn: One env factory per actor (any callable Ray can serialize; lambdas
            are fine), or an env instance that Ray serializes into the actor.
        policy: As for :class:`SyncDataCollector`; each actor runs its own copy.
        sync: Gather all actors per batch (see above).
        frames_per_batch: Frames per yielded batch.
        total_frames: See :class:`SyncDataCollector`.
        max_frames_per_traj: See :class:`SyncDataCollector` (``None`` or ``-1``: no limit).
        init_random_frames: See :class:`SyncDataCollector`.
        reset_at_each_iter: See :class:`SyncDataCollector`.
        split_trajs: See :class:`SyncDataCollector`.
        postproc: See :class:`SyncDataCollector` (runs on the driver).
        exploration_type: See :class:`SyncDataCollector`.
        device: Device the actors run the policy on: one, or a list/tuple with one per actor.
        storing_device: Device of the yielded batches (on the driver); a list/tuple gives
            each actor's own (see :class:`MultiSyncDataCollector`).
        replay_buffer: See :class:`SyncDataCollector`. Written from the driver, except a
            buffer every process can extend (``replay_buffer.remote_extend``, e.g. a
            :class:`~rlblocks.buffers.RayReplayBuffer`): each actor then writes its batches
            into it itself (after ``split_trajs`` and ``postproc``, which run in the actor)
            and only their sizes reach the driver.
        compile_policy: See :class:`SyncDataCollector`; each actor compiles its copy.
        ray_init_config: Keyword arguments of ``ray.init`` when Ray is not initialized.
        remote_config: Options of the actors (``ray.remote``), e.g. ``{"num_cpus": 1}``
            (the default) or ``{"num_gpus": 1}``.
        start_timeout: Seconds to wait for the actors to start; Ray waits forever for
            resources the cluster does not have, this raises instead.
        timeout: Seconds an actor may take to answer once started: to collect one batch,
            or to run a ``set_seed`` or state-dict call. An actor silent for longer is taken
            for stuck: every actor is killed and :class:`CollectorWorkerError` names it.
            ``None`` waits forever; the default is that of
            :class:`MultiSyncDataCollector`.

    Raises:
        MissingDependencyError: Ray is not installed.
        CollectorConfigError: A bad argument.
        CollectorWorkerError: An actor failed (its remote traceback is in the message), or
            stayed silent for ``timeout`` seconds.

    Example:
        >>> ray.init(num_cpus=4)
        >>> collector = RayCollector([make_env] * 4, policy, frames_per_batch=1000, sync=False)
        >>> for batch in collector:
        ...     train(batch)
        ...     collector.update_policy_weights_()
        >>> collector.shutdown()
    """

    def __init__(
        self,
        create_env_fn: Sequence[EnvFactory],
        policy: Callable[[TensorDictBase], TensorDictBase] | None = None,
        *,
        frames_per_batch: int,
        total_frames: int = -1,
        sync: bool = False,
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
        ray_init_config: Mapping[str, Any] | None = None,
        remote_config: Mapping[str, Any] | None = None,
        start_timeout: float = 300.0,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.timeout = check_timeout(timeout, "timeout", "RayCollector", error=CollectorConfigError)
        ray = _import_ray()
        self._ray = ray
        self._actors: list[Any] = []
        self._actors_write = bool(getattr(replay_buffer, "remote_extend", False))
        super().__init__(
            create_env_fn,
            policy,
            sync=sync,
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
        if not ray.is_initialized():
            ray.init(**dict(ray_init_config or {}))
        self._options = {"num_cpus": 1, **dict(remote_config or {})}
        actor_cls = ray.remote(**self._options)(_ActorWorker)
        self._weights_ref: Any = None
        self._actor_version = [0] * self.num_workers
        self._in_flight: dict[Any, int] = {}  # object ref of a batch -> actor index
        self._asked: dict[Any, float] = {}  # object ref -> when it was asked for
        try:
            self._actors = [
                actor_cls.remote(
                    factory, policy, self._worker_configs[index], index, self.num_workers
                )
                for index, factory in enumerate(self._factories)
            ]
            refs = [actor.batch_size.remote() for actor in self._actors]
            self._check_batch_sizes(self._get(refs, timeout=start_timeout))
            if self._actors_write:
                sink = (replay_buffer, self.split_trajs, self.postproc)
                self._get([actor.write_to.remote(*sink) for actor in self._actors])
        except BaseException:
            self.shutdown()
            raise

    # ------------------------------------------------------------------ transport
    def _get(self, refs: Any, timeout: float | None = None) -> Any:
        """``ray.get`` that turns an actor failure into :class:`CollectorWorkerError`."""
        ray = self._ray
        try:
            return ray.get(refs, timeout=timeout)
        except ray.exceptions.GetTimeoutError as err:
            self.shutdown()
            raise CollectorWorkerError(
                f"RayCollector: the {self.num_workers} actors did not start within {timeout} s. "
                f"The cluster may lack the resources they ask for ({self._options}). Fix: "
                f"free resources (shut down other collectors), or lower remote_config, e.g. "
                f"{{'num_cpus': 0.5}}."
            ) from err
        except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as err:
            self.shutdown()
            text = _ANSI_COLOR.sub("", str(err))  # Ray colors its terminal output
            raise CollectorWorkerError(
                f"RayCollector: an actor failed:\n{text}\nAll actors were killed; fix the cause "
                f"and create a new collector."
            ) from err

    def _wait(self, refs: dict[Any, int], num_returns: int, what: str) -> list[Any]:
        """``ray.wait`` for ``num_returns`` of ``refs`` (object ref -> actor index), oldest
        request first among those ready; raises naming an actor silent for :attr:`timeout`
        seconds since it was asked (even while others answer: in the async collector a
        fast actor would otherwise keep hiding a stuck one)."""
        ray, timeout, asked = self._ray, self.timeout, self._asked
        pending = sorted(refs, key=asked.__getitem__)
        if timeout is None:
            ready, _ = ray.wait(pending, num_returns=num_returns)
            return ready
        deadline = asked[pending[0]] + timeout
        remaining = max(0.0, deadline - time.monotonic())
        ready, _ = ray.wait(pending, num_returns=num_returns, timeout=remaining)
        now = time.monotonic()
        for ref in pending:
            if ref not in ready and now - asked[ref] >= timeout:
                waited = now - asked[ref]
                self.shutdown()
                raise CollectorWorkerError(
                    f"RayCollector: actor {refs[ref]} sent nothing for {waited:.1f} s while "
                    f"{what} (timeout={timeout:g} s; is it stuck? Pass a larger timeout if "
                    f"it is only slow). All actors were killed; fix the cause and create a "
                    f"new collector."
                )
        if len(ready) < num_returns:  # not all silent for the timeout yet: wait again
            return ready + self._wait(
                {r: refs[r] for r in pending if r not in ready}, num_returns - len(ready), what
            )
        return ready

    def _call(self, index: int, method: str, *args: Any) -> Any:
        ref = getattr(self._actors[index], method).remote(*args)
        self._asked[ref] = time.monotonic()
        try:
            self._wait({ref: index}, 1, f"running {method}()")
        finally:
            self._asked.pop(ref, None)
        return self._get(ref)

    def _publish(self, weights: TensorDictBase) -> None:
        self._weights_ref = self._ray.put(weights)

    def _request(self, index: int, random: bool) -> Any:
        weights = None
        if self._actor_version[index] != self._version:
            weights = self._weights_ref
            self._actor_version[index] = self._version
        ref = self._actors[index].collect.remote(random, weights)
        self._in_flight[ref] = index
        self._asked[ref] = time.monotonic()
        return ref

    def _take(self, ref: Any) -> None:
        """Forget a batch request that was answered."""
        self._in_flight.pop(ref, None)
        self._asked.pop(ref, None)

    # ------------------------------------------------------------------ collection
    def _collect(self) -> TensorDictBase:
        random = self._random_phase()
        if self.sync:
            refs = [self._request(i, random) for i in range(self.num_workers)]
            self._wait(dict(self._in_flight), len(refs), "collecting a batch")
            batches = self._get(refs)
            for ref in refs:
                self._take(ref)
            return self._output(self._stack(batches))
        busy = set(self._in_flight.values())
        for index in range(self.num_workers):
            if index not in busy:
                self._request(index, random)
        # The oldest request first among those ready, so no actor waits forever.
        ready = self._wait(dict(self._in_flight), 1, "collecting a batch")[0]
        self._take(ready)
        return self._output(self._get(ready))

    def _deliver(self, batch: TensorDictBase) -> TensorDictBase | None:
        if self._actors_write:  # the actors wrote it; ``batch`` holds only its shape
            return None
        return super()._deliver(batch)

    # ------------------------------------------------------------------ lifecycle
    @property
    def actors(self) -> list[Any]:
        """The Ray actor handles (empty after :meth:`shutdown`)."""
        return [] if self._closed else list(self._actors)

    def _shutdown(self) -> None:
        self._in_flight.clear()
        self._asked.clear()
        for actor in self._actors:
            with contextlib.suppress(Exception):  # an actor already gone is fine
                self._ray.kill(actor)
