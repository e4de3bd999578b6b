"""Checkpoint folders that cannot lie: the one format of every rlblocks checkpoint.

A checkpoint at ``path`` is a folder holding a pointer file and one version folder::

    path/
      CHECKPOINT              rlblocks-checkpoint 1 v-000002-3f9a1c0e 5d41402a
      v-000002-3f9a1c0e/
        MANIFEST              a header line (body length, CRC-32 of the body), then JSON
        ...                   the files, in any layout; every one is listed in MANIFEST

Like a safetensors header, the manifest is read and verified before anything else: it lists
every file of the version folder with its size and CRC-32 and carries its own length and
CRC-32, and the pointer carries the CRC-32 of the whole manifest. :func:`read_checkpoint`
checks the pointer, the manifest and every file (streamed in chunks, so multi-GB memory maps
are fine) before it returns, so a loader changes no state until the whole checkpoint is known
to be the one that was written. CRC-32 catches every single-bit flip (and every burst of up
to 32 bits).

:func:`write_checkpoint` never leaves ``path`` without a complete checkpoint:

* a new checkpoint is built in a hidden folder next to ``path`` and renamed to ``path`` only
  when complete;
* an overwrite writes a new version folder inside ``path`` and fsyncs it, then replaces the
  pointer atomically (``os.replace``, then an fsync of the folder); the previous version
  folder is deleted only after that. A crash between any two system calls leaves the pointer
  naming a complete version folder: the previous one until the replace, the new one after.

One process writes a given checkpoint at a time; leftovers of an interrupted write are
removed by the next write to the same path.

Example:
    >>> from rlblocks.core.checkpoint import read_checkpoint, write_checkpoint
    >>> def fill(writer):
    ...     writer.write_json("meta.json", {"steps": 10})
    >>> _ = write_checkpoint("/tmp/ckpt", fill, kind="my-component")
    >>> checkpoint = read_checkpoint("/tmp/ckpt", kind="my-component")
    >>> checkpoint.read_json("meta.json")
    {'steps': 10}
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = [
    "FORMAT",
    "VERSION",
    "POINTER",
    "MANIFEST",
    "FileEntry",
    "Checkpoint",
    "CheckpointWriter",
    "write_checkpoint",
    "read_checkpoint",
    "is_checkpoint",
    "verify_files",
    "file_crc32",
    "replace_file",
]

FORMAT = "rlblocks-checkpoint"
VERSION = 1
POINTER = "CHECKPOINT"
MANIFEST = "MANIFEST"

_CHUNK = 1 << 24  # bytes read or checksummed at a time: memory stays flat for any file size
_MAX_MANIFEST = 1 << 26  # a manifest only lists files; this bounds what a corrupt one reads
_MAX_POINTER = 256
_POINTER_RE = re.compile(
    re.escape(f"{FORMAT} {VERSION} ").encode() + rb"(v-(\d{6,12})-[0-9a-f]{8}) ([0-9a-f]{8})\n"
)
_HEADER = f"{FORMAT}-manifest {VERSION}"
_HEADER_RE = re.compile(re.escape(_HEADER).encode() + rb" (\d{1,12}) ([0-9a-f]{8})\n")
_VERSION_NAME_RE = re.compile(r"v-\d{6,12}-[0-9a-f]{8}")
_TMP_TAG = r"\.tmp-(\d+)-[0-9a-f]{8}"


@dataclass(frozen=True)
class FileEntry:
    """Size and CRC-32 of one file of a checkpoint, as its manifest records them."""

    size: int
    crc32: int


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint whose pointer, manifest and files were all verified.

    Attributes:
        path: The checkpoint folder (what was passed to :func:`read_checkpoint`).
        folder: The version folder holding the files.
        kind: What the checkpoint holds, as its writer named it.
        files: Every file of the version folder (POSIX paths relative to it), with its
            size and CRC-32.
    """

    path: Path
    folder: Path
    kind: str
    files: Mapping[str, FileEntry]

    def read_json(self, name: str) -> Any:
        """The content of the JSON file ``name`` (``None`` if the checkpoint has no such file).

        Raises:
            ValueError: The file is listed but is not JSON (its writer wrote something
                else under that name).
        """
        if name not in self.files:
            return None
        return json.loads((self.folder / name).read_bytes())


