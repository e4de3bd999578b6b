"""Reward edits: :class:`RewardScaling`, :class:`RewardClipping` and :class:`SignTransform`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.utils import NestedKey

from rlblocks.core import REWARD
from rlblocks.core.specs import TensorSpec
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import Transform, as_key_list
from rlblocks.envs.transforms._common import as_float_buffer, monotone_spec

__all__ = ["RewardScaling", "RewardClipping", "SignTransform"]


class RewardScaling(Transform):
    """Apply an affine map to the reward: ``reward * scale + loc``.

    With ``standard_normal=True`` the map is ``(reward - loc) / scale`` instead, so ``loc``
    and ``scale`` can be a reward mean and standard deviation.

    Args:
        loc: Shift (a number or a tensor broadcastable to the reward's feature shape).
        scale: Factor (nonzero everywhere).
        in_keys: Reward key(s) to edit (default: ``"reward"``).
        out_keys: Where to write (default: ``in_keys``, in place).
        standard_normal: Use ``(reward - loc) / scale``.

    Raises:
        TransformError: ``loc`` or ``scale`` is not finite, or ``scale`` has a zero.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), RewardScaling(loc=8.0, scale=0.125))
        >>> env.reward_spec.dtype
        torch.float32
    """

    stateless = True

    def __init__(
        self,
        loc: float | torch.Tensor,
        scale: float | torch.Tensor,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        standard_normal: bool = False,
    ) -> None:
        super().__init__(in_keys=as_key_list(in_keys) or [REWARD], out_keys=out_keys)
        self.register_buffer("loc", as_float_buffer(loc, "RewardScaling", "loc"))
        self.register_buffer("scale", as_float_buffer(scale, "RewardScaling", "scale"))
        if bool((self.scale == 0).any()):
            raise TransformError(
                f"RewardScaling: scale must be nonzero (a zero would erase the reward), got "
                f"{scale!r}"
            )
        self.standard_normal = standard_normal

    def _apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        # .to() is free when the buffers already live on the reward's device.
        loc, scale = self.loc.to(value.device), self.scale.to(value.device)
        if self.standard_normal:
            return (value - loc) / scale
        return value * scale + loc

    def _apply_transform_spec(self, spec: TensorSpec) -> TensorSpec:
        return monotone_spec(spec, self._apply_transform)

    def extra_repr(self) -> str:
        return (
            f"loc={self.loc}, scale={self.scale}, standard_normal={self.standard_normal}, "
            f"{super().extra_repr()}"
        )


class RewardClipping(Transform):
    """Clamp the reward to ``[clamp_min, clamp_max]``.

    Args:
        clamp_min: Lower limit (``None``: no lower limit).
        clamp_max: Upper limit (``None``: no upper limit).
        in_keys: Reward key(s) to edit (default: ``"reward"``).
        out_keys: Where to write (default: ``in_keys``, in place).

    Raises:
        TransformError: Neither limit is given, or ``clamp_min > clamp_max``.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), RewardClipping(-1.0, 1.0))
        >>> env.reward_spec
        Bounded(shape=torch.Size([1]), low=-1.0, high=1.0, dtype=torch.float32, device=cpu)
    """

    stateless = True

    def __init__(
        self,
        clamp_min: float | None = None,
        clamp_max: float | None = None,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        super().__init__(in_keys=as_key_list(in_keys) or [REWARD], out_keys=out_keys)
        if clamp_min is None and clamp_max is None:
            raise TransformError(
                "RewardClipping: give clamp_min and/or clamp_max, e.g. RewardClipping(-1.0, 1.0)"
            )
        for name, value in (("clamp_min", clamp_min), ("clamp_max", clamp_max)):
            if value is not None and not isinstance(value, (int, float)):
                raise TransformError(
                    f"RewardClipping: {name} must be a number or None, got {value!r}"
                )
        if clamp_min is not None and clamp_max is not None and clamp_min > clamp_max:
            raise TransformError(
                f"RewardClipping: clamp_min must be <= clamp_max, got clamp_min={clamp_min} > "
                f"clamp_max={clamp_max}"
            )
        self.clamp_min = clamp_min
        self.clamp_max = clamp_max

    def _apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        return value.clamp(self.clamp_min, self.clamp_max)

    def _apply_transform_spec(self, spec: TensorSpec) -> TensorSpec:
        return monotone_spec(spec, self._apply_transform)

    def extra_repr(self) -> str:
        return f"clamp_min={self.clamp_min}, clamp_max={self.clamp_max}, {super().extra_repr()}"


class SignTransform(Transform):
    """Replace entries by their sign: -1, 0 or 1 (Atari's reward clipping).

    Unlike :class:`RewardClipping(-1, 1) <RewardClipping>`, a reward of 0.5 becomes 1: every
    point scored counts the same whatever the game's scale.

    Args:
        in_keys: Entries to edit (default: ``"reward"``).
        out_keys: Where to write (default: ``in_keys``, in place).

    Example:
        >>> env = TransformedEnv(PendulumEnv(), SignTransform())
        >>> env.reward_spec
        Bounded(shape=torch.Size([1]), low=-1.0, high=1.0, dtype=torch.float32, device=cpu)
    """

    stateless = True

    def __init__(
        self,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        super().__init__(in_keys=as_key_list(in_keys) or [REWARD], out_keys=out_keys)

    def _apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        return torch.sign(value)

    def _apply_transform_spec(self, spec: TensorSpec) -> TensorSpec:
        return monotone_spec(spec, self._apply_transform)
