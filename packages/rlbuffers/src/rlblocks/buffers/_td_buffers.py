"""Replay buffers specialised for TensorDicts, and the prioritized variants."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tensordict import is_tensor_collection

from rlblocks.buffers._prioritized import PrioritizedSampler, check_priorities
from rlblocks.buffers._replay_buffers import ReplayBuffer
from rlblocks.buffers._samplers import Sampler
from rlblocks.buffers._storages import ListStorage, Storage
from rlblocks.buffers._tensor_storages import LazyTensorStorage
from rlblocks.buffers._writers import Writer
from rlblocks.buffers.errors import PriorityError

__all__ = [
    "PrioritizedReplayBuffer",
    "TensorDictPrioritizedReplayBuffer",
    "TensorDictReplayBuffer",
]

NestedKey = str | tuple[str, ...]


def _prioritized(
    buffer: ReplayBuffer,
    storage: Storage | None,
    alpha: float,
    beta: float,
    eps: float,
    segment_tree: str | None,
) -> tuple[Storage, PrioritizedSampler]:
    """The storage (``buffer``'s default if None) and a prioritized sampler covering it."""
    storage = storage if storage is not None else buffer._default_storage()
    return storage, PrioritizedSampler(
        storage.max_size, alpha, beta, eps, segment_tree=segment_tree
    )


def _per_element(value: torch.Tensor, count: int) -> torch.Tensor:
    """One value per element: trailing dims (batch dims of an element, features) reduced."""
    return value.reshape(count, -1)


class TensorDictReplayBuffer(ReplayBuffer):
    """A replay buffer of TensorDicts whose samples carry their ``"index"``.

    Samples also carry ``"_weight"`` (importance weights) with a prioritized sampler, and
    :meth:`update_tensordict_priority` reads both the index and the priority back from a
    TensorDict. The keys ``"index"`` and ``"_weight"`` are never stored, so a sampled batch
    can be extended back into the buffer.

    Args:
        storage: Defaults to ``LazyTensorStorage(1000)``.
        sampler, writer, batch_size, collate_fn, prefetch, transform, pin_memory: See
            :class:`ReplayBuffer`.
        priority_key: Key holding the priority (e.g. the TD error) in
            :meth:`update_tensordict_priority` and, with a prioritized sampler, in extended
            data (which then gets those priorities instead of the maximum one).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from rlblocks.buffers import TensorDictReplayBuffer
        >>> rb = TensorDictReplayBuffer(batch_size=4)
        >>> _ = rb.extend(TensorDict({"obs": torch.randn(10, 3)}, batch_size=[10]))
        >>> sorted(rb.sample().keys())
        ['index', 'obs']
    """

    _ignore = frozenset({"index", "_weight"})

    def __init__(
        self,
        storage: Storage | None = None,
        sampler: Sampler | None = None,
        writer: Writer | None = None,
        batch_size: int | None = None,
        collate_fn: Callable[[Any], Any] | None = None,
        prefetch: int | None = None,
        transform: Callable[[Any], Any] | None = None,
        priority_key: NestedKey = "td_error",
        *,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            storage,
            sampler,
            writer,
            batch_size,
            collate_fn,
            prefetch,
            transform,
            pin_memory=pin_memory,
        )
        self.priority_key = priority_key

    def _default_storage(self) -> Storage:
        return LazyTensorStorage(1000)

    def _fetch(self, index: torch.Tensor, info: dict[str, Any]) -> Any:
        extras = {"index": index}
        if "_weight" in info:
            extras["_weight"] = info["_weight"]
        storage = self._storage
        if storage.assembles:
            data = storage.get(index, extras)
            return data if self._collate_fn is None else self._collate_fn(data)
        data = self._collate_fn(storage.get(index))
        if is_tensor_collection(data):
            for key, value in extras.items():
                shape = data.batch_size
                value = value.reshape(len(value), *(1,) * (len(shape) - 1)).expand(shape)
                data.set(key, value.to(data.device) if data.device is not None else value)
        return data

    def _priorities_of(self, data: Any, batch: Any, who: str) -> np.ndarray | None:
        if not isinstance(self._sampler, PrioritizedSampler) or not is_tensor_collection(data):
            return None
        value = data.get(self.priority_key, None)
        if value is None:
            return None
        return check_priorities(_per_element(value, batch.n).amax(-1), batch.n, who)

    def update_tensordict_priority(self, data: Any) -> None:
        """Set priorities from a sampled TensorDict: its ``"index"`` and ``priority_key``.

        A priority with more than one value per element (e.g. per time step) is reduced with
        ``max``.

        Raises:
            PriorityError: A key is missing, or a priority is negative, NaN or infinite.
        """
        who = f"{type(self).__name__}.update_tensordict_priority"
        if not is_tensor_collection(data) or data.batch_dims == 0:
            raise PriorityError(f"{who}: expected a sampled TensorDict, got {type(data).__name__}")
        missing = [k for k in ("index", self.priority_key) if data.get(k, None) is None]
        if missing:
            raise PriorityError(
                f"{who}: the TensorDict lacks {missing}. Fix: pass a batch sampled from this "
                f"buffer, with the priorities written under {self.priority_key!r}."
            )
        count = data.batch_size[0]
        index = _per_element(data.get("index"), count)[:, 0]
        priority = _per_element(data.get(self.priority_key), count).amax(-1)
        self.update_priority(index, priority)


class PrioritizedReplayBuffer(ReplayBuffer):
    """A replay buffer with prioritized sampling (Schaul et al., 2016) for any data.

    ``sample(return_info=True)`` returns ``(batch, info)`` with ``info["index"]`` and the
    importance weights ``info["_weight"]``; pass the index back to :meth:`update_priority`.

    Args:
        alpha: Prioritization exponent (0 = uniform).
        beta: Importance-weight exponent (anneal it through ``buffer.sampler.beta``).
        eps: Added to every priority.
        storage: Defaults to ``ListStorage(1000)``.
        writer, batch_size, collate_fn, prefetch, transform, pin_memory: See
            :class:`ReplayBuffer`.
        segment_tree: Segment-tree provider ("kernel", "numpy"); defaults to the active one.

    Example:
        >>> import torch
        >>> from rlblocks.buffers import LazyTensorStorage, PrioritizedReplayBuffer
        >>> rb = PrioritizedReplayBuffer(alpha=0.6, beta=0.4, storage=LazyTensorStorage(100))
        >>> _ = rb.extend(torch.randn(10, 4))
        >>> batch, info = rb.sample(8, return_info=True)
        >>> rb.update_priority(info["index"], torch.rand(8))
    """

    def __init__(
        self,
        alpha: float,
        beta: float,
        eps: float = 1e-8,
        storage: Storage | None = None,
        writer: Writer | None = None,
        batch_size: int | None = None,
        collate_fn: Callable[[Any], Any] | None = None,
        prefetch: int | None = None,
        transform: Callable[[Any], Any] | None = None,
        segment_tree: str | None = None,
        *,
        pin_memory: bool = False,
    ) -> None:
        storage, sampler = _prioritized(self, storage, alpha, beta, eps, segment_tree)
        super().__init__(
            storage,
            sampler,
            writer,
            batch_size,
            collate_fn,
            prefetch,
            transform,
            pin_memory=pin_memory,
        )

    def _default_storage(self) -> Storage:
        return ListStorage(1000)


class TensorDictPrioritizedReplayBuffer(TensorDictReplayBuffer):
    """Prioritized replay of TensorDicts: samples carry ``"index"`` and ``"_weight"``.

    Args:
        alpha: Prioritization exponent (0 = uniform).
        beta: Importance-weight exponent (anneal it through ``buffer.sampler.beta``).
        priority_key: Key of the priority in :meth:`update_tensordict_priority` and in
            extended data (elements extended without it get the maximum priority).
        eps: Added to every priority.
        storage: Defaults to ``LazyTensorStorage(1000)``.
        writer, batch_size, collate_fn, prefetch, transform, pin_memory: See
            :class:`ReplayBuffer`.
        segment_tree: Segment-tree provider ("kernel", "numpy"); defaults to the active one.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from rlblocks.buffers import TensorDictPrioritizedReplayBuffer
        >>> rb = TensorDictPrioritizedReplayBuffer(alpha=0.7, beta=0.5, batch_size=4)
        >>> _ = rb.extend(TensorDict({"obs": torch.randn(10, 3)}, batch_size=[10]))
        >>> batch = rb.sample()
        >>> batch["td_error"] = torch.rand(4)
        >>> rb.update_tensordict_priority(batch)
    """

    def __init__(
        self,
        alpha: float,
        beta: float,
        priority_key: NestedKey = "td_error",
        eps: float = 1e-8,
        storage: Storage | None = None,
        writer: Writer | None = None,
        batch_size: int | None = None,
        collate_fn: Callable[[Any], Any] | None = None,
        prefetch: int | None = None,
        transform: Callable[[Any], Any] | None = None,
        segment_tree: str | None = None,
        *,
        pin_memory: bool = False,
    ) -> None:
        storage, sampler = _prioritized(self, storage, alpha, beta, eps, segment_tree)
        super().__init__(
            storage,
            sampler,
            writer,
            batch_size,
            collate_fn,
            prefetch,
            transform,
            priority_key,
            pin_memory=pin_memory,
        )
