"""Image edits: :class:`ToTensorImage`, :class:`Resize`, :class:`GrayScale`, :class:`CenterCrop`.

Images are ``[*batch, C, H, W]`` tensors (``ToTensorImage`` makes them so from the
``[*batch, H, W, C]`` uint8 arrays that renderers produce). Only torch is used: resizing is
``torch.nn.functional.interpolate``, no torchvision needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tensordict.utils import NestedKey

from rlblocks.core import PIXELS
from rlblocks.core.specs import Bounded, TensorSpec, Unbounded
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import as_key_list
from rlblocks.envs.transforms._common import FeatureTransform, hull_spec, map_spec, positive_int

__all__ = ["ToTensorImage", "Resize", "GrayScale", "CenterCrop"]

# ITU-R 601-2 luma weights, as in PIL's and torchvision's grayscale conversion.
_LUMA = (0.2989, 0.587, 0.114)
_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
_NATIVE_U8 = ("nearest", "nearest-exact", "bilinear")


class _ImageTransform(FeatureTransform):
    """Checks that the edited entries are images: at least ``min_dims`` feature dims."""

    min_dims = 3  # [C, H, W]
    layout = "[C, H, W]"

    def __init__(
        self,
        in_keys: NestedKey | Sequence[NestedKey] | None,
        out_keys: NestedKey | Sequence[NestedKey] | None,
    ) -> None:
        super().__init__(in_keys=as_key_list(in_keys) or [PIXELS], out_keys=out_keys)

    def _check_image(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> None:
        if value.ndim - batch_ndim < self.min_dims:
            raise TransformError(
                f"{type(self).__name__}: {key!r} of shape {list(value.shape)} "
                f"({batch_ndim} batch dim(s)) is not an image; expected feature dims "
                f"{self.layout}"
            )

    def _apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        self._check_image(value, batch_ndim, key)
        return self._edit(value)

    def _edit(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _restore_dtype(result: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast a float result back to an integer image dtype (rounded, clamped to its range)."""
    if dtype.is_floating_point or result.dtype == dtype:
        return result.to(dtype)
    info = torch.iinfo(dtype)
    return result.round().clamp(info.min, info.max).to(dtype)


