"""What gets trained: networks, policies, critics, distributions and exploration.

Everything here is a ``torch.nn.Module``; the policies and critics are TensorDict modules
built on ``tensordict.nn`` that read and write the keys of the rlblocks contract.
``OneHotCategorical`` and ``NormalParamExtractor`` are tensordict's, re-exported.
"""

from __future__ import annotations

from tensordict.nn import NormalParamExtractor, OneHotCategorical

from rlblocks.objectives.modules._actors import (
    Actor,
    ActorCriticOperator,
    ActorValueOperator,
    ProbabilisticActor,
    QValueActor,
    QValueModule,
    SafeModule,
    ValueOperator,
)
from rlblocks.objectives.modules._decision_transformer import DecisionTransformer, DTConfig
from rlblocks.objectives.modules._decision_transformer_actors import (
    DecisionTransformerPolicy,
    DTActor,
    OnlineDTActor,
)
from rlblocks.objectives.modules._distributional import (
    DistributionalQValueActor,
    DistributionalQValueModule,
)
from rlblocks.objectives.modules._distributions import TanhDelta, TanhNormal
from rlblocks.objectives.modules._dueling import DuelingMlpDQNet
from rlblocks.objectives.modules._ensemble import BatchedEnsemble
from rlblocks.objectives.modules._exploration import (
    AdditiveGaussianModule,
    EGreedyModule,
    OrnsteinUhlenbeckProcessModule,
)
from rlblocks.objectives.modules._masked import MaskedCategorical, MaskedOneHotCategorical
from rlblocks.objectives.modules._multiagent import MultiAgentMLP, QMixer, VDNMixer
from rlblocks.objectives.modules._networks import MLP, ConvNet, SquashDims
from rlblocks.objectives.modules._noisy import NoisyLazyLinear, NoisyLinear, reset_noise
from rlblocks.objectives.modules._normalization import BatchRenorm1d
from rlblocks.objectives.modules._rnn import GRUModule, LSTMModule
from rlblocks.objectives.modules._world_models import RSSM, ObsDecoder, ObsEncoder, WorldModel

__all__ = [
    # networks
    "MLP",
    "ConvNet",
    "SquashDims",
    "BatchRenorm1d",
    "BatchedEnsemble",
    "DuelingMlpDQNet",
    "NoisyLinear",
    "NoisyLazyLinear",
    "reset_noise",
    "LSTMModule",
    "GRUModule",
    # world models (Dreamer)
    "RSSM",
    "ObsEncoder",
    "ObsDecoder",
    "WorldModel",
    # Decision Transformer
    "DecisionTransformer",
    "DTConfig",
    "DTActor",
    "OnlineDTActor",
    "DecisionTransformerPolicy",
    # multi-agent
    "MultiAgentMLP",
    "VDNMixer",
    "QMixer",
    # policies and critics
    "SafeModule",
    "Actor",
    "ProbabilisticActor",
    "ValueOperator",
    "QValueModule",
    "QValueActor",
    "DistributionalQValueModule",
    "DistributionalQValueActor",
    "ActorValueOperator",
    "ActorCriticOperator",
    # distributions
    "TanhNormal",
    "TanhDelta",
    "OneHotCategorical",
    "MaskedCategorical",
    "MaskedOneHotCategorical",
    "NormalParamExtractor",
    # exploration
    "EGreedyModule",
    "AdditiveGaussianModule",
    "OrnsteinUhlenbeckProcessModule",
]
