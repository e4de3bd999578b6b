"""Samplers: which stored positions a replay buffer returns next.

A sampler returns a 1-D ``int64`` index tensor and an ``info`` dict (extra per-sample
values, such as importance weights). Samplers register through the ``rlblocks`` plugin
system, so ``rlblocks.core.make_sampler("random")`` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rlblocks.buffers._storages import Storage
from rlblocks.buffers.errors import CheckpointError, EmptyBufferError, ReplayBufferError

__all__ = ["RandomSampler", "Sampler", "SamplerWithoutReplacement", "empty_error"]


def empty_error(who: str) -> EmptyBufferError:
    """The error raised when sampling from an empty buffer."""
    return EmptyBufferError(
        f"{who}: the buffer is empty, there is nothing to sample. Fix: add() or extend() "
        f"data before sampling (len(buffer) says how many elements it holds)."
    )


class Sampler:
    """Base class of samplers.

    Subclasses implement :meth:`sample`; the other hooks default to doing nothing.
    """

    #: True if the sampler walks the data in epochs (iteration stops at :attr:`ran_out`).
    has_epochs: bool = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return ``(index, info)`` for a batch of ``batch_size`` positions of ``storage``."""
        raise NotImplementedError

    def check_storage(self, storage: Storage, who: str) -> None:
        """Raise if this sampler cannot serve ``storage`` (e.g. too small a capacity)."""

    def extend(self, index: torch.Tensor) -> None:
        """Positions ``index`` were just written (by this process)."""

    def sync(self, storage: Storage) -> None:
        """Catch up with writes other processes made to a shared ``storage``."""

    def update_priority(self, index: Any, priority: Any, *, limit: int | None = None) -> None:
        """Set the priorities of positions ``index`` (all below ``limit`` if given).

        Raises:
            ReplayBufferError: This sampler has no priorities.
        """
        raise ReplayBufferError(
            f"update_priority: {type(self).__name__} samples without priorities. Fix: use a "
            f"PrioritizedReplayBuffer, or pass sampler=PrioritizedSampler(...)."
        )

    @property
    def ran_out(self) -> bool:
        """True once an epoch is complete (always False for samplers without epochs)."""
        return False

    def empty(self) -> None:
        """Forget everything learnt about the stored elements."""

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state, made of tensors and plain Python values only."""
        return {}

    def stage_state(self, state: dict[str, Any], who: str, length: int) -> Callable[[], None]:
        """Check ``state`` for a storage of ``length`` elements; return its commit function.

        Raises:
            CheckpointError: ``state`` is malformed or does not fit.
        """
        if not isinstance(state, dict):
            raise CheckpointError(f"{who}: a sampler state must be a dict, got {type(state)}")
        return lambda: None

    def load_state_dict(self, state: dict[str, Any], length: int | None = None) -> None:
        """Restore ``state``; on error the sampler is unchanged."""
        self.stage_state(state, f"{type(self).__name__}.load_state_dict", length or 0)()


class RandomSampler(Sampler):
    """Uniform sampling with replacement.

    Args:
        generator: Random generator; defaults to torch's global one (``torch.manual_seed``).

    Example:
        >>> from rlblocks.core import make_sampler
        >>> sampler = make_sampler("random")
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self._generator = generator

    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        n = len(storage)
        if n == 0:
            raise empty_error("RandomSampler.sample")
        return torch.randint(n, (batch_size,), generator=self._generator), {}


class SamplerWithoutReplacement(Sampler):
    """Each stored element once per epoch, in random (or storage) order.

    An epoch is fixed when it starts: elements added during an epoch wait for the next one.
    Iterating over a buffer with this sampler yields one epoch.

    Args:
        drop_last: Skip the last, incomplete batch of an epoch.
        shuffle: Random order within an epoch (else storage order).
        generator: Random generator; defaults to torch's global one.

    Example:
        >>> from rlblocks.buffers import ReplayBuffer, SamplerWithoutReplacement
        >>> rb = ReplayBuffer(sampler=SamplerWithoutReplacement(), batch_size=2)
        >>> _ = rb.extend([1, 2, 3, 4, 5])
        >>> sorted(int(x) for batch in rb for x in batch)
        [1, 2, 3, 4, 5]
    """

    has_epochs = True

    def __init__(
        self,
        drop_last: bool = False,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        self.drop_last = bool(drop_last)
        self.shuffle = bool(shuffle)
        self._generator = generator
        self._perm: torch.Tensor | None = None
        self._pos = 0
        self._ran_out = False

    def __repr__(self) -> str:
        return f"SamplerWithoutReplacement(drop_last={self.drop_last}, shuffle={self.shuffle})"

    @property
    def ran_out(self) -> bool:
        return self._ran_out

    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        n = len(storage)
        if n == 0:
            raise empty_error("SamplerWithoutReplacement.sample")
        if self.drop_last and n < batch_size:
            raise EmptyBufferError(
                f"SamplerWithoutReplacement.sample: the buffer holds {n} elements, fewer than "
                f"batch_size {batch_size}, and drop_last=True drops every batch. Fix: add "
                f"data, lower batch_size, or use drop_last=False."
            )
        perm = self._perm
        if perm is None or self._ran_out or self._pos >= len(perm) or len(perm) > n:
            perm = torch.randperm(n, generator=self._generator) if self.shuffle else torch.arange(n)
            self._perm, self._pos = perm, 0
        index = perm[self._pos : self._pos + batch_size]
        self._pos += len(index)
        remaining = len(perm) - self._pos
        self._ran_out = remaining == 0 or (self.drop_last and remaining < batch_size)
        return index, {}

    def empty(self) -> None:
        self._perm, self._pos, self._ran_out = None, 0, False

    def state_dict(self) -> dict[str, Any]:
        return {
            "perm": None if self._perm is None else self._perm.clone(),
            "pos": self._pos,
            "ran_out": self._ran_out,
        }

    def stage_state(self, state: dict[str, Any], who: str, length: int) -> Callable[[], None]:
        super().stage_state(state, who, length)
        perm, pos, ran_out = state.get("perm"), state.get("pos"), state.get("ran_out")
        if perm is not None and (
            not isinstance(perm, torch.Tensor) or perm.dtype != torch.int64 or perm.ndim != 1
        ):
            raise CheckpointError(f"{who}: the sampler's permutation is malformed ({perm!r})")
        limit = 0 if perm is None else len(perm)
        if not isinstance(pos, int) or not 0 <= pos <= limit or not isinstance(ran_out, bool):
            raise CheckpointError(f"{who}: the sampler's position {pos!r} is malformed")
        if perm is not None and len(perm) and int(perm.max()) >= max(length, 1):
            raise CheckpointError(f"{who}: the sampler's permutation points past the storage")

        def commit() -> None:
            self._perm = None if perm is None else perm.clone()
            self._pos, self._ran_out = pos, ran_out

        return commit
