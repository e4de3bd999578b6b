"""rlblocks-objectives' plugin: registers its losses with ``make_loss``/``list_losses``.

Names (what :func:`rlblocks.core.make_loss` accepts):

==================  ========================
name                loss
==================  ========================
``ppo``             :class:`ClipPPOLoss` (what "PPO" usually means)
``clip_ppo``        :class:`ClipPPOLoss`
``kl_ppo``          :class:`KLPENPPOLoss`
``unclipped_ppo``   :class:`PPOLoss`
``a2c``             :class:`A2CLoss`
``reinforce``       :class:`ReinforceLoss`
``dqn``             :class:`DQNLoss`
``c51``             :class:`DistributionalDQNLoss` (TorchRL's class name); also
                    ``distributional_dqn``
``ddpg``            :class:`DDPGLoss`
``td3``             :class:`TD3Loss`
``sac``             :class:`SACLoss`
``discrete_sac``    :class:`DiscreteSACLoss`
``redq``            :class:`REDQLoss` (SAC over a critic ensemble, target over a random
                    subset)
``crossq``          :class:`CrossQLoss` (SAC with batch-normalized critics, no targets)
``tqc``             :class:`TQCLoss` (SAC with truncated quantile critics)
``iql``             :class:`IQLLoss`
``cql``             :class:`CQLLoss`
``bc``              :class:`BCLoss`
``td3bc``           :class:`TD3BCLoss` (TD3 with a behavior-cloning term)
``td3_bc``          :class:`TD3BCLoss` (TorchRL's module name)
``dt``              :class:`DecisionTransformerLoss` (TorchRL: ``DTLoss``); also
                    ``decision_transformer``
``online_dt``       :class:`OnlineDTLoss`
``gail``            :class:`GAILLoss` (the discriminator; :meth:`GAILLoss.reward` rewards
                    the policy)
``mappo``           :class:`MAPPOLoss` (clipped PPO over a group, centralised critic)
``ippo``            :class:`IPPOLoss` (clipped PPO over a group, decentralised critic)
``maddpg``          :class:`MADDPGLoss` (DDPG over a group, centralised critic)
``iddpg``           :class:`IDDPGLoss` (DDPG over a group, decentralised critic)
``masac``           :class:`MASACLoss` (SAC over a group)
``independent_q``   :class:`IndependentQLoss` (DQN over a group; ``iql`` is Implicit
                    Q-Learning)
``idqn``            :class:`IndependentQLoss`
``qmixer``          :class:`QMixerLoss` (QMIX or VDN, by the mixer given)
``dreamer_model``   :class:`DreamerModelLoss` (the world model: reconstruction, reward, KL)
``dreamer_actor``   :class:`DreamerActorLoss` (lambda-returns of imagined rollouts)
``dreamer_value``   :class:`DreamerValueLoss`
==================  ========================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import hookimpl

LOSS_NAMES: dict[str, str] = {
    "ppo": "ClipPPOLoss",
    "clip_ppo": "ClipPPOLoss",
    "kl_ppo": "KLPENPPOLoss",
    "unclipped_ppo": "PPOLoss",
    "a2c": "A2CLoss",
    "reinforce": "ReinforceLoss",
    "dqn": "DQNLoss",
    "c51": "DistributionalDQNLoss",
    "distributional_dqn": "DistributionalDQNLoss",
    "ddpg": "DDPGLoss",
    "td3": "TD3Loss",
    "sac": "SACLoss",
    "discrete_sac": "DiscreteSACLoss",
    "redq": "REDQLoss",
    "crossq": "CrossQLoss",
    "tqc": "TQCLoss",
    "iql": "IQLLoss",
    "cql": "CQLLoss",
    "bc": "BCLoss",
    "td3bc": "TD3BCLoss",
    "td3_bc": "TD3BCLoss",
    "dt": "DecisionTransformerLoss",
    "decision_transformer": "DecisionTransformerLoss",
    "online_dt": "OnlineDTLoss",
    "gail": "GAILLoss",
    "mappo": "MAPPOLoss",
    "ippo": "IPPOLoss",
    "maddpg": "MADDPGLoss",
    "iddpg": "IDDPGLoss",
    "masac": "MASACLoss",
    "independent_q": "IndependentQLoss",
    "idqn": "IndependentQLoss",
    "qmixer": "QMixerLoss",
    "dreamer_model": "DreamerModelLoss",
    "dreamer_actor": "DreamerActorLoss",
    "dreamer_value": "DreamerValueLoss",
}
"""``make_loss`` name -> class name in :mod:`rlblocks.objectives`."""


@hookimpl
def rlblocks_losses() -> Mapping[str, Callable[..., Any]]:
    import rlblocks.objectives as objectives

    return {name: getattr(objectives, cls) for name, cls in LOSS_NAMES.items()}
