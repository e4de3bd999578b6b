"""The errors rlblocks-buffers raises on purpose.

All derive from :class:`ReplayBufferError` (itself an :class:`rlblocks.core.RLBlocksError`)
and from the closest builtin, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from rlblocks.core import RLBlocksError

__all__ = [
    "ReplayBufferError",
    "BufferConfigError",
    "StorageLayoutError",
    "EmptyBufferError",
    "BufferIndexError",
    "PriorityError",
    "CheckpointError",
    "NotShareableError",
    "DiskFullError",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "DatasetSpecError",
]


class ReplayBufferError(RLBlocksError):
    """Base class of the errors raised by replay buffers, storages, samplers and writers."""


class BufferConfigError(ReplayBufferError, ValueError):
    """A buffer, storage, sampler or writer was given an invalid argument (sizes, counts, ...)."""


class StorageLayoutError(ReplayBufferError, ValueError):
    """Data does not match the storage's layout (keys, shapes or dtypes); nothing was written."""


class EmptyBufferError(ReplayBufferError, IndexError):
    """A sample was asked of a buffer (or a sampler) that has nothing to sample from."""


class BufferIndexError(ReplayBufferError, IndexError):
    """An index points outside the filled part of a buffer."""


class PriorityError(ReplayBufferError, ValueError):
    """A priority is negative, NaN or infinite, or does not match its indices."""


class CheckpointError(ReplayBufferError, ValueError):
    """A checkpoint folder is missing, partial, corrupt or made for another buffer."""


class NotShareableError(ReplayBufferError, TypeError):
    """A buffer component cannot be sent to another process in its current state."""


class DiskFullError(ReplayBufferError, OSError):
    """A memory-mapped storage's file does not fit on its disk; nothing was written."""


class DatasetError(ReplayBufferError):
    """Base class of the errors raised while opening or using an offline dataset."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No dataset of that id where the format looked; the message says where and how to fix."""


class DatasetFormatError(DatasetError, ValueError):
    """A dataset file is corrupt, truncated or not in the expected layout (file and key named)."""


class DatasetSpecError(DatasetError, ValueError):
    """A dataset's keys, shapes or dtypes do not match an environment's specs."""
