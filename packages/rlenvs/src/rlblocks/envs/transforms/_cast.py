"""Dtype and device casts: :class:`DTypeCastTransform`, :class:`DoubleToFloat`,
:class:`DeviceCastTransform`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core.specs import Composite, TensorSpec
from rlblocks.core.utils import as_device
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import Transform, as_key_list
from rlblocks.envs.transforms._common import cast_spec, replay_specs

__all__ = ["DTypeCastTransform", "DoubleToFloat", "DeviceCastTransform"]


class DTypeCastTransform(Transform):
    """Cast entries from ``dtype_in`` to ``dtype_out`` (and actions back).

    Forward, the ``in_keys`` entries (observations, rewards) are cast to ``dtype_out``;
    through :meth:`inv`, the ``in_keys_inv`` entries the policy writes in ``dtype_out`` are
    cast back to ``dtype_in`` for the wrapped env, whose spec keeps ``dtype_in``.

    With ``in_keys`` and ``in_keys_inv`` both ``None``, the keys are found from the wrapped
    env's specs: every observation and reward entry of dtype ``dtype_in`` is cast, and every
    action entry of that dtype is cast back. Entries the env also reads back as state (its
    state spec, e.g. the float64 simulator state of ``PendulumEnv``) are left alone, so a
    simulator does not lose precision at every step; name them in ``in_keys`` to cast them
    anyway. On a plain TensorDict outside an env, every entry of dtype ``dtype_in`` is cast.

    Args:
        dtype_in: The dtype of the wrapped env's entries.
        dtype_out: The dtype seen by the policy and downstream code.
        in_keys: Entries to cast (default: found from the specs, see above).
        out_keys: Where to write (default: ``in_keys``).
        in_keys_inv: Action/state entries of the wrapped env to cast back (default: found
            from the specs when ``in_keys`` is ``None``, else none).
        out_keys_inv: The keys the policy writes (default: ``in_keys_inv``).

    Raises:
        TransformError: A dtype argument is not a ``torch.dtype``, or a named key has another
            dtype than ``dtype_in`` in the env's specs.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), DTypeCastTransform(torch.float32, torch.float64))
        >>> env.observation_spec["observation"].dtype
        torch.float64
    """

    stateless = True

    def __init__(
        self,
        dtype_in: torch.dtype,
        dtype_out: torch.dtype,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        in_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
        out_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        name = type(self).__name__
        for arg, value in (("dtype_in", dtype_in), ("dtype_out", dtype_out)):
            if not isinstance(value, torch.dtype):
                raise TransformError(f"{name}: {arg} must be a torch.dtype, got {value!r}")
        super().__init__(in_keys, out_keys, in_keys_inv, out_keys_inv)
        self.dtype_in = dtype_in
        self.dtype_out = dtype_out
        # Keys found from the specs; None until the transform has seen an env's specs.
        self._auto = in_keys is None and in_keys_inv is None
        self._resolved = not self._auto
        self._found: dict[str, list[NestedKey]] = {"reward": [], "observation": [], "state": []}

    # ------------------------------------------------------------------ values
    def _apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        return value.to(self.dtype_out)

    def _inv_apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        return value.to(self.dtype_in)

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._resolved:
            return super()._call(tensordict)
        # Outside an env: cast whatever has dtype_in.
        for key, value in list(tensordict.items(include_nested=True, leaves_only=True)):
            if isinstance(value, torch.Tensor) and value.dtype == self.dtype_in:
                tensordict.set(key, value.to(self.dtype_out))
        return tensordict

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        if not self._resolved:
            replay_specs(self, self.parent)
        return self._call(tensordict_reset)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        if not self._resolved:
            replay_specs(self, self.parent)
        return super()._step(tensordict, next_tensordict)

    # ------------------------------------------------------------------ specs
    def _matching(self, spec: Composite, exclude: Sequence[NestedKey] = ()) -> list[NestedKey]:
        return [
            key
            for key, leaf in spec.items(include_nested=True, leaves_only=True)
            if leaf.dtype == self.dtype_in and key not in exclude
        ]

    def _check_dtypes(self, spec: Composite, keys: list[NestedKey], what: str) -> None:
        for key in keys:
            leaf = spec.get(key, None)
            if leaf is not None and leaf.dtype != self.dtype_in:
                raise TransformError(
                    f"{type(self).__name__}: {key!r} has dtype {leaf.dtype} in the env's "
                    f"{what} spec, but dtype_in is {self.dtype_in}; remove it from the keys or "
                    f"use DTypeCastTransform({leaf.dtype}, {self.dtype_out}) for it"
                )

    def _set_found(self, part: str, keys: list[NestedKey]) -> None:
        self._found[part] = keys
        self.in_keys = self._found["reward"] + self._found["observation"]
        self.out_keys = list(self.in_keys)
        self._resolved = True

    def _apply_transform_spec(self, spec: TensorSpec) -> TensorSpec:
        return cast_spec(spec, self.dtype_out)

    def _inv_apply_transform_spec(self, spec: TensorSpec) -> TensorSpec:
        return cast_spec(spec, self.dtype_out)

    def transform_reward_spec(self, reward_spec: Composite) -> Composite:
        if self._auto:
            self._set_found("reward", self._matching(reward_spec))
        else:
            self._check_dtypes(reward_spec, self.in_keys, "reward")
        return super().transform_reward_spec(reward_spec)

    def transform_action_spec(self, action_spec: Composite) -> Composite:
        if self._auto:
            self.in_keys_inv = self._matching(action_spec)
            self.out_keys_inv = list(self.in_keys_inv)
        else:
            self._check_dtypes(action_spec, self.in_keys_inv, "action")
        return super().transform_action_spec(action_spec)

    def transform_state_spec(self, state_spec: Composite) -> Composite:
        if self._auto:
            self._found["state"] = state_spec.keys(include_nested=True, leaves_only=True)
            return state_spec
        return super().transform_state_spec(state_spec)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        if self._auto:
            found = self._matching(observation_spec, exclude=self._found["state"])
            self._set_found("observation", found)
        else:
            self._check_dtypes(observation_spec, self.in_keys, "observation")
        return super().transform_observation_spec(observation_spec)

    def extra_repr(self) -> str:
        keys = super().extra_repr() if self._resolved else "keys found from the env's specs"
        return f"dtype_in={self.dtype_in}, dtype_out={self.dtype_out}, {keys}"


class DoubleToFloat(DTypeCastTransform):
    """Cast float64 entries to float32 (and float32 actions back to float64).

    ``DTypeCastTransform(torch.float64, torch.float32, ...)``; see there for how the keys
    are found when none are given. It costs one ``.to()`` per cast entry and step.

    Args:
        in_keys: Entries to cast (default: every float64 observation and reward entry that
            is not also env state).
        out_keys: Where to write (default: ``in_keys``).
        in_keys_inv: Entries to cast back to float64 before the wrapped env reads them
            (default: the float64 action entries, when ``in_keys`` is ``None``).
        out_keys_inv: The keys the policy writes (default: ``in_keys_inv``).

    Example:
        >>> env = TransformedEnv(GymEnv("Pendulum-v1"), DoubleToFloat())
        >>> env.rollout(3)["observation"].dtype
        torch.float32
    """

    def __init__(
        self,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        in_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
        out_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        super().__init__(torch.float64, torch.float32, in_keys, out_keys, in_keys_inv, out_keys_inv)


class DeviceCastTransform(Transform):
    """Move everything an env returns to ``device`` (and actions back to ``orig_device``).

    The whole TensorDict moves: a TensorDict lives on one device, and so does each spec
    Composite. Specs are moved too, so random actions are drawn on ``device``.

    Args:
        device: Where outputs (and the specs the policy sees) go.
        orig_device: Where the wrapped env reads its inputs (default: the wrapped env's
            device).

    Raises:
        TransformError: ``device`` is not a device, or keys were given (per-key casting is
            not supported).

    Example:
        >>> env = TransformedEnv(PendulumEnv(device="cpu"), DeviceCastTransform("cuda"))
        >>> env.reset()["observation"].device
        device(type='cuda', index=0)
    """

    stateless = True

    def __init__(
        self,
        device: Any,
        orig_device: Any = None,
        *,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        in_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
        out_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        if any(as_key_list(k) for k in (in_keys, out_keys, in_keys_inv, out_keys_inv)):
            raise TransformError(
                "DeviceCastTransform moves whole TensorDicts (a TensorDict and a spec "
                "Composite live on one device each); leave in_keys/out_keys/in_keys_inv/"
                "out_keys_inv unset"
            )
        super().__init__()
        try:
            self.device = as_device(device)
            self.orig_device = None if orig_device is None else as_device(orig_device)
        except (RuntimeError, ValueError) as err:
            raise TransformError(
                f"DeviceCastTransform: device and orig_device must be devices (e.g. 'cuda:0'), "
                f"got {device!r} and {orig_device!r}"
            ) from err

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict.to(self.device)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict.to(self.device)

    def inv(self, tensordict: TensorDictBase) -> TensorDictBase:
        device = self.orig_device
        if device is None:
            parent = self.parent
            if parent is None:
                raise TransformError(
                    "DeviceCastTransform.inv: the wrapped env's device is unknown outside a "
                    "TransformedEnv; pass orig_device"
                )
            device = parent.device
        return tensordict.to(device)

    def _has_inv(self) -> bool:
        return True

    def transform_env_device(self, device: torch.device) -> torch.device:
        """The device of the env seen through this transform."""
        return self.device

    def _to_device(self, spec: Composite) -> Composite:
        return spec.to(self.device)

    transform_observation_spec = _to_device
    transform_reward_spec = _to_device
    transform_done_spec = _to_device
    transform_action_spec = _to_device
    transform_state_spec = _to_device

    def extra_repr(self) -> str:
        return f"device={self.device}, orig_device={self.orig_device}"
