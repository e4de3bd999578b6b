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
``ddpg``            :class:`DDPGLoss`
``td3``             :class:`TD3Loss`
``sac``             :class:`SACLoss`
``discrete_sac``    :class:`DiscreteSACLoss`
``iql``             :class:`IQLLoss`
``cql``             :class:`CQLLoss`
``bc``              :class:`BCLoss`
``mappo``           :class:`MAPPOLoss` (clipped PPO over a group, centralised critic)
``ippo``            :class:`IPPOLoss` (clipped PPO over a group, decentralised critic)
``maddpg``          :class:`MADDPGLoss` (DDPG over a group, centralised critic)
``iddpg``           :class:`IDDPGLoss` (DDPG over a group, decentralised critic)
``masac``           :class:`MASACLoss` (SAC over a group)
``independent_q``   :class:`IndependentQLoss` (DQN over a group; ``iql`` is Implicit
                    Q-Learning)
``idqn``            :class:`IndependentQLoss`
``qmixer``          :class:`QMixerLoss` (QMIX or VDN, by the mixer given)
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
    "ddpg": "DDPGLoss",
    "td3": "TD3Loss",
    "sac": "SACLoss",
    "discrete_sac": "DiscreteSACLoss",
    "iql": "IQLLoss",
    "cql": "CQLLoss",
    "bc": "BCLoss",
    "mappo": "MAPPOLoss",
    "ippo": "IPPOLoss",
    "maddpg": "MADDPGLoss",
    "iddpg": "IDDPGLoss",
    "masac": "MASACLoss",
    "independent_q": "IndependentQLoss",
    "idqn": "IndependentQLoss",
    "qmixer": "QMixerLoss",
}
"""``make_loss`` name -> class name in :mod:`rlblocks.objectives`."""


@hookimpl
def rlblocks_losses() -> Mapping[str, Callable[..., Any]]:
    import rlblocks.objectives as objectives

    return {name: getattr(objectives, cls) for name, cls in LOSS_NAMES.items()}
