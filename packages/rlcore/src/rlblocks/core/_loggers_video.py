"""Videos for the loggers: validation of the frames and encoding to mp4 or gif (imageio)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlblocks.core.errors import LoggerError, missing_dependency

__all__ = ["VIDEO_FORMATS", "check_video", "encode_video", "write_video"]

#: File formats a video can be written in.
VIDEO_FORMATS = ("mp4", "gif")
_CHANNELS = (1, 3, 4)


def check_video(owner: str, name: str, video: Any, fps: Any) -> tuple[np.ndarray, float]:
    """``(frames as uint8 [T, H, W, C] with C in 1/3/4, fps)`` or a :class:`LoggerError`.

    Accepts a tensor or array ``[T, H, W, C]`` or ``[T, C, H, W]`` (channels last when the
    last dim is 1, 3 or 4), uint8 or float in ``[0, 1]``.
    """
    where = f"{owner}.log_video({name!r})"
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if not isinstance(video, np.ndarray):
        raise LoggerError(
            f"{where}: the video must be a tensor or numpy array of frames [T, H, W, C] or "
            f"[T, C, H, W], got {type(video).__name__}"
        )
    if video.ndim != 4 or video.shape[0] == 0:
        raise LoggerError(
            f"{where}: expected frames of shape [T, H, W, C] or [T, C, H, W] (T >= 1, C in "
            f"1/3/4), got shape {list(video.shape)} (fix: stack a list of frames with "
            f"torch.stack)"
        )
    if video.shape[-1] not in _CHANNELS:
        if video.shape[1] not in _CHANNELS:
            raise LoggerError(
                f"{where}: found no channel dim of size 1, 3 or 4 in shape "
                f"{list(video.shape)}; expected [T, H, W, C] or [T, C, H, W]"
            )
        video = video.transpose(0, 2, 3, 1)
    if video.dtype != np.uint8:
        if not np.issubdtype(video.dtype, np.floating):
            raise LoggerError(
                f"{where}: expected uint8 frames or floats in [0, 1], got dtype {video.dtype}"
            )
        low, high = float(np.nanmin(video)), float(np.nanmax(video))
        if not (low >= 0.0 and high <= 1.0):
            raise LoggerError(
                f"{where}: float frames must lie in [0, 1], got values in [{low}, {high}] "
                f"(fix: divide uint8-range floats by 255, or pass uint8)"
            )
        video = (video * 255).round().astype(np.uint8)
    if not (isinstance(fps, int | float) and fps > 0):
        raise LoggerError(f"{where}: fps must be a positive number, got {fps!r}")
    return np.ascontiguousarray(video), float(fps)


def _imageio() -> Any:
    try:
        import imageio.v3 as iio
    except ImportError as err:
        raise missing_dependency("log_video", "imageio", "rlblocks-core[video]") from err
    return iio


def encode_video(frames: np.ndarray, fps: float, fmt: str) -> bytes:
    """The frames encoded as an mp4 or (looping) gif file, in memory."""
    iio = _imageio()
    if frames.shape[-1] == 1:
        frames = frames[..., 0]
    if fmt == "gif":
        return iio.imwrite("<bytes>", frames, extension=".gif", duration=1000 / fps, loop=0)
    try:
        import imageio_ffmpeg  # noqa: F401  (imageio's mp4 writer)
    except ImportError as err:
        raise missing_dependency(
            "log_video (mp4)", "imageio_ffmpeg", "rlblocks-core[video]"
        ) from err
    # H.264 wants even sides: pad the last row/column where they are odd.
    pad = [(0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2)]
    frames = np.pad(frames, pad + [(0, 0)] * (frames.ndim - 3), mode="edge")
    buffer = io.BytesIO()
    iio.imwrite(buffer, frames, extension=".mp4", fps=fps, plugin="FFMPEG", macro_block_size=1)
    return buffer.getvalue()


def write_video(owner: str, frames: np.ndarray, fps: float, path: Path) -> Path:
    """Encode ``frames`` by ``path``'s suffix and write them there (folders created)."""
    fmt = path.suffix.lstrip(".")
    if fmt not in VIDEO_FORMATS:
        raise LoggerError(f"{owner}: a video file must end with .mp4 or .gif, got {str(path)!r}")
    data = encode_video(frames, fps, fmt)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise LoggerError(
            f"{owner}: cannot write the video {str(path)!r}: {err.strerror or err}. Fix: "
            f"log to a folder you can write to (log_dir=...)"
        ) from err
    return path
