"""ToTensorImage, Resize, GrayScale and CenterCrop, on an env rendering uint8 images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict

from rlblocks.core.specs import Bounded, Composite, Unbounded
from rlblocks.envs import EnvBase, check_env_specs
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms import (
    CatFrames,
    CenterCrop,
    Compose,
    GrayScale,
    Resize,
    ToTensorImage,
    TransformedEnv,
)

H, W = 12, 10


class ImageEnv(EnvBase):
    """Renders ``[*batch, H, W, 3]`` uint8 frames whose pixels encode the step count."""

    def __init__(self, batch_size=()) -> None:
        super().__init__(batch_size=batch_size)
        b = self.batch_size
        self.full_observation_spec = Composite(
            pixels=Bounded(0, 255, shape=(*b, H, W, 3), dtype=torch.uint8), shape=b
        )
        self.action_spec = Bounded(0.0, 1.0, shape=(*b, 1))
        self.t = 0

    def frame(self, t: int) -> torch.Tensor:
        pattern = torch.arange(H * W * 3).reshape(H, W, 3) * 7 + t * 31
        return (pattern % 256).to(torch.uint8).expand(*self.batch_size, H, W, 3).clone()

    def _reset(self, tensordict, **kwargs):
        self.t = 0
        return TensorDict(pixels=self.frame(0), batch_size=self.batch_size)

    def _step(self, tensordict):
        self.t += 1
        return TensorDict(
            pixels=self.frame(self.t),
            reward=torch.zeros(*self.batch_size, 1),
            terminated=torch.zeros(*self.batch_size, 1, dtype=torch.bool),
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed):
        pass


def _chw(frame: torch.Tensor) -> torch.Tensor:
    return frame.movedim(-1, -3).float() / 255


@pytest.mark.parametrize("batch_size", [(), (2,)])
def test_to_tensor_image(batch_size):
    env = TransformedEnv(ImageEnv(batch_size), ToTensorImage())
    check_env_specs(env)
    assert env.observation_spec["pixels"] == Bounded(0.0, 1.0, shape=(*batch_size, 3, H, W))
    td = env.rollout(2)
    torch.testing.assert_close(td["next", "pixels"][..., 1, :, :, :], _chw(env.base_env.frame(2)))


def test_to_tensor_image_of_floats_is_not_rescaled():
    t = ToTensorImage(in_keys=["img"])
    td = t(TensorDict(img=torch.full((4, 5, 6, 3), 7.0), batch_size=[4]))
    assert td["img"].shape == (4, 3, 5, 6) and td["img"].eq(7.0).all()
    forced = ToTensorImage(from_int=True, dtype=torch.float64, in_keys=["img"])
    out = forced(TensorDict(img=torch.full((2, 2, 3), 51.0), batch_size=[]))["img"]
    assert out.dtype == torch.float64 and torch.allclose(
        out, torch.tensor(0.2, dtype=torch.float64)
    )


def test_full_pipeline_specs_and_shapes():
    pipeline = Compose(
        ToTensorImage(), Resize(8, 6), GrayScale(), CenterCrop(4), CatFrames(2, dim=-3)
    )
    env = TransformedEnv(ImageEnv([3]), pipeline)
    check_env_specs(env)
    spec = env.observation_spec["pixels"]
    assert spec == Bounded(0.0, 1.0, shape=(3, 2, 4, 4))
    assert env.rollout(4)["next", "pixels"].shape == (3, 4, 2, 4, 4)


def test_resize_values_match_interpolate():
    images = torch.rand(2, 5, 3, H, W)  # a trajectory: 2 batch dims
    out = Resize(5, 7)(TensorDict(pixels=images, batch_size=[2, 5]))["pixels"]
    assert out.shape == (2, 5, 3, 7, 5)
    ref = F.interpolate(images.reshape(10, 3, H, W), size=(7, 5), mode="bilinear", antialias=True)
    torch.testing.assert_close(out, ref.reshape(2, 5, 3, 7, 5))


def test_resize_uint8_keeps_the_dtype_and_nearest_is_exact():
    frame = ImageEnv().frame(0).movedim(-1, -3)
    resize = Resize(5, 6, interpolation="nearest")
    out = resize(TensorDict(pixels=frame, batch_size=[]))["pixels"]
    assert out.dtype == torch.uint8
    assert torch.equal(out, F.interpolate(frame[None].float(), size=(6, 5))[0].to(torch.uint8))
    spec = resize._apply_spec(Bounded(0, 255, shape=(3, H, W), dtype=torch.uint8), 0, "pixels")
    assert spec == Bounded(0, 255, shape=(3, 6, 5), dtype=torch.uint8)


def test_resize_uint8_bilinear_is_within_one_of_the_float_result():
    # uint8 images are resized natively (no float round trip): at most 1 off.
    frames = torch.randint(0, 256, (4, 1, 210, 160), dtype=torch.uint8)
    out = Resize(84)(TensorDict(pixels=frames, batch_size=[4]))["pixels"]
    ref = F.interpolate(frames.float(), size=(84, 84), mode="bilinear", antialias=True)
    assert out.dtype == torch.uint8 and out.shape == (4, 1, 84, 84)
    assert (out.float() - ref.round()).abs().max().item() <= 1


def test_bicubic_spec_is_unbounded():
    env = TransformedEnv(ImageEnv(), Compose(ToTensorImage(), Resize(4, interpolation="bicubic")))
    assert env.observation_spec["pixels"] == Unbounded(shape=(3, 4, 4))
    check_env_specs(env)


def test_gray_scale_values_and_uint8():
    rgb = torch.tensor([1.0, 0.5, 0.0]).reshape(3, 1, 1).expand(3, 2, 2)
    gray = GrayScale()(TensorDict(pixels=rgb, batch_size=[]))["pixels"]
    torch.testing.assert_close(gray, torch.full((1, 2, 2), 0.2989 + 0.587 * 0.5))
    as_int = GrayScale()(TensorDict(pixels=(rgb * 200).to(torch.uint8), batch_size=[]))["pixels"]
    assert as_int.dtype == torch.uint8 and as_int.unique().tolist() == [118]


def test_center_crop_values_and_bounds():
    images = torch.arange(2 * 1 * 6 * 5.0).reshape(2, 1, 6, 5)
    out = CenterCrop(3, 2)(TensorDict(pixels=images, batch_size=[2]))["pixels"]
    assert torch.equal(out, images[..., 2:4, 1:4])
    spec = Bounded(torch.arange(30.0).reshape(1, 6, 5), 100.0)
    cropped = CenterCrop(3, 2)._apply_spec(spec, 0, "pixels")
    assert torch.equal(cropped.low, torch.arange(30.0).reshape(1, 6, 5)[..., 2:4, 1:4])


def test_image_errors():
    with pytest.raises(TransformError, match=r"has 1 channels.*expected 3"):
        GrayScale()(TensorDict(pixels=torch.zeros(1, 4, 4), batch_size=[]))
    with pytest.raises(TransformError, match=r"is not an image; expected feature dims \[H, W, C\]"):
        ToTensorImage()(TensorDict(pixels=torch.zeros(4, 3), batch_size=[4]))
    with pytest.raises(TransformError, match="smaller than the 13x13 crop"):
        CenterCrop(13)(TensorDict(pixels=torch.zeros(3, H, W), batch_size=[]))
    with pytest.raises(TransformError, match="interpolation must be one of"):
        Resize(4, interpolation="lanczos")
    with pytest.raises(TransformError, match="w must be a positive int"):
        Resize(0)
    with pytest.raises(TransformError, match="dtype must be a floating dtype"):
        ToTensorImage(dtype=torch.uint8)
    env = TransformedEnv(ImageEnv(), GrayScale())  # [H, W, 3] images are not [C, H, W]
    with pytest.raises(TransformError, match="has 12 channels"):
        env.observation_spec  # noqa: B018
