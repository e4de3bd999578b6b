"""Batched envs: :class:`EnvCreator`, the shared base of ``SerialEnv``/``ParallelEnv``, and
:class:`SerialEnv`.

A batched env runs ``num_workers`` copies of one env and stacks them along a new leading
batch dim: sub-envs of batch size ``B`` give a batched env of batch size ``[num_workers, *B]``.
Partial resets (a ``"_reset"`` mask) reset only the sub-envs (or the elements of batched
sub-envs) that are masked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase

from rlblocks.core import NEXT, RESET
from rlblocks.core.specs import Composite
from rlblocks.core.utils import check_int
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs._stepper import Stepper
from rlblocks.envs.errors import EnvError

__all__ = ["EnvCreator", "SerialEnv", "BatchedEnvBase", "SKIP", "env_factories", "env_meta"]

EnvFactory = Callable[[], EnvBase]
_SPEC_NAMES = ("observation", "action", "reward", "done", "state")


class EnvCreator:
    """A picklable env factory that also remembers the env's specs and batch size.

    ``ParallelEnv`` sends the factory to its workers; with the ``spawn``/``forkserver``
    start methods it is pickled, so ``create_env_fn`` must then be picklable (a module-level
    function, a class, or a ``functools.partial`` of those; not a lambda).

    Args:
        create_env_fn: Returns an rlblocks env.
        create_env_kwargs: Keyword arguments for ``create_env_fn``.

    Example:
        >>> creator = EnvCreator(GymEnv, {"env_id": "CartPole-v1"})
        >>> creator.batch_size
        torch.Size([])
        >>> env = creator()
    """

    def __init__(
        self,
        create_env_fn: Callable[..., EnvBase],
        create_env_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not callable(create_env_fn):
            raise TypeError(
                f"EnvCreator needs a callable that returns an env, got "
                f"{type(create_env_fn).__name__}"
            )
        self.create_env_fn = create_env_fn
        self.create_env_kwargs = dict(create_env_kwargs or {})
        self._meta: dict[str, Any] | None = None

    def __call__(self, **kwargs: Any) -> EnvBase:
        env = self.create_env_fn(**{**self.create_env_kwargs, **kwargs})
        if not isinstance(env, EnvBase):
            raise EnvError(
                f"EnvCreator: create_env_fn returned a {type(env).__name__}, not an rlblocks "
                f"env; wrap gymnasium envs with GymWrapper or use GymEnv"
            )
        return env

    @property
    def meta(self) -> dict[str, Any]:
        """Specs (``full_*_spec``), batch size and device of the env (made once, then closed)."""
        if self._meta is None:
            env = self()
            try:
                self._meta = env_meta(env)
            finally:
                env.close()
        return self._meta

    @property
    def batch_size(self) -> torch.Size:
        """Batch size of the envs this creator makes."""
        return self.meta["batch_size"]

    def __getstate__(self) -> dict[str, Any]:
        # Specs hold tensors; workers do not need them.
        return {**self.__dict__, "_meta": None}

    def __repr__(self) -> str:
        return f"EnvCreator({self.create_env_fn!r}, {self.create_env_kwargs})"


def env_meta(env: EnvBase) -> dict[str, Any]:
    """What a batched env needs to know of its sub-envs without keeping one."""
    return {
        "batch_size": env.batch_size,
        "device": env.device,
        "specs": {name: getattr(env, f"full_{name}_spec").clone() for name in _SPEC_NAMES},
        "num_seeds": env._num_seeds(),
        "type": type(env).__name__,
        "group_map": env.group_map,
    }


def env_factories(
    num_workers: int,
    create_env_fn: EnvFactory | Sequence[EnvFactory],
    create_env_kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    owner: str,
) -> list[EnvCreator]:
    """One :class:`EnvCreator` per worker, checking the arguments."""
    num_workers = check_int(num_workers, "num_workers", owner)
    fns = list(create_env_fn) if isinstance(create_env_fn, Sequence) else [create_env_fn]
    if len(fns) == 1:
        fns = fns * num_workers
    if len(fns) != num_workers:
        raise ValueError(
            f"{owner}: got {len(fns)} create_env_fn for {num_workers} workers; pass one "
            f"callable, or one per worker"
        )
    if create_env_kwargs is None or isinstance(create_env_kwargs, Mapping):
        kwargs = [create_env_kwargs or {}] * num_workers
    else:
        kwargs = list(create_env_kwargs)
        if len(kwargs) != num_workers:
            raise ValueError(
                f"{owner}: got {len(kwargs)} create_env_kwargs for {num_workers} workers"
            )
    out = []
    for fn, kw in zip(fns, kwargs):
        if isinstance(fn, EnvCreator) and not kw:
            out.append(fn)
        elif isinstance(fn, EnvCreator):
            out.append(EnvCreator(fn.create_env_fn, {**fn.create_env_kwargs, **kw}))
        else:
            out.append(EnvCreator(fn, kw))
    return out


def _check_same_meta(metas: list[dict[str, Any]], owner: str) -> dict[str, Any]:
    first = metas[0]
    for i, meta in enumerate(metas[1:], start=1):
        if meta["batch_size"] != first["batch_size"]:
            raise EnvError(
                f"{owner}: sub-env {i} has batch size {list(meta['batch_size'])}, sub-env 0 "
                f"has {list(first['batch_size'])}; all sub-envs must be alike"
            )
        if meta["group_map"] != first["group_map"]:
            raise EnvError(
                f"{owner}: sub-env {i} has group_map {meta['group_map']}, sub-env 0 has "
                f"{first['group_map']}; all sub-envs must group their agents alike"
            )
        for name in _SPEC_NAMES:
            if meta["specs"][name] != first["specs"][name]:
                raise EnvError(
                    f"{owner}: sub-env {i}'s full_{name}_spec differs from sub-env 0's:\n"
                    f"{meta['specs'][name]}\nvs\n{first['specs'][name]}\nall sub-envs must "
                    f"have the same specs"
                )
    return first


class BatchedEnvBase(EnvBase):
    """Shared machinery of :class:`SerialEnv` and :class:`ParallelEnv`."""

    step_returns_done_flags = True

    def __init__(
        self,
        num_workers: int,
        metas: list[dict[str, Any]],
        device: Any,
        check_actions: bool,
    ) -> None:
        meta = _check_same_meta(metas, type(self).__name__)
        self.num_workers = num_workers
        self.sub_batch_size: torch.Size = meta["batch_size"]
        super().__init__(
            device=meta["device"] if device is None else device,
            batch_size=(num_workers, *self.sub_batch_size),
            check_actions=check_actions,
        )
        batch = self.batch_size
        for name in _SPEC_NAMES:
            spec: Composite = meta["specs"][name]
            setattr(self, f"full_{name}_spec", spec.expand(batch).to(self.device))
        self._seeds_per_worker = [m["num_seeds"] for m in metas]
        self._group_map = meta["group_map"]

    def _num_seeds(self) -> int:
        return sum(self._seeds_per_worker)

    def _worker_seeds(self, seed: int | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_workers
        seeds, next_seed = [], seed
        for count in self._seeds_per_worker:
            seeds.append(next_seed)
            next_seed += count
        return seeds

    def _reset_workers(self, tensordict: TensorDictBase | None) -> list[Any]:
        """Per worker: :data:`SKIP` (keep running), ``None`` (reset it all) or the
        TensorDict holding the ``"_reset"`` mask of a partial reset of a batched sub-env."""
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        if mask is None:
            return [None] * self.num_workers
        mask = mask.reshape(*self.batch_size, 1)
        out: list[Any] = []
        for i in range(self.num_workers):
            sub_mask = mask[i]
            if not bool(sub_mask.any()):
                out.append(SKIP)
            elif not self.sub_batch_size:
                out.append(None)
            else:
                # A batched sub-env gets its mask even when all of it is set: one that
                # restarts episodes by itself must not restart those it already did.
                assert tensordict is not None
                sub = tensordict[i].exclude(NEXT)
                sub.set(RESET, sub_mask)
                out.append(sub)
        return out


#: Marker of :meth:`BatchedEnvBase._reset_workers`: this worker is not reset.
SKIP: Any = object()


class SerialEnv(BatchedEnvBase):
    """Run ``num_workers`` envs one after the other in this process, as one batched env.

    Args:
        num_workers: How many sub-envs.
        create_env_fn: Returns a sub-env; one callable for all, or one per worker.
        create_env_kwargs: Keyword arguments for ``create_env_fn`` (one mapping, or one per
            worker).
        device: Device of the batched env's tensors (default: the sub-envs').
        check_actions: Validate actions in ``step``.

    Example:
        >>> env = SerialEnv(4, lambda: GymEnv("CartPole-v1"))
        >>> env.batch_size
        torch.Size([4])
        >>> env.set_seed(0)  # sub-env i is seeded with 0 + i
        4
    """

    def __init__(
        self,
        num_workers: int,
        create_env_fn: EnvFactory | Sequence[EnvFactory],
        create_env_kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        device: Any = None,
        check_actions: bool = True,
    ) -> None:
        creators = env_factories(num_workers, create_env_fn, create_env_kwargs, "SerialEnv")
        self._envs: list[EnvBase] = []
        try:
            for creator in creators:
                self._envs.append(creator())
            metas = [env_meta(env) for env in self._envs]
            super().__init__(num_workers, metas, device, check_actions)
        except BaseException:
            for env in self._envs:
                env.close()
            raise
        self._current: TensorDictBase | None = None

    @property
    def envs(self) -> list[EnvBase]:
        """The sub-envs."""
        return list(self._envs)

    def _set_seed(self, seed: int | None) -> None:
        for env, sub_seed in zip(self._envs, self._worker_seeds(seed)):
            env.set_seed(sub_seed)

    def _stack(self, tds: list[TensorDictBase]) -> TensorDictBase:
        out = torch.stack(tds, 0)
        return out if out.device == self.device else out.to(self.device)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        plan = self._reset_workers(tensordict if self._current is not None else None)
        outs = []
        for i, (env, sub) in enumerate(zip(self._envs, plan)):
            if sub is SKIP:
                assert self._current is not None
                outs.append(self._current[i])
            else:
                out = env.reset(sub, **kwargs)
                outs.append(out.select(*self._root_keys(), strict=False))
        out = self._stack(outs)
        # Our own view of the current root values: callers may add keys to what we return.
        self._current = out.select(*self._root_keys(), strict=False)
        return out

    def _root_keys(self) -> list[Any]:
        return [*self.observation_keys, *self.done_keys, *self.state_keys]

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        inputs = tensordict.select(*self.action_keys, *self.state_keys, strict=False)
        outs = [env.step(inputs[i], check=False).get(NEXT) for i, env in enumerate(self._envs)]
        next_td = self._stack(outs)
        self._current = next_td.select(*self._root_keys(), strict=False)
        return next_td

    def _close(self) -> None:
        for env in self._envs:
            env.close()

    def steppers(self) -> list[Stepper] | None:
        """The sub-envs' steppers, in order, when every sub-env has them."""
        out: list[Stepper] = []
        for env in self._envs:
            steppers = env.steppers()
            if steppers is None:
                return None
            out.extend(steppers)
        return out

    def fast_rollout(
        self, max_steps: int, tensordict: TensorDictBase, **kwargs: Any
    ) -> TensorDictBase | None:
        """:meth:`EnvBase.fast_rollout` over :meth:`steppers`, then this env's own view of
        where its simulators are is brought up to date."""
        trajectory = super().fast_rollout(max_steps, tensordict, **kwargs)
        if trajectory is not None:  # our view of the current root values, as _step keeps it
            last = trajectory.get(NEXT)[:, -1]
            self._current = last.select(*self._root_keys(), strict=False)
        return trajectory
