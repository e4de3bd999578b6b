"""VideoRecorder: the frames an env shows, handed to a logger as one video per dump."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core import DONE, TERMINATED, TRUNCATED
from rlblocks.core.specs import Bounded, Categorical, Composite, Unbounded
from rlblocks.envs import EnvBase, TransformedEnv, TransformError, VideoRecorder

H, W = 6, 8


class Blinker(EnvBase):
    """Pixels whose red channel counts the steps: frame t has red value t."""

    step_returns_done_flags = True

    def __init__(self, batch_size: Any = (), channels_first: bool = False):
        super().__init__(batch_size=batch_size)
        b = self.batch_size
        self.channels_first = channels_first
        shape = (*b, 3, H, W) if channels_first else (*b, H, W, 3)
        self.full_observation_spec = Composite(
            pixels=Bounded(0, 255, shape=shape, dtype=torch.uint8), shape=b
        )
        self.action_spec = Categorical(2, shape=b)
        self.reward_spec = Unbounded(shape=(*b, 1))
        self.t = 0

    def _pixels(self):
        image = torch.zeros(*self.batch_size, H, W, 3, dtype=torch.uint8)
        image[..., 0] = self.t
        # Each env of a batch marks its own green value: the grid keeps them apart.
        image[..., 1] = torch.arange(self.batch_size.numel(), dtype=torch.uint8).reshape(
            *self.batch_size, 1, 1
        )
        return image.movedim(-1, -3) if self.channels_first else image

    def _observe(self, done: bool):
        flag = torch.full((*self.batch_size, 1), done)
        flags = {DONE: flag, TERMINATED: flag.clone(), TRUNCATED: torch.zeros_like(flag)}
        return TensorDict({"pixels": self._pixels(), **flags}, batch_size=self.batch_size)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        self.t = 0
        return self._observe(False)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self.t += 1
        out = self._observe(False)
        out.set("reward", torch.zeros(*self.batch_size, 1))
        return out

    def _set_seed(self, seed: int | None) -> None:
        pass


class FakeLogger:
    def __init__(self, fail: bool = False):
        self.videos: list[tuple[str, torch.Tensor, int | None, float]] = []
        self.fail = fail

    def log_video(self, name, video, step=None, fps=30):
        if self.fail:
            raise OSError("cannot write the video")
        self.videos.append((name, video, step, fps))


@pytest.mark.parametrize("channels_first", [False, True])
def test_a_rollout_becomes_one_video_of_its_frames(channels_first):
    logger = FakeLogger()
    env = TransformedEnv(Blinker(channels_first=channels_first), VideoRecorder(logger, "eval/v"))
    env.rollout(9, break_when_any_done=False)
    env.transform[0].dump(step=100)
    ((name, video, step, fps),) = logger.videos
    assert (name, step, fps) == ("eval/v", 100, 30)
    assert video.shape == (10, H, W, 3) and video.dtype == torch.uint8  # the reset + 9 steps
    assert video[:, 0, 0, 0].tolist() == list(range(10))
    env.transform[0].dump()  # nothing recorded since: nothing logged
    assert len(logger.videos) == 1


def test_skip_and_max_frames():
    logger = FakeLogger()
    env = TransformedEnv(Blinker(), VideoRecorder(logger, "v", skip=3, max_frames=3))
    env.rollout(19, break_when_any_done=False)
    env.transform[0].dump()
    assert logger.videos[0][1][:, 0, 0, 0].tolist() == [0, 3, 6]


def test_a_batched_env_is_tiled_into_a_grid_or_reduced_to_its_first_env():
    logger = FakeLogger()
    env = TransformedEnv(Blinker(batch_size=[5]), VideoRecorder(logger, "v"))
    env.rollout(2)
    env.transform[0].dump()
    grid = logger.videos[0][1]
    assert grid.shape == (3, 2 * H, 3 * W, 3)  # 5 envs on 2 rows of 3
    assert grid[0, 0, 0, 1] == 0 and grid[0, H, 2 * W - 1, 1] == 4 and grid[0, H, -1].sum() == 0
    first = TransformedEnv(Blinker(batch_size=[5]), VideoRecorder(logger, "v", make_grid=False))
    first.rollout(2)
    first.transform[0].dump()
    assert logger.videos[1][1].shape == (3, H, W, 3)


def test_a_failed_write_keeps_the_frames():
    logger = FakeLogger(fail=True)
    env = TransformedEnv(Blinker(), VideoRecorder(logger, "v"))
    env.rollout(4)
    with pytest.raises(OSError, match="cannot write the video"):
        env.transform[0].dump()
    logger.fail = False
    env.transform[0].dump()
    assert logger.videos[0][1].shape[0] == 5


def test_bad_arguments_and_missing_pixels_are_named():
    with pytest.raises(TransformError, match="must have a log_video method.*got object"):
        VideoRecorder(object(), "v")
    with pytest.raises(TransformError, match="skip must be an int >= 1, got 0"):
        VideoRecorder(FakeLogger(), "v", skip=0)
    with pytest.raises(TransformError, match="fps must be a positive number"):
        VideoRecorder(FakeLogger(), "v", fps=-1)
    env = TransformedEnv(Blinker(), VideoRecorder(FakeLogger(), "v", in_keys="frames"))
    with pytest.raises(TransformError, match="wrote no 'frames'.*from_pixels=True"):
        env.reset()


def test_images_without_a_channel_dim_are_refused():
    class Gray(Blinker):
        def _pixels(self):
            return super()._pixels()[..., 0].unsqueeze(-1).expand(H, W, 5)

    env = TransformedEnv(Gray(), VideoRecorder(FakeLogger(), "v"))
    with pytest.raises(TransformError, match=r"shape \[6, 8, 5\] with no channel dim"):
        env.reset()
