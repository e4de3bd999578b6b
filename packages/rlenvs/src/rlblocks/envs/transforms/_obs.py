"""Reshaping observations: :class:`UnsqueezeTransform`, :class:`SqueezeTransform`,
:class:`FlattenObservation` and :class:`CatTensors`.

Dims are feature dims: negative dims count from the last dim, non-negative ones from the
first dim after the batch dims (of the env, or of the TensorDict given to the transform), so
the same transform works on env outputs, rollouts ``[*batch, T]`` and replay samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core.specs import Bounded, Composite, TensorSpec, Unbounded
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import Transform, as_key_list
from rlblocks.envs.transforms._common import (
    FeatureTransform,
    as_dim,
    feature_dim,
    key_parts,
    map_spec,
)

__all__ = ["UnsqueezeTransform", "SqueezeTransform", "FlattenObservation", "CatTensors"]


class UnsqueezeTransform(FeatureTransform):
    """Insert a feature dim of size 1 (and remove it from actions through :meth:`inv`).

    Args:
        dim: Where the new dim goes in the output: negative counts from the last dim
            (``-1`` appends one), non-negative from the first dim after the batch dims.
        in_keys: Entries to unsqueeze.
        out_keys: Where to write (default: ``in_keys``).
        in_keys_inv: Entries of the wrapped env (e.g. its action) that the policy writes
            with the extra dim; :meth:`inv` squeezes it out.
        out_keys_inv: The keys the policy writes (default: ``in_keys_inv``).

    Raises:
        TransformError: ``dim`` is not an int, no keys are given, or (when applied) ``dim``
            falls outside the feature dims.

    Example:
        >>> env = TransformedEnv(PendulumEnv(batch_size=[4]), UnsqueezeTransform(-2, "observation"))
        >>> env.reset()["observation"].shape
        torch.Size([4, 1, 3])
    """

    def __init__(
        self,
        dim: int,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        in_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
        out_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        name = type(self).__name__
        self.dim = as_dim(dim, name)
        if not as_key_list(in_keys) and not as_key_list(in_keys_inv):
            raise TransformError(
                f"{name}: give the entries to edit, e.g. {name}({dim}, in_keys=['observation'])"
            )
        super().__init__(in_keys, out_keys, in_keys_inv, out_keys_inv)

    def _unsqueeze(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        dim = feature_dim(self.dim, batch_ndim, value.ndim + 1, type(self).__name__, key)
        return value.unsqueeze(dim)

    def _squeeze(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        dim = feature_dim(self.dim, batch_ndim, value.ndim, type(self).__name__, key)
        if value.shape[dim] != 1:
            raise TransformError(
                f"{type(self).__name__}: cannot squeeze dim {self.dim} of {key!r}: it has size "
                f"{value.shape[dim]} (shape {list(value.shape)}, {batch_ndim} batch dim(s)); "
                f"only a dim of size 1 can be removed"
            )
        return value.squeeze(dim)

    def _apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        return self._unsqueeze(value, batch_ndim, key)

    def _inv_apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        return self._squeeze(value, batch_ndim, key)

    def _inv_apply_spec(self, spec: TensorSpec, batch_ndim: int, key: NestedKey) -> TensorSpec:
        # The policy writes what inv() turns into the env's spec: the forward edit of it.
        return map_spec(spec, lambda t: self._apply(t, batch_ndim, key))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, {super().extra_repr()}"


class SqueezeTransform(UnsqueezeTransform):
    """Remove a feature dim of size 1 (and add it back to actions through :meth:`inv`).

    Args:
        dim: The dim to remove: negative counts from the last dim, non-negative from the
            first dim after the batch dims. It must have size 1.
        in_keys: Entries to squeeze.
        out_keys: Where to write (default: ``in_keys``).
        in_keys_inv: Entries of the wrapped env that the policy writes without the dim;
            :meth:`inv` inserts it.
        out_keys_inv: The keys the policy writes (default: ``in_keys_inv``).

    Raises:
        TransformError: As :class:`UnsqueezeTransform`, and when the dim has another size
            than 1 (in the specs or in a value).

    Example:
        >>> env = TransformedEnv(PendulumEnv(), SqueezeTransform(-1, in_keys=["reward"]))
        >>> env.reward_spec.shape
        torch.Size([])
    """

    def _apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        return self._squeeze(value, batch_ndim, key)

    def _inv_apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        return self._unsqueeze(value, batch_ndim, key)


class FlattenObservation(FeatureTransform):
    """Merge the feature dims ``first_dim`` to ``last_dim`` (inclusive) into one.

    Args:
        first_dim: First dim to merge (negative: from the last dim; non-negative: from the
            first dim after the batch dims).
        last_dim: Last dim to merge, same convention.
        in_keys: Entries to flatten (default: ``"pixels"``).
        out_keys: Where to write (default: ``in_keys``).

    Raises:
        TransformError: A dim is not an int, falls outside the feature dims, or
            ``first_dim`` comes after ``last_dim``.

    Example:
        >>> t = FlattenObservation(-3, -1, in_keys=["pixels"])
        >>> t(TensorDict(pixels=torch.zeros(8, 3, 4, 4), batch_size=[8]))["pixels"].shape
        torch.Size([8, 48])
    """

    def __init__(
        self,
        first_dim: int,
        last_dim: int,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        self.first_dim = as_dim(first_dim, "FlattenObservation", "first_dim")
        self.last_dim = as_dim(last_dim, "FlattenObservation", "last_dim")
        if (first_dim < 0) == (last_dim < 0) and first_dim > last_dim:
            raise TransformError(
                f"FlattenObservation: first_dim ({first_dim}) must not come after last_dim "
                f"({last_dim})"
            )
        super().__init__(in_keys=as_key_list(in_keys) or ["pixels"], out_keys=out_keys)

    def _apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        first = feature_dim(self.first_dim, batch_ndim, value.ndim, "FlattenObservation", key)
        last = feature_dim(self.last_dim, batch_ndim, value.ndim, "FlattenObservation", key)
        if first > last:
            raise TransformError(
                f"FlattenObservation: first_dim {self.first_dim} comes after last_dim "
                f"{self.last_dim} for {key!r} of shape {list(value.shape)} "
                f"({batch_ndim} batch dim(s))"
            )
        return value.flatten(first, last)

    def extra_repr(self) -> str:
        return f"first_dim={self.first_dim}, last_dim={self.last_dim}, {super().extra_repr()}"


class CatTensors(Transform):
    """Concatenate several entries into one, e.g. a dict observation into a vector.

    Entries without feature dims (shape ``[*batch]``) get a trailing dim of size 1 first
    when ``unsqueeze_if_needed``. The result has the promoted dtype of the inputs; its spec
    is ``Bounded`` when every input is bounded, else ``Unbounded``.

    Args:
        in_keys: The entries to concatenate (at least one).
        out_key: Where to write the result.
        dim: The feature dim to concatenate along (negative: from the last dim).
        del_keys: Remove the inputs afterwards. Inputs the env reads back as state (its
            state spec) are kept, so the env can still step.
        unsqueeze_if_needed: Give entries without feature dims a trailing dim of size 1.
        sort: Concatenate in sorted key order (so the order does not depend on how the
            keys were listed).

    Raises:
        TransformError: ``in_keys`` is empty, or (when applied) only some inputs are present
            or their shapes do not fit together.

    Example:
        >>> t = CatTensors(["a", "b"], out_key="observation_vector")
        >>> td = t(TensorDict(a=torch.zeros(4, 2), b=torch.ones(4, 3), batch_size=[4]))
        >>> td["observation_vector"].shape
        torch.Size([4, 5])
    """

    stateless = True

    def __init__(
        self,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_key: NestedKey = "observation_vector",
        dim: int = -1,
        *,
        del_keys: bool = True,
        unsqueeze_if_needed: bool = True,
        sort: bool = True,
    ) -> None:
        keys = as_key_list(in_keys)
        if not keys:
            raise TransformError(
                "CatTensors: in_keys must name the entries to concatenate, e.g. "
                "CatTensors(['position', 'velocity'], out_key='observation_vector')"
            )
        if sort:
            keys = sorted(keys, key=key_parts)
        super().__init__(in_keys=keys, out_keys=[out_key] * len(keys))
        self.out_key = out_key
        self.dim = as_dim(dim, "CatTensors")
        self.del_keys = del_keys
        self.unsqueeze_if_needed = unsqueeze_if_needed
        self._kept: set[NestedKey] = set()  # inputs the env reads back (its state)

    def _cat(self, values: list[torch.Tensor], batch_ndim: int) -> torch.Tensor:
        if self.unsqueeze_if_needed:
            values = [v.unsqueeze(-1) if v.ndim == batch_ndim else v for v in values]
        ndims = {v.ndim for v in values}
        if len(ndims) != 1:
            raise TransformError(
                f"CatTensors: the entries {self.in_keys} have different numbers of dims "
                f"({[list(v.shape) for v in values]}); make them match (e.g. with "
                f"UnsqueezeTransform) before concatenating"
            )
        dim = feature_dim(self.dim, batch_ndim, ndims.pop(), "CatTensors")
        try:
            return torch.cat(values, dim)
        except RuntimeError as err:
            raise TransformError(
                f"CatTensors: cannot concatenate {self.in_keys} along dim {self.dim}: shapes "
                f"{[list(v.shape) for v in values]} differ in another dim"
            ) from err

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        values = [tensordict.get(key, None) for key in self.in_keys]
        present = [v is not None for v in values]
        if not any(present):
            return tensordict
        if not all(present):
            missing = [k for k, p in zip(self.in_keys, present) if not p]
            raise TransformError(
                f"CatTensors: the TensorDict has only some of the entries to concatenate; "
                f"missing {missing} of {self.in_keys}"
            )
        tensordict.set(self.out_key, self._cat(values, tensordict.batch_dims))  # type: ignore[arg-type]
        if self.del_keys:
            for key in self.in_keys:
                if key != self.out_key and key not in self._kept:
                    del tensordict[key]
        return tensordict

    def transform_state_spec(self, state_spec: Composite) -> Composite:
        self._kept = set(state_spec.keys(include_nested=True, leaves_only=True))
        return state_spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        leaves = [observation_spec.get(key, None) for key in self.in_keys]
        if all(leaf is None for leaf in leaves):
            return observation_spec
        missing = [k for k, leaf in zip(self.in_keys, leaves) if leaf is None]
        if missing:
            raise TransformError(
                f"CatTensors: {missing} are not observations of the env (observations: "
                f"{observation_spec.keys(include_nested=True, leaves_only=True)}); fix in_keys"
            )
        nb = len(observation_spec.shape)
        specs: list[TensorSpec] = leaves  # type: ignore[assignment]
        out = self._cat([s.zero() for s in specs], nb)
        if all(isinstance(s, Bounded) for s in specs):
            low = self._cat([s.low.to(out.dtype) for s in specs], nb)  # type: ignore[attr-defined]
            high = self._cat([s.high.to(out.dtype) for s in specs], nb)  # type: ignore[attr-defined]
            spec: TensorSpec = Bounded(low, high, dtype=out.dtype, device=observation_spec.device)
        else:
            spec = Unbounded(shape=out.shape, dtype=out.dtype, device=observation_spec.device)
        if self.del_keys:
            for key in self.in_keys:
                if key != self.out_key and key not in self._kept:
                    del observation_spec[key]
        observation_spec[self.out_key] = spec
        return observation_spec

    def extra_repr(self) -> str:
        return (
            f"in_keys={self.in_keys}, out_key={self.out_key!r}, dim={self.dim}, "
            f"del_keys={self.del_keys}"
        )
