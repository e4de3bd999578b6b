"""Hindsight experience replay: :class:`HindsightRelabel`, goals relabelled as batches are drawn.

HER (Andrychowicz et al., 2017) replays a transition of a goal-conditioned task as if the
goal had been one the agent did reach later in the same episode, so that failed episodes
still teach something. The relabelling happens when a batch is sampled (like
Stable-Baselines3's ``HerReplayBuffer``, unlike TorchRL's transform that writes relabelled
copies at ``extend``): the buffer keeps each transition once, every draw gets fresh goals,
and an episode that spans several collector batches is relabelled with all of its steps.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.buffers._slice_sampler import SliceSampler
from rlblocks.buffers._storages import Storage
from rlblocks.buffers.errors import BufferConfigError, StorageLayoutError
from rlblocks.core import DONE, NEXT, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.utils import check_int

__all__ = ["HER_STRATEGIES", "HindsightRelabel"]

HER_STRATEGIES = ("future", "final", "episode")
"""The goal-selection strategies of :class:`HindsightRelabel` (the HER paper's names)."""

GoalFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _as_key(key: NestedKey) -> tuple[str, ...]:
    return tuple(key) if isinstance(key, (tuple, list)) else (key,)


def _fmt(key: tuple[str, ...]) -> str:
    return repr(key[0]) if len(key) == 1 else repr(key)


class HindsightRelabel:
    """Relabel the goals of sampled transitions with goals reached later in their episode.

    Give it as the ``transform`` of a :class:`TensorDictReplayBuffer` built on the same
    ``storage``. Each sampled transition is relabelled with probability
    ``n_sampled_goal / (n_sampled_goal + 1)`` (HER's ``k``: ``k`` relabelled transitions
    per real one): its ``desired_goal`` (at the root and under ``"next"``) becomes the
    achieved goal ``("next", "achieved_goal")`` of a step of the **same** episode, chosen
    by ``strategy``:

    - ``"future"``: a step drawn uniformly among the transition itself and the later ones;
    - ``"final"``: the episode's last step;
    - ``"episode"``: a step drawn uniformly in the whole episode.

    Its reward becomes ``reward_fn(achieved_goal, new_goal)`` and, with ``terminated_fn``,
    its ``terminated`` becomes ``terminated_fn(achieved_goal, new_goal)`` (and ``done``
    ``terminated | truncated``), as an env that ends episodes on success would have set
    them. Other transitions are returned unchanged.

    Episodes are found in the storage as :class:`SliceSampler` finds trajectories: by
    ``traj_key`` (a trajectory id per step, e.g. a collector's
    ``("collector", "traj_ids")``) or by ``end_key`` (``("next", "done")`` by default),
    with storage order as time order (a round-robin writer) and the write cursor as a
    seam no episode crosses. An episode still running counts the steps stored so far
    ("final" is its latest one). When one ``extend`` holds several envs' steps
    (a collector batch ``[n_envs, T]`` flattened), use ``traj_key``: with ``end_key``, an
    env's unfinished steps would run into the next env's.

    Batches must come from a buffer over ``storage`` and carry ``"index"`` (as
    :class:`TensorDictReplayBuffer` samples do); the goals are read from the storage when
    the transform runs. A transition whose stored row changed since it was sampled (a
    prefetched batch, another process writing) is left as it is. Put other sample
    transforms after this one: it reads the goals as they are stored.

    Args:
        storage: The buffer's storage (written in time order, e.g. ``LazyTensorStorage``).
        reward_fn: ``reward_fn(achieved_goal, desired_goal) -> reward``, vectorized over
            the batch (e.g. :meth:`rlblocks.envs.BitFlippingEnv.compute_reward`); its output
            is reshaped to the stored reward's shape.
        strategy: How the new goal is chosen: one of :data:`HER_STRATEGIES`.
        n_sampled_goal: HER's ``k`` (``>= 0``; 0 relabels nothing).
        achieved_key: Where a transition's achieved goal is (after its step).
        desired_key: Where its desired goal is (at the root; the same key under ``"next"``
            is relabelled too when the data has it).
        reward_key: The reward to recompute.
        terminated_fn: ``terminated_fn(achieved_goal, desired_goal) -> bool`` for envs that
            terminate on success (e.g. :meth:`rlblocks.envs.BitFlippingEnv.
            compute_terminated`); ``None`` keeps the stored flags.
        traj_key: Key of a trajectory id per step; give it or ``end_key``.
        end_key: Key of the flag that ends an episode (``("next", "done")`` when neither
            is given).
        relabelled_key: Where to write a bool ``[B, 1]`` flag of the relabelled
            transitions (``None``: nowhere).
        generator: Random generator of the draws; defaults to torch's global one.

    Raises:
        BufferConfigError: ``strategy`` is unknown, ``n_sampled_goal`` is not an int
            ``>= 0``, a function is not callable, or both ``traj_key`` and ``end_key``
            are given.

    Example:
        >>> from rlblocks.envs import BitFlippingEnv
        >>> storage = LazyTensorStorage(100_000)
        >>> her = HindsightRelabel(
        ...     storage,
        ...     BitFlippingEnv.compute_reward,
        ...     terminated_fn=BitFlippingEnv.compute_terminated,
        ...     strategy="future",
        ...     n_sampled_goal=4,
        ... )
        >>> rb = TensorDictReplayBuffer(storage=storage, batch_size=256, transform=her)
        >>> rb.extend(BitFlippingEnv(8).rollout(8))
        >>> batch = rb.sample()  # 4 in 5 transitions with goals reached in hindsight
    """

    def __init__(
        self,
        storage: Storage,
        reward_fn: GoalFn,
        *,
        strategy: str = "future",
        n_sampled_goal: int = 4,
        achieved_key: NestedKey = (NEXT, "achieved_goal"),
        desired_key: NestedKey = "desired_goal",
        reward_key: NestedKey = (NEXT, REWARD),
        terminated_fn: GoalFn | None = None,
        traj_key: NestedKey | None = None,
        end_key: NestedKey | None = None,
        relabelled_key: NestedKey | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        who = "HindsightRelabel"
        if not isinstance(storage, Storage):
            raise BufferConfigError(
                f"{who}: storage must be the replay buffer's Storage (e.g. LazyTensorStorage), "
                f"got {type(storage).__name__}"
            )
        if strategy not in HER_STRATEGIES:
            close = difflib.get_close_matches(str(strategy), HER_STRATEGIES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise BufferConfigError(
                f"{who}: unknown strategy {strategy!r}; {hint}allowed: "
                f"{', '.join(map(repr, HER_STRATEGIES))}"
            )
        for name, fn in (("reward_fn", reward_fn), ("terminated_fn", terminated_fn)):
            if fn is not None and not callable(fn):
                raise BufferConfigError(
                    f"{who}: {name} must be a function (achieved_goal, desired_goal) -> "
                    f"tensor, e.g. BitFlippingEnv.compute_reward; got {type(fn).__name__}"
                )
        if reward_fn is None:
            raise BufferConfigError(f"{who}: reward_fn is required to recompute rewards")
        if traj_key is not None and end_key is not None:
            raise BufferConfigError(
                f"{who}: give traj_key or end_key to find episodes, not both (got "
                f"traj_key={traj_key!r}, end_key={end_key!r})"
            )
        self.storage = storage
        self.reward_fn = reward_fn
        self.terminated_fn = terminated_fn
        self.strategy = strategy
        self.n_sampled_goal = check_int(
            n_sampled_goal, "n_sampled_goal", who, minimum=0, error=BufferConfigError
        )
        self.achieved_key = _as_key(achieved_key)
        self.desired_key = _as_key(desired_key)
        self.reward_key = _as_key(reward_key)
        self.relabelled_key = None if relabelled_key is None else _as_key(relabelled_key)
        self.generator = generator
        # SliceSampler's episode finder (and its cache, refreshed when the storage changes).
        self._episodes = SliceSampler(slice_len=1, traj_key=traj_key, end_key=end_key)
        self._time_of: tuple[Any, np.ndarray] | None = None

    @property
    def relabel_probability(self) -> float:
        """The chance that a sampled transition is relabelled: ``k / (k + 1)``."""
        return self.n_sampled_goal / (self.n_sampled_goal + 1)

    def __repr__(self) -> str:
        return (
            f"HindsightRelabel(strategy={self.strategy!r}, n_sampled_goal="
            f"{self.n_sampled_goal}, achieved_key={_fmt(self.achieved_key)}, "
            f"desired_key={_fmt(self.desired_key)})"
        )

    # -- checks ----------------------------------------------------------------------------

    def _goal_keys(self) -> list[tuple[str, ...]]:
        return [self.achieved_key, self.desired_key]

    def _missing_goal_error(
        self, missing: list[tuple[str, ...]], found: Iterable[Any], where: str
    ) -> BufferConfigError:
        return BufferConfigError(
            f"HindsightRelabel(strategy={self.strategy!r}): {where} has no "
            f"{', '.join(map(_fmt, missing))}. HER needs goal keys: the achieved goal "
            f"(achieved_key={_fmt(self.achieved_key)}) and the desired goal "
            f"(desired_key={_fmt(self.desired_key)}) of every transition, as goal envs "
            f"such as BitFlippingEnv write them; found {sorted(map(str, found))}. Fix: pass "
            f"achieved_key=/desired_key= naming the data's goal keys, or use HER only with "
            f"an env that has goals."
        )

    def check_observation_spec(self, observation_spec: Any) -> None:
        """Check that an env's observation spec has the goal keys, before collecting.

        Args:
            observation_spec: The env's ``full_observation_spec`` (a ``Composite``); the
                achieved goal is looked up without its ``"next"`` prefix.

        Raises:
            BufferConfigError: A goal key is missing; the message names it, the strategy
                and the keys the spec has.
        """
        found = {_as_key(k) for k in observation_spec.keys(True, True)}
        wanted = [k[1:] if k[0] == NEXT and len(k) > 1 else k for k in self._goal_keys()]
        missing = [k for k in wanted if k not in found]
        if missing:
            raise self._missing_goal_error(missing, found, "the observation spec")

    def _check(self, batch: Any) -> None:
        who = "HindsightRelabel"
        if not isinstance(batch, TensorDictBase) or batch.batch_dims != 1:
            shape = getattr(batch, "batch_size", None)
            raise BufferConfigError(
                f"{who} relabels batches of transitions ([B]) sampled from a "
                f"TensorDictReplayBuffer over its storage, got {type(batch).__name__}"
                + (f" with batch_size {list(shape)}" if shape is not None else "")
                + ". Fix: pass it as transform= of TensorDictReplayBuffer(storage=storage)."
            )
        keys = {_as_key(k) for k in batch.keys(True, True)}
        missing = [k for k in self._goal_keys() if k not in keys]
        if missing:
            raise self._missing_goal_error(missing, keys, "the sampled batch")
        for name, key in (("index", ("index",)), ("reward_key", self.reward_key)):
            if key not in keys:
                hint = (
                    "sample from a TensorDictReplayBuffer, whose batches carry it"
                    if name == "index"
                    else "pass reward_key= naming the data's reward"
                )
                raise BufferConfigError(
                    f"{who}: the sampled batch has no {_fmt(key)}; {hint}. Found "
                    f"{sorted(map(str, keys))}"
                )

    # -- relabelling -----------------------------------------------------------------------

    def _episodes_of(self, storage: Storage) -> tuple[np.ndarray, ...]:
        """Episode starts and lengths in time order, time -> position, position -> time."""
        try:
            found = self._episodes._trajectories(storage)
        except StorageLayoutError as exc:
            raise BufferConfigError(
                f"HindsightRelabel cannot find the episodes in the storage: {exc}"
            ) from exc
        if self._time_of is None or self._time_of[0] is not found:
            order = found[2]
            time_of = np.empty_like(order)
            time_of[order] = np.arange(len(order))
            self._time_of = (found, time_of)
        return (*found, self._time_of[1])

    def _goal_steps(
        self, t: np.ndarray, first: np.ndarray, end: np.ndarray, draw: np.ndarray
    ) -> np.ndarray:
        """The time step whose achieved goal replaces each goal (``end`` is exclusive)."""
        if self.strategy == "final":
            return end - 1
        low = t if self.strategy == "future" else first
        return np.minimum(low + np.floor(draw * (end - low)).astype(np.int64), end - 1)

    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        """Relabel a sampled batch (see the class docstring).

        Args:
            batch: Transitions ``[B]`` sampled from a buffer over :attr:`storage`.

        Returns:
            ``batch``, its relabelled entries replaced by new tensors (the others are the
            sampled ones, untouched).

        Raises:
            BufferConfigError: ``batch`` is not a ``[B]`` TensorDict with ``"index"``, the
                goal keys and the reward, the storage has no ``traj_key``/``end_key``, or
                ``reward_fn``/``terminated_fn`` return a wrong number of values.
        """
        self._check(batch)
        size = batch.batch_size[0]
        relabel = torch.rand(size, generator=self.generator) < self.relabel_probability
        draw = torch.rand(size, dtype=torch.float64, generator=self.generator).numpy()
        if not bool(relabel.any()):
            return self._flag(batch, relabel)
        index = batch.get("index").reshape(size).long().cpu()
        with self.storage.lock():
            found = self._new_goals(index, batch.get(self.achieved_key), relabel, draw)
        if found is not None:
            self._relabel(batch, *found)
        return self._flag(batch, relabel)

    def _new_goals(
        self, index: torch.Tensor, achieved: torch.Tensor, relabel: torch.Tensor, draw: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The rows to relabel and their new goals, read from the storage (under its lock);
        ``relabel`` is cleared where a row cannot be (no longer stored, or overwritten)."""
        storage = self.storage
        relabel &= (index >= 0) & (index < len(storage))
        if not bool(relabel.any()):
            return None
        column = storage.column(self.achieved_key)
        rows = relabel.nonzero().squeeze(-1)
        # A row overwritten since the draw no longer holds this transition.
        stored = column[index[rows].to(column.device)].to(achieved.device)
        same = (stored == achieved[rows.to(achieved.device)]).reshape(len(rows), -1)
        relabel[rows[~same.all(-1).cpu()]] = False
        if not bool(relabel.any()):
            return None
        rows = relabel.nonzero().squeeze(-1)
        starts, lengths, order, time_of = self._episodes_of(storage)
        t = time_of[index[rows].numpy()]
        episode = np.searchsorted(starts, t, side="right") - 1
        first = starts[episode]
        steps = self._goal_steps(t, first, first + lengths[episode], draw[rows.numpy()])
        goals = column[torch.from_numpy(order[steps]).to(column.device)]
        return rows.to(achieved.device), goals.to(achieved.device)

    def _flag(self, batch: TensorDictBase, relabel: torch.Tensor) -> TensorDictBase:
        if self.relabelled_key is not None:
            device = batch.get(self.achieved_key).device
            batch.set(self.relabelled_key, relabel.unsqueeze(-1).to(device))
        return batch

    def _relabel(self, batch: TensorDictBase, rows: torch.Tensor, goals: torch.Tensor) -> None:
        for key in (self.desired_key, (NEXT, *self.desired_key)):
            old = batch.get(key, None)
            if old is not None:
                batch.set(key, _replace(old, rows, goals, key, "the achieved goals"))
        achieved = batch.get(self.achieved_key)[rows]
        reward = self.reward_fn(achieved, goals)
        batch.set(
            self.reward_key,
            _replace(batch.get(self.reward_key), rows, reward, self.reward_key, "reward_fn"),
        )
        if self.terminated_fn is None:
            return
        next_td = batch.get(NEXT)
        old = next_td.get(TERMINATED, None)
        if old is None:
            raise BufferConfigError(
                f"HindsightRelabel: terminated_fn is given but the batch has no "
                f"{_fmt((NEXT, TERMINATED))} to recompute; pass terminated_fn=None"
            )
        terminated = _replace(
            old, rows, self.terminated_fn(achieved, goals), (NEXT, TERMINATED), "terminated_fn"
        )
        next_td.set(TERMINATED, terminated)
        done = next_td.get(DONE, None)
        if done is not None:
            truncated = next_td.get(TRUNCATED, None)
            if truncated is None:  # what ended the episode other than termination
                truncated = done & ~old.to(done.dtype)
            next_td.set(DONE, terminated.to(done.dtype) | truncated.to(done.dtype))


def _replace(
    old: torch.Tensor, rows: torch.Tensor, new: torch.Tensor, key: tuple[str, ...], source: str
) -> torch.Tensor:
    """A copy of ``old`` whose ``rows`` hold ``new`` (reshaped to them, in ``old``'s dtype)."""
    target = old[rows]
    if new.numel() != target.numel():
        raise BufferConfigError(
            f"HindsightRelabel: {source} gave {list(new.shape)} for {len(rows)} "
            f"transitions, but {_fmt(key)} holds {list(target.shape)}; it must return one "
            f"value per element of {_fmt(key)}"
        )
    out = old.clone()
    out[rows] = new.reshape(target.shape).to(device=old.device, dtype=old.dtype)
    return out
