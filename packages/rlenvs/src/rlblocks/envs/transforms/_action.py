"""Discretizing a continuous action space: :class:`ActionDiscretizer`."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

import torch
from tensordict.utils import NestedKey

from rlblocks.core import ACTION
from rlblocks.core.specs import (
    Bounded,
    Categorical,
    MultiCategorical,
    MultiOneHot,
    OneHot,
    TensorSpec,
)
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._common import FeatureTransform, replay_specs, strip_batch

__all__ = ["ActionDiscretizer"]


class SamplingStrategy(enum.IntEnum):
    """Which continuous value an interval index maps to."""

    MEDIAN = 0  #: the interval's center
    LOW = 1  #: its lower end
    HIGH = 2  #: its upper end
    RANDOM = 3  #: a uniform draw within it


_OFFSETS = {SamplingStrategy.MEDIAN: 0.5, SamplingStrategy.LOW: 0.0, SamplingStrategy.HIGH: 1.0}


def _strategy(sampling: Any) -> SamplingStrategy:
    if sampling is None:
        return SamplingStrategy.MEDIAN
    if isinstance(sampling, str) and sampling.upper() in SamplingStrategy.__members__:
        return SamplingStrategy[sampling.upper()]
    try:
        return SamplingStrategy(sampling)
    except ValueError:
        names = [m.name.lower() for m in SamplingStrategy]
        raise TransformError(
            f"ActionDiscretizer: sampling must be one of {names} (or "
            f"ActionDiscretizer.SamplingStrategy), got {sampling!r}"
        ) from None


class ActionDiscretizer(FeatureTransform):
    """Let a discrete policy drive an env with a continuous (``Bounded``) action.

    Each action dim's range ``[low, high]`` is cut into ``num_intervals`` equal intervals;
    the policy picks an interval index per dim, and :meth:`inv` maps it to a continuous
    value in that interval (its center by default). The policy's action spec is a
    ``Categorical`` (``[*batch, *action_shape]``, one index per dim), a ``MultiCategorical``
    when dims have different numbers of intervals, or their one-hot forms with
    ``categorical=False``.

    Args:
        num_intervals: Intervals per dim: one int, or one per entry of the action's last
            dim.
        action_key: The wrapped env's continuous action.
        out_action_key: Where the policy writes its discrete action (default: same key).
        sampling: Where in an interval the continuous value lies: ``"median"`` (default),
            ``"low"``, ``"high"`` or ``"random"`` (or a :attr:`SamplingStrategy`).
        categorical: Indices (``True``) or one-hot vectors (``False``).

    Raises:
        TransformError: A count is not a positive int, ``sampling`` is unknown, or the
            env's action is not a ``Bounded`` float spec with finite bounds that are the
            same for every batch element.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), ActionDiscretizer(5))
        >>> env.action_spec
        Categorical(shape=torch.Size([1]), n=5, dtype=torch.int64, device=cpu)
    """

    SamplingStrategy = SamplingStrategy
    stateless = False  # the random sampling strategy draws at every step

    def __init__(
        self,
        num_intervals: int | Sequence[int] | torch.Tensor,
        action_key: NestedKey = ACTION,
        out_action_key: NestedKey | None = None,
        sampling: Any = None,
        categorical: bool = True,
    ) -> None:
        counts = (
            num_intervals.tolist() if isinstance(num_intervals, torch.Tensor) else num_intervals
        )
        counts_list = [counts] if isinstance(counts, int) else list(counts)
        if not counts_list or any(
            not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in counts_list
        ):
            raise TransformError(
                f"ActionDiscretizer: num_intervals must be a positive int or a sequence of "
                f"them, got {num_intervals!r}"
            )
        super().__init__(
            in_keys_inv=[action_key],
            out_keys_inv=[action_key if out_action_key is None else out_action_key],
        )
        self.num_intervals: int | tuple[int, ...] = (
            counts if isinstance(counts, int) else tuple(counts_list)
        )
        self.sampling = _strategy(sampling)
        self.categorical = categorical
        self.action_key = action_key
        self.out_action_key = self.out_keys_inv[0]
        # Derived from the env's action spec, so not part of the state_dict.
        for name in ("low", "high", "width"):
            self.register_buffer(name, None, persistent=False)
        self._nvec: tuple[int, ...] = ()

    # ------------------------------------------------------------------ specs
    def _inv_apply_spec(self, spec: TensorSpec, batch_ndim: int, key: NestedKey) -> TensorSpec:
        if not isinstance(spec, Bounded) or not spec.dtype.is_floating_point:  # type: ignore[union-attr]
            raise TransformError(
                f"ActionDiscretizer: the env's action {key!r} must be a Bounded float spec, got "
                f"{spec!r}"
            )
        feature = strip_batch(spec, batch_ndim)
        assert isinstance(feature, Bounded)
        low, high = feature.low, feature.high
        if not bool(torch.isfinite(low).all() & torch.isfinite(high).all()):
            raise TransformError(
                f"ActionDiscretizer: the env's action {key!r} has infinite bounds ({spec!r}); "
                f"only a finite range can be cut into intervals"
            )
        if not bool((spec.low == low).all() & (spec.high == high).all()):
            raise TransformError(
                f"ActionDiscretizer: the bounds of {key!r} differ between batch elements; "
                f"discretize each sub-env's action instead"
            )
        shape = feature.shape
        if isinstance(self.num_intervals, int):
            nvec = (self.num_intervals,) * (shape[-1] if len(shape) else 1)
        else:
            if not len(shape) or shape[-1] != len(self.num_intervals):
                raise TransformError(
                    f"ActionDiscretizer: num_intervals has {len(self.num_intervals)} counts, "
                    f"but the action {key!r} has shape {list(shape)}; give one count per "
                    f"entry of its last dim, or one int"
                )
            nvec = self.num_intervals
        self._nvec = nvec
        counts = torch.tensor(nvec, dtype=low.dtype, device=low.device)
        if not len(shape):
            counts = counts.squeeze(0)
        self.low, self.high = low, high
        self.width = (high - low) / counts
        return self._policy_spec(spec)

    def _policy_spec(self, spec: TensorSpec) -> TensorSpec:
        shape, device = spec.shape, spec.device
        if isinstance(self.num_intervals, int):
            n = self.num_intervals
            if self.categorical:
                return Categorical(n, shape=shape, device=device)
            return OneHot(n, shape=(*shape, n), device=device)
        if self.categorical:
            return MultiCategorical(self._nvec, shape=shape, device=device)
        return MultiOneHot(self._nvec, shape=(*shape[:-1], sum(self._nvec)), device=device)

    # ------------------------------------------------------------------ values
    def _indices(self, value: torch.Tensor) -> torch.Tensor:
        if self.categorical:
            return value
        if value.dtype == torch.bool:  # argmax has no bool kernel
            value = value.to(torch.uint8)
        if isinstance(self.num_intervals, int):
            return value.argmax(-1)
        blocks = value.split(list(self._nvec), dim=-1)
        return torch.stack([block.argmax(-1) for block in blocks], -1)

    def _inv_apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        if self.low is None:
            replay_specs(self, self.parent)
            if self.low is None:
                raise TransformError(
                    "ActionDiscretizer has not seen the env's action spec; use it inside a "
                    "TransformedEnv"
                )
        low, width = self.low.to(value.device), self.width.to(value.device)
        high = self.high.to(value.device)
        index = self._indices(value).to(low.dtype)
        if self.sampling == SamplingStrategy.RANDOM:
            offset: torch.Tensor | float = torch.rand_like(index)
        else:
            offset = _OFFSETS[self.sampling]
        # The clamp keeps rounding from stepping past the bounds at the ends.
        return (low + (index + offset) * width).clamp(low, high)

    def extra_repr(self) -> str:
        return (
            f"num_intervals={self.num_intervals}, sampling={self.sampling.name.lower()}, "
            f"categorical={self.categorical}, action_key={self.action_key!r}, "
            f"out_action_key={self.out_action_key!r}"
        )
