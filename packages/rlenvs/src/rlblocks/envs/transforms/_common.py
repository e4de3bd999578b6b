"""Helpers shared by the built-in transforms: spec rebuilding, feature dims and reset masks.

Specs carry the env's batch dims in their shapes (``[*batch, *feature]``) while a
TensorDict handed to a transform may have other leading dims (a trajectory ``[*batch, T]``,
a replay-buffer sample ``[B]``). Transforms therefore address *feature* dims: a negative
dim counts from the last dim, a non-negative one from the first dim after the batch dims
(of the TensorDict, or of the spec's Composite).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey, unravel_key

from rlblocks.core import NEXT, RESET
from rlblocks.core.errors import SpecError
from rlblocks.core.specs import (
    Binary,
    Bounded,
    Categorical,
    Composite,
    MultiCategorical,
    MultiOneHot,
    OneHot,
    TensorSpec,
    Unbounded,
)
from rlblocks.core.utils import check_int
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import Transform

__all__ = [
    "FeatureTransform",
    "as_dim",
    "as_float_buffer",
    "broadcast_flag",
    "cast_spec",
    "feature_dim",
    "hull_spec",
    "key_parts",
    "make_lazy_buffers",
    "map_spec",
    "monotone_spec",
    "positive_int",
    "rebuild_leaf",
    "replay_specs",
    "reset_mask",
    "strip_batch",
    "trajectory_starts",
    "where_reset",
]


# ---------------------------------------------------------------------- specs
def rebuild_leaf(spec: TensorSpec, shape: torch.Size, dtype: torch.dtype) -> TensorSpec:
    """A spec of the same kind as ``spec`` with a new shape and dtype.

    Discrete specs keep their categories when the new shape and dtype allow it (a float
    ``Categorical`` becomes an integer-valued ``Bounded``); anything else becomes
    ``Unbounded``. ``Bounded`` specs need their bounds mapped: use :func:`map_spec`.
    """
    device = spec.device
    integer = not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool
    try:
        if isinstance(spec, Categorical):
            if integer:
                return Categorical(spec.n, shape=shape, dtype=dtype, device=device)
            if dtype.is_floating_point:
                return Bounded(0, spec.n - 1, shape=shape, dtype=dtype, device=device)
        elif isinstance(spec, Binary):
            return Binary(shape=shape, dtype=dtype, device=device)
        elif isinstance(spec, OneHot):
            return OneHot(spec.n, shape=shape, dtype=dtype, device=device)
        elif isinstance(spec, MultiCategorical) and integer:
            return MultiCategorical(spec.nvec, shape=shape, dtype=dtype, device=device)
        elif isinstance(spec, MultiOneHot):
            return MultiOneHot(spec.nvec, shape=shape, dtype=dtype, device=device)
    except SpecError:
        pass  # the new shape breaks the categories (e.g. the one-hot dim moved)
    return Unbounded(shape=shape, dtype=dtype, device=device)


def map_spec(
    spec: TensorSpec,
    fn: Callable[[torch.Tensor], torch.Tensor],
    dtype: torch.dtype | None = None,
) -> TensorSpec:
    """The spec of ``fn(x)`` for ``x`` in ``spec``, for an ``fn`` that moves values around.

    ``fn`` must only copy, drop or rearrange elements (reshape, permute, crop, repeat):
    ``Bounded`` bounds then go through ``fn`` as well, other specs keep their kind.

    Args:
        spec: A leaf spec (full shape, batch dims included).
        fn: The structural edit, applied to tensors of the spec's full shape.
        dtype: The output dtype (default: the spec's).
    """
    dtype = spec.dtype if dtype is None else dtype
    if isinstance(spec, Bounded):
        return Bounded(fn(spec.low), fn(spec.high), dtype=dtype, device=spec.device)
    return rebuild_leaf(spec, fn(spec.zero()).shape, dtype)


def monotone_spec(spec: TensorSpec, fn: Callable[[torch.Tensor], torch.Tensor]) -> TensorSpec:
    """The spec of ``fn(x)`` for an elementwise monotone ``fn`` (affine maps, clamps).

    Bounds are mapped through ``fn`` (swapped where ``fn`` decreases); the dtype is the one
    ``fn`` returns. Unbounded input gives ``fn``'s output range over all reals.
    """
    out = fn(spec.zero())
    if isinstance(spec, Bounded):
        low, high = fn(spec.low.to(out.dtype)), fn(spec.high.to(out.dtype))
    elif out.dtype.is_floating_point:
        inf = torch.full(out.shape, float("inf"), dtype=out.dtype, device=out.device)
        low, high = fn(-inf), fn(inf)
    else:
        return rebuild_leaf(spec, out.shape, out.dtype)
    low, high = torch.minimum(low, high), torch.maximum(low, high)
    if bool(torch.isinf(low).all() & torch.isinf(high).all()):
        return Unbounded(shape=out.shape, dtype=out.dtype, device=spec.device)
    return Bounded(low, high, dtype=out.dtype, device=spec.device)


def cast_spec(spec: TensorSpec, dtype: torch.dtype) -> TensorSpec:
    """``spec`` with values cast to ``dtype`` (bounds cast too)."""
    if spec.dtype == dtype:
        return spec
    if isinstance(spec, Bounded):
        if not dtype.is_floating_point and (dtype == torch.bool or dtype.is_complex):
            return Unbounded(shape=spec.shape, dtype=dtype, device=spec.device)
        return Bounded(spec.low, spec.high, dtype=dtype, device=spec.device)
    return rebuild_leaf(spec, spec.shape, dtype)


def hull_spec(spec: TensorSpec, shape: torch.Size, dtype: torch.dtype) -> TensorSpec:
    """A spec of ``shape`` whose values stay within the overall range of ``spec``.

    For edits that mix elements by convex combinations (interpolation, averaging): each
    output lies between the smallest lower bound and the largest upper bound of the input.
    """
    if isinstance(spec, Bounded) and spec.low.numel():
        return Bounded(
            spec.low.min(), spec.high.max(), shape=shape, dtype=dtype, device=spec.device
        )
    if isinstance(spec, (Binary, OneHot, MultiOneHot)):
        return Bounded(0, 1, shape=shape, dtype=dtype, device=spec.device)
    return Unbounded(shape=shape, dtype=dtype, device=spec.device)


def strip_batch(spec: TensorSpec, batch_ndim: int) -> TensorSpec:
    """``spec`` without its ``batch_ndim`` leading dims (bounds of the first element)."""
    if batch_ndim == 0:
        return spec
    if isinstance(spec, Bounded):
        index = (0,) * batch_ndim
        return Bounded(spec.low[index], spec.high[index], dtype=spec.dtype, device=spec.device)
    return rebuild_leaf(spec, spec.shape[batch_ndim:], spec.dtype)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- values
def positive_int(value: Any, owner: str, name: str) -> int:
    """``value`` if it is a positive int (bools excluded), else a TransformError."""
    return check_int(value, name, owner, error=TransformError)


def require_observations(transform: Transform, observation_spec: Composite) -> None:
    """Raise unless every ``in_keys`` entry of ``transform`` is an observation of the env.

    For transforms whose whole point is to edit those entries (normalization): a key that
    is not there would silently do nothing.
    """
    present = set(observation_spec.keys(True, True))
    missing = [k for k in transform.in_keys if unravel_key(k) not in present]
    if missing:
        raise TransformError(
            f"{type(transform).__name__}: in_keys {missing} are not observations of the env "
            f"it transforms (its observation keys: {sorted(map(str, present))}); pass "
            f"in_keys=[...] naming the entries to normalize"
        )


def as_float_buffer(value: float | torch.Tensor, owner: str, name: str) -> torch.Tensor:
    """``value`` as a finite floating tensor (the default dtype for Python numbers)."""
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TransformError(
            f"{owner}: {name} must be a number or a tensor, got {value!r}"
        ) from err
    if not tensor.dtype.is_floating_point:
        tensor = tensor.to(torch.get_default_dtype())
    if not bool(torch.isfinite(tensor).all()):
        raise TransformError(f"{owner}: {name} must be finite, got {value!r}")
    return tensor.clone()


def make_lazy_buffers(module: torch.nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """Create ``module``'s buffers that are still ``None`` from ``state_dict`` entries.

    Call from ``_load_from_state_dict`` so that statistics computed elsewhere (e.g.
    ``init_stats`` or a training run) load into a fresh transform.
    """
    for name, buffer in list(module._buffers.items()):
        key = prefix + name
        if buffer is None and key in state_dict:
            module.register_buffer(name, torch.empty_like(state_dict[key]))


# ---------------------------------------------------------------------- dims
def as_dim(dim: Any, owner: str, name: str = "dim") -> int:
    """``dim`` as an int (anything with ``__index__`` but bool), else a TransformError."""
    try:
        if isinstance(dim, bool):
            raise TypeError
        return operator.index(dim)
    except TypeError:
        raise TransformError(f"{owner}: {name} must be an int, got {dim!r}") from None


def feature_dim(dim: int, batch_ndim: int, ndim: int, owner: str, key: Any = None) -> int:
    """Turn a feature dim into an absolute dim of a tensor with ``ndim`` dims.

    Args:
        dim: Negative: counted from the last dim; non-negative: counted from the first dim
            after the ``batch_ndim`` leading batch dims.
        batch_ndim: Number of leading batch dims.
        ndim: Number of dims of the tensor ``dim`` indexes.
        owner: Transform name for the error message.
        key: The entry, named in the error message.

    Raises:
        TransformError: ``dim`` falls outside the feature dims.
    """
    features = ndim - batch_ndim
    if -features <= dim < features:
        return dim + ndim if dim < 0 else batch_ndim + dim
    where = f" of {key!r}" if key is not None else ""
    if features <= 0:
        name = repr(key) if key is not None else "the entry"
        raise TransformError(
            f"{owner}: {name} has no feature dims ({ndim} dim(s), all batch dims), so dim "
            f"{dim} does not exist"
        )
    raise TransformError(
        f"{owner}: dim {dim} is not a feature dim{where}, which has {features} feature "
        f"dim(s) after {batch_ndim} batch dim(s); use a dim in [{-features}, {features - 1}] "
        f"(negative dims count from the last dim)"
    )


# ---------------------------------------------------------------------- resets and trajectories
def reset_mask(tensordict: TensorDictBase | None) -> torch.Tensor | None:
    """The ``"_reset"`` mask of a reset's input, or ``None`` for a full reset."""
    if tensordict is None:
        return None
    return tensordict.get(RESET, None)


def broadcast_flag(flag: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An env-level ``[*batch, 1]`` tensor viewed with ``like``'s agent dims as singletons.

    Per-agent entries of a multi-agent env are ``[*batch, *agents, *feature]``; the view is
    ``[*batch, 1, ..., 1]`` with ``like.ndim`` dims, ready to broadcast against ``like``.
    """
    extra = like.ndim - flag.ndim
    return flag if extra <= 0 else flag.reshape(*flag.shape[:-1], *([1] * (extra + 1)))


def where_reset(
    mask: torch.Tensor | None, new: torch.Tensor, old: torch.Tensor | None
) -> torch.Tensor:
    """``new`` where ``mask`` (``[*batch, 1]``) is set, ``old`` elsewhere.

    ``new`` and ``old`` have shape ``[*batch, *feature]``; ``mask=None`` (a full reset) or a
    missing or differently shaped ``old`` gives ``new``.
    """
    if mask is None or old is None or old.shape != new.shape:
        return new
    return torch.where(broadcast_flag(mask, new), new, old)


def trajectory_starts(tensordict: TensorDictBase, done_key: NestedKey) -> torch.Tensor:
    """Which steps of a trajectory start an episode (``[*batch, T]`` bool, time last).

    The first step does, and every step after one whose ``("next", done_key)`` flag is
    set; without the flags only the first step does.
    """
    batch = tensordict.batch_size
    starts = torch.zeros(batch, dtype=torch.bool, device=tensordict.device)
    starts[..., 0] = True
    done = tensordict.get((NEXT, *key_parts(done_key)), None)
    if done is not None:
        starts[..., 1:] = done.reshape(batch)[..., :-1]
    return starts


def key_parts(key: NestedKey) -> tuple[str, ...]:
    """A nested key as a tuple of strings (``"a"`` -> ``("a",)``)."""
    return (key,) if isinstance(key, str) else tuple(key)


# ---------------------------------------------------------------------- specs seen through an env
def replay_specs(transform: Transform, env: EnvBase | None) -> None:
    """Show ``transform`` the specs of ``env`` (its parent), in ``TransformedEnv``'s order.

    Transforms that find their keys from the specs call this when they are used before the
    enclosing env computed its specs (e.g. ``env.reset()`` right after construction).
    """
    if env is None:
        return
    transform.transform_reward_spec(env.full_reward_spec.clone())
    transform.transform_done_spec(env.full_done_spec.clone())
    transform.transform_action_spec(env.full_action_spec.clone())
    transform.transform_state_spec(env.full_state_spec.clone())
    transform.transform_observation_spec(env.full_observation_spec.clone())


# ---------------------------------------------------------------------- base class
class FeatureTransform(Transform):
    """A per-key transform whose edit needs to know how many leading dims are batch dims.

    Subclasses implement :meth:`_apply` (and :meth:`_inv_apply` for actions) and, when the
    edit changes shape, dtype or bounds, :meth:`_apply_spec` / :meth:`_inv_apply_spec`.
    The batch dims are the TensorDict's (``td.batch_dims``) when values are edited and the
    Composite's (``spec.shape``) when specs are.
    """

    stateless = True

    def _apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement _apply")

    def _inv_apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no inverse (in_keys_inv)")

    def _apply_spec(self, spec: TensorSpec, batch_ndim: int, key: NestedKey) -> TensorSpec:
        """Default: the shape and dtype of ``_apply`` on a zero value, same kind of spec."""
        return map_spec(spec, lambda t: self._apply(t, batch_ndim, key))

    def _inv_apply_spec(self, spec: TensorSpec, batch_ndim: int, key: NestedKey) -> TensorSpec:
        """Spec the policy writes (``out_keys_inv``) for a wrapped env's spec ``spec``."""
        return spec

    def _apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        # A bare tensor has no batch dims: every dim is a feature dim.
        return self._apply(value, 0, None)

    def _inv_apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        return self._inv_apply(value, 0, None)

    def _has_inv(self) -> bool:
        # _inv_call edits only the in_keys_inv entries: without them a step needs no copy.
        cls = type(self)
        return (
            bool(self.in_keys_inv)
            or cls.inv is not Transform.inv
            or cls._inv_call is not FeatureTransform._inv_call
        )

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        nb = tensordict.batch_dims
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            value = tensordict.get(in_key, None)
            if value is not None:
                tensordict.set(out_key, self._apply(value, nb, in_key))
        return tensordict

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        nb = tensordict.batch_dims
        for in_key, out_key in zip(self.in_keys_inv, self.out_keys_inv):
            value = tensordict.get(out_key, None)
            if value is not None:
                tensordict.set(in_key, self._inv_apply(value, nb, out_key))
        return tensordict

    def _transform_keys_spec(self, spec: Composite) -> Composite:
        nb = len(spec.shape)
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            leaf = spec.get(in_key, None)
            if leaf is not None:
                spec[out_key] = self._apply_spec(leaf, nb, in_key)
        return spec

    def _transform_inv_keys_spec(self, spec: Composite) -> Composite:
        nb = len(spec.shape)
        for in_key, out_key in zip(self.in_keys_inv, self.out_keys_inv):
            leaf = spec.get(in_key, None)
            if leaf is not None:
                if out_key != in_key:
                    del spec[in_key]
                spec[out_key] = self._inv_apply_spec(leaf, nb, in_key)
        return spec
