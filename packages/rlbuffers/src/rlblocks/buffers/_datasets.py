"""Offline datasets as replay buffers over a memory-mapped cache.

A dataset format (a plugin: ``rlblocks-minari``, ``rlblocks-d4rl``) reads its files and hands
:meth:`DatasetReplayBuffer.from_episodes` the transitions, a few whole episodes at a time.
This module writes them once into a :class:`LazyMemmapStorage` folder (the cache), adds what
every offline algorithm needs (``done`` flags, episode ids, undiscounted returns-to-go,
per-key statistics) and reopens that folder on every later load of the same source.

A cache is trusted only if it is complete: it is written in a temporary sibling folder and
renamed into place as the last step, so a crash or a corrupt source never leaves a folder a
later load would read. Its manifest (``dataset.json``) records the source's fingerprint
(file sizes and modification times, the format's options); a changed source is rebuilt.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.buffers._samplers import Sampler
from rlblocks.buffers._td_buffers import TensorDictReplayBuffer
from rlblocks.buffers._tensor_storages import LazyMemmapStorage
from rlblocks.buffers.errors import DatasetFormatError, DatasetSpecError, ReplayBufferError

__all__ = ["DatasetReplayBuffer", "dataset_cache_root", "DATASET_CACHE_ENV_VAR"]

DATASET_CACHE_ENV_VAR = "RLBLOCKS_DATASETS_CACHE"
"""Environment variable naming the folder dataset caches go to (see :func:`dataset_cache_root`)."""

_MANIFEST = "dataset.json"
_SUMMARY = "summary.pt"
_CACHE_FORMAT = "rlblocks-dataset-cache/2"
_SPLIT = "split"
_MASK = ("collector", "mask")
_FLAGS = ("done", "terminated", "truncated")
# Root keys that are not observations: what check_specs leaves out of the comparison.
_NOT_OBSERVATIONS = {
    "action",
    "episode",
    "step_count",
    "return_to_go",
    "index",
    "collector",
    "info",
    *_FLAGS,
}
_REQUIRED = ("action", ("next", "reward"), ("next", "terminated"), ("next", "truncated"), "episode")


def dataset_cache_root() -> Path:
    """Where dataset caches live: ``$RLBLOCKS_DATASETS_CACHE`` or ``~/.cache/rlblocks/datasets``."""
    given = os.environ.get(DATASET_CACHE_ENV_VAR)
    return Path(given) if given else Path.home() / ".cache" / "rlblocks" / "datasets"


class DatasetReplayBuffer(TensorDictReplayBuffer):
    """A replay buffer over an offline dataset: sample, iterate, slice, normalize.

    Elements are transitions (TorchRL's layout: ``observation``, ``action``,
    ``("next", "observation")``, ``("next", "reward")``, ``("next", "done"/"terminated"/
    "truncated")``, root ``done``/``terminated``/``truncated`` (false), ``episode`` (an id
    per episode, consecutive from 0), ``step_count`` (the step's index in its episode, from
    0, ``[1]`` int64, :class:`~rlblocks.envs.StepCounter`'s key) and ``return_to_go`` (the
    undiscounted sum of this and the later rewards of the episode, ``[1]``)), or with
    ``split_trajs=True`` whole episodes padded to the longest one, ``("collector", "mask")``
    marking the real steps.

    Use the formats' constructors (``MinariExperienceReplay``, ``D4RLExperienceReplay``) or
    :func:`rlblocks.core.make_dataset`. A format opens its cache with :meth:`open_cache` and
    passes what it returns here (or calls :meth:`from_episodes`, which does both).

    The dataset is read-only: its storage is a cache every load of the same source shares.
    Copy it into a buffer of your own to add data.

    Args:
        storage: The cache's storage (from :meth:`open_cache`).
        batch_size: Default batch size of :meth:`sample` and iteration.
        sampler: Any sampler (default uniform); ``SliceSampler(..., traj_key="episode")``
            for sequences.
        transform: Applied to every sampled batch.
        prefetch: Batches prepared ahead in a background thread.
        summary: Statistics and episode returns/lengths (from :meth:`open_cache`).
        metadata: Facts about the dataset (from :meth:`open_cache`).
        pin_memory: Pin sampled batches when an accelerator is present.

    Example:
        >>> from rlblocks.buffers import SamplerWithoutReplacement
        >>> from rlblocks.core import make_dataset
        >>> data = make_dataset(  # doctest: +SKIP
        ...     "minari:pendulum/medium-v0",
        ...     batch_size=256,
        ...     sampler=SamplerWithoutReplacement(drop_last=True),
        ... )
        >>> for batch in data:  # doctest: +SKIP
        ...     loss = loss_module(batch)
    """

    def __init__(
        self,
        storage: LazyMemmapStorage,
        *,
        batch_size: int | None = None,
        sampler: Sampler | None = None,
        transform: Callable[[Any], Any] | None = None,
        prefetch: int | None = None,
        summary: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            storage=storage,
            sampler=sampler,
            batch_size=batch_size,
            prefetch=prefetch,
            transform=transform,
            pin_memory=pin_memory,
        )
        self._summary = dict(summary) if summary is not None else None
        self._metadata = dict(metadata or {})

    # -- building ----------------------------------------------------------------------------

    @classmethod
    def from_episodes(
        cls,
        episodes: Callable[[], Iterable[TensorDictBase]],
        *,
        cache_dir: str | os.PathLike,
        fingerprint: Mapping[str, Any],
        num_transitions: int,
        split_trajs: bool = False,
        metadata: Mapping[str, Any] | None = None,
        **buffer_kwargs: Any,
    ) -> DatasetReplayBuffer:
        """A buffer over the cache :meth:`open_cache` opens (or builds) with these arguments.

        ``**buffer_kwargs`` are the buffer's: ``batch_size``, ``sampler``, ``transform``,
        ``prefetch``, ``pin_memory``.
        """
        storage, summary, meta = cls.open_cache(
            episodes,
            cache_dir=cache_dir,
            fingerprint=fingerprint,
            num_transitions=num_transitions,
            split_trajs=split_trajs,
            metadata=metadata,
        )
        return cls(storage, summary=summary, metadata=meta, **buffer_kwargs)

    @staticmethod
    def open_cache(
        episodes: Callable[[], Iterable[TensorDictBase]],
        *,
        cache_dir: str | os.PathLike,
        fingerprint: Mapping[str, Any],
        num_transitions: int,
        split_trajs: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> tuple[LazyMemmapStorage, dict[str, Any], dict[str, Any]]:
        """Open the cache in ``cache_dir``, building it first from ``episodes()`` if needed.

        What a dataset format calls (then ``DatasetReplayBuffer.__init__`` with the result).

        Args:
            episodes: Called only when the cache must be (re)built. Yields flat TensorDicts
                (batch ``[n]``) of whole episodes (an episode never spans two of them), with
                the observation keys, ``action``, ``("next", <observation keys>)``,
                ``("next", "reward")``, ``("next", "terminated")``, ``("next", "truncated")``
                (``[n, 1]``) and ``episode`` (``[n]``, an id per episode).
            cache_dir: The cache folder of this dataset.
            fingerprint: JSON-able description of the source (paths, sizes, modification
                times, options); a cache made from another fingerprint is rebuilt.
            num_transitions: How many transitions ``episodes()`` yields in all.
            split_trajs: Open the whole-episode variant (built on first use).
            metadata: JSON-able facts about the dataset (format, id, env id, ...), kept in the
                manifest and returned by :attr:`metadata`.

        Returns:
            ``(storage, summary, metadata)``: the ``summary`` and ``metadata`` arguments of
            :class:`DatasetReplayBuffer`.

        Raises:
            DatasetFormatError: The source yields data without a required key, or a number of
                transitions other than ``num_transitions``. No cache is left behind.
        """
        cache = Path(cache_dir)
        expected = {
            "format": _CACHE_FORMAT,
            "fingerprint": json.loads(json.dumps(dict(fingerprint))),
            "num_transitions": int(num_transitions),
        }
        manifest = _read_manifest(cache)
        if manifest is None or {k: manifest.get(k) for k in expected} != expected:
            _build_cache(cache, episodes, expected, dict(metadata or {}))
            manifest = _read_manifest(cache)
        if split_trajs and not (cache / _SPLIT / _MANIFEST).is_file():
            _build_split_cache(cache)
        folder = cache / _SPLIT if split_trajs else cache
        summary = torch.load(cache / _SUMMARY, weights_only=True)
        meta = {**manifest["metadata"], "split_trajs": bool(split_trajs), "cache_dir": str(cache)}
        return LazyMemmapStorage.open(folder), summary, meta

    # -- what the dataset holds --------------------------------------------------------------

    @property
    def metadata(self) -> dict[str, Any]:
        """Facts about the dataset: format, id, source, ``num_episodes``, ``split_trajs``..."""
        return dict(self._metadata)

    @property
    def stats(self) -> TensorDict:
        """Per-feature ``loc`` (mean), ``scale`` (population std, at least 1e-6), ``min`` and
        ``max`` of every float entry at the root (observations, ``action``, ``return_to_go``)
        and of ``("next", "reward")``, under the entry's key: e.g.
        ``stats["observation", "loc"]``, ``stats["next", "reward", "scale"]``,
        ``stats["return_to_go", "max"]``. Ready for ``ObservationNorm(loc=..., scale=...)``.
        """
        return self._require_summary("stats")["stats"].clone()

    @property
    def episode_returns(self) -> torch.Tensor:
        """The undiscounted return of each episode, in episode-id order (float64)."""
        return self._require_summary("episode_returns")["episode_returns"].clone()

    @property
    def episode_lengths(self) -> torch.Tensor:
        """The number of transitions of each episode, in episode-id order."""
        return self._require_summary("episode_lengths")["episode_lengths"].clone()

    @property
    def num_episodes(self) -> int:
        return len(self._require_summary("num_episodes")["episode_lengths"])

    def _require_summary(self, what: str) -> dict[str, Any]:
        if self._summary is None:
            raise ReplayBufferError(
                f"{type(self).__name__}.{what}: this buffer was built without a dataset "
                f"summary. Fix: open datasets with from_episodes (or a format's constructor)."
            )
        return self._summary

    def check_specs(
        self,
        env: Any = None,
        *,
        observation_spec: Any = None,
        action_spec: Any = None,
    ) -> None:
        """Check the dataset's observation keys and action against an env's specs.

        Give ``env`` (any rlblocks env: its ``observation_spec`` and ``action_spec``, batch
        dims dropped) or the two specs for one unbatched env.

        Raises:
            DatasetSpecError: Naming every key missing on either side and every key whose
                shape or dtype differs, with both values.
        """
        if env is not None:
            batch = len(env.batch_size)
            observation_spec, action_spec = env.observation_spec, env.action_spec
        else:
            batch = 0
        if observation_spec is None or action_spec is None:
            raise TypeError(
                f"{type(self).__name__}.check_specs: give an env, or both observation_spec and "
                f"action_spec (got observation_spec={observation_spec!r}, "
                f"action_spec={action_spec!r})"
            )
        element = self[0]
        if self._metadata.get("split_trajs"):
            element = element[0]
        wanted = {
            key: (tuple(spec.shape[batch:]), spec.dtype)
            for key, spec in observation_spec.items(include_nested=True, leaves_only=True)
        }
        wanted["action"] = (tuple(action_spec.shape[batch:]), action_spec.dtype)
        held = {
            key: (tuple(value.shape), value.dtype)
            for key, value in element.items(include_nested=True, leaves_only=True)
            if _root(key) not in _NOT_OBSERVATIONS and _root(key) != "next"
        }
        held["action"] = (tuple(element["action"].shape), element["action"].dtype)
        problems = []
        if missing := sorted(map(str, wanted.keys() - held.keys())):
            problems.append(f"in the env's specs but not in the dataset: {', '.join(missing)}")
        if extra := sorted(map(str, held.keys() - wanted.keys())):
            problems.append(f"in the dataset but not in the env's specs: {', '.join(extra)}")
        for key in sorted(wanted.keys() & held.keys(), key=str):
            (env_shape, env_dtype), (data_shape, data_dtype) = wanted[key], held[key]
            if env_shape != data_shape or env_dtype != data_dtype:
                problems.append(
                    f"{key!r}: dataset has shape {list(data_shape)} {data_dtype}, env's spec "
                    f"{list(env_shape)} {env_dtype}"
                )
        if problems:
            name = self._metadata.get("dataset_id", "the dataset")
            raise DatasetSpecError(
                f"{type(self).__name__}.check_specs: {name!r} does not match the env's specs: "
                + "; ".join(problems)
                + ". Fix: use the env the dataset was recorded on, or transform the dataset's "
                "keys (transform=...) to the env's."
            )

    # -- read-only ---------------------------------------------------------------------------

    def _read_only(self, what: str) -> ReplayBufferError:
        return ReplayBufferError(
            f"{type(self).__name__}.{what}: a dataset is read-only (its storage is the cache "
            f"every load of this dataset shares). Fix: copy it into a buffer of your own, e.g. "
            f"rb = TensorDictReplayBuffer(storage=LazyTensorStorage(len(data) + extra)); "
            f"rb.extend(data[:])."
        )

    def add(self, data: Any) -> int:
        raise self._read_only("add")

    def extend(self, data: Any) -> torch.Tensor:
        raise self._read_only("extend")

    def empty(self) -> None:
        raise self._read_only("empty")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise self._read_only("load_state_dict")

    def loads(self, path: str | os.PathLike) -> None:
        raise self._read_only("loads")


def _root(key: NestedKey) -> str:
    return key if isinstance(key, str) else key[0]


# -- the cache -----------------------------------------------------------------------------


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != _CACHE_FORMAT or not (folder / _SUMMARY).is_file():
        return None
    return manifest


@contextlib.contextmanager
def _staging(final: Path) -> Iterator[Path]:
    """A fresh sibling folder of ``final``, renamed to ``final`` if the block succeeds and
    removed if it fails: ``final`` only ever holds a complete cache."""
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = final.parent / f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(FileNotFoundError):
        os.rename(final, old)
    try:
        os.rename(stage, final)
    except OSError:
        # Another process put a cache in place between the two renames: keep theirs.
        shutil.rmtree(stage, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


class _Moments:
    """Running sums of every float leaf (per feature) for mean/std/min/max."""

    def __init__(self) -> None:
        self.sums: dict[NestedKey, list[torch.Tensor]] = {}

    def add(self, td: TensorDictBase) -> None:
        for key, value in td.items(include_nested=True, leaves_only=True):
            if not value.is_floating_point():
                continue
            x = value.detach().to(torch.float64).reshape(value.shape[0], -1)
            new = [x.sum(0), (x * x).sum(0), x.amin(0), x.amax(0), torch.tensor(len(x))]
            old = self.sums.get(key)
            if old is None:
                self.sums[key] = new
            else:
                old[0] += new[0]
                old[1] += new[1]
                torch.minimum(old[2], new[2], out=old[2])
                torch.maximum(old[3], new[3], out=old[3])
                old[4] += new[4]
        self._shapes = {k: v.shape[1:] for k, v in td.items(include_nested=True, leaves_only=True)}

    def result(self) -> TensorDict:
        out = TensorDict()
        for key, (total, squares, low, high, count) in self.sums.items():
            shape = self._shapes[key]
            mean = total / count
            var = (squares / count - mean * mean).clamp_min(0.0)
            path = key if isinstance(key, tuple) else (key,)
            for name, value in (
                ("loc", mean),
                ("scale", var.sqrt().clamp_min(1e-6)),
                ("min", low),
                ("max", high),
            ):
                out.set((*path, name), value.to(torch.float32).reshape(shape))
        return out


def _complete(chunk: TensorDictBase, first_id: int, who: str) -> TensorDict:
    """Add done flags, consecutive episode ids and returns-to-go to one chunk of episodes
    (a shallow copy: the source's TensorDict is left as it was)."""
    n = chunk.batch_size[0]
    td = chunk.to_tensordict() if not isinstance(chunk, TensorDict) else chunk.copy()
    terminated = td["next", "terminated"].reshape(n, 1).to(torch.bool)
    truncated = td["next", "truncated"].reshape(n, 1).to(torch.bool)
    reward = td["next", "reward"].reshape(n, 1).to(torch.float32)
    done = terminated | truncated
    ids = td["episode"].reshape(n).to(torch.int64)
    starts = torch.ones(n, dtype=torch.bool)
    starts[1:] = (ids[1:] != ids[:-1]) | done[:-1, 0]
    episode = torch.cumsum(starts.to(torch.int64), 0) - 1
    # Undiscounted return-to-go: each episode's total minus what came before this step.
    cum = torch.cumsum(reward[:, 0].to(torch.float64), 0)
    start_pos = torch.nonzero(starts).flatten()
    ends = torch.cat([start_pos[1:], torch.tensor([n])]) - 1
    before = torch.cat([torch.zeros(1, dtype=torch.float64), cum])[start_pos]
    totals = cum[ends] - before
    rtg = totals[episode] - (cum - before[episode]) + reward[:, 0].to(torch.float64)
    td.set(("next", "reward"), reward)
    td.set(("next", "terminated"), terminated)
    td.set(("next", "truncated"), truncated)
    td.set(("next", "done"), done)
    for flag in _FLAGS:
        td.set(flag, torch.zeros(n, 1, dtype=torch.bool))
    td.set("episode", episode + first_id)
    td.set("step_count", (torch.arange(n) - start_pos[episode]).unsqueeze(-1))
    td.set("return_to_go", rtg.to(torch.float32).unsqueeze(-1))
    return td


def _episodes_of(
    episodes: Callable[[], Iterable[TensorDictBase]], who: str
) -> Iterator[TensorDict]:
    """The source's chunks, completed; the dataset's last transition always ends an episode."""
    pending: TensorDict | None = None
    next_id = 0
    last_source_id: int | None = None
    for chunk in episodes():
        if chunk.batch_size[0] == 0:
            continue
        missing = [key for key in _REQUIRED if key not in chunk.keys(include_nested=True)]
        if missing:
            raise DatasetFormatError(
                f"{who}: the source's transitions lack {missing}; they need {list(_REQUIRED)}"
            )
        ids = chunk["episode"].reshape(-1)
        # The same id right after a done is the source reusing ids: a new episode.
        open_before = pending is not None and not pending["next", "done"][-1, 0]
        if open_before and int(ids[0]) == last_source_id:
            raise DatasetFormatError(
                f"{who}: episode {last_source_id} spans two chunks of the source; a format "
                f"must yield whole episodes"
            )
        last_source_id = int(ids[-1])
        td = _complete(chunk, next_id, who)
        next_id = int(td["episode"][-1]) + 1
        if pending is not None:
            yield pending
        pending = td
    if pending is not None:
        if not pending["next", "done"][-1, 0]:
            pending["next", "truncated"][-1] = True
            pending["next", "done"][-1] = True
        yield pending


def _build_cache(
    cache: Path,
    episodes: Callable[[], Iterable[TensorDictBase]],
    expected: dict[str, Any],
    metadata: dict[str, Any],
) -> None:
    who = f"dataset {metadata.get('dataset_id', str(cache))!r}"
    total = expected["num_transitions"]
    if total < 1:
        raise DatasetFormatError(f"{who}: the source holds no transitions")
    with _staging(cache) as stage:
        storage = LazyMemmapStorage(total, scratch_dir=stage)
        buffer = TensorDictReplayBuffer(storage=storage)
        moments, returns, lengths, written = _Moments(), [], [], 0
        for td in _episodes_of(episodes, who):
            if written + len(td) > total:
                raise DatasetFormatError(
                    f"{who}: the source yields more than the {total} transitions it announced"
                )
            buffer.extend(td)
            written += len(td)
            moments.add(td.exclude(*_FLAGS, "next").update({"next": td["next"].select("reward")}))
            ep = td["episode"]
            counts = torch.bincount(ep - ep[0])
            lengths.append(counts[counts > 0])
            starts = torch.cat([torch.tensor([0]), torch.cumsum(counts[counts > 0], 0)[:-1]])
            returns.append(td["return_to_go"][starts, 0].to(torch.float64))
        if written != total:
            raise DatasetFormatError(
                f"{who}: the source yields {written} transitions, not the {total} it announced"
            )
        summary = {
            "stats": moments.result(),
            "episode_returns": torch.cat(returns),
            "episode_lengths": torch.cat(lengths),
        }
        torch.save(summary, stage / _SUMMARY)
        metadata = {
            **metadata,
            "num_transitions": total,
            "num_episodes": len(summary["episode_lengths"]),
        }
        del buffer, storage
        (stage / _MANIFEST).write_text(json.dumps({**expected, "metadata": metadata}, indent=1))


def _build_split_cache(cache: Path) -> None:
    """Write whole episodes, padded to the longest, next to the flat cache."""
    flat = TensorDictReplayBuffer(storage=LazyMemmapStorage.open(cache))
    lengths = torch.load(cache / _SUMMARY, weights_only=True)["episode_lengths"]
    starts = torch.cumsum(lengths, 0) - lengths
    max_len = int(lengths.max())
    steps = torch.arange(max_len)
    group = max(1, (1 << 20) // max_len)  # about a million transitions per write
    with _staging(cache / _SPLIT) as stage:
        storage = LazyMemmapStorage(len(lengths), scratch_dir=stage)
        buffer = TensorDictReplayBuffer(storage=storage)
        for first in range(0, len(lengths), group):
            length, start = lengths[first : first + group], starts[first : first + group]
            mask = steps < length[:, None]
            index = start[:, None] + torch.minimum(steps, length[:, None] - 1)
            rows = flat[index.reshape(-1)].exclude("index").reshape(len(length), max_len)
            rows = rows.apply(functools.partial(_zero_padding, mask))
            rows.set(_MASK, mask)
            buffer.extend(rows)
        del buffer, storage
        (stage / _MANIFEST).write_text(json.dumps({"format": _CACHE_FORMAT, "max_len": max_len}))


def _zero_padding(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    mask = mask.reshape(*mask.shape, *(1,) * (x.dim() - mask.dim()))
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype))
