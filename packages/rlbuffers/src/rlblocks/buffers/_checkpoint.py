"""Replay-buffer checkpoints, in the format every rlblocks checkpoint shares.

:func:`rlblocks.core.checkpoint.write_checkpoint` does the writing: every file (``meta.json``
with the layout, cursor and counters; ``components.pt``; the storage's data) is listed in a
checksummed manifest, and an overwrite flips a pointer atomically, so the path always holds a
complete checkpoint. :func:`read_buffer_checkpoint` verifies all of it before any buffer state
is touched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rlblocks.buffers.errors import CheckpointError
from rlblocks.core.checkpoint import read_checkpoint

__all__ = ["KIND", "META", "VERSION", "read_buffer_checkpoint"]

KIND = "rlblocks-buffers/replay-buffer"
META = "meta.json"
VERSION = 2


def read_buffer_checkpoint(path: str | os.PathLike[str], who: str) -> tuple[Path, dict[str, Any]]:
    """The folder holding the files of the buffer checkpoint ``path``, and its metadata.

    Every file is verified (size and CRC-32, the metadata included) before this returns.

    Raises:
        CheckpointError: ``path`` is not a buffer checkpoint, or a file is missing,
            truncated or corrupt.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, kind=KIND, who=who, error=CheckpointError)
    meta = checkpoint.read_json(META)
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        raise CheckpointError(
            f"{who}: checkpoint {str(path)!r}: {META} is missing or of another version "
            f"({meta.get('version') if isinstance(meta, dict) else meta!r}; this "
            f"rlblocks-buffers reads version {VERSION}). The buffer is unchanged."
        )
    return checkpoint.folder, meta
