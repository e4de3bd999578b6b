"""Checkpoint folders: written atomically, checked before anything is loaded.

A checkpoint is a folder holding ``meta.json`` (what was saved, and the size and CRC-32 of
every other file) plus the data files. :func:`replace_checkpoint` writes it under a temporary
name beside the target and renames it into place only once everything is on disk
(:func:`rlblocks.core.utils.replace_folder`), so an interrupted ``dumps`` never leaves a
half-written checkpoint under the target name.
:func:`read_checkpoint` checks the format and every file's size and checksum before any
buffer state is touched.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rlblocks.buffers.errors import CheckpointError
from rlblocks.core.utils import replace_folder

__all__ = ["FORMAT", "VERSION", "CheckpointWriter", "replace_checkpoint", "read_checkpoint"]

FORMAT = "rlblocks-buffers-checkpoint"
VERSION = 1
META = "meta.json"
_CHUNK = 1 << 24


class CheckpointWriter:
    """Writes the files of a checkpoint folder, recording their sizes and checksums."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, dict[str, int]] = {}

    def write(self, name: str, chunks: Iterable[bytes | memoryview]) -> None:
        """Write ``name`` from byte chunks and fsync it."""
        crc = 0
        size = 0
        with open(self.folder / name, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                crc = zlib.crc32(chunk, crc)
                size += len(memoryview(chunk).cast("B"))
            f.flush()
            os.fsync(f.fileno())
        self.files[name] = {"size": size, "crc32": crc}

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Write ``meta.json`` last, listing every file written so far."""
        meta = {"format": FORMAT, "version": VERSION, **meta, "files": self.files}
        with open(self.folder / META, "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())


def replace_checkpoint(path: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Write the checkpoint folder ``path`` with ``fill(tmp)``, swapped into place when done.

    Args:
        path: The checkpoint folder to create, or to replace if it holds a checkpoint.
        fill: Writes the checkpoint's files into the given (empty, temporary) folder.

    Returns:
        ``path`` as an absolute ``Path``.

    Raises:
        CheckpointError: ``path`` exists and is neither a checkpoint nor an empty folder (it
            is never overwritten then, so a wrong path cannot delete unrelated files).
    """
    path = Path(path)
    is_checkpoint = path.is_dir() and (path / META).is_file()
    is_empty_folder = path.is_dir() and not any(path.iterdir())
    if path.exists() and not (is_checkpoint or is_empty_folder):
        raise CheckpointError(
            f"dumps: {str(path)!r} exists and is not a replay-buffer checkpoint, so it is "
            f"not overwritten. Fix: choose a new path, or remove it first."
        )
    return replace_folder(path, fill)


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def read_checkpoint(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """Return the folder and its ``meta.json`` after checking every file it lists.

    Raises:
        CheckpointError: The folder or a file is missing, a file has the wrong size or
            checksum, or the metadata is not a checkpoint of this format.
    """
    folder = Path(path)
    meta_path = folder / META
    if not meta_path.is_file():
        raise CheckpointError(
            f"loads: {str(folder)!r} is not a replay-buffer checkpoint (no {META}); it is "
            f"missing or was not written completely. The buffer is unchanged."
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"loads: {str(meta_path)!r} cannot be read ({exc}); the checkpoint is corrupt. "
            f"The buffer is unchanged."
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"loads: {str(folder)!r} is not a {FORMAT} folder. The buffer is unchanged."
        )
    if meta.get("version") != VERSION:
        raise CheckpointError(
            f"loads: {str(folder)!r} has checkpoint version {meta.get('version')!r}; this "
            f"rlblocks-buffers reads version {VERSION}. The buffer is unchanged."
        )
    files = meta.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"loads: {str(meta_path)!r} lists no files; it is corrupt.")
    for name, expected in files.items():
        file = folder / name
        if not file.is_file():
            raise CheckpointError(
                f"loads: checkpoint file {str(file)!r} is missing; the checkpoint is partial. "
                f"The buffer is unchanged."
            )
        size = file.stat().st_size
        if size != expected.get("size"):
            raise CheckpointError(
                f"loads: checkpoint file {str(file)!r} has {size} bytes, expected "
                f"{expected.get('size')}; it is truncated or corrupt. The buffer is unchanged."
            )
        if _crc32(file) != expected.get("crc32"):
            raise CheckpointError(
                f"loads: checkpoint file {str(file)!r} fails its checksum; it is corrupt. "
                f"The buffer is unchanged."
            )
    return folder, meta
