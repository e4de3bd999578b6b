"""rlblocks.core.checkpoint: the manifest, the pointer, verification and crash-safe writes."""

from __future__ import annotations

import builtins
import json
import os
import zlib

import pytest

from rlblocks.core import checkpoint as ckpt
from rlblocks.core.checkpoint import (
    MANIFEST,
    POINTER,
    CheckpointWriter,
    FileEntry,
    file_crc32,
    is_checkpoint,
    read_checkpoint,
    replace_file,
    verify_files,
    write_checkpoint,
)

KIND = "test-kind"


class Boom(ValueError):
    """The error class a caller passes in (each distribution has its own)."""


def filler(value: int):
    """A fill function writing three files whose content depends on ``value``."""

    def fill(writer: CheckpointWriter) -> None:
        writer.write_json("meta.json", {"value": value})
        writer.write("data/blob.bin", [bytes([value % 256]) * 1000, b"tail"])
        (writer.folder / "other.txt").write_text(f"written by other means {value}")

    return fill


def value_of(path) -> int:
    return read_checkpoint(path, kind=KIND, error=Boom).read_json("meta.json")["value"]


def version_folder(path):
    return path / (path / POINTER).read_text().split()[2]


def test_round_trip_lists_every_file_with_size_and_crc(tmp_path):
    path = write_checkpoint(tmp_path / "c", filler(1), kind=KIND, error=Boom)
    assert path == (tmp_path / "c").absolute() and is_checkpoint(path)
    checkpoint = read_checkpoint(path, kind=KIND, error=Boom)
    assert sorted(checkpoint.files) == ["data/blob.bin", "meta.json", "other.txt"]
    blob = (checkpoint.folder / "data/blob.bin").read_bytes()
    assert checkpoint.files["data/blob.bin"] == FileEntry(len(blob), zlib.crc32(blob))
    assert checkpoint.read_json("meta.json") == {"value": 1}
    assert checkpoint.read_json("absent.json") is None
    assert sorted(p.name for p in path.iterdir()) == [POINTER, checkpoint.folder.name]


