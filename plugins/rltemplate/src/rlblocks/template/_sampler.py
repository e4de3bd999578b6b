"""``RecentSampler``: the template's sampler, uniform over the newest stored elements."""

from __future__ import annotations

from typing import Any

import torch

from rlblocks.buffers import EmptyBufferError, Sampler, Storage
from rlblocks.core.utils import check_int

__all__ = ["RecentSampler"]


class RecentSampler(Sampler):
    """Sample uniformly, with replacement, among the ``window`` newest elements.

    "Newest" follows the storage's write cursor, so it is meant for the default
    round-robin writer. The sampler keeps no state of its own: it reads the cursor and the
    fill level from the storage, which also makes it work with storages shared between
    processes.

    Args:
        window: How many of the newest elements are eligible (all of them while the buffer
            holds fewer).
        generator: Random generator; defaults to torch's global one.

    Raises:
        ValueError: ``window`` is not a positive int.

    Example:
        >>> from rlblocks.buffers import ReplayBuffer
        >>> rb = ReplayBuffer(sampler=RecentSampler(window=2), batch_size=4)
        >>> _ = rb.extend([1, 2, 3, 4, 5])
        >>> set(rb.sample().tolist()) <= {4, 5}
        True
    """

    def __init__(self, window: int = 1000, generator: torch.Generator | None = None) -> None:
        window = check_int(window, "window", "RecentSampler")  # rlblocks' shared check
        self.window = window
        self._generator = generator

    def __repr__(self) -> str:
        return f"RecentSampler(window={self.window})"

    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return ``batch_size`` positions among the newest ones, and an empty info dict."""
        n = len(storage)
        if n == 0:
            raise EmptyBufferError(
                "RecentSampler.sample: the buffer is empty, there is nothing to sample. Fix: "
                "add() or extend() data before sampling."
            )
        age = torch.randint(min(self.window, n), (batch_size,), generator=self._generator)
        # The newest element sits just before the cursor; older ones further back, wrapping.
        return (storage.cursor - 1 - age) % storage.max_size, {}
