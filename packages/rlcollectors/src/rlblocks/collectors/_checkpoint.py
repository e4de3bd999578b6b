"""Checkpoint files: layout, the ``latest`` pointer, random-generator states, safe loading.

A checkpoint is a folder holding ``trainer.pt`` (a ``torch.save`` of plain containers and
tensors, loadable with ``weights_only=True``) and, when the trainer has a replay buffer,
``replay_buffer/`` written by the buffer's own ``dumps``. The trainer writes the folder with
:func:`rlblocks.core.utils.replace_folder`: under a temporary name next to its destination,
renamed into place only when complete, so a crash never leaves a half-written checkpoint
under the final name.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlblocks.collectors.errors import CheckpointError

__all__ = [
    "STATE_FILE",
    "BUFFER_FOLDER",
    "LATEST_FILE",
    "write_latest",
    "resolve_checkpoint",
    "rng_state",
    "set_rng_state",
    "load_state_file",
]

STATE_FILE = "trainer.pt"
BUFFER_FOLDER = "replay_buffer"
LATEST_FILE = "latest"


def write_latest(folder: Path, name: str) -> None:
    """Point ``folder/latest`` at the checkpoint ``name`` (atomic file replace)."""
    tmp = folder / f".{LATEST_FILE}.tmp-{os.getpid()}"
    tmp.write_text(name + "\n")
    os.replace(tmp, folder / LATEST_FILE)


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder for ``path``: a checkpoint itself, or a folder with ``latest``."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    latest = path / LATEST_FILE
    if latest.is_file():
        target = path / latest.read_text().strip()
        if (target / STATE_FILE).is_file():
            return target
        raise CheckpointError(
            f"Trainer.load: {latest} names {target.name!r}, which is not a complete "
            f"checkpoint (no {STATE_FILE}). Fix: load one of the checkpoint folders in "
            f"{path} explicitly."
        )
    raise CheckpointError(
        f"Trainer.load: {path} is neither a checkpoint (a folder with {STATE_FILE}) nor a "
        f"checkpoint_dir (a folder with a {LATEST_FILE!r} file). Fix: pass the path returned "
        f"by Trainer.save() or the trainer's checkpoint_dir."
    )


def load_state_file(folder: Path) -> dict[str, Any]:
    """Read ``folder/trainer.pt`` (tensors and plain containers only)."""
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
    return state


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
