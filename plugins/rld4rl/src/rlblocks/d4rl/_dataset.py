"""D4RL's HDF5 layout read into (and written from) rlblocks transitions.

The layout (one file, arrays of ``N`` rows): ``observations``, ``actions``, ``rewards``,
``terminals`` (the step ended the episode in a terminal state), ``timeouts`` (the episode was
cut after the step; absent in some old files), optionally ``next_observations`` and
``infos/*`` (per-step extras, kept under ``("info", name)``).

Without ``next_observations`` the next observation of row ``i`` is row ``i + 1``, which is
right unless the episode was cut after row ``i`` (``timeouts[i]``: row ``i + 1`` is the next
episode's first observation) or ``i`` is the last row. Those rows have no next observation
and are dropped, as D4RL's own ``qlearning_dataset`` does; the row before a dropped timeout
is marked ``truncated`` so the episode still ends there.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.buffers import (
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetReplayBuffer,
    Sampler,
    dataset_cache_root,
)

__all__ = [
    "D4RLExperienceReplay",
    "save_d4rl_hdf5",
    "d4rl_dataset_dir",
    "D4RL_DATASET_DIR_ENV_VAR",
]

D4RL_DATASET_DIR_ENV_VAR = "D4RL_DATASET_DIR"
_REQUIRED = ("observations", "actions", "rewards", "terminals")
_CHUNK_ROWS = 1 << 18
_READER_VERSION = 1


def d4rl_dataset_dir() -> Path:
    """Where dataset ids are looked up: ``$D4RL_DATASET_DIR``, else ``~/.d4rl/datasets``
    (D4RL's own default)."""
    given = os.environ.get(D4RL_DATASET_DIR_ENV_VAR)
    return Path(given) if given else Path.home() / ".d4rl" / "datasets"


class D4RLExperienceReplay(DatasetReplayBuffer):
    """A D4RL-format HDF5 dataset as a replay buffer of transitions.

    Args:
        dataset_id: A path to an ``.hdf5``/``.h5`` file, or an id (``"hopper-medium-v2"``)
            looked up as ``<data_dir>/<id>.hdf5``.
        batch_size: Default batch size of :meth:`sample` and iteration.
        data_dir: Folder of the D4RL files (default :func:`d4rl_dataset_dir`).
        root: Folder of the converted caches (default
            ``rlblocks.buffers.dataset_cache_root() / "d4rl"``); TorchRL's meaning of ``root``.
        split_trajs: Elements are whole episodes padded to the longest, with
            ``("collector", "mask")`` (see :class:`~rlblocks.buffers.DatasetReplayBuffer`).
        sampler: Any rlblocks sampler (e.g. ``SamplerWithoutReplacement(drop_last=True)``,
            ``SliceSampler(slice_len=20, traj_key="episode")``); default uniform.
        transform: Applied to every sampled batch.
        prefetch: Batches prepared ahead in a background thread.
        download: Accepted for TorchRL code; D4RL is deprecated upstream and rlblocks reads
            local files only, so a missing file raises either way.

    Raises:
        DatasetNotFoundError: No such file; says where it looked and how to fix it.
        DatasetFormatError: The file is not HDF5, is truncated, lacks a required key or has
            keys of different lengths; the file and the key are named. No cache is written.

    Example:
        >>> from rlblocks.buffers import SamplerWithoutReplacement
        >>> data = D4RLExperienceReplay(  # doctest: +SKIP
        ...     "hopper-medium-v2",
        ...     batch_size=256,
        ...     sampler=SamplerWithoutReplacement(drop_last=True),
        ... )
    """

    def __init__(
        self,
        dataset_id: str | os.PathLike,
        batch_size: int | None = None,
        *,
        data_dir: str | os.PathLike | None = None,
        root: str | os.PathLike | None = None,
        split_trajs: bool = False,
        sampler: Sampler | None = None,
        transform: Callable[[Any], Any] | None = None,
        prefetch: int | None = None,
        download: bool = False,
        pin_memory: bool = False,
    ) -> None:
        path = _find(dataset_id, data_dir, download)
        reader = _Reader(path)
        stat = path.stat()
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        cache_dir = Path(root) if root is not None else dataset_cache_root() / "d4rl"
        storage, summary, metadata = self.open_cache(
            reader.chunks,
            cache_dir=cache_dir / f"{path.stem}-{digest}",
            fingerprint={
                "path": str(path),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "reader": _READER_VERSION,
            },
            num_transitions=reader.num_transitions,
            split_trajs=split_trajs,
            metadata={"format": "d4rl", "dataset_id": str(dataset_id), "source": str(path)},
        )
        super().__init__(
            storage,
            batch_size=batch_size,
            sampler=sampler,
            transform=transform,
            prefetch=prefetch,
            summary=summary,
            metadata=metadata,
            pin_memory=pin_memory,
        )


def _find(
    dataset_id: str | os.PathLike, data_dir: str | os.PathLike | None, download: bool
) -> Path:
    given = Path(dataset_id)
    if given.suffix in (".hdf5", ".h5"):
        candidates = [given]
    else:
        folder = Path(data_dir) if data_dir is not None else d4rl_dataset_dir()
        candidates = [folder / f"{dataset_id}.hdf5", folder / f"{dataset_id}.h5"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    searched = ", ".join(str(c) for c in candidates)
    why = " (download=True: rlblocks does not download D4RL files)" if download else ""
    raise DatasetNotFoundError(
        f"D4RLExperienceReplay: no D4RL dataset {str(dataset_id)!r}{why}; looked for {searched}. "
        f"Fix: pass the path of an .hdf5 file, put <id>.hdf5 in that folder (data_dir= or "
        f"${D4RL_DATASET_DIR_ENV_VAR}), write one with rlblocks.d4rl.save_d4rl_hdf5, or use "
        f"Minari (rlblocks-minari), D4RL's maintained successor."
    )


class _Reader:
    """Plans which rows a file yields (cheap: flags only) and reads them chunk by chunk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._open() as f:
            try:
                n, terminals, timeouts = self._plan(f)
            except DatasetFormatError:
                raise
            except Exception as exc:  # h5py's errors from a damaged group structure
                raise DatasetFormatError(
                    f"D4RLExperienceReplay: cannot read the keys of {str(path)!r} (corrupt or "
                    f"truncated file?): {exc!r}"
                ) from exc
        keep = np.ones(n, dtype=bool)
        if not self.has_next:
            keep &= ~timeouts
            keep[-1] = False
            # The row before a dropped timeout now ends its episode.
            cut = np.flatnonzero(timeouts[1:] & ~terminals[:-1] & ~timeouts[:-1])
            timeouts = timeouts.copy()
            timeouts[cut] = True
        self.keep, self.terminals, self.timeouts = keep, terminals, timeouts & keep
        self.num_transitions = int(keep.sum())
        if self.num_transitions == 0:
            raise DatasetFormatError(f"D4RLExperienceReplay: {str(path)!r} holds no transition")

    def _plan(self, f: h5py.File) -> tuple[int, np.ndarray, np.ndarray]:
        """Check the keys and their lengths; read the episode flags."""
        missing = [key for key in _REQUIRED if key not in f]
        if missing:
            raise DatasetFormatError(
                f"D4RLExperienceReplay: {str(self.path)!r} lacks the key(s) {missing}; a D4RL "
                f"file has {list(_REQUIRED)} (+ timeouts, next_observations, infos/*). "
                f"Found: {sorted(f.keys())}"
            )
        n = self._length(f, "rewards")
        self.infos = self._info_keys(f, n)
        for key in (*_REQUIRED, "timeouts", "next_observations", *self.infos):
            if key in f:
                self._length(f, key, n)
        terminals = self._read(f, "terminals").reshape(n).astype(bool)
        timeouts = (
            self._read(f, "timeouts").reshape(n).astype(bool)
            if "timeouts" in f
            else np.zeros(n, dtype=bool)
        )
        self.has_next = "next_observations" in f
        return n, terminals, timeouts

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except OSError as exc:
            raise DatasetFormatError(
                f"D4RLExperienceReplay: cannot open {str(self.path)!r} as HDF5 (corrupt or "
                f"truncated?): {exc}"
            ) from exc

    def _read(self, f: h5py.File, key: str, rows: slice = slice(None)) -> np.ndarray:
        try:
            return np.asarray(f[key][rows])
        except Exception as exc:
            raise DatasetFormatError(
                f"D4RLExperienceReplay: cannot read key {key!r} of {str(self.path)!r} (corrupt "
                f"or truncated file?): {exc}"
            ) from exc

    def _length(self, f: h5py.File, key: str, expected: int | None = None) -> int:
        node = f[key]
        if not isinstance(node, h5py.Dataset) or node.ndim == 0:
            raise DatasetFormatError(
                f"D4RLExperienceReplay: key {key!r} of {str(self.path)!r} is not an array of rows"
            )
        if expected is not None and node.shape[0] != expected:
            raise DatasetFormatError(
                f"D4RLExperienceReplay: key {key!r} of {str(self.path)!r} has {node.shape[0]} "
                f"rows, 'rewards' has {expected}; every key needs one row per step"
            )
        return node.shape[0]

    @staticmethod
    def _info_keys(f: h5py.File, n: int) -> list[str]:
        if "infos" not in f:
            return []
        found: list[str] = []

        def visit(name: str, node: Any) -> None:
            if isinstance(node, h5py.Dataset) and node.ndim and node.shape[0] == n:
                found.append(f"infos/{name}")

        f["infos"].visititems(visit)
        return found

    def chunks(self) -> Iterator[TensorDictBase]:
        """Transitions of whole episodes, about ``_CHUNK_ROWS`` rows at a time."""
        ends = np.flatnonzero((self.terminals | self.timeouts) & self.keep)
        episode = np.zeros(len(self.keep), dtype=np.int64)
        episode[ends[:-1] + 1] = 1
        episode = np.cumsum(episode)
        n = len(self.keep)
        bounds = [0]
        for end in ends:
            if end + 1 - bounds[-1] >= _CHUNK_ROWS:
                bounds.append(int(end) + 1)
        if bounds[-1] < n:
            bounds.append(n)
        with self._open() as f:
            for start, stop in itertools.pairwise(bounds):
                yield self._chunk(f, start, stop, episode)

    def _chunk(self, f: h5py.File, start: int, stop: int, episode: np.ndarray) -> TensorDict:
        keep = self.keep[start:stop]
        rows = slice(start, stop)
        obs = self._read(f, "observations", slice(start, min(stop + 1, len(self.keep))))
        if self.has_next:
            next_obs = self._read(f, "next_observations", rows)
        else:
            next_obs = obs[1 : stop - start + 1]
            keep = keep[: len(next_obs)]
        obs = obs[: stop - start]
        n = int(keep.sum())

        def column(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(values[: len(keep)][keep]))

        td = TensorDict(
            {
                "observation": column(obs),
                "action": column(self._read(f, "actions", rows)),
                "episode": column(episode[rows]),
                "next": {
                    "observation": column(next_obs),
                    "reward": column(self._read(f, "rewards", rows)).reshape(n, 1),
                    "terminated": column(self.terminals[rows]).reshape(n, 1),
                    "truncated": column(self.timeouts[rows]).reshape(n, 1),
                },
            },
            batch_size=[n],
        )
        for key in self.infos:
            td.set(("info", *key.split("/")[1:]), column(self._read(f, key, rows)))
        return td


def save_d4rl_hdf5(
    data: TensorDictBase,
    path: str | os.PathLike,
    *,
    observation_key: str = "observation",
) -> Path:
    """Write transitions in D4RL's HDF5 layout (with ``next_observations`` and ``timeouts``).

    Args:
        data: Transitions with ``observation_key``, ``action``, ``("next", observation_key)``,
            ``("next", "reward")``, ``("next", "terminated")`` and ``("next", "truncated")``;
            batch ``[N]`` in time order, or ``[num_envs, T]`` (a collector's batch: written
            env by env, and the last step of each row is marked a timeout if it did not end
            the episode, so episodes of different envs never join).
        path: The file to write (replaced atomically: a reader never sees half a file).
        observation_key: The observation entry to write as ``observations``.

    Returns:
        The path written.

    Raises:
        KeyError: A needed key is missing (named).
    """
    if data.batch_dims not in (1, 2):
        raise ValueError(
            f"save_d4rl_hdf5: data must have batch [N] or [num_envs, T], got {list(data.shape)}"
        )
    needed = [
        observation_key,
        "action",
        ("next", observation_key),
        ("next", "reward"),
        ("next", "terminated"),
        ("next", "truncated"),
    ]
    missing = [key for key in needed if key not in data.keys(include_nested=True)]
    if missing:
        raise KeyError(f"save_d4rl_hdf5: data lacks {missing}; it needs {needed}")
    truncated = data["next", "truncated"].reshape(*data.shape).clone()
    if data.batch_dims == 2:
        truncated[:, -1] |= ~data["next", "terminated"].reshape(*data.shape)[:, -1]
    arrays = {
        "observations": data[observation_key],
        "next_observations": data["next", observation_key],
        "actions": data["action"],
        "rewards": data["next", "reward"].reshape(*data.shape),
        "terminals": data["next", "terminated"].reshape(*data.shape),
        "timeouts": truncated,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            for name, value in arrays.items():
                f.create_dataset(name, data=value.flatten(0, data.batch_dims - 1).cpu().numpy())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
