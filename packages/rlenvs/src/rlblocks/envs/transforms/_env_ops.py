"""Transforms that change how the env runs or what it carries: :class:`NoopResetEnv`,
:class:`FrameSkipTransform`, :class:`InitTracker` and :class:`TensorDictPrimer`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import DONE, IS_INIT, NEXT, RESET, step_mdp
from rlblocks.core.specs import Binary, Composite, TensorSpec
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs.errors import TransformError, UnsupportedEnvOperationError
from rlblocks.envs.transforms._base import Transform
from rlblocks.envs.transforms._common import (
    key_parts,
    positive_int,
    reset_mask,
    strip_batch,
    trajectory_starts,
    where_reset,
)

__all__ = ["NoopResetEnv", "FrameSkipTransform", "InitTracker", "TensorDictPrimer"]


def _parent_of(transform: Transform) -> EnvBase:
    parent = transform.parent
    if parent is None:
        name = type(transform).__name__
        raise TransformError(
            f"{name} steps the env it wraps, so it only works inside a TransformedEnv: "
            f"TransformedEnv(env, {name}(...))"
        )
    return parent


class NoopResetEnv(Transform):
    """Take a number of no-op steps after every reset (Atari's random starts).

    After the wrapped env resets, ``noops`` steps are taken (a number drawn uniformly in
    ``[1, noops]`` with ``random=True``), with random actions (TorchRL's behaviour) or
    ``noop_action``. If an episode ends during the no-ops it is reset and the no-ops go on,
    so that episode starts with fewer of them.

    In a batched env every element takes the same number of no-ops, and only full resets
    are supported: stepping the wrapped env moves every element, so no-ops for the elements
    of a partial reset would also move the others. For per-element no-ops put the
    transform inside each sub-env, e.g. ``SerialEnv(n, lambda: TransformedEnv(make(),
    NoopResetEnv(30)))``.

    Args:
        noops: (Maximum) number of no-op steps.
        random: Draw the number of no-ops in ``[1, noops]`` at each reset.
        noop_action: The action taken at each no-op (e.g. ``0``, Atari's NOOP); ``None``
            takes random actions.

    Raises:
        TransformError: ``noops`` is not a positive int, or the transform is not in a
            TransformedEnv.
        UnsupportedEnvOperationError: A batched env is partially reset.

    Example:
        >>> env = TransformedEnv(GymEnv("ALE/Pong-v5"), NoopResetEnv(30, noop_action=0))
    """

    def __init__(self, noops: int = 30, random: bool = True, *, noop_action: Any = None) -> None:
        super().__init__()
        self.noops = positive_int(noops, "NoopResetEnv", "noops")
        self.random = random
        self.noop_action = noop_action

    def _act(self, parent: EnvBase, tensordict: TensorDictBase) -> TensorDictBase:
        if self.noop_action is None:
            return parent.rand_action(tensordict)
        keys = parent.action_keys
        if len(keys) != 1:
            raise TransformError(
                f"NoopResetEnv: noop_action is one action, but the env has action keys {keys}; "
                f"use noop_action=None for random no-ops"
            )
        spec = parent.full_action_spec[keys[0]]
        value = torch.as_tensor(self.noop_action, dtype=spec.dtype, device=spec.device)
        return tensordict.set(keys[0], value.expand(spec.shape).clone())

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        parent = _parent_of(self)
        batched = parent.batch_size.numel() > 1
        mask = reset_mask(tensordict)
        if batched and mask is not None and not bool(mask.all()):
            raise UnsupportedEnvOperationError(
                "NoopResetEnv cannot take no-op steps for only some elements of a batched env "
                "(stepping it moves every element); put NoopResetEnv inside each sub-env: "
                "SerialEnv(n, lambda: TransformedEnv(make_env(), NoopResetEnv(...)))"
            )
        count = int(torch.randint(1, self.noops + 1, ())) if self.random else self.noops
        td = tensordict_reset
        reward_keys, action_keys = parent.reward_keys, parent.action_keys
        for _ in range(count):
            td = parent.step(self._act(parent, td), check=False)
            td = step_mdp(td, reward_keys=reward_keys, action_keys=action_keys)
            done = td.get(DONE)
            if bool(done.any()):
                if batched:
                    td.set(RESET, done.reshape(*parent.batch_size, 1))
                td = parent.reset(td)
        return td

    def extra_repr(self) -> str:
        return f"noops={self.noops}, random={self.random}, noop_action={self.noop_action}"


class FrameSkipTransform(Transform):
    """Repeat each action ``frame_skip`` times, summing the rewards.

    The repeats stop early when an episode ends: the step returns the observation and
    flags of the last frame taken and the sum of the rewards up to it. In a batched env
    the repeats stop for every element as soon as any element is done, so no env is
    stepped past the end of its episode.

    Args:
        frame_skip: Number of frames per step.

    Raises:
        TransformError: ``frame_skip`` is not a positive int, or the transform is not in a
            TransformedEnv.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), FrameSkipTransform(4))
        >>> td = env.rand_step(env.reset())
    """

    def __init__(self, frame_skip: int = 1) -> None:
        super().__init__()
        self.frame_skip = positive_int(frame_skip, "FrameSkipTransform", "frame_skip")

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        if self.frame_skip == 1:
            return next_tensordict
        parent = _parent_of(self)
        reward_keys = parent.reward_keys
        totals = {key: next_tensordict.get(key) for key in reward_keys}
        current = next_tensordict
        root = tensordict.exclude(NEXT)
        for _ in range(self.frame_skip - 1):
            if bool(current.get(DONE).any()):
                break
            # The same action, from the state the last frame reached.
            root.update(current.exclude(*reward_keys))
            current = parent.step(root, check=False).get(NEXT)
            for key in reward_keys:
                totals[key] = totals[key] + current.get(key)
        for key, total in totals.items():
            current.set(key, total)
        return current

    def extra_repr(self) -> str:
        return f"frame_skip={self.frame_skip}"


class InitTracker(Transform):
    """Mark the first step of each episode with an ``is_init`` flag (read by RNNs).

    Writes ``init_key`` (bool, ``[*batch, 1]``): ``True`` after a reset (for the elements
    a partial reset restarts), ``False`` after every step. On a plain TensorDict that lacks
    the flag, the last batch dim is time: the flag is set on the first step and after every
    ``("next", "done")``; ``"next"`` flags are ``False``.

    Args:
        init_key: Where to write the flag.

    Example:
        >>> env = TransformedEnv(PendulumEnv(batch_size=[4]), InitTracker())
        >>> env.reset()["is_init"].all()
        tensor(True)
    """

    def __init__(self, init_key: NestedKey = IS_INIT) -> None:
        super().__init__()
        self.init_key = init_key

    def _flags(self, tensordict: TensorDictBase, value: bool) -> torch.Tensor:
        shape = (*tensordict.batch_size, 1)
        return torch.full(shape, value, dtype=torch.bool, device=tensordict.device)

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        mask = reset_mask(tensordict)
        flags = self._flags(tensordict_reset, True)
        if mask is not None:
            flags = mask.reshape(flags.shape).to(torch.bool)
        return tensordict_reset.set(self.init_key, flags)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict.set(self.init_key, self._flags(next_tensordict, False))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Add the flags to a plain TensorDict that lacks them (time = last batch dim)."""
        if tensordict.get(self.init_key, None) is None:
            if tensordict.batch_dims:
                flags = trajectory_starts(tensordict, DONE).unsqueeze(-1)
            else:
                flags = self._flags(tensordict, True)
            tensordict.set(self.init_key, flags)
        next_td = tensordict.get(NEXT, None)
        if isinstance(next_td, TensorDictBase) and next_td.get(self.init_key, None) is None:
            next_td.set(self.init_key, self._flags(next_td, False))
        return tensordict

    def _call_trajectory(
        self, trajectory: TensorDictBase, start: TensorDictBase | None = None
    ) -> TensorDictBase:
        # A rollout from a reset: flags from the done flags give what stepping would have.
        return self.forward(trajectory)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        observation_spec[self.init_key] = Binary(
            shape=(*observation_spec.shape, 1), dtype=torch.bool, device=observation_spec.device
        )
        return observation_spec

    def extra_repr(self) -> str:
        return f"init_key={self.init_key!r}"


class TensorDictPrimer(Transform):
    """Add entries that the env does not produce, e.g. the hidden state of a recurrent policy.

    Each primer is declared by a spec. Its entry is filled at reset (with ``default_value``,
    or random values from the spec with ``random=True``; a partial reset refills only the
    elements it resets) and carried through steps: the value the policy wrote under
    ``("next", key)`` if any, else the current one. The primers are added to the
    observation spec and to the state spec (they are inputs of the next step).

    Args:
        primers: A mapping (or Composite) from keys to specs; more can be given as keyword
            arguments. Specs are given without the env's batch dims (see ``expand_specs``).
        random: Fill with ``spec.rand()`` instead of ``default_value``.
        default_value: The fill value, one number or a mapping from keys to numbers.
        expand_specs: ``True``: prepend the env's batch dims to every spec; ``None``:
            prepend them unless a spec's shape already starts with them; ``False``: specs
            already have the batch dims.
        **kwargs: More ``key=spec`` primers.

    Raises:
        TransformError: No primer is given, a primer is not a spec, or (``expand_specs=False``)
            a spec lacks the batch dims.

    Example:
        >>> primer = TensorDictPrimer(recurrent_state=Unbounded(shape=(1, 64)))
        >>> env = TransformedEnv(PendulumEnv(batch_size=[8]), primer)
        >>> env.reset()["recurrent_state"].shape
        torch.Size([8, 1, 64])
    """

    def __init__(
        self,
        primers: Mapping[NestedKey, TensorSpec] | Composite | None = None,
        random: bool = False,
        default_value: float | Mapping[NestedKey, float] = 0.0,
        expand_specs: bool | None = None,
        **kwargs: TensorSpec,
    ) -> None:
        super().__init__()
        entries: list[tuple[NestedKey, Any]] = []
        if isinstance(primers, Composite):
            entries += primers.items(include_nested=True, leaves_only=True)
        elif primers is not None:
            entries += list(primers.items())
        entries += list(kwargs.items())
        if not entries:
            raise TransformError(
                "TensorDictPrimer: give at least one primer, e.g. "
                "TensorDictPrimer(hidden=Unbounded(shape=(1, 64)))"
            )
        for key, spec in entries:
            if not isinstance(spec, TensorSpec) or isinstance(spec, Composite):
                raise TransformError(
                    f"TensorDictPrimer: the primer {key!r} must be a leaf spec (e.g. "
                    f"Unbounded(shape=(1, 64))), got {spec!r}"
                )
        self.primers: dict[NestedKey, TensorSpec] = dict(entries)
        self.random = random
        self.default_value = default_value
        self.expand_specs = expand_specs
        self._batch_size: torch.Size | None = None  # the env's, once its specs were seen
        self._spec_cache: dict[tuple[Any, ...], TensorSpec] = {}

    # ------------------------------------------------------------------ values
    def _given_batch_ndim(self, key: NestedKey) -> int:
        """How many of the env's batch dims the primer's spec was given with."""
        env_batch, shape = self._batch_size, self.primers[key].shape
        if self.expand_specs is True or (env_batch is None and self.expand_specs is None):
            return 0
        if env_batch is None:
            raise TransformError(
                "TensorDictPrimer(expand_specs=False) has not seen an env's batch size yet; "
                "use it inside a TransformedEnv"
            )
        n = len(env_batch)
        starts = shape[:n] == env_batch
        if self.expand_specs is False and not starts:
            raise TransformError(
                f"TensorDictPrimer: the primer {key!r} has shape {list(shape)}, which does not "
                f"start with the env's batch size {list(env_batch)} (expand_specs=False); give "
                f"specs with the batch dims, or let them be expanded"
            )
        return n if n and starts else 0

    def _full_spec(self, key: NestedKey, batch: torch.Size, device: torch.device) -> TensorSpec:
        """The primer's spec with ``batch`` leading dims (the env's or a TensorDict's)."""
        cache_key = (key, tuple(batch), device)
        spec = self._spec_cache.get(cache_key)
        if spec is None:
            spec = strip_batch(self.primers[key], self._given_batch_ndim(key)).to(device)
            if len(batch):
                spec = spec.expand(*batch, *spec.shape)
            self._spec_cache[cache_key] = spec
        return spec

    def _fill(self, key: NestedKey, spec: TensorSpec) -> torch.Tensor:
        if self.random:
            return spec.rand()
        value = self.default_value
        if isinstance(value, Mapping):
            value = value.get(key, 0.0)
        return torch.full(spec.shape, value, dtype=spec.dtype, device=spec.device)

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        mask = reset_mask(tensordict)
        batch, device = tensordict_reset.batch_size, tensordict_reset.device
        self._learn_batch_size(batch)  # a reset's output has the env's batch size
        for key in self.primers:
            new = self._fill(key, self._full_spec(key, batch, device))
            # The reset's output carries the current values of the elements not reset.
            tensordict_reset.set(key, where_reset(mask, new, tensordict_reset.get(key, None)))
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        for key in self.primers:
            if next_tensordict.get(key, None) is not None:
                continue
            value = tensordict.get((NEXT, *key_parts(key)), None)
            if value is None:
                value = tensordict.get(key, None)
            if value is None:
                spec = self._full_spec(key, next_tensordict.batch_size, next_tensordict.device)
                value = self._fill(key, spec)
            next_tensordict.set(key, value)
        return next_tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Fill the primers a plain TensorDict lacks (root and ``"next"``) with defaults."""
        levels = [tensordict]
        next_td = tensordict.get(NEXT, None)
        if isinstance(next_td, TensorDictBase):
            levels.append(next_td)
        for level in levels:
            for key in self.primers:
                if level.get(key, None) is None:
                    spec = self._full_spec(key, level.batch_size, level.device)
                    level.set(key, self._fill(key, spec))
        return tensordict

    # ------------------------------------------------------------------ specs
    def _learn_batch_size(self, batch_size: torch.Size) -> None:
        """Record the env's batch size (it tells which primer shapes include it)."""
        if batch_size != self._batch_size:
            self._batch_size = batch_size
            self._spec_cache.clear()

    def _add_primers(self, spec: Composite) -> Composite:
        self._learn_batch_size(spec.shape)
        for key in self.primers:
            spec[key] = self._full_spec(key, spec.shape, spec.device)
        return spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        return self._add_primers(observation_spec)

    def transform_state_spec(self, state_spec: Composite) -> Composite:
        return self._add_primers(state_spec)

    def extra_repr(self) -> str:
        return f"primers={list(self.primers)}, random={self.random}"