class CheckpointWriter:
    """Writes the files of one checkpoint version, recording each one's size and CRC-32.

    Files written with :meth:`write`, :meth:`write_bytes` or :meth:`write_json` are
    checksummed as they are written. Files written by other means into :attr:`folder` (a
    ``torch.save`` to ``writer.folder / "state.pt"``, another component's own checkpoint in
    a sub-folder) are found, checksummed and fsynced once the fill function returns. Either
    way every file ends up in the manifest.

    Attributes:
        folder: The version folder being written.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[str, FileEntry] = {}

    def write(self, name: str, chunks: Iterable[bytes | memoryview]) -> None:
        """Write the file ``name`` (a POSIX path relative to :attr:`folder`) from byte chunks.

        The file is fsynced before this returns.
        """
        path = self.folder / _relative(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        crc = size = 0
        with open(path, "xb") as f:
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                f.write(view)
                crc = zlib.crc32(view, crc)
                size += view.nbytes
            f.flush()
            os.fsync(f.fileno())
        self._files[name] = FileEntry(size, crc)

    def write_bytes(self, name: str, data: bytes | memoryview) -> None:
        """Write the file ``name`` holding ``data``."""
        self.write(name, [data])

    def write_json(self, name: str, value: Any) -> None:
        """Write the file ``name`` holding ``value`` as JSON."""
        self.write(name, [json.dumps(value, indent=1, sort_keys=True).encode()])

    def _collect(self, who: str, error: type[Exception]) -> dict[str, FileEntry]:
        """Every file of the folder with its entry; the ones written by other means are
        checksummed and fsynced here, and every folder is fsynced."""
        files: dict[str, FileEntry] = {}
        for root, dirs, names in os.walk(self.folder, onerror=_reraise):
            for name in dirs + names:
                if os.path.islink(os.path.join(root, name)):
                    raise error(
                        f"{who}: {os.path.join(root, name)!r} is a symbolic link; a checkpoint "
                        f"holds regular files only. Fix: write the file itself."
                    )
            for name in names:
                full = Path(root, name)
                rel = full.relative_to(self.folder).as_posix()
                if rel == MANIFEST:
                    raise error(
                        f"{who}: the file name {MANIFEST!r} is reserved for the checkpoint's "
                        f"manifest. Fix: write that file under another name."
                    )
                entry = self._files.get(rel)
                if entry is None or entry.size != full.stat().st_size:
                    size, crc = file_crc32(full, sync=True)
                    entry = FileEntry(size, crc)
                files[rel] = entry
            _fsync_dir(Path(root))
        return files


def _reraise(exc: OSError) -> None:
    # os.walk skips a folder it cannot list unless told otherwise: a file would then be
    # missing from the manifest, and from the checkpoint.
    raise exc


# -- writing ---------------------------------------------------------------------------------


def write_checkpoint(
    path: str | os.PathLike[str],
    fill: Callable[[CheckpointWriter], None],
    *,
    kind: str,
    who: str = "write_checkpoint",
    error: type[Exception] = ValueError,
) -> Path:
    """Write the checkpoint ``path`` with ``fill(writer)``; an existing one is replaced.

    ``fill`` writes the files through ``writer`` (or into ``writer.folder``). When it
    returns, every file is listed in the manifest and the checkpoint is made current
    atomically; when it raises, the files written so far are removed and ``path`` holds
    what it held before.

    Args:
        path: The checkpoint folder to create or replace.
        fill: Writes the checkpoint's files.
        kind: What the checkpoint holds (e.g. ``"rlblocks-buffers/replay-buffer"``);
            :func:`read_checkpoint` refuses a checkpoint of another kind, and an existing
            checkpoint of another kind is not overwritten.
        who: Shown first in error messages (e.g. ``"ReplayBuffer.dumps"``).
        error: The exception class raised (each distribution raises its own).

    Returns:
        ``path`` as an absolute ``Path``.

    Raises:
        error: ``path`` exists and is not a checkpoint of this kind (it is never
            overwritten then, so a wrong path cannot delete unrelated files).
    """
    path = Path(path).absolute()
    if os.path.lexists(path):
        _check_replaceable(path, kind, who, error)
        _overwrite(path, fill, kind, who, error)
    else:
        _create(path, fill, kind, who, error)
    return path


def _create(
    path: Path,
    fill: Callable[[CheckpointWriter], None],
    kind: str,
    who: str,
    error: type[Exception],
) -> None:
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(path)
    staging = parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.mkdir(staging)
    try:
        name = _version_name(1)
        manifest_crc = _write_version(staging / name, fill, kind, who, error)
        # Nobody reads the staging folder: the pointer needs no atomic replace here.
        with open(staging / POINTER, "xb") as f:
            f.write(_pointer_bytes(name, manifest_crc))
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(staging)
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(parent)


def _overwrite(
    path: Path,
    fill: Callable[[CheckpointWriter], None],
    kind: str,
    who: str,
    error: type[Exception],
) -> None:
    name = _version_name(_next_number(path))
    version = path / name
    flipped = False
    try:
        manifest_crc = _write_version(version, fill, kind, who, error)
        _fsync_dir(path)
        _replace(path / POINTER, _pointer_bytes(name, manifest_crc))
        flipped = True
        _fsync_dir(path)
    except BaseException:
        if not flipped:  # the pointer still names the previous, complete version
            shutil.rmtree(version, ignore_errors=True)
        raise
    # The new version is current: whatever else is here is an older version or a leftover.
    for entry in _entries(path):
        if entry.name not in (POINTER, name):
            _remove(Path(entry.path))


def _write_version(
    version: Path,
    fill: Callable[[CheckpointWriter], None],
    kind: str,
    who: str,
    error: type[Exception],
) -> int:
    """Write a version folder and its manifest; return the manifest's CRC-32."""
    os.mkdir(version)
    writer = CheckpointWriter(version)
    fill(writer)
    files = writer._collect(who, error)
    body = json.dumps(
        {
            "format": FORMAT,
            "version": VERSION,
            "kind": kind,
            "files": {name: [e.size, e.crc32] for name, e in sorted(files.items())},
        },
        indent=1,
    ).encode()
    data = f"{_HEADER} {len(body)} {zlib.crc32(body):08x}\n".encode() + body
    with open(version / MANIFEST, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(version)
    return zlib.crc32(data)


def _version_name(number: int) -> str:
    return f"v-{number:06d}-{uuid.uuid4().hex[:8]}"


def _pointer_bytes(name: str, manifest_crc: int) -> bytes:
    return f"{FORMAT} {VERSION} {name} {manifest_crc:08x}\n".encode()


def _next_number(path: Path) -> int:
    """One more than the highest version number found in ``path`` (its name only says how
    many times the checkpoint was written; nothing depends on it)."""
    numbers = [0]
    for entry in _entries(path):
        if _VERSION_NAME_RE.fullmatch(entry.name):
            numbers.append(int(entry.name.split("-")[1]))
    return max(numbers) + 1


def _check_replaceable(
    path: Path,
    kind: str,
    who: str,
    error: type[Exception],
) -> None:
    fix = "Fix: choose another path, or remove it first."
    if path.is_symlink() or not path.is_dir():
        raise error(
            f"{who}: {str(path)!r} exists and is not a folder, so it is not overwritten. {fix}"
        )
    if (path / POINTER).is_file():
        existing = _peek_kind(path)
        if existing is not None and existing != kind:
            raise error(
                f"{who}: {str(path)!r} holds a {existing!r} checkpoint, not a {kind!r} one, so "
                f"it is not overwritten. {fix}"
            )
        return
    leftovers = re.compile(rf"{_VERSION_NAME_RE.pattern}|\.{POINTER}{_TMP_TAG}")
    if all(leftovers.fullmatch(entry.name) for entry in _entries(path)):
        return  # empty, or what an interrupted write left
    raise error(
        f"{who}: {str(path)!r} exists and is not a {kind!r} checkpoint (it has no {POINTER} "
        f"file), so it is not overwritten. {fix}"
    )


def _peek_kind(path: Path) -> str | None:
    """The kind of the checkpoint at ``path`` without verifying it (None if unreadable)."""
    try:
        match = _POINTER_RE.fullmatch((path / POINTER).read_bytes()[:_MAX_POINTER])
        if match is None:
            return None
        with open(path / match.group(1).decode() / MANIFEST, "rb") as f:
            f.readline(_MAX_POINTER)
            kind = json.loads(f.read(_MAX_MANIFEST)).get("kind")
        return kind if isinstance(kind, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def _remove_stale_staging(path: Path) -> None:
    """Remove what interrupted first writes of ``path`` left next to it (dead writers only)."""
    staging = re.compile(rf"\.{re.escape(path.name)}{_TMP_TAG}")
    for entry in _entries(path.parent):
        match = staging.fullmatch(entry.name)
        if match and not _alive(int(match.group(1))):
            _remove(Path(entry.path))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes one checkpoint at a time: not ours in progress
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return list(entries)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def replace_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the small file ``path`` by ``data`` atomically and durably.

    The bytes go to a temporary file next to ``path``, fsynced, which then replaces
    ``path`` (``os.replace``), and the folder is fsynced: a reader sees the old content or
    the new one, never a mix, and a crash keeps one of the two.

    Args:
        path: The file to create or replace.
        data: Its new content.
    """
    path = Path(path)
    _replace(path, data)
    _fsync_dir(path.parent)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` durable (where the OS can fsync a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are durable on their own
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading ---------------------------------------------------------------------------------


def is_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a checkpoint folder of this format (nothing is verified)."""
    return (Path(path) / POINTER).is_file()


def read_checkpoint(
    path: str | os.PathLike[str],
    *,
    kind: str,
    who: str = "read_checkpoint",
    error: type[Exception] = ValueError,
) -> Checkpoint:
    """Verify the checkpoint ``path`` completely and describe it.

    The pointer, the manifest and the size and CRC-32 of every file are checked before
    this returns; nothing is loaded.

    Args:
        path: A checkpoint folder written by :func:`write_checkpoint`.
        kind: The kind of checkpoint expected.
        who: Shown first in error messages (e.g. ``"ReplayBuffer.loads"``).
        error: The exception class raised (each distribution raises its own).

    Returns:
        The verified :class:`Checkpoint`.

    Raises:
        error: ``path`` is not a checkpoint, is of another kind, or a file is missing,
            truncated or corrupt; the message names the checkpoint, the file, what was
            expected and what was found.
    """
    path = Path(path)
    where = f"{who}: checkpoint {str(path)!r}"
    pointer = path / POINTER
    if not pointer.is_file():
        raise error(
            f"{who}: {str(path)!r} is not a checkpoint (it has no {POINTER} file): nothing was "
            f"saved there, or it was written by something else. Nothing was loaded."
        )
    raw = _read_prefix(pointer, _MAX_POINTER, where, error)
    match = _POINTER_RE.fullmatch(raw)
    if match is None:
        raise error(
            f"{where}: its {POINTER} file is corrupt: expected '{FORMAT} {VERSION} <version "
            f"folder> <manifest CRC-32>', found {raw[:120]!r}. Nothing was loaded."
        )
    name, manifest_crc = match.group(1).decode(), int(match.group(3), 16)
    folder = path / name
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise error(
            f"{where}: {POINTER} names the version folder {name!r}, which has no {MANIFEST} "
            f"file; the checkpoint is incomplete or was modified. Nothing was loaded."
        )
    data = _read_prefix(manifest, _MAX_MANIFEST, where, error)
    body = _manifest_body(data, f"{where}: file {name}/{MANIFEST}", error)
    if zlib.crc32(data) != manifest_crc:
        raise error(
            f"{where}: file {name}/{MANIFEST} has CRC-32 {zlib.crc32(data):08x}, expected "
            f"{manifest_crc:08x} (from {POINTER}); the pointer or the manifest is corrupt. "
            f"Nothing was loaded."
        )
    if body.get("kind") != kind:
        raise error(
            f"{where} holds a {body.get('kind')!r} checkpoint, expected a {kind!r} one. Fix: "
            f"load it with the component that saved it. Nothing was loaded."
        )
    files = _manifest_files(body, f"{where}: file {name}/{MANIFEST}", error)
    verify_files(folder, files, checkpoint=str(path), who=who, error=error)
    return Checkpoint(path, folder, kind, files)


def _read_prefix(path: Path, limit: int, where: str, error: type[Exception]) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except OSError as exc:
        raise error(f"{where}: {str(path)!r} cannot be read ({exc}). Nothing was loaded.") from exc


def _manifest_body(data: bytes, where: str, error: type[Exception]) -> dict[str, Any]:
    line, _, body = data.partition(b"\n")
    match = _HEADER_RE.fullmatch(line + b"\n")
    if match is None:
        raise error(
            f"{where} is corrupt: its first line should be '{_HEADER} <length> <CRC-32>', "
            f"found {line[:120]!r}. Nothing was loaded."
        )
    length, crc = int(match.group(1)), int(match.group(2), 16)
    if len(body) != length or zlib.crc32(body) != crc:
        raise error(
            f"{where} is corrupt: its header says {length} bytes with CRC-32 {crc:08x}, found "
            f"{len(body)} bytes with CRC-32 {zlib.crc32(body):08x}. Nothing was loaded."
        )
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise error(f"{where} is not valid JSON ({exc}). Nothing was loaded.") from exc
    if not (
        isinstance(parsed, dict)
        and parsed.get("format") == FORMAT
        and parsed.get("version") == VERSION
    ):
        raise error(
            f"{where} is not a {FORMAT} version {VERSION} manifest (format "
            f"{parsed.get('format') if isinstance(parsed, dict) else None!r}). Fix: load it "
            f"with the rlblocks version that wrote it. Nothing was loaded."
        )
    return parsed


def _manifest_files(
    body: dict[str, Any], where: str, error: type[Exception]
) -> dict[str, FileEntry]:
    listed = body.get("files")
    if not isinstance(listed, dict):
        raise error(f"{where} lists no files. Nothing was loaded.")
    files = {}
    for name, entry in listed.items():
        ok = (
            isinstance(entry, list)
            and len(entry) == 2
            and all(type(v) is int and v >= 0 for v in entry)
        )
        if not ok or name == MANIFEST or not _is_relative(name):
            raise error(f"{where} has a malformed entry {name!r}: {entry!r}. Nothing was loaded.")
        files[name] = FileEntry(*entry)
    return files


def _is_relative(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and ".." not in parts


def _relative(name: str) -> str:
    if not _is_relative(name):
        raise ValueError(f"checkpoint file names are relative POSIX paths, got {name!r}")
    return name


def verify_files(
    folder: str | os.PathLike[str],
    files: Mapping[str, FileEntry],
    *,
    checkpoint: str,
    who: str = "verify_files",
    error: type[Exception] = ValueError,
) -> None:
    """Check that every file in ``files`` exists in ``folder`` with its size and CRC-32.

    Sizes are checked first (cheap), then checksums, each file streamed in chunks.

    Args:
        folder: Where the files are.
        files: Relative file names and what they should be.
        checkpoint: The checkpoint's name, for messages.
        who: Shown first in error messages.
        error: The exception class raised.

    Raises:
        error: A file is missing, not a regular file, or has another size or CRC-32.
    """
    folder = Path(folder)
    where = f"{who}: checkpoint {checkpoint!r}"
    for name, expected in files.items():
        path = folder / name
        if path.is_symlink() or not path.is_file():
            raise error(
                f"{where}: file {name!r} is missing (expected {expected.size} bytes); the "
                f"checkpoint is incomplete. Nothing was loaded."
            )
        size = path.stat().st_size
        if size != expected.size:
            raise error(
                f"{where}: file {name!r} has {size} bytes, expected {expected.size} (from the "
                f"manifest); it is truncated or was modified. Nothing was loaded."
            )
    for name, expected in files.items():
        size, crc = file_crc32(folder / name)
        if (size, crc) != (expected.size, expected.crc32):
            raise error(
                f"{where}: file {name!r} has CRC-32 {crc:08x} over {size} bytes, expected "
                f"{expected.crc32:08x} over {expected.size} (from the manifest); it is corrupt. "
                f"Nothing was loaded."
            )


def file_crc32(path: str | os.PathLike[str], *, sync: bool = False) -> tuple[int, int]:
    """The size and CRC-32 of the file ``path``, read in chunks of 16 MiB.

    Args:
        path: The file.
        sync: Also fsync the file (for files a checkpoint writer did not write itself).

    Returns:
        ``(size, crc32)``.
    """
    crc = size = 0
    with open(path, "rb") as f:
        buffer = bytearray(min(_CHUNK, max(os.fstat(f.fileno()).st_size, 1)))
        view = memoryview(buffer)
        while count := f.readinto(view):
            crc = zlib.crc32(view[:count], crc)
            size += count
        if sync:
            os.fsync(f.fileno())
    return size, crc
