"""Transforms: edit what an env returns and reads, step by step or on a plain TensorDict.

``TransformedEnv(env, transform)`` applies a transform (or a ``Compose`` of several) to
``env``; the same transforms apply to TensorDicts outside an env (``transform(td)``).
"""

from __future__ import annotations

from rlblocks.envs.transforms._action import ActionDiscretizer
from rlblocks.envs.transforms._base import Compose, Transform
from rlblocks.envs.transforms._cast import DeviceCastTransform, DoubleToFloat, DTypeCastTransform
from rlblocks.envs.transforms._env_ops import (
    EndOfLifeTransform,
    FireResetEnv,
    FrameSkipTransform,
    InitTracker,
    NoopResetEnv,
    TensorDictPrimer,
)
from rlblocks.envs.transforms._episode import RewardSum, StepCounter
from rlblocks.envs.transforms._frames import CatFrames
from rlblocks.envs.transforms._image import CenterCrop, GrayScale, Resize, ToTensorImage
from rlblocks.envs.transforms._keys import ExcludeTransform, RenameTransform, SelectTransform
from rlblocks.envs.transforms._mask import ActionMask
from rlblocks.envs.transforms._norm import ObservationNorm, VecNorm
from rlblocks.envs.transforms._obs import (
    CatTensors,
    FlattenObservation,
    SqueezeTransform,
    UnsqueezeTransform,
)
from rlblocks.envs.transforms._reward import RewardClipping, RewardScaling, SignTransform
from rlblocks.envs.transforms._transformed_env import TransformedEnv
from rlblocks.envs.transforms._video import VideoRecorder

__all__ = [
    "Transform",
    "Compose",
    "TransformedEnv",
    "StepCounter",
    "RewardSum",
    "RewardScaling",
    "RewardClipping",
    "SignTransform",
    "ObservationNorm",
    "VecNorm",
    "DoubleToFloat",
    "DTypeCastTransform",
    "DeviceCastTransform",
    "CatFrames",
    "CatTensors",
    "UnsqueezeTransform",
    "SqueezeTransform",
    "FlattenObservation",
    "ToTensorImage",
    "Resize",
    "GrayScale",
    "CenterCrop",
    "NoopResetEnv",
    "FireResetEnv",
    "FrameSkipTransform",
    "EndOfLifeTransform",
    "InitTracker",
    "TensorDictPrimer",
    "RenameTransform",
    "SelectTransform",
    "ExcludeTransform",
    "ActionDiscretizer",
    "ActionMask",
    "VideoRecorder",
]