class ToTensorImage(_ImageTransform):
    """Turn ``[*batch, H, W, C]`` images into ``[*batch, C, H, W]`` floats in ``[0, 1]``.

    Args:
        from_int: Divide by 255 (``None``: when the input has an integer dtype).
        dtype: The output dtype (floating).
        in_keys: Images to convert (default: ``"pixels"``).
        out_keys: Where to write (default: ``in_keys``).

    Raises:
        TransformError: ``dtype`` is not floating, or (when applied) an entry has fewer than
            three feature dims.

    Example:
        >>> t = ToTensorImage()
        >>> td = t(TensorDict(pixels=torch.full((2, 64, 48, 3), 255, dtype=torch.uint8),
        ...                   batch_size=[2]))
        >>> td["pixels"].shape, td["pixels"].max().item()
        (torch.Size([2, 3, 64, 48]), 1.0)
    """

    layout = "[H, W, C]"

    def __init__(
        self,
        from_int: bool | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TransformError(f"ToTensorImage: dtype must be a floating dtype, got {dtype!r}")
        super().__init__(in_keys, out_keys)
        self.from_int = from_int
        self.dtype = dtype

    def _scales(self, dtype: torch.dtype) -> bool:
        return not dtype.is_floating_point if self.from_int is None else self.from_int

    def _edit(self, image: torch.Tensor) -> torch.Tensor:
        out = image.movedim(-1, -3).to(self.dtype)
        return out.div(255) if self._scales(image.dtype) else out

    def _apply_spec(self, spec: TensorSpec, batch_ndim: int, key: NestedKey) -> TensorSpec:
        shape = self._apply(spec.zero(), batch_ndim, key).shape
        if self._scales(spec.dtype):  # type: ignore[arg-type]
            return Bounded(0.0, 1.0, shape=shape, dtype=self.dtype, device=spec.device)
        return map_spec(spec, lambda t: t.movedim(-1, -3), dtype=self.dtype)

    def extra_repr(self) -> str:
        return f"from_int={self.from_int}, dtype={self.dtype}, {super().extra_repr()}"


class Resize(_ImageTransform):
    """Resize ``[*batch, C, H, W]`` images to height ``h`` and width ``w``.

    Uses ``torch.nn.functional.interpolate`` (antialiased for ``"bilinear"`` and
    ``"bicubic"``). Integer images are resized in float and rounded back, except uint8
    images on CPU in the ``"bilinear"`` and nearest modes, which torch resizes directly
    (bilinear: within 1 of the rounded float result, and faster). The output shape
    is ``[*batch, C, h, w]`` (TorchRL's ``Resize`` puts ``w`` before ``h``; both agree for
    square sizes).

    Args:
        w: Output width (last dim).
        h: Output height (second to last dim; default: ``w``).
        interpolation: ``"bilinear"``, ``"bicubic"``, ``"nearest"``, ``"nearest-exact"``
            or ``"area"``.
        in_keys: Images to resize (default: ``"pixels"``).
        out_keys: Where to write (default: ``in_keys``).

    Raises:
        TransformError: A size is not a positive int or the interpolation is unknown.

    Example:
        >>> t = Resize(84, 84)
        >>> t(TensorDict(pixels=torch.rand(2, 3, 210, 160), batch_size=[2]))["pixels"].shape
        torch.Size([2, 3, 84, 84])
    """

    def __init__(
        self,
        w: int,
        h: int | None = None,
        interpolation: str = "bilinear",
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        self.w = positive_int(w, "Resize", "w")
        self.h = self.w if h is None else positive_int(h, "Resize", "h")
        if interpolation not in _INTERPOLATIONS:
            raise TransformError(
                f"Resize: interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}"
            )
        super().__init__(in_keys, out_keys)
        self.interpolation = interpolation

    def _edit(self, image: torch.Tensor) -> torch.Tensor:
        lead = image.shape[:-3]
        flat = image.reshape(-1, *image.shape[-3:])
        # torch resizes uint8 images natively on CPU in these modes (bilinear within 1 of
        # the rounded float result), without the float round trip.
        native = flat.dtype == torch.uint8 and flat.device.type == "cpu"
        if not flat.dtype.is_floating_point and not (native and self.interpolation in _NATIVE_U8):
            flat = flat.to(torch.float32)
        smooth = self.interpolation in ("bilinear", "bicubic")
        out = F.interpolate(
            flat,
            size=(self.h, self.w),
            mode=self.interpolation,
            align_corners=False if smooth else None,
            antialias=smooth,
        )
        return _restore_dtype(out, image.dtype).reshape(*lead, *out.shape[-3:])

    def _apply_spec(self, spec: TensorSpec, batch_ndim: int, key: NestedKey) -> TensorSpec:
        shape = self._apply(spec.zero(), batch_ndim, key).shape
        # Bicubic kernels overshoot, so only the other modes keep the input's value range.
        if self.interpolation == "bicubic":
            return Unbounded(shape=shape, dtype=spec.dtype, device=spec.device)  # type: ignore[arg-type]
        return hull_spec(spec, shape, spec.dtype)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return (
            f"w={self.w}, h={self.h}, interpolation={self.interpolation!r}, {super().extra_repr()}"
        )


class GrayScale(_ImageTransform):
    """Turn ``[*batch, 3, H, W]`` RGB images into ``[*batch, 1, H, W]`` luma images.

    Uses the ITU-R 601-2 weights ``0.2989 R + 0.587 G + 0.114 B``; integer images are
    rounded back to their dtype.

    Args:
        in_keys: Images to convert (default: ``"pixels"``).
        out_keys: Where to write (default: ``in_keys``).

    Raises:
        TransformError: (when applied) an entry does not have 3 channels.

    Example:
        >>> t = GrayScale()
        >>> t(TensorDict(pixels=torch.rand(2, 3, 8, 8), batch_size=[2]))["pixels"].shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        super().__init__(in_keys, out_keys)

    def _apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        self._check_image(value, batch_ndim, key)
        if value.shape[-3] != 3:
            raise TransformError(
                f"GrayScale: {key!r} has {value.shape[-3]} channels (shape "
                f"{list(value.shape)}), expected 3 (RGB) in dim -3; apply ToTensorImage "
                f"first to turn [H, W, C] images into [C, H, W]"
            )
        return self._edit(value)

    def _edit(self, image: torch.Tensor) -> torch.Tensor:
        work = image if image.dtype.is_floating_point else image.to(torch.float32)
        weights = torch.tensor(_LUMA, dtype=work.dtype, device=work.device).reshape(3, 1, 1)
        return _restore_dtype((work * weights).sum(-3, keepdim=True), image.dtype)

    def _apply_spec(self, spec: TensorSpec, batch_ndim: int, key: NestedKey) -> TensorSpec:
        shape = self._apply(spec.zero(), batch_ndim, key).shape
        return hull_spec(spec, shape, spec.dtype)  # type: ignore[arg-type]


class CenterCrop(_ImageTransform):
    """Crop the center ``h x w`` region of ``[*batch, C, H, W]`` images.

    Args:
        w: Crop width (last dim).
        h: Crop height (default: ``w``).
        in_keys: Images to crop (default: ``"pixels"``).
        out_keys: Where to write (default: ``in_keys``).

    Raises:
        TransformError: A size is not a positive int, or (when applied) the image is
            smaller than the crop.

    Example:
        >>> t = CenterCrop(64)
        >>> t(TensorDict(pixels=torch.rand(2, 3, 84, 84), batch_size=[2]))["pixels"].shape
        torch.Size([2, 3, 64, 64])
    """

    min_dims = 2
    layout = "[..., H, W]"

    def __init__(
        self,
        w: int,
        h: int | None = None,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        self.w = positive_int(w, "CenterCrop", "w")
        self.h = self.w if h is None else positive_int(h, "CenterCrop", "h")
        super().__init__(in_keys, out_keys)

    def _apply(self, value: torch.Tensor, batch_ndim: int, key: NestedKey) -> torch.Tensor:
        self._check_image(value, batch_ndim, key)
        height, width = value.shape[-2:]
        if height < self.h or width < self.w:
            raise TransformError(
                f"CenterCrop: {key!r} images are {height}x{width} (HxW), smaller than the "
                f"{self.h}x{self.w} crop; crop less or Resize first"
            )
        return self._edit(value)

    def _edit(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        # Round the margins like torchvision, so both crop the same pixels.
        top = round((height - self.h) / 2.0)
        left = round((width - self.w) / 2.0)
        return image[..., top : top + self.h, left : left + self.w]

    def extra_repr(self) -> str:
        return f"w={self.w}, h={self.h}, {super().extra_repr()}"
