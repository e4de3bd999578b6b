""":class:`VideoRecorder`: keep the pixels an env shows and hand them to a logger as a video."""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import Transform, as_key_list

__all__ = ["VideoRecorder"]

_CHANNELS = (1, 3, 4)


class VideoRecorder(Transform):
    """Record the frames of an env's pixel observations; :meth:`dump` logs them as a video.

    Every reset and step appends the ``in_keys`` entry (``[*batch, H, W, C]`` or
    ``[*batch, C, H, W]``, uint8 or float in ``[0, 1]``) to an in-memory list, one frame in
    ``skip``; with a batched env the envs' frames are tiled into one grid per step
    (``make_grid``) or only the first env's is kept. :meth:`dump` hands the frames to
    ``logger.log_video(tag, frames, step=step, fps=fps)`` (any rlblocks logger: the CSV
    logger writes an mp4 or gif file next to its scalars) and starts a new video. Put it on
    an evaluation env (``GymEnv(..., from_pixels=True)``, dm_control's ``from_pixels``), roll
    out, then dump. TorchRL's name and arguments.

    Args:
        logger: Where videos go: an object with ``log_video(name, video, step=, fps=)``.
        tag: The video's name in the logger, e.g. ``"eval/video"``.
        in_keys: The pixel entry (default ``"pixels"``).
        skip: Keep one frame in ``skip`` (``>= 1``).
        make_grid: Tile a batched env's frames into one grid per step (else the first env's).
        fps: Frames per second of the video.
        max_frames: Frames kept at most (later ones are dropped until :meth:`dump`), so a
            recorder left on a training env cannot fill the memory.

    Raises:
        TransformError: A bad ``skip``, ``fps`` or ``max_frames``; a logger without
            ``log_video``; frames whose shape has no channel dim of 1, 3 or 4 (named with
            the key and the shape).

    Example:
        >>> env = TransformedEnv(GymEnv("CartPole-v1", from_pixels=True), VideoRecorder(
        ...     logger, "eval/video"))
        >>> env.rollout(500, policy)
        >>> env.transform[0].dump(step=frames)  # runs/<exp>/videos/eval_video_<frames>.mp4
    """

    def __init__(
        self,
        logger: Any,
        tag: str,
        in_keys: NestedKey | list[NestedKey] | None = None,
        *,
        skip: int = 1,
        make_grid: bool = True,
        fps: float = 30,
        max_frames: int = 10_000,
    ) -> None:
        keys = as_key_list(in_keys) or ["pixels"]
        if len(keys) != 1:
            raise TransformError(f"VideoRecorder: records one pixel entry, got in_keys={keys}")
        super().__init__(in_keys=keys)
        if not callable(getattr(logger, "log_video", None)):
            raise TransformError(
                f"VideoRecorder: the logger must have a log_video method (any rlblocks "
                f"logger), got {type(logger).__name__}"
            )
        for name, value in (("skip", skip), ("max_frames", max_frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TransformError(f"VideoRecorder: {name} must be an int >= 1, got {value!r}")
        if not (isinstance(fps, int | float) and fps > 0):
            raise TransformError(f"VideoRecorder: fps must be a positive number, got {fps!r}")
        self.logger, self.tag = logger, tag
        self.skip, self.make_grid, self.fps, self.max_frames = skip, make_grid, fps, max_frames
        self._frames: list[torch.Tensor] = []
        self._seen = 0

    @property
    def frames(self) -> list[torch.Tensor]:
        """The frames recorded since the last :meth:`dump` (uint8 ``[H, W, C]`` each)."""
        return self._frames

    def _record(self, tensordict: TensorDictBase) -> TensorDictBase:
        pixels = tensordict.get(self.in_keys[0], None)
        if pixels is None:
            raise TransformError(
                f"VideoRecorder: the env wrote no {self.in_keys[0]!r} (create it with pixel "
                f"observations, e.g. from_pixels=True, or pass in_keys=)"
            )
        self._seen += 1
        if (self._seen - 1) % self.skip == 0 and len(self._frames) < self.max_frames:
            self._frames.append(self._frame(pixels))
        return tensordict

    def _frame(self, pixels: torch.Tensor) -> torch.Tensor:
        key = self.in_keys[0]
        if pixels.ndim < 3:
            raise TransformError(
                f"VideoRecorder: {key!r} has shape {list(pixels.shape)}; expected images "
                f"[*batch, H, W, C] or [*batch, C, H, W] with C in 1/3/4"
            )
        if pixels.shape[-1] not in _CHANNELS:
            if pixels.shape[-3] not in _CHANNELS:
                raise TransformError(
                    f"VideoRecorder: {key!r} has shape {list(pixels.shape)} with no channel dim "
                    f"of size 1, 3 or 4; expected [*batch, H, W, C] or [*batch, C, H, W]"
                )
            pixels = pixels.movedim(-3, -1)
        if pixels.dtype != torch.uint8:
            pixels = (pixels.float().clamp(0, 1) * 255).round().to(torch.uint8)
        images = pixels.detach().cpu().reshape(-1, *pixels.shape[-3:])
        if not self.make_grid or images.shape[0] == 1:
            return images[0]
        return _grid(images)

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return self._record(tensordict_reset)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._record(next_tensordict)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Outside an env (a replay buffer, a plain TensorDict): nothing is recorded."""
        return tensordict

    def dump(self, step: int | None = None) -> None:
        """Log the frames recorded so far as one video and start a new one (no frames:
        nothing is logged). If the logger raises, the frames are kept.

        Args:
            step: The logger step (e.g. frames trained so far); ``None``: the logger's own.
        """
        if not self._frames:
            return
        video = torch.stack(self._frames)
        # Frames are dropped only once logged: a failed write (a folder that cannot be
        # written) keeps them for another try.
        self.logger.log_video(self.tag, video, step=step, fps=self.fps)
        self._frames, self._seen = [], 0

    def extra_repr(self) -> str:
        return f"tag={self.tag!r}, in_keys={self.in_keys}, skip={self.skip}, fps={self.fps}"


def _grid(images: torch.Tensor) -> torch.Tensor:
    """``[N, H, W, C]`` tiled row-major into a near-square grid ``[rows * H, cols * W, C]``."""
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    padded = torch.zeros(rows * cols, h, w, c, dtype=images.dtype)
    padded[:n] = images
    return padded.reshape(rows, cols, h, w, c).permute(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)
