"""Multi-agent losses: the single-agent losses over one group of agents.

Each class here is its single-agent loss with the keys set to a group (TorchRL's layout:
``(group, "action")`` ``[*batch, n_agents, *action]``, ``("next", group, "reward")``
``[*batch, n_agents, 1]``...). Nothing else changes: the losses of
:mod:`rlblocks.objectives` take per-agent log-probabilities, values and targets whenever
their keys carry an agent dim, and read the env-level ``("next", "done")`` /
``("next", "terminated")``, broadcast over the agents, when the group has no flags of its
own. The names tell which critic the algorithm means (centralised for MAPPO and MADDPG,
decentralised for IPPO and IDDPG); the networks are yours to build that way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from rlblocks.objectives._losses.base import LossModule
from rlblocks.objectives._losses.ddpg import DDPGLoss
from rlblocks.objectives._losses.dqn import DQNLoss
from rlblocks.objectives._losses.ppo import ClipPPOLoss
from rlblocks.objectives._losses.sac import SACLoss
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = [
    "MAPPOLoss",
    "IPPOLoss",
    "MADDPGLoss",
    "IDDPGLoss",
    "MASACLoss",
    "IndependentQLoss",
    "DEFAULT_GROUP",
    "group_keys",
]

DEFAULT_GROUP = "agents"
"""The group most multi-agent environments put their agents in (e.g. VMAS)."""

# One priority per sample of the replay buffer, whatever the number of agents: it stays at
# the root, where the buffer reads it.
_ROOT_ROLES = frozenset({"priority"})


def _set_group(loss: LossModule, group: str) -> None:
    """Point every role of ``loss`` but the root ones at ``(group, <its default leaf>)``."""
    owner = type(loss).__name__
    if not isinstance(group, str) or not group or group == "next":
        raise ObjectiveConfigError(
            f"{owner}: group must be the name of a group of agents, e.g. 'agents' (a key of "
            f"env.group_map), got {group!r}"
        )
    loss.group = group
    loss.set_keys(**group_keys(group, type(loss).default_keys))


def group_keys(group: str, defaults: Mapping[str, NestedKey]) -> dict[str, NestedKey]:
    """``{role: (group, leaf)}`` for the roles of ``defaults`` (``priority`` stays at the root).

    Example:
        >>> group_keys("agents", {"action": "action", "priority": "td_error"})
        {'action': ('agents', 'action')}
    """
    return {
        role: (group, key if isinstance(key, str) else key[-1])
        for role, key in defaults.items()
        if role not in _ROOT_ROLES
    }


class _GroupLoss:
    """Mixed in before a single-agent loss: takes ``group=`` and points the keys at it."""

    def __init__(self, *args: Any, group: str = DEFAULT_GROUP, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _set_group(self, group)  # type: ignore[arg-type]


class MAPPOLoss(_GroupLoss, ClipPPOLoss):
    """Multi-agent PPO (Yu et al., 2022): clipped PPO over a group, with a centralised critic.

    :class:`ClipPPOLoss` with ``action``, ``sample_log_prob``, ``advantage``,
    ``value_target``, ``value`` (``state_value``), ``reward``, ``done`` and ``terminated``
    read under ``group``. The ratio, advantage and critic error are per agent
    (``[*batch, n_agents, 1]``) and every loss term is averaged over samples and agents: it
    is the mean over agents of the single-agent term on each agent's data.

    MAPPO's critic is centralised: each agent's value is computed from the whole team's
    observations (or a global state), e.g. a critic reading ``(group, "observation")``
    ``[*batch, n_agents, obs]`` and mixing agents, writing ``(group, "state_value")``
    ``[*batch, n_agents, 1]``. With each agent's value from its own observation, the
    algorithm is :class:`IPPOLoss`; the loss computes the same terms either way.

    Args:
        actor_network: A probabilistic policy reading and writing the group's keys.
        critic_network: The centralised critic, writing ``(group, "state_value")``.
        group: The group of agents (a key of ``env.group_map``).
        **kwargs: The other arguments of :class:`ClipPPOLoss` (``clip_epsilon``,
            ``entropy_coef``, ``gamma``, ``lmbda``...).

    Example:
        >>> loss = MAPPOLoss(actor, critic, group="agents", clip_epsilon=0.2)
        >>> loss.tensor_keys.action
        ('agents', 'action')
        >>> total_loss(loss(batch)).backward()  # GAE per agent when no advantage is given
    """


class IPPOLoss(_GroupLoss, ClipPPOLoss):
    """Independent PPO (de Witt et al., 2020): clipped PPO over a group, decentralised critic.

    The same loss as :class:`MAPPOLoss` (keys under ``group``, terms per agent, averaged
    over agents); the critic is decentralised: each agent's value comes from its own
    observation only, e.g. a ``ValueOperator`` applying one network to each agent's row of
    ``(group, "observation")``.

    Args:
        actor_network: A probabilistic policy reading and writing the group's keys.
        critic_network: The decentralised critic, writing ``(group, "state_value")``.
        group: The group of agents (a key of ``env.group_map``).
        **kwargs: The other arguments of :class:`ClipPPOLoss`.

    Example:
        >>> loss = IPPOLoss(actor, critic, group="agents")
    """


class MADDPGLoss(_GroupLoss, DDPGLoss):
    """Multi-agent DDPG (Lowe et al., 2017): DDPG over a group, with a centralised critic.

    :class:`DDPGLoss` with ``action``, ``reward``, ``done``, ``terminated`` and
    ``state_action_value`` read under ``group`` (the replay priority ``td_error`` stays at
    the root: the largest error over agents, one per sample). Each agent's ``Q`` sees all
    agents' observations and actions: the critic reads ``(group, "observation")`` and
    ``(group, "action")`` (``[*batch, n_agents, *]``) and writes
    ``(group, "state_action_value")`` ``[*batch, n_agents, 1]``. The actor term evaluates the
    critic at every agent's current deterministic action at once (``-mean Q_i(s, mu(s))``
    over samples and agents), not at the other agents' actions from the buffer.

    Args:
        actor_network: A deterministic ``Actor`` writing ``(group, "action")``.
        value_network: The centralised critic.
        group: The group of agents (a key of ``env.group_map``).
        **kwargs: The other arguments of :class:`DDPGLoss`.

    Example:
        >>> loss = MADDPGLoss(actor, critic, group="agents")
        >>> updater = SoftUpdate(loss, tau=0.005)
    """


class IDDPGLoss(_GroupLoss, DDPGLoss):
    """Independent DDPG: DDPG over a group, each agent's critic seeing only its own data.

    The same loss as :class:`MADDPGLoss`; the critic is decentralised: agent ``i``'s
    ``Q`` reads agent ``i``'s observation and action only.

    Args:
        actor_network: A deterministic ``Actor`` writing ``(group, "action")``.
        value_network: The decentralised critic.
        group: The group of agents (a key of ``env.group_map``).
        **kwargs: The other arguments of :class:`DDPGLoss`.

    Example:
        >>> loss = IDDPGLoss(actor, critic, group="agents")
    """


class MASACLoss(_GroupLoss, SACLoss):
    """Multi-agent SAC: soft actor-critic over a group, one temperature for all agents.

    :class:`SACLoss` with ``action``, ``reward``, ``done``, ``terminated`` and
    ``state_action_value`` read under ``group`` (``td_error`` at the root). Log-probabilities
    are per agent (``[*batch, n_agents]``), matching ``Q`` ``[*batch, n_agents, 1]``; the
    terms and the temperature's loss average over samples and agents. The critic may be
    centralised (reading all agents' observations and actions) or not.

    ``target_entropy="auto"`` is minus the number of action dims of one agent, read from the
    first batch (an action spec of the group, ``[n_agents, *action]``, would count every
    agent's).

    Args:
        actor_network: A ``ProbabilisticActor`` writing ``(group, "action")``.
        qvalue_network: The critic writing ``(group, "state_action_value")``.
        group: The group of agents (a key of ``env.group_map``).
        target_entropy: ``"auto"`` or a number (per agent).
        **kwargs: The other arguments of :class:`SACLoss`.

    Example:
        >>> loss = MASACLoss(actor, qvalue, group="agents", num_qvalue_nets=2)
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        *,
        group: str = DEFAULT_GROUP,
        target_entropy: float | str = "auto",
        **kwargs,
    ) -> None:
        super().__init__(
            actor_network, qvalue_network, group=group, target_entropy=target_entropy, **kwargs
        )
        if target_entropy == "auto":
            self.target_entropy = None  # resolved per agent at the first call


class IndependentQLoss(_GroupLoss, DQNLoss):
    """Independent Q-learning (Tan, 1993): DQN over a group, one Q per agent.

    :class:`DQNLoss` with ``action``, ``action_value``, ``reward``, ``done`` and
    ``terminated`` read under ``group`` (``td_error`` at the root): each agent learns its
    own ``Q(o_i, .)`` from its own reward, the others being part of its environment; the
    loss is averaged over samples and agents. Registered as ``"independent_q"`` (and
    ``"idqn"``): ``"iql"`` is Implicit Q-Learning (:class:`IQLLoss`), the offline loss.

    Args:
        value_network: A module writing ``(group, "action_value")``
            ``[*batch, n_agents, n_actions]``.
        group: The group of agents (a key of ``env.group_map``).
        **kwargs: The other arguments of :class:`DQNLoss` (``double_dqn``,
            ``loss_function``...).

    Example:
        >>> loss = IndependentQLoss(qnet, group="agents", double_dqn=True)
    """
