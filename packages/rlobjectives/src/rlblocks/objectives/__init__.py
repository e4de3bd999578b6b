"""rlblocks-objectives: what gets trained, and the losses that train it.

- :mod:`rlblocks.objectives.modules`: networks (``MLP``, ``ConvNet``, ``LSTMModule``...),
  policies and critics (``ProbabilisticActor``, ``ValueOperator``, ``QValueActor``...),
  distributions and exploration modules.
- :mod:`rlblocks.objectives.value`: returns and advantages (``GAE``, TD(lambda), TD(0)).
- Here: the losses (``ClipPPOLoss``, ``SACLoss``, ``DQNLoss``...), each a
  :class:`LossModule`, the target-network updaters ``SoftUpdate``/``HardUpdate``, and
  :func:`make_update_step` (zero_grad, loss, backward, clip, step in one call, optionally
  under ``torch.compile``).

Every loss is also registered with the plugin system: ``rlblocks.core.make_loss("sac",
actor_network=..., qvalue_network=...)``.
"""

from __future__ import annotations

from rlblocks.objectives._keys import (
    ACTION_VALUE,
    ADVANTAGE,
    CHOSEN_ACTION_VALUE,
    SAMPLE_LOG_PROB,
    STATE_ACTION_VALUE,
    STATE_VALUE,
    STEPS_TO_NEXT_OBS,
    TD_ERROR,
    VALUE_TARGET,
    TensorKeys,
)
from rlblocks.objectives._losses.a2c import A2CLoss, ReinforceLoss
from rlblocks.objectives._losses.base import HardUpdate, LossModule, SoftUpdate, total_loss
from rlblocks.objectives._losses.cql import CQLLoss
from rlblocks.objectives._losses.crossq import CrossQLoss
from rlblocks.objectives._losses.ddpg import DDPGLoss, TD3Loss
from rlblocks.objectives._losses.decision_transformer import (
    DecisionTransformerLoss,
    DTLoss,
    OnlineDTLoss,
)
from rlblocks.objectives._losses.distributional import DistributionalDQNLoss
from rlblocks.objectives._losses.dqn import DQNLoss
from rlblocks.objectives._losses.dreamer import (
    LAMBDA_TARGET,
    DreamerActorLoss,
    DreamerModelLoss,
    DreamerValueLoss,
)
from rlblocks.objectives._losses.gail import GAILLoss
from rlblocks.objectives._losses.multiagent import (
    IDDPGLoss,
    IndependentQLoss,
    IPPOLoss,
    MADDPGLoss,
    MAPPOLoss,
    MASACLoss,
)
from rlblocks.objectives._losses.offline import BCLoss, IQLLoss
from rlblocks.objectives._losses.ppo import ClipPPOLoss, KLPENPPOLoss, PPOLoss
from rlblocks.objectives._losses.qmixer import QMixerLoss
from rlblocks.objectives._losses.redq import REDQLoss
from rlblocks.objectives._losses.sac import DiscreteSACLoss, SACLoss
from rlblocks.objectives._losses.td3bc import TD3BCLoss
from rlblocks.objectives._losses.tqc import TQCLoss
from rlblocks.objectives._update import UpdateStep, make_update_step
from rlblocks.objectives._version import __version__
from rlblocks.objectives.errors import (
    MissingInputError,
    ObjectiveConfigError,
    ObjectiveError,
    ShapeMismatchError,
)
from rlblocks.objectives.value import ValueEstimators

__all__ = [
    "__version__",
    # losses
    "LossModule",
    "PPOLoss",
    "ClipPPOLoss",
    "KLPENPPOLoss",
    "A2CLoss",
    "ReinforceLoss",
    "DQNLoss",
    "DistributionalDQNLoss",
    "DDPGLoss",
    "TD3Loss",
    "SACLoss",
    "DiscreteSACLoss",
    "REDQLoss",
    "CrossQLoss",
    "TQCLoss",
    "IQLLoss",
    "CQLLoss",
    "BCLoss",
    "TD3BCLoss",
    "DecisionTransformerLoss",
    "DTLoss",
    "OnlineDTLoss",
    "GAILLoss",
    # model-based
    "DreamerModelLoss",
    "DreamerActorLoss",
    "DreamerValueLoss",
    "LAMBDA_TARGET",
    # multi-agent (over a group of agents)
    "MAPPOLoss",
    "IPPOLoss",
    "MADDPGLoss",
    "IDDPGLoss",
    "MASACLoss",
    "IndependentQLoss",
    "QMixerLoss",
    "total_loss",
    "ValueEstimators",
    # target networks
    "SoftUpdate",
    "HardUpdate",
    # the update step
    "make_update_step",
    "UpdateStep",
    # keys
    "TensorKeys",
    "SAMPLE_LOG_PROB",
    "STATE_VALUE",
    "STATE_ACTION_VALUE",
    "ACTION_VALUE",
    "CHOSEN_ACTION_VALUE",
    "ADVANTAGE",
    "VALUE_TARGET",
    "TD_ERROR",
    "STEPS_TO_NEXT_OBS",
    # errors
    "ObjectiveError",
    "MissingInputError",
    "ShapeMismatchError",
    "ObjectiveConfigError",
]
