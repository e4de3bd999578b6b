"""rlblocks-envs: TensorDict environments, transforms, batched envs and the gymnasium backend.

Every env reads and writes TensorDicts with the keys of :mod:`rlblocks.core`
(``observation``, ``action``, ``("next", "reward")``, ``done``/``terminated``/``truncated``)
and describes them with :mod:`rlblocks.core.specs` specs.
"""

from __future__ import annotations

from rlblocks.envs import transforms
from rlblocks.envs._batched import EnvCreator, SerialEnv
from rlblocks.envs._checks import check_env_specs
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs._export import to_gymnasium
from rlblocks.envs._goal_envs import BitFlippingEnv
from rlblocks.envs._gym import GymEnv, GymWrapper
from rlblocks.envs._gym_spaces import Leaf as SpaceLeaf
from rlblocks.envs._gym_spaces import SpaceLayout
from rlblocks.envs._model_based import ModelBasedEnv
from rlblocks.envs._multiagent import (
    MarlGroupMapType,
    all_agents_done,
    check_group_map,
    make_group_map,
)
from rlblocks.envs._native import CartPoleEnv, PendulumEnv
from rlblocks.envs._native_marl import MultiAgentLineEnv
from rlblocks.envs._parallel import ParallelEnv
from rlblocks.envs._policy_export import EXPORT_FORMATS, export_policy
from rlblocks.envs._stepper import Stepper, repeat_action
from rlblocks.envs._version import __version__
from rlblocks.envs.errors import (
    BatchSizeError,
    EnvClosedError,
    EnvError,
    EnvSpecError,
    ExportError,
    InvalidActionError,
    TransformError,
    UnsupportedEnvOperationError,
    WorkerError,
)
from rlblocks.envs.transforms import *  # noqa: F403  (every transform, at the top level too)

__all__ = [
    "__version__",
    # env API (the backend protocol) and its optional fast path
    "EnvBase",
    "Stepper",
    "repeat_action",
    "check_env_specs",
    # environments
    "GymEnv",
    "GymWrapper",
    # gymnasium spaces <-> specs and values, for backends built on gymnasium spaces
    "SpaceLayout",
    "SpaceLeaf",
    "PendulumEnv",
    "CartPoleEnv",
    "MultiAgentLineEnv",
    "BitFlippingEnv",
    # a learned model as an env (model-based RL: imagination rollouts)
    "ModelBasedEnv",
    # multi-agent: agent groups
    "MarlGroupMapType",
    "make_group_map",
    "check_group_map",
    "all_agents_done",
    # batched envs
    "SerialEnv",
    "ParallelEnv",
    "EnvCreator",
    # export
    "to_gymnasium",
    "export_policy",
    "EXPORT_FORMATS",
    # errors
    "EnvError",
    "EnvClosedError",
    "EnvSpecError",
    "InvalidActionError",
    "BatchSizeError",
    "TransformError",
    "WorkerError",
    "UnsupportedEnvOperationError",
    "ExportError",
    # transforms (Transform, Compose, TransformedEnv, StepCounter, RewardSum, ...)
    *transforms.__all__,
]
