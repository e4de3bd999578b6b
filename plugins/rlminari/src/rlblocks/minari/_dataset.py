"""Minari datasets read into rlblocks transitions, and recorded from rlblocks policies."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

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

__all__ = ["MinariExperienceReplay", "minari_root", "record_minari_dataset"]

_DATA_FILE = "main_data.hdf5"
_CHUNK_ROWS = 1 << 18
_READER_VERSION = 1


def minari_root() -> Path:
    """The Minari datasets folder: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``
    (Minari's own rule)."""
    return _root(None)


def _root(given: str | os.PathLike | None) -> Path:
    if given is not None:
        return Path(given)
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


class MinariExperienceReplay(DatasetReplayBuffer):
    """A Minari dataset as a replay buffer of transitions.

    Args:
        dataset_id: Minari's id, ``"<namespace>/<name>-v<version>"`` (e.g.
            ``"mujoco/hopper/expert-v0"``), looked up in the Minari root.
        batch_size: Default batch size of :meth:`sample` and iteration.
        minari_root: The Minari datasets folder (default ``$MINARI_DATASETS_PATH``, else
            ``~/.minari/datasets``).
        root: Folder of the converted caches (default
            ``rlblocks.buffers.dataset_cache_root() / "minari"``); TorchRL's meaning of
            ``root``.
        split_trajs: Elements are whole episodes padded to the longest, with
            ``("collector", "mask")``.
        sampler: Any rlblocks sampler (``SamplerWithoutReplacement(drop_last=True)``,
            ``SliceSampler(slice_len=20, traj_key="episode")``, ...); default uniform.
        transform: Applied to every sampled batch.
        prefetch: Batches prepared ahead in a background thread.
        download: Fetch the dataset with ``minari.download_dataset`` when it is not local
            (needs network access to Minari's remote).

    Keys follow :class:`rlblocks.envs.GymEnv`'s for the same spaces: a Box observation is
    ``observation``, the entries of a Dict observation sit at the root under their names, a
    Discrete action is an int64 index. Minari's ``infos`` are not kept.

    Raises:
        DatasetNotFoundError: No such dataset in the Minari root; names the folder searched and
            the local datasets.
        DatasetFormatError: The dataset's file is corrupt or truncated (file and key named).

    Example:
        >>> data = MinariExperienceReplay("pendulum/medium-v0", batch_size=256)  # doctest: +SKIP
        >>> data.sample()["observation"].shape  # doctest: +SKIP
        torch.Size([256, 3])
    """

    def __init__(
        self,
        dataset_id: str,
        batch_size: int | None = None,
        *,
        minari_root: str | os.PathLike | None = None,
        root: str | os.PathLike | None = None,
        split_trajs: bool = False,
        sampler: Sampler | None = None,
        transform: Callable[[Any], Any] | None = None,
        prefetch: int | None = None,
        download: bool = False,
        pin_memory: bool = False,
    ) -> None:
        data_dir = _find(dataset_id, minari_root, download)
        reader = _Reader(dataset_id, data_dir)
        digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:10]
        cache_dir = Path(root) if root is not None else dataset_cache_root() / "minari"
        storage, summary, metadata = self.open_cache(
            reader.chunks,
            cache_dir=cache_dir / f"{dataset_id.replace('/', '--')}-{digest}",
            fingerprint=reader.fingerprint,
            num_transitions=reader.num_transitions,
            split_trajs=split_trajs,
            metadata={
                "format": "minari",
                "dataset_id": dataset_id,
                "source": str(data_dir),
                "env_spec": reader.metadata.get("env_spec"),
            },
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


def _find(dataset_id: str, given_root: str | os.PathLike | None, download: bool) -> Path:
    root = _root(given_root)
    data_dir = root / dataset_id / "data"
    if not (data_dir / "metadata.json").is_file() and download:
        import minari

        with _minari_path(root):
            minari.download_dataset(dataset_id)
    if (data_dir / "metadata.json").is_file():
        return data_dir.resolve()
    local = sorted(
        str(p.parent.parent.relative_to(root)) for p in root.glob("**/data/metadata.json")
    )
    raise DatasetNotFoundError(
        f"MinariExperienceReplay: no Minari dataset {dataset_id!r} in {str(root)!r} (looked for "
        f"{str(data_dir)!r}). Local datasets there: {local or 'none'}. Fix: record one with "
        f"minari.DataCollector(env).create_dataset(dataset_id={dataset_id!r}, ...) or "
        f"rlblocks.minari.record_minari_dataset, point to another root with minari_root= or "
        f"$MINARI_DATASETS_PATH, or pass download=True (needs network access)."
    )


class _Reader:
    """Reads a dataset's metadata (cheap) and its episodes, chunk by chunk."""

    def __init__(self, dataset_id: str, data_dir: Path) -> None:
        self.dataset_id, self.data_dir = dataset_id, data_dir
        meta_file = data_dir / "metadata.json"
        try:
            self.metadata = json.loads(meta_file.read_text())
            self.num_transitions = int(self.metadata["total_steps"])
            self.num_episodes = int(self.metadata["total_episodes"])
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetFormatError(
                f"MinariExperienceReplay: {str(meta_file)!r} is not a Minari metadata file "
                f"(key 'total_steps'/'total_episodes'): {exc!r}"
            ) from exc
        files = sorted(p for p in data_dir.iterdir() if p.is_file())
        self.fingerprint = {
            "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
            "reader": _READER_VERSION,
        }

    def _dataset(self) -> Any:
        from minari import MinariDataset

        try:
            return MinariDataset(self.data_dir)
        except Exception as exc:
            raise DatasetFormatError(
                f"MinariExperienceReplay: cannot open the Minari dataset in "
                f"{str(self.data_dir)!r} (corrupt or truncated {_DATA_FILE}?): {exc!r}"
            ) from exc

    def chunks(self) -> Iterator[TensorDictBase]:
        dataset = self._dataset()
        episodes = iter(dataset.iterate_episodes())
        pending: list[TensorDict] = []
        rows = 0
        for number in range(self.num_episodes):
            try:
                episode = next(episodes)
            except StopIteration:
                break
            except Exception as exc:
                raise DatasetFormatError(
                    f"MinariExperienceReplay: cannot read episode_{number} of "
                    f"{str(self.data_dir / _DATA_FILE)!r} (corrupt or truncated file?): {exc!r}"
                ) from exc
            pending.append(self._transitions(episode, number))
            rows += len(pending[-1])
            if rows >= _CHUNK_ROWS:
                yield torch.cat(pending)
                pending, rows = [], 0
        if pending:
            yield torch.cat(pending)

    def _transitions(self, episode: Any, number: int) -> TensorDict:
        where = f"episode_{episode.id} of {str(self.data_dir / _DATA_FILE)!r}"
        steps = len(episode.rewards)
        observations = TensorDict(
            _observation_entries(episode.observations, steps + 1, where), batch_size=[steps + 1]
        )
        td = TensorDict(
            {
                **observations[:-1],
                "action": _tensor(episode.actions, steps, where, "actions"),
                "episode": torch.full((steps,), number, dtype=torch.int64),
                "next": {
                    **observations[1:],
                    "reward": _tensor(episode.rewards, steps, where, "rewards").reshape(steps, 1),
                    "terminated": _tensor(episode.terminations, steps, where, "terminations")
                    .reshape(steps, 1)
                    .to(torch.bool),
                    "truncated": _tensor(episode.truncations, steps, where, "truncations")
                    .reshape(steps, 1)
                    .to(torch.bool),
                },
            },
            batch_size=[steps],
        )
        return td


def _tensor(values: Any, rows: int, where: str, key: str) -> torch.Tensor:
    array = np.asarray(values)
    if array.ndim == 0 or len(array) != rows:
        raise DatasetFormatError(
            f"MinariExperienceReplay: key {key!r} of {where} has shape {list(array.shape)}, "
            f"expected {rows} rows"
        )
    return torch.from_numpy(np.ascontiguousarray(array))


def _observation_entries(values: Any, rows: int, where: str) -> dict[str, Any]:
    """An episode's observations as entries (see :func:`_keyed`), checked to hold ``rows``."""
    return _keyed(values, lambda leaf, key: _tensor(leaf, rows, where, f"observations{key}"))


def _keyed(values: Any, leaf: Callable[[Any, str], torch.Tensor]) -> dict[str, Any]:
    """Observation entries keyed as :class:`rlblocks.envs.GymEnv` keys them: an array is
    ``observation``, a Dict's entries sit at the root, a Tuple's are ``"0"``, ``"1"``, ...
    under their parent (``("observation", "0")`` for a Tuple observation)."""

    def tree(value: Any, key: str) -> Any:
        if isinstance(value, Mapping):
            items = value.items()
        elif isinstance(value, (tuple, list)):
            items = enumerate(value)
        else:
            return leaf(value, key)
        return {str(k): tree(v, f"{key}/{k}") for k, v in items}

    entries = tree(values, "")
    return entries if isinstance(values, Mapping) else {"observation": entries}


def record_minari_dataset(
    dataset_id: str,
    env: Any,
    policy: Callable[[TensorDictBase], TensorDictBase] | None,
    *,
    total_steps: int,
    seed: int = 0,
    minari_root: str | os.PathLike | None = None,
    algorithm_name: str = "rlblocks policy",
    description: str | None = None,
    **create_kwargs: Any,
) -> Path:
    """Record ``total_steps`` steps of ``policy`` on ``env`` with Minari's ``DataCollector``.

    Args:
        dataset_id: The id to create (replaced if it exists).
        env: A gymnasium env or env id.
        policy: Reads ``observation`` (or a Dict observation's entries) from a TensorDict of
            batch ``[]`` and writes ``action``; ``None`` samples the action space.
        total_steps: Steps to record; the last episode is cut (truncated) there.
        seed: Seeds the first reset (later resets continue its random stream).
        minari_root: The Minari datasets folder (default as :func:`minari_root`).
        algorithm_name: Recorded in the dataset's metadata, with ``description``.
        **create_kwargs: Passed to ``DataCollector.create_dataset`` (``author``, ...).

    Returns:
        The dataset's folder.
    """
    import gymnasium as gym

    import minari
    from rlblocks.core import ExplorationType, set_exploration_type

    root = _root(minari_root)
    base = gym.make(env) if isinstance(env, str) else env
    with _minari_path(root), warnings.catch_warnings():
        # Minari's nags about unset author/permalink metadata, and the temporary folders its
        # DataCollector leaves to the garbage collector.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", ResourceWarning)
        if dataset_id in minari.list_local_datasets():
            minari.delete_dataset(dataset_id)
        collector = minari.DataCollector(base, record_infos=False)
        obs, _ = collector.reset(seed=seed)
        space = base.action_space
        space.seed(seed)
        with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
            for step in range(total_steps):
                if policy is None:
                    action = space.sample()
                else:
                    td = TensorDict(_keyed(obs, lambda x, _: torch.as_tensor(x)), [])
                    action = policy(td)["action"].numpy()
                obs, _, terminated, truncated, _ = collector.step(action)
                if (terminated or truncated) and step + 1 < total_steps:
                    obs, _ = collector.reset()
        create_kwargs.setdefault("eval_env", base.spec)
        collector.create_dataset(
            dataset_id=dataset_id,
            algorithm_name=algorithm_name,
            description=description or f"{total_steps} steps of {algorithm_name}",
            **create_kwargs,
        )
        collector.close()
        del collector
        gc.collect()
    return root / dataset_id


@contextlib.contextmanager
def _minari_path(root: Path) -> Iterator[None]:
    """``$MINARI_DATASETS_PATH`` set to ``root`` for Minari's own calls, then restored."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before
