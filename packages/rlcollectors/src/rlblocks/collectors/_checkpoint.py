"""Trainer checkpoints: layout, the ``latest`` pointer, random-generator states, safe loading.

A trainer checkpoint is a checkpoint folder of rlblocks' shared format
(:mod:`rlblocks.core.checkpoint`) holding ``trainer.pt`` (a ``torch.save`` of plain
containers and tensors, loadable with ``weights_only=True``) and, when the trainer has a
replay buffer, ``replay_buffer/`` written by the buffer's own ``dumps``. Every file, the
buffer's included, is listed with its size and CRC-32 in the checkpoint's manifest, so
:func:`read_trainer_checkpoint` verifies the whole checkpoint before the trainer changes
anything, and an overwriting save switches versions atomically.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlblocks.collectors.errors import CheckpointError
from rlblocks.core.checkpoint import is_checkpoint, read_checkpoint, replace_file

__all__ = [
    "KIND",
    "STATE_FILE",
    "BUFFER_FOLDER",
    "LATEST_FILE",
    "write_latest",
    "resolve_checkpoint",
    "read_trainer_checkpoint",
    "rng_state",
    "set_rng_state",
]

KIND = "rlblocks-collectors/trainer"
STATE_FILE = "trainer.pt"
BUFFER_FOLDER = "replay_buffer"
LATEST_FILE = "latest"


def write_latest(folder: Path, name: str) -> None:
    """Point ``folder/latest`` at the checkpoint ``name`` (atomic, durable file replace)."""
    replace_file(folder / LATEST_FILE, (name + "\n").encode())


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder for ``path``: a checkpoint itself, or a folder with ``latest``."""
    path = Path(path)
    if is_checkpoint(path):
        return path
    latest = path / LATEST_FILE
    if latest.is_file():
        target = path / latest.read_text().strip()
        if is_checkpoint(target):
            return target
        raise CheckpointError(
            f"Trainer.load: {latest} names {target.name!r}, which is not a complete "
            f"checkpoint. Fix: load one of the checkpoint folders in {path} explicitly."
        )
    raise CheckpointError(
        f"Trainer.load: {path} is neither a checkpoint nor a checkpoint_dir (a folder with a "
        f"{LATEST_FILE!r} file). Fix: pass the path returned by Trainer.save() or the "
        f"trainer's checkpoint_dir."
    )


def read_trainer_checkpoint(path: Path) -> tuple[Path, dict[str, Any]]:
    """Verify the whole checkpoint ``path``; return the folder of its files and its state.

    Raises:
        CheckpointError: A file (the replay buffer's included) is missing, truncated or
            corrupt, or ``trainer.pt`` is not a trainer state.
    """
    folder = read_checkpoint(path, kind=KIND, who="Trainer.load", error=CheckpointError).folder
    try:
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"Trainer.load: cannot read {folder / STATE_FILE}: {err}. The file is corrupt or "
            f"was not written by rlblocks Trainer.save()."
        ) from err
    if not isinstance(state, dict) or state.get("format") != "rlblocks-trainer":
        raise CheckpointError(
            f"Trainer.load: {folder / STATE_FILE} is not an rlblocks trainer checkpoint."
        )
    return folder, state


def rng_state() -> dict[str, Any]:
    """The states of the torch, CUDA, numpy and Python generators, as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _tuples_to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    random.setstate(_lists_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples_to_lists(value: Any) -> Any:
    return [_tuples_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _lists_to_tuples(value: Any) -> Any:
    return tuple(_lists_to_tuples(v) for v in value) if isinstance(value, list) else value
