"""Advantage actor-critic and REINFORCE losses."""

from __future__ import annotations

from typing import ClassVar

from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from rlblocks.objectives._checks import read_flags
from rlblocks.objectives._losses.base import next_key
from rlblocks.objectives._losses.policy_gradient import PolicyGradientLoss
from rlblocks.objectives.value import td1_return_estimate

__all__ = ["A2CLoss", "ReinforceLoss"]


class A2CLoss(PolicyGradientLoss):
    """Advantage actor-critic (Mnih et al., 2016).

    ``loss_objective = -mean(log pi(a|s) * A)`` with the advantage detached, plus
    ``loss_entropy = -entropy_coef * H`` and ``loss_critic = critic_coef * mean(d(V(s),
    value_target))``. A missing ``advantage`` is computed with the value estimator (GAE by
    default) from the critic.

    Takes the arguments of :class:`PPOLoss` (actor and critic networks, entropy and critic
    weights, ``loss_critic_type``, ``normalize_advantage``, ``clip_value``, ``gamma``,
    ``lmbda``); it does not read ``sample_log_prob``.

    Example:
        >>> loss = A2CLoss(actor, critic, entropy_coef=0.01)
        >>> total_loss(loss(batch)).backward()
    """

    def _policy_terms(self, tensordict, dist, advantage):
        return {"loss_objective": self._score_function_loss(tensordict, dist, advantage)}


class ReinforceLoss(PolicyGradientLoss):
    """REINFORCE (Williams, 1992), with an optional learned baseline.

    ``loss_actor = -mean(log pi(a|s) * A)``. With a critic, ``A`` comes from the value
    estimator (GAE by default) and ``loss_value = critic_coef * mean(d(V(s),
    value_target))`` trains the baseline. Without a critic, ``A`` is the discounted return
    to the end of the episode in the batch (``advantage`` in the batch is used if present).

    Args:
        actor_network: A probabilistic policy.
        critic_network: A ``ValueOperator`` used as baseline, or ``None``.
        critic_coef: Weight of the baseline term.
        loss_critic_type: ``"l1"``, ``"l2"`` or ``"smooth_l1"``.
        normalize_advantage: Standardize the advantage over the batch.
        gamma: Discount.
        lmbda: Lambda of the default value estimator (with a critic).

    Example:
        >>> loss = ReinforceLoss(actor, gamma=0.99)
        >>> out = loss(trajectories)  # loss_actor
    """

    critic_term: ClassVar[str] = "loss_value"

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        critic_network: TensorDictModuleBase | None = None,
        *,
        critic_coef: float = 1.0,
        loss_critic_type: str = "smooth_l1",
        normalize_advantage: bool = False,
        gamma: float = 0.99,
        lmbda: float = 0.95,
    ) -> None:
        super().__init__(
            actor_network,
            critic_network,
            entropy_bonus=False,
            critic_coef=critic_coef,
            loss_critic_type=loss_critic_type,
            normalize_advantage=normalize_advantage,
            gamma=gamma,
            lmbda=lmbda,
        )

    def _required_keys(self, tensordict=None):
        loss_keys, network_keys = super()._required_keys(tensordict)
        has_advantage = tensordict is not None and self._keys.advantage in tensordict.keys(True)
        if self.critic_network is None and not has_advantage:
            loss_keys.update(self._transition_keys())
        return loss_keys, network_keys

    def _advantage_needs_key(self) -> bool:
        return self.critic_network is not None

    def _advantage(self, tensordict: TensorDictBase) -> Tensor:
        if self.critic_network is not None or self._keys.advantage in tensordict.keys(True):
            return super()._advantage(tensordict)
        # Monte-Carlo returns: nothing to bootstrap from without a critic.
        keys = self._keys
        reward = tensordict.get(next_key(keys.reward))
        done, terminated = read_flags(
            type(self).__name__,
            tensordict,
            next_key(keys.done),
            next_key(keys.terminated),
            next_key(keys.reward),
            reward,
        )
        returns = td1_return_estimate(
            self.gamma,
            reward.new_zeros(reward.shape),
            reward,
            done,
            terminated,
            time_dim=tensordict.batch_dims - 1,
        )
        if self.normalize_advantage and returns.numel() > 1:
            returns = (returns - returns.mean()) / returns.std().clamp_min(1e-8)
        return returns

    def _policy_terms(self, tensordict, dist, advantage):
        return {"loss_actor": self._score_function_loss(tensordict, dist, advantage)}
