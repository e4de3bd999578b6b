"""``RayReplayBuffer``: one replay buffer hosted by a Ray actor, used from anywhere in the cluster.

The actor builds an ordinary rlblocks buffer from the arguments it is given (the same
storage, sampler, writer and transform objects a local buffer takes) and answers the buffer's
calls. A :class:`RayReplayBuffer` is only a handle on that actor: it pickles into other Ray
actors and tasks (a :class:`~rlblocks.collectors.RayCollector`'s actors, a user's own), and
every copy reads and writes the same content. Needs ``pip install 'rlblocks-buffers[ray]'``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import torch

from rlblocks.buffers._replay_buffers import ReplayBuffer
from rlblocks.buffers.errors import BufferConfigError
from rlblocks.core.errors import missing_dependency

__all__ = ["RayReplayBuffer"]

_ANSI_COLOR = re.compile(r"\x1b\[[0-9;]*m")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise missing_dependency("RayReplayBuffer", "ray", "rlblocks-buffers[ray]") from err
    return ray


class _BufferHost:
    """What runs inside the Ray actor: a local buffer and the calls the handle forwards."""

    def __init__(self, blob: bytes) -> None:
        torch.set_num_threads(1)  # the host shares the machine with collectors and learner
        # The arguments come pickled by the handle: Ray's own transport would hand numpy
        # arrays over read-only (zero-copy from its object store), and storages and
        # samplers keep their counters and trees in numpy arrays they write to.
        replay_buffer_cls, args, kwargs = pickle.loads(blob)
        self.buffer = replay_buffer_cls(*args, **kwargs)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.buffer, method)(*args, **kwargs)

    def length(self) -> int:
        return len(self.buffer)

    def describe(self) -> str:
        return repr(self.buffer)


class RayReplayBuffer:
    """A replay buffer owned by one Ray actor: collectors on Ray extend it, a learner samples it.

    ``args`` and ``kwargs`` are those of ``replay_buffer_cls`` (any rlblocks buffer:
    :class:`ReplayBuffer`, :class:`TensorDictReplayBuffer`,
    :class:`TensorDictPrioritizedReplayBuffer`, ...); they are sent to the actor, which
    builds the buffer there, so the storage lives in the actor's process (pick a node with
    the memory it needs through ``remote_config``). The sampler, writer and transform are
    the same objects a local buffer takes and behave the same.

    The handle forwards :meth:`add`, :meth:`extend`, :meth:`sample`,
    :meth:`update_priority`, :meth:`empty`, ``len()``, :meth:`state_dict`,
    :meth:`load_state_dict`, :meth:`dumps` and :meth:`loads`; each call waits for the actor's
    answer, so calls from one process happen in order. Pickling the handle (passing it to a
    Ray actor or task) gives a copy that talks to the same actor: several
    :class:`~rlblocks.collectors.RayCollector` instances given it as ``replay_buffer`` write
    into it from their own actors, without sending their batches through the driver.

    An error raised by the buffer in the actor (a wrong key, an empty buffer) is raised
    again here with its own type and message. The actor ends with :meth:`close`, or when
    every handle on it is gone (Ray's reference counting).

    TorchRL's name and arguments.

    Args:
        *args: Positional arguments of ``replay_buffer_cls``.
        replay_buffer_cls: The buffer class the actor builds (default :class:`ReplayBuffer`).
        ray_init_config: Keyword arguments of ``ray.init`` if Ray is not initialized yet.
        remote_config: Options of the actor (``ray.remote``), e.g. ``{"num_cpus": 1,
            "memory": 8 * 2**30}``; default ``{"num_cpus": 0}`` (it mostly waits on calls).
        **kwargs: Keyword arguments of ``replay_buffer_cls``.

    Raises:
        MissingDependencyError: Ray is not installed.
        BufferConfigError: ``replay_buffer_cls`` is not an rlblocks buffer class.

    Example:
        >>> buffer = RayReplayBuffer(storage=LazyTensorStorage(100_000), batch_size=256,
        ...                          replay_buffer_cls=TensorDictReplayBuffer)
        >>> collector = RayCollector([make_env] * 4, policy, frames_per_batch=1000,
        ...                          replay_buffer=buffer)
        >>> for _ in collector:  # the actors extend the buffer; nothing comes back
        ...     batch = buffer.sample()
    """

    #: A pickled copy extends the same storage from any process of the Ray cluster;
    #: collectors that see this write from their workers instead of the driver.
    remote_extend = True

    def __init__(
        self,
        *args: Any,
        replay_buffer_cls: type = ReplayBuffer,
        ray_init_config: Mapping[str, Any] | None = None,
        remote_config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        cls = replay_buffer_cls
        if not (isinstance(cls, type) and issubclass(cls, ReplayBuffer)):
            raise BufferConfigError(
                f"RayReplayBuffer: replay_buffer_cls must be an rlblocks buffer class "
                f"(ReplayBuffer or a subclass), got {replay_buffer_cls!r}. Fix: pass e.g. "
                f"replay_buffer_cls=TensorDictReplayBuffer."
            )
        ray = _import_ray()
        if not ray.is_initialized():
            ray.init(**dict(ray_init_config or {}))
        options = {"num_cpus": 0, **dict(remote_config or {})}
        host = ray.remote(**options)(_BufferHost)
        blob = ray.cloudpickle.dumps((replay_buffer_cls, args, kwargs))
        self._actor = host.remote(blob)
        self._batch_size = kwargs.get("batch_size")
        self._describe = f"RayReplayBuffer({replay_buffer_cls.__name__})"
        self._get(self._actor.length.remote())  # the buffer was built, or its error is raised

    @classmethod
    def _attach(cls, actor: Any, batch_size: int | None, describe: str) -> RayReplayBuffer:
        handle = cls.__new__(cls)
        handle._actor, handle._batch_size, handle._describe = actor, batch_size, describe
        return handle

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return RayReplayBuffer._attach, (self._actor, self._batch_size, self._describe)

    # -- calls -----------------------------------------------------------------------------

    def _get(self, ref: Any) -> Any:
        """``ray.get`` that raises the buffer's own error instead of Ray's wrapper."""
        ray = _import_ray()
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, Exception):
                remote = _ANSI_COLOR.sub("", str(err))
                cause.add_note(f"Raised in the buffer's Ray actor:\n{remote}")
                raise cause from None
            raise
        except ray.exceptions.RayActorError as err:
            raise BufferConfigError(
                f"{self._describe}: its Ray actor is gone ({err}); it was closed, or its "
                f"process died. Create a new RayReplayBuffer."
            ) from err

    def _host(self) -> Any:
        if self._actor is None:
            raise BufferConfigError(
                f"{self._describe}: the buffer was closed, its content is gone. Create a new "
                f"RayReplayBuffer."
            )
        return self._actor

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._get(self._host().call.remote(method, *args, **kwargs))

    @property
    def actor(self) -> Any:
        """The Ray actor handle that hosts the buffer."""
        return self._actor

    @property
    def batch_size(self) -> int | None:
        """The default sample size given to the buffer."""
        return self._batch_size

    def __len__(self) -> int:
        return self._get(self._host().length.remote())

    def __repr__(self) -> str:
        return f"RayReplayBuffer[{self._get(self._host().describe.remote())}]"

    def add(self, data: Any) -> int:
        """Write one element; returns its index (see :meth:`ReplayBuffer.add`)."""
        return self._call("add", data)

    def extend(self, data: Any) -> torch.Tensor:
        """Write a batch of elements; returns their indices (see :meth:`ReplayBuffer.extend`)."""
        return self._call("extend", data)

    def sample(self, batch_size: int | None = None, return_info: bool = False) -> Any:
        """Draw a batch in the actor (see :meth:`ReplayBuffer.sample`)."""
        return self._call("sample", batch_size, return_info=return_info)

    def update_priority(self, index: Any, priority: Any) -> None:
        """Set the priorities of sampled elements (see :meth:`ReplayBuffer.update_priority`)."""
        self._call("update_priority", index, priority)

    def empty(self) -> None:
        """Remove every element."""
        self._call("empty")

    def state_dict(self) -> dict[str, Any]:
        """The whole content, fetched from the actor (see :meth:`ReplayBuffer.state_dict`)."""
        return self._call("state_dict")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the content with a :meth:`state_dict` (sent to the actor)."""
        self._call("load_state_dict", state)

    def dumps(self, path: str | os.PathLike) -> None:
        """Write a checkpoint folder **from the actor's process** (a path on its node)."""
        self._call("dumps", os.fspath(path))

    def loads(self, path: str | os.PathLike) -> None:
        """Load a checkpoint folder **in the actor's process** (a path on its node)."""
        self._call("loads", os.fspath(path))

    def close(self) -> None:
        """Kill the actor and its content; every handle on it stops working. Idempotent."""
        ray = _import_ray()
        if self._actor is not None and ray.is_initialized():
            ray.kill(self._actor)
        self._actor = None
