"""Frame stacking: :class:`CatFrames`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import DONE, NEXT
from rlblocks.core.specs import Bounded, TensorSpec
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import as_key_list
from rlblocks.envs.transforms._common import (
    FeatureTransform,
    as_dim,
    feature_dim,
    map_spec,
    positive_int,
    reset_mask,
    trajectory_starts,
    where_reset,
)

__all__ = ["CatFrames"]

_PADDINGS = ("same", "constant")


class CatFrames(FeatureTransform):
    """Concatenate the last ``N`` frames of an observation along a feature dim.

    After a reset the stack is padded: with copies of the first frame (``padding="same"``)
    or with ``padding_value`` (``padding="constant"``), the first frame last. Each step
    drops the oldest frame and appends the new one. In a batched env a partial reset
    (``"_reset"`` mask) restarts the stacks of the reset elements only.

    The stack travels in the TensorDict (under ``out_keys``), not inside the transform: a
    step reads the previous stack from its input, so the transform holds no per-env state
    and works in batched and parallel envs alike. A step whose input has no stack (e.g.
    ``env.rand_step()`` without a TensorDict) starts a new padded stack.

    On a plain TensorDict (e.g. a rollout, or consecutive transitions from a replay buffer),
    the last batch dim is time: the stack at step ``t`` holds frames ``t-N+1 .. t``, padded
    before the first step and before every episode start (a ``("next", done_key)`` flag at
    the previous step); ``"next"`` stacks end with the next frame.

    Args:
        N: Number of frames to stack.
        dim: Feature dim along which frames are concatenated (negative: from the last dim,
            e.g. ``-3`` for the channels of ``[C, H, W]`` images; non-negative: from the
            first dim after the batch dims).
        in_keys: Frames to stack (default: ``"pixels"``).
        out_keys: Where to write the stacks (default: ``in_keys``, replacing the frames).
        padding: ``"same"`` or ``"constant"``.
        padding_value: The fill value for ``padding="constant"``.
        done_key: The done flag that marks episode ends in a plain TensorDict.

    Raises:
        TransformError: ``N`` is not a positive int, ``padding`` is unknown, or (when
            applied) ``dim`` falls outside the feature dims.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), CatFrames(4, dim=-1, in_keys=["observation"]))
        >>> env.reset()["observation"].shape
        torch.Size([12])
    """

    stateless = False  # the stack depends on the frames before

    def __init__(
        self,
        N: int,
        dim: int,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        padding: str = "same",
        padding_value: float = 0.0,
        done_key: NestedKey = DONE,
    ) -> None:
        positive_int(N, "CatFrames", "N")
        if padding not in _PADDINGS:
            raise TransformError(f"CatFrames: padding must be one of {_PADDINGS}, got {padding!r}")
        super().__init__(in_keys=as_key_list(in_keys) or ["pixels"], out_keys=out_keys)
        self.N = N
        self.dim = as_dim(dim, "CatFrames")
        self.padding = padding
        self.padding_value = padding_value
        self.done_key = done_key

    # ------------------------------------------------------------------ stacking
    def _dim(self, frame: torch.Tensor, batch_ndim: int, key: NestedKey) -> int:
        return feature_dim(self.dim, batch_ndim, frame.ndim, "CatFrames", key)

    def _fresh(self, frame: torch.Tensor, dim: int) -> torch.Tensor:
        """A stack right after a reset: padding, then ``frame`` last."""
        if self.padding == "same":
            return torch.cat([frame] * self.N, dim)
        pad = torch.full_like(frame, self.padding_value)
        return torch.cat([pad] * (self.N - 1) + [frame], dim)

    def _apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        """A single frame seen on its own: a fresh (padded) stack."""
        return self._fresh(value, self._dim(value, batch_ndim, key))

    def _push(self, stack: torch.Tensor, frame: torch.Tensor, dim: int) -> torch.Tensor:
        """Drop the oldest frame of ``stack`` and append ``frame``."""
        size = frame.shape[dim]
        return torch.cat([stack.narrow(dim, size, stack.shape[dim] - size), frame], dim)

    def _stack_shape(self, frame: torch.Tensor, dim: int) -> torch.Size:
        shape = list(frame.shape)
        shape[dim] *= self.N
        return torch.Size(shape)

    # ------------------------------------------------------------------ env hooks
    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        mask = reset_mask(tensordict)
        nb = tensordict_reset.batch_dims
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            frame = tensordict_reset.get(in_key, None)
            if frame is None:
                continue
            stack = self._fresh(frame, self._dim(frame, nb, in_key))
            if mask is not None:
                # The reset's input holds the current stacks of the elements not reset.
                stack = where_reset(mask, stack, tensordict.get(out_key, None))  # type: ignore[union-attr]
            tensordict_reset.set(out_key, stack)
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        nb = next_tensordict.batch_dims
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            frame = next_tensordict.get(in_key, None)
            if frame is None:
                continue
            dim = self._dim(frame, nb, in_key)
            previous = tensordict.get(out_key, None)
            if previous is None or previous.shape != self._stack_shape(frame, dim):
                next_tensordict.set(out_key, self._fresh(frame, dim))
            else:
                next_tensordict.set(out_key, self._push(previous, frame, dim))
        return next_tensordict

    # ------------------------------------------------------------------ plain TensorDicts
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Stack frames along the last batch dim (time) of a plain TensorDict, in place."""
        nb = tensordict.batch_dims
        next_td = tensordict.get(NEXT, None)
        # Without a time dim (a single transition) there is no history: the stack starts here.
        starts = self._start_index(tensordict) if nb else None
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            frames = tensordict.get(in_key, None)
            if frames is None:
                continue
            dim = self._dim(frames, nb, in_key)
            stack = (
                self._fresh(frames, dim)
                if starts is None
                else self._unfold(frames, starts, nb, dim)
            )
            tensordict.set(out_key, stack)
            next_frames = next_td.get(in_key, None) if next_td is not None else None
            if next_frames is not None:
                next_td.set(out_key, self._push(stack, next_frames, dim))  # type: ignore[union-attr]
        return tensordict

    def _call_trajectory(
        self, trajectory: TensorDictBase, start: TensorDictBase | None = None
    ) -> TensorDictBase:
        # A rollout from a reset: stacking along time gives what stepping would have.
        return self.forward(trajectory)

    def _start_index(self, tensordict: TensorDictBase) -> torch.Tensor:
        """For each step, the time index where its episode started (``[*batch, T]``)."""
        starts = trajectory_starts(tensordict, self.done_key)
        time = torch.arange(starts.shape[-1], device=starts.device).expand(starts.shape)
        return torch.where(starts, time, torch.zeros_like(time)).cummax(-1).values

    def _unfold(
        self, frames: torch.Tensor, starts: torch.Tensor, batch_ndim: int, dim: int
    ) -> torch.Tensor:
        """The stack at every time step of ``frames`` (``[*batch, T, *feature]``)."""
        time_dim = batch_ndim - 1
        time = torch.arange(frames.shape[time_dim], device=frames.device)
        trailing = (1,) * (frames.ndim - batch_ndim)
        parts = []
        for age in range(self.N - 1, -1, -1):
            source = time - age
            valid = (source >= starts).reshape(*starts.shape, *trailing)
            index = torch.maximum(source, starts).reshape(*starts.shape, *trailing)
            part = torch.take_along_dim(frames, index, dim=time_dim)
            if self.padding == "constant":
                part = torch.where(valid, part, torch.full_like(part, self.padding_value))
            parts.append(part)
        return torch.cat(parts, dim)

    # ------------------------------------------------------------------ specs
    def _apply_spec(self, spec: TensorSpec, batch_ndim: int, key: NestedKey) -> TensorSpec:
        dim = feature_dim(self.dim, batch_ndim, len(spec.shape), "CatFrames", key)
        stacked = map_spec(spec, lambda t: torch.cat([t] * self.N, dim))
        if self.padding == "constant" and isinstance(stacked, Bounded):
            pad = torch.as_tensor(self.padding_value, dtype=stacked.dtype)
            low = torch.minimum(stacked.low, pad.to(stacked.device))
            high = torch.maximum(stacked.high, pad.to(stacked.device))
            stacked = Bounded(low, high, dtype=stacked.dtype, device=stacked.device)
        return stacked

    def extra_repr(self) -> str:
        return f"N={self.N}, dim={self.dim}, padding={self.padding!r}, {super().extra_repr()}"