def test_overwrite_replaces_the_version_and_removes_the_old_one(tmp_path):
    path = tmp_path / "c"
    write_checkpoint(path, filler(1), kind=KIND)
    first = version_folder(path)
    write_checkpoint(path, filler(2), kind=KIND)
    assert value_of(path) == 2
    assert not first.exists()
    assert sorted(p.name for p in path.iterdir()) == [POINTER, version_folder(path).name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no staging folder left


@pytest.mark.parametrize("target", ["pointer", "manifest", "meta.json", "data/blob.bin"])
def test_every_single_bit_flip_is_caught(tmp_path, target):
    path = write_checkpoint(tmp_path / "c", filler(7), kind=KIND)
    file = {
        "pointer": path / POINTER,
        "manifest": version_folder(path) / MANIFEST,
    }.get(target, version_folder(path) / target)
    original = file.read_bytes()
    # Every bit of the small files, a sample of the data's (each one costs a read).
    step = 1 if target in ("pointer", "manifest", "meta.json") else 37
    bits = range(0, len(original) * 8, step)
    for bit in bits:
        flipped = bytearray(original)
        flipped[bit // 8] ^= 1 << (bit % 8)
        file.write_bytes(bytes(flipped))
        with pytest.raises(Boom):
            read_checkpoint(path, kind=KIND, error=Boom)
    file.write_bytes(original)
    assert value_of(path) == 7


def test_errors_name_the_checkpoint_the_file_and_what_was_expected(tmp_path):
    path = write_checkpoint(tmp_path / "c", filler(3), kind=KIND)
    blob = version_folder(path) / "data/blob.bin"
    data = blob.read_bytes()
    blob.write_bytes(data[:-1])
    with pytest.raises(Boom, match=r"'data/blob.bin' has 1003 bytes, expected 1004") as info:
        read_checkpoint(path, kind=KIND, who="Thing.load", error=Boom)
    assert str(info.value).startswith(f"Thing.load: checkpoint {str(path)!r}")
    blob.write_bytes(b"x" + data[1:])
    expected = f"{zlib.crc32(data):08x}"
    with pytest.raises(Boom, match=rf"CRC-32 [0-9a-f]{{8}} over 1004 bytes, expected {expected}"):
        read_checkpoint(path, kind=KIND, error=Boom)
    blob.unlink()
    with pytest.raises(Boom, match="'data/blob.bin' is missing"):
        read_checkpoint(path, kind=KIND, error=Boom)
    with pytest.raises(Boom, match="no CHECKPOINT file"):
        read_checkpoint(tmp_path / "nowhere", kind=KIND, error=Boom)


def test_a_checkpoint_of_another_kind_is_neither_loaded_nor_overwritten(tmp_path):
    path = write_checkpoint(tmp_path / "c", filler(1), kind="other-kind")
    with pytest.raises(Boom, match="holds a 'other-kind' checkpoint, expected a 'test-kind'"):
        read_checkpoint(path, kind=KIND, error=Boom)
    with pytest.raises(Boom, match="not overwritten"):
        write_checkpoint(path, filler(2), kind=KIND, error=Boom)
    assert read_checkpoint(path, kind="other-kind").read_json("meta.json") == {"value": 1}


def test_folders_that_are_not_checkpoints_are_never_overwritten(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(Boom, match="not overwritten"):
        write_checkpoint(mine, filler(1), kind=KIND, error=Boom)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(Boom, match="not a folder"):
        write_checkpoint(tmp_path / "file", filler(1), kind=KIND, error=Boom)
    empty = tmp_path / "empty"
    empty.mkdir()
    write_checkpoint(empty, filler(4), kind=KIND)
    assert value_of(empty) == 4


def test_a_failing_fill_leaves_the_previous_checkpoint_and_no_leftover(tmp_path):
    path = write_checkpoint(tmp_path / "c", filler(1), kind=KIND)
    before = sorted(p.name for p in path.iterdir())

    def failing(writer):
        writer.write_json("meta.json", {"value": 2})
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(path, failing, kind=KIND)
    assert sorted(p.name for p in path.iterdir()) == before and value_of(path) == 1
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path / "new", failing, kind=KIND)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


# Every file-system call write_checkpoint makes goes through one of these.
SYSTEM_CALLS = [
    (os, "mkdir"),
    (builtins, "open"),
    (os, "open"),
    (os, "fsync"),
    (os, "replace"),
    (os, "rename"),
    (os, "scandir"),
    (os, "unlink"),
    (os, "rmdir"),
]


def fail_call(monkeypatch, module, name, k):
    """Make the ``k``-th call of ``module.name`` raise OSError; return the call counter."""
    real, calls = getattr(module, name), [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            raise OSError(f"injected failure of {name} call {k}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)
    return calls


@pytest.mark.parametrize("existing", [False, True], ids=["create", "overwrite"])
def test_a_failure_at_any_system_call_keeps_a_loadable_checkpoint(tmp_path, monkeypatch, existing):
    """Fail the k-th call of each file-system function, for every k until the write
    succeeds: the path then holds the previous checkpoint or the new one, never neither."""
    path = tmp_path / "c"
    failed_at = set()
    for module, name in SYSTEM_CALLS:
        for k in range(1, 1000):
            if existing:
                write_checkpoint(path, filler(1), kind=KIND)
            elif os.path.lexists(path):
                ckpt.shutil.rmtree(path)
            calls = fail_call(monkeypatch, module, name, k)
            try:
                write_checkpoint(path, filler(2), kind=KIND)
            except OSError:
                failed = True
            else:
                failed = False
            finally:
                monkeypatch.undo()
            if calls[0] < k:  # the write made fewer calls: every one of them was failed once
                assert not failed and value_of(path) == 2
                break
            if not failed:  # the failure was handled (a cleanup step, an existing folder)
                assert value_of(path) == 2
                continue
            failed_at.add(name)
            if existing:
                assert value_of(path) in (1, 2)
            else:  # a new checkpoint appears complete, or not at all
                assert not os.path.lexists(path) or value_of(path) == 2
    required = {"mkdir", "open", "fsync", "replace" if existing else "rename"}
    assert required <= failed_at


def test_leftovers_of_an_interrupted_write_are_removed_by_the_next(tmp_path):
    path = write_checkpoint(tmp_path / "c", filler(1), kind=KIND)
    stale = path / "v-000009-0123abcd"
    stale.mkdir()
    (stale / "half").write_text("x")
    dead = tmp_path / ".c2.tmp-999999999-0123abcd"
    dead.mkdir()
    write_checkpoint(path, filler(2), kind=KIND)
    assert not stale.exists() and value_of(path) == 2
    write_checkpoint(tmp_path / "c2", filler(3), kind=KIND)
    assert not dead.exists()
    # A folder holding only such leftovers (no pointer) is not loadable, but replaceable.
    leftover = tmp_path / "leftover"
    (leftover / "v-000001-0123abcd").mkdir(parents=True)
    with pytest.raises(Boom, match="not a checkpoint"):
        read_checkpoint(leftover, kind=KIND, error=Boom)
    write_checkpoint(leftover, filler(5), kind=KIND)
    assert value_of(leftover) == 5


def test_large_files_are_checksummed_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "_CHUNK", 1000)
    data = os.urandom(10_500)
    (tmp_path / "big").write_bytes(data)
    assert file_crc32(tmp_path / "big") == (len(data), zlib.crc32(data))
    verify_files(tmp_path, {"big": FileEntry(len(data), zlib.crc32(data))}, checkpoint="x")


def test_manifest_names_outside_the_folder_are_refused(tmp_path):
    path = write_checkpoint(tmp_path / "c", filler(1), kind=KIND)
    manifest = version_folder(path) / MANIFEST
    body = json.loads(manifest.read_bytes().partition(b"\n")[2])
    body["files"]["../outside"] = [1, 0]
    raw = json.dumps(body).encode()
    data = f"rlblocks-checkpoint-manifest 1 {len(raw)} {zlib.crc32(raw):08x}\n".encode() + raw
    manifest.write_bytes(data)
    pointer = (path / POINTER).read_text().split()
    pointer[3] = f"{zlib.crc32(data):08x}"
    (path / POINTER).write_text(" ".join(pointer) + "\n")
    with pytest.raises(Boom, match="malformed entry '../outside'"):
        read_checkpoint(path, kind=KIND, error=Boom)


def test_replace_file_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "latest"
    replace_file(target, b"one\n")

    def failing(*args):
        raise OSError("injected")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="injected"):
        replace_file(target, b"two\n")
    monkeypatch.undo()
    assert target.read_bytes() == b"one\n"
    assert [p.name for p in tmp_path.iterdir()] == ["latest"]
