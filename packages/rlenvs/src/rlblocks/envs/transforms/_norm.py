"""Observation normalization: :class:`ObservationNorm` (fixed statistics) and
:class:`VecNorm` (running statistics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import OBSERVATION
from rlblocks.core.specs import Composite, TensorSpec, Unbounded
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import Transform, as_key_list
from rlblocks.envs.transforms._common import (
    as_float_buffer,
    make_lazy_buffers,
    monotone_spec,
    positive_int,
    require_observations,
    reset_mask,
    where_reset,
)

__all__ = ["ObservationNorm", "VecNorm"]


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _dims(dims: int | Sequence[int], ndim: int) -> list[int]:
    """Non-negative dims of a tensor with ``ndim`` dims."""
    dims = [dims] if isinstance(dims, int) else list(dims)
    out = sorted({d + ndim if d < 0 else d for d in dims})
    if any(not 0 <= d < ndim for d in out):
        raise TransformError(
            f"ObservationNorm.init_stats: dims {dims} do not fit the collected data, which has "
            f"{ndim} dims"
        )
    return out


class ObservationNorm(Transform):
    """Normalize observations with fixed statistics: ``obs * scale + loc``.

    With ``standard_normal=True`` the map is ``(obs - loc) / scale`` instead. ``loc`` and
    ``scale`` are given, computed from the env with :meth:`init_stats`, or loaded with
    ``load_state_dict``. Through :meth:`inv`, ``in_keys_inv`` entries are mapped back
    (e.g. a normalized state that the env reads).

    Args:
        loc: Shift (number or tensor broadcastable to the observation's feature shape);
            ``None`` with ``scale=None`` to compute both with :meth:`init_stats`.
        scale: Factor (nonzero).
        in_keys: Observations to normalize (default: ``"observation"``).
        out_keys: Where to write (default: ``in_keys``).
        in_keys_inv: Entries of the wrapped env that the policy writes normalized.
        out_keys_inv: The keys the policy writes (default: ``in_keys_inv``).
        standard_normal: Use ``(obs - loc) / scale``.
        eps: Smallest standard deviation :meth:`init_stats` divides by.

    Raises:
        TransformError: Only one of ``loc`` and ``scale`` is given, one is not finite,
            ``scale`` has a zero, or the transform is applied before it has statistics.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), ObservationNorm(standard_normal=True))
        >>> env.transform[0].init_stats(num_iter=1000)
        >>> env.transform[0].loc.shape  # one mean per observation entry
        torch.Size([3])
    """

    stateless = True

    def __init__(
        self,
        loc: float | torch.Tensor | None = None,
        scale: float | torch.Tensor | None = None,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        in_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
        out_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
        standard_normal: bool = False,
        eps: float = 1e-6,
    ) -> None:
        if (loc is None) != (scale is None):
            raise TransformError(
                "ObservationNorm: give both loc and scale, or neither and call init_stats()"
            )
        super().__init__(as_key_list(in_keys) or [OBSERVATION], out_keys, in_keys_inv, out_keys_inv)
        self.standard_normal = standard_normal
        self.eps = eps
        self.register_buffer("loc", None)
        self.register_buffer("scale", None)
        if loc is not None and scale is not None:
            self.set_stats(loc, scale)

    @property
    def initialized(self) -> bool:
        """Whether ``loc`` and ``scale`` are set."""
        return self.loc is not None and self.scale is not None

    def set_stats(self, loc: float | torch.Tensor, scale: float | torch.Tensor) -> None:
        """Set ``loc`` and ``scale`` (and refresh the enclosing env's specs).

        Raises:
            TransformError: A value is not finite or ``scale`` has a zero.
        """
        loc_t = as_float_buffer(loc, "ObservationNorm", "loc")
        scale_t = as_float_buffer(scale, "ObservationNorm", "scale")
        if bool((scale_t == 0).any()):
            raise TransformError(f"ObservationNorm: scale must be nonzero, got {scale!r}")
        self.loc, self.scale = loc_t, scale_t
        self._invalidate_specs()

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.loc is None or self.scale is None:
            raise TransformError(
                "ObservationNorm has no statistics yet: pass loc and scale, call "
                "init_stats(num_iter) once it is in a TransformedEnv, or load_state_dict()"
            )
        # .to() is free when the buffers already live on the observation's device.
        return self.loc.to(device), self.scale.to(device)

    def _apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        loc, scale = self._stats(value.device)
        if self.standard_normal:
            return (value - loc) / scale
        return value * scale + loc

    def _inv_apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        loc, scale = self._stats(value.device)
        if self.standard_normal:
            return value * scale + loc
        return (value - loc) / scale

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        tensordict_reset = self._call(tensordict_reset)
        mask = reset_mask(tensordict)
        if mask is None or tensordict is None:
            return tensordict_reset
        # An entry normalized both ways (a state the env reads) reached the wrapped env
        # through inv(), and came back for the elements not reset; the round trip is exact
        # only up to rounding, so those elements get their values back bit for bit.
        back = dict(zip(self.in_keys_inv, self.out_keys_inv))
        for key, out_key in zip(self.in_keys, self.out_keys):
            value = tensordict_reset.get(out_key, None)
            if back.get(key) == out_key and value is not None:
                current = tensordict.get(out_key, None)
                tensordict_reset.set(out_key, where_reset(mask, value, current))
        return tensordict_reset

    def _apply_transform_spec(self, spec: TensorSpec) -> TensorSpec:
        if not self.initialized:
            # Statistics come later (init_stats refreshes the specs): shape and dtype only.
            dtype = _float_dtype(spec.dtype)  # type: ignore[arg-type]
            return Unbounded(shape=spec.shape, dtype=dtype, device=spec.device)
        return monotone_spec(spec, self._apply_transform)

    def _inv_apply_transform_spec(self, spec: TensorSpec) -> TensorSpec:
        # The policy writes normalized values, which inv() maps into the env's spec.
        return self._apply_transform_spec(spec)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        require_observations(self, observation_spec)
        return super().transform_observation_spec(observation_spec)

    def init_stats(
        self,
        num_iter: int,
        reduce_dim: int | Sequence[int] = 0,
        cat_dim: int | None = None,
        key: NestedKey | None = None,
        keep_dims: Sequence[int] | None = None,
    ) -> None:
        """Compute ``loc`` and ``scale`` from random-action rollouts of the env.

        Rollouts of up to ``num_iter`` steps are run until ``num_iter`` frames (elements of
        the rollouts' batches) are collected; their ``key`` entries are concatenated along
        ``cat_dim``, and the mean and standard deviation taken over ``reduce_dim``. Then
        ``loc``/``scale`` are set so that the output has zero mean and unit variance.

        Args:
            num_iter: Number of frames to collect.
            reduce_dim: Dim(s) of the collected data to average over. A rollout of an
                unbatched env is ``[T, *feature]`` (use ``0``); one of a batched env is
                ``[*batch, T, *feature]`` (use e.g. ``(0, 1)`` with ``cat_dim=1``).
            cat_dim: Dim along which rollouts are concatenated (default: ``reduce_dim``
                when it is an int).
            key: The entry to compute statistics for (default: the only ``in_keys`` key).
            keep_dims: Reduced dims to keep with size 1 (the others are removed).

        Raises:
            TransformError: The transform is not in a TransformedEnv, ``key`` is ambiguous,
                or the dims do not fit the data.
        """
        parent = self.parent
        if parent is None:
            raise TransformError(
                "ObservationNorm.init_stats needs the transform inside a TransformedEnv (it "
                "runs the env to collect observations)"
            )
        positive_int(num_iter, "ObservationNorm.init_stats", "num_iter")
        if key is None:
            if len(self.in_keys) != 1:
                raise TransformError(
                    f"ObservationNorm.init_stats: the transform has {len(self.in_keys)} "
                    f"in_keys ({self.in_keys}); say which one with key=..."
                )
            key = self.in_keys[0]
        if cat_dim is None:
            if not isinstance(reduce_dim, int):
                raise TransformError(
                    "ObservationNorm.init_stats: give cat_dim when reduce_dim is not an int"
                )
            cat_dim = reduce_dim
        data, frames = [], 0
        while frames < num_iter:
            rollout = parent.rollout(max_steps=num_iter)
            frames += rollout.numel()
            data.append(rollout.get(key))
        (cat,) = _dims(cat_dim, data[0].ndim)
        stacked = torch.cat(data, cat).to(_float_dtype(data[0].dtype))
        dims = _dims(reduce_dim, stacked.ndim)
        loc = stacked.mean(dims, keepdim=True)
        std = stacked.std(dims, keepdim=True, correction=0).clamp_min(self.eps)
        keep = set(_dims(keep_dims, stacked.ndim)) if keep_dims is not None else set()
        for dim in reversed(dims):
            if dim not in keep:
                loc, std = loc.squeeze(dim), std.squeeze(dim)
        if self.standard_normal:
            self.set_stats(loc, std)
        else:
            self.set_stats(-loc / std, 1 / std)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        make_lazy_buffers(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._invalidate_specs()

    def extra_repr(self) -> str:
        stats = "initialized" if self.initialized else "no statistics yet"
        return f"standard_normal={self.standard_normal}, {stats}, {super().extra_repr()}"


class VecNorm(Transform):
    """Normalize observations with running estimates of their mean and variance.

    Every reset and step output updates the statistics (unless frozen), then the entries
    are normalized: ``(obs - mean) / sqrt(max(var, eps))``. Each update weighs the old
    statistics by ``decay`` (an exponential moving estimate over roughly ``1 / (1 - decay)``
    updates); ``decay=None`` keeps exact counts, i.e. the mean and variance of everything
    seen. A batched env contributes all its elements to one update, and a partial reset
    only the elements it resets. Updates are in place, so after ``share_memory()`` copies
    of the transform in other processes update the same statistics.

    Applied to a plain TensorDict (e.g. replay-buffer samples), VecNorm normalizes with the
    current statistics and does not update them. The statistics are buffers: they follow
    ``.to(device)`` and round-trip through ``state_dict()``/``load_state_dict()``.

    Args:
        in_keys: Observations to normalize (default: ``"observation"``).
        out_keys: Where to write (default: ``in_keys``).
        decay: Weight of the old statistics at each update, in ``(0, 1]``; ``None`` or 1:
            exact running statistics.
        eps: Smallest variance divided by.
        shapes: Feature shapes of the entries, to create the statistics now (e.g. before
            ``share_memory()``); by default they are created from the env's specs or the
            first data.
        frozen: Start frozen (statistics not updated).

    Raises:
        TransformError: ``decay`` or ``eps`` is out of range, ``shapes`` does not match
            ``in_keys``, or the transform normalizes before it has statistics.

    Example:
        >>> env = TransformedEnv(PendulumEnv(batch_size=[16]), VecNorm(decay=None))
        >>> _ = env.rollout(200)
        >>> state = env.transform[0].state_dict()
        >>> eval_norm = VecNorm(decay=None, frozen=True)
        >>> eval_norm.load_state_dict(state)
    """

    def __init__(
        self,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        *,
        decay: float | None = 0.9999,
        eps: float = 1e-4,
        shapes: Sequence[Sequence[int]] | None = None,
        frozen: bool = False,
    ) -> None:
        super().__init__(as_key_list(in_keys) or [OBSERVATION], out_keys)
        if decay is not None and not (isinstance(decay, (int, float)) and 0 < decay <= 1):
            raise TransformError(f"VecNorm: decay must be in (0, 1] or None, got {decay!r}")
        if not isinstance(eps, (int, float)) or eps <= 0:
            raise TransformError(f"VecNorm: eps must be a positive number, got {eps!r}")
        self.decay = 1.0 if decay is None else float(decay)
        self.eps = float(eps)
        self.frozen = frozen
        for i in range(len(self.in_keys)):
            for name in ("loc", "var", "count"):
                self.register_buffer(f"{name}_{i}", None)
        if shapes is not None:
            if len(shapes) != len(self.in_keys):
                raise TransformError(
                    f"VecNorm: give one shape per in_key, got {len(shapes)} shapes for "
                    f"in_keys {self.in_keys}"
                )
            for i, shape in enumerate(shapes):
                self._create(i, torch.Size(shape), torch.get_default_dtype(), None)

    # ------------------------------------------------------------------ modes
    def freeze(self) -> VecNorm:
        """Stop updating the statistics; returns ``self``."""
        self.frozen = True
        return self

    def unfreeze(self) -> VecNorm:
        """Resume updating the statistics; returns ``self``."""
        self.frozen = False
        return self

    def frozen_copy(self) -> VecNorm:
        """A detached, frozen copy (e.g. for an evaluation env), statistics copied."""
        copy = self.clone()
        copy.frozen = True
        return copy

    # ------------------------------------------------------------------ statistics
    def _get(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        loc = getattr(self, f"loc_{i}")
        if loc is None:
            return None
        return loc, getattr(self, f"var_{i}"), getattr(self, f"count_{i}")

    def _create(
        self, i: int, shape: torch.Size, dtype: torch.dtype, device: torch.device | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = _float_dtype(dtype)
        setattr(self, f"loc_{i}", torch.zeros(shape, dtype=dtype, device=device))
        setattr(self, f"var_{i}", torch.ones(shape, dtype=dtype, device=device))
        setattr(self, f"count_{i}", torch.zeros((), dtype=dtype, device=device))
        return self._get(i)  # type: ignore[return-value]

    def _update(self, i: int, x: torch.Tensor) -> None:
        """Merge the samples ``x`` (``[n, *feature]``) into the statistics, in place."""
        loc, var, count = self._get(i)  # type: ignore[misc]
        n = x.shape[0]
        if n == 0:
            return
        x = x.to(loc.dtype)
        # Chan et al.'s merge of two (weighted) sets of samples: numerically stable, and
        # exact when decay == 1.
        batch_mean = x.mean(0)
        batch_var = x.var(0, correction=0) if n > 1 else torch.zeros_like(batch_mean)
        old = count * self.decay
        total = old + n
        delta = batch_mean - loc
        new_var = (old * var + n * batch_var + delta.square() * (old * n / total)) / total
        loc.add_(delta * (n / total))
        var.copy_(new_var)
        count.copy_(total)

    def _process(
        self, tensordict: TensorDictBase, update: bool, mask: torch.Tensor | None = None
    ) -> TensorDictBase:
        nb = tensordict.batch_dims
        for i, (in_key, out_key) in enumerate(zip(self.in_keys, self.out_keys)):
            value = tensordict.get(in_key, None)
            if value is None:
                continue
            stats = self._get(i)
            feature = value.shape[nb:]
            if stats is None:
                if not update:
                    raise TransformError(
                        f"VecNorm has no statistics for {in_key!r} yet: run it in an env, "
                        f"pass shapes=..., or load_state_dict() from a trained one"
                    )
                stats = self._create(i, feature, value.dtype, value.device)
            loc, var, _ = stats
            if feature != loc.shape:
                raise TransformError(
                    f"VecNorm: {in_key!r} has feature shape {list(feature)} (shape "
                    f"{list(value.shape)}, {nb} batch dim(s)), but its statistics have shape "
                    f"{list(loc.shape)}; fix shapes=... or the loaded state_dict"
                )
            if update and not self.frozen:
                rows = value.reshape(-1, *feature)
                self._update(i, rows if mask is None else rows[mask.reshape(-1)])
            tensordict.set(out_key, (value - loc) * var.clamp_min(self.eps).rsqrt())
        return tensordict

    # ------------------------------------------------------------------ transform API
    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self._process(tensordict, update=False)

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        # Elements not reset were counted when they were stepped: only count the new ones.
        return self._process(tensordict_reset, update=True, mask=reset_mask(tensordict))

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._process(next_tensordict, update=True)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        require_observations(self, observation_spec)
        nb = len(observation_spec.shape)
        for i, (in_key, out_key) in enumerate(zip(self.in_keys, self.out_keys)):
            leaf = observation_spec.get(in_key, None)
            if leaf is None:
                continue
            stats = self._get(i)
            if stats is None:
                stats = self._create(i, leaf.shape[nb:], leaf.dtype, leaf.device)
            observation_spec[out_key] = Unbounded(
                shape=leaf.shape, dtype=stats[0].dtype, device=observation_spec.device
            )
        return observation_spec

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        make_lazy_buffers(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        decay = "exact" if self.decay == 1.0 else self.decay
        return f"decay={decay}, eps={self.eps}, frozen={self.frozen}, {super().extra_repr()}"
