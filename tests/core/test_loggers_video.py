"""Logger.log_video: frames checked once, then written by each backend (CSV, TensorBoard, W&B)."""

from __future__ import annotations

import gc
import warnings

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from rlblocks.core.loggers import CSVLogger, LoggerError, TensorBoardLogger, WandbLogger

T, H, W = 6, 20, 28


def read_mp4(path) -> np.ndarray:
    """The frames of an mp4 file (imageio-ffmpeg's reader leaves its pipes to the GC)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        reader = imageio_ffmpeg.read_frames(str(path))
        width, height = next(reader)["size"]
        out = np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader])
        del reader
        gc.collect()
    return out


def frames(channels_first=False, dtype=torch.uint8):
    video = torch.randint(0, 256, (T, H, W, 3), dtype=torch.uint8)
    video[:, :, :, 0] = torch.arange(T).view(T, 1, 1) * 40  # frames tell apart by red
    if dtype.is_floating_point:
        video = video.to(dtype) / 255
    return video.permute(0, 3, 1, 2) if channels_first else video


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
@pytest.mark.parametrize("layout", ["THWC", "TCHW float"])
def test_csv_writes_a_video_file_next_to_the_scalars(tmp_path, fmt, layout):
    video = frames(channels_first=True, dtype=torch.float32) if "float" in layout else frames()
    with CSVLogger("run", log_dir=tmp_path, video_format=fmt) as logger:
        logger.log_video("eval/video", video, step=3, fps=10)
    path = tmp_path / "run" / "videos" / f"eval_video_3.{fmt}"
    read = iio.imread(path, index=None) if fmt == "gif" else read_mp4(path)
    assert read.shape[0] == T and read.shape[1:3] == (H, W)
    reds = read[..., 0].astype(float).mean(axis=(1, 2))
    assert (np.diff(reds) > 0).all()  # the frames, in order


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (torch.zeros(T, H, W), r"shape \[T, H, W, C\] or \[T, C, H, W\].*got shape \[6, 20, 28\]"),
        (torch.zeros(0, H, W, 3), r"T >= 1.*got shape \[0, 20, 28, 3\]"),
        (torch.zeros(T, 5, H, W), r"no channel dim of size 1, 3 or 4 in shape \[6, 5, 20, 28\]"),
        (torch.full((T, H, W, 3), 2.0), r"float frames must lie in \[0, 1\], got values in"),
        (torch.zeros(T, H, W, 3, dtype=torch.int16), r"uint8 frames or floats.*int16"),
        ([[0]], r"tensor or numpy array.*got list"),
    ],
)
def test_bad_frames_are_named_and_nothing_is_written(tmp_path, video, message):
    with CSVLogger("run", log_dir=tmp_path) as logger:
        with pytest.raises(LoggerError, match=r"log_video\('clip'\): .*" + message):
            logger.log_video("clip", video)
        with pytest.raises(LoggerError, match="fps must be a positive number, got 0"):
            logger.log_video("clip", frames(), fps=0)
    assert not (tmp_path / "run" / "videos").exists()


def test_a_video_that_cannot_be_written_names_its_path_and_loses_nothing(tmp_path):
    with CSVLogger("run", log_dir=tmp_path) as logger:
        logger.log_scalar("loss", 1.0, step=0)
        (logger.log_dir / "videos").write_text("a file where the folder should be")
        with pytest.raises(LoggerError, match=r"cannot write the video '.*videos/clip_1\.mp4'"):
            logger.log_video("clip", frames(), step=1)
        logger.log_scalar("loss", 0.5, step=2)
    assert logger.scalars_path.read_text().count("loss") == 2


def test_csv_refuses_an_unknown_video_format(tmp_path):
    with pytest.raises(LoggerError, match=r"video_format must be one of \['mp4', 'gif'\]"):
        CSVLogger("run", log_dir=tmp_path, video_format="avi")


def test_tensorboard_shows_the_video_as_an_animated_image(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with TensorBoardLogger("run", log_dir=tmp_path) as logger:
        logger.log_video("eval/video", frames(), step=5, fps=10)
    events = EventAccumulator(str(logger.log_dir), size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("eval/video")
    assert (image.step, image.height, image.width) == (5, H, W)
    assert iio.imread(image.encoded_image_string, extension=".gif", index=None).shape[0] == T


def test_wandb_logs_the_video_file(tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    import wandb

    try:
        with WandbLogger("run", project="rlblocks-test", log_dir=tmp_path) as logger:
            logger.log_scalar("loss", 1.0, step=4)
            logger.log_video("eval/video", frames(), step=4)
            with pytest.raises(LoggerError, match="step 2 is smaller than the last step"):
                logger.log_video("eval/video", frames(), step=2)
        assert read_mp4(logger.log_dir / "videos" / "eval_video_4.mp4").shape[0] == T
        media = list(logger.run_dir.glob("files/media/videos/eval/video_4_*.mp4"))
        assert len(media) == 1
    finally:
        wandb.teardown()
