"""Soft actor-critic: continuous (Haarnoja et al., 2018) and discrete (Christodoulou, 2019)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor, nn

from rlblocks.core.fast_td import shallow_copy
from rlblocks.core.specs import TensorSpec
from rlblocks.objectives._checks import check_probabilistic
from rlblocks.objectives._keys import ACTION_VALUE, STATE_ACTION_VALUE
from rlblocks.objectives._losses.base import (
    as_column,
    check_distance,
    distance_loss,
    ensemble,
    merge_network_keys,
    per_sample_dims,
    reduce_to_batch,
    remember,
    sample_with_log_prob,
)
from rlblocks.objectives._losses.dqn import select_action_values
from rlblocks.objectives._losses.off_policy import (
    OFF_POLICY_KEYS,
    OffPolicyLoss,
    TemperatureMixin,
)
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["SACLoss", "DiscreteSACLoss"]


class _SoftActorCritic(OffPolicyLoss, TemperatureMixin):
    """A probabilistic actor, an ensemble of critics with targets, and a temperature."""

    def _init_soft(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        num_qvalue_nets: int,
        loss_function: str,
        delay_qvalue: bool,
        alpha: tuple[float, float | None, float | None, bool],
    ) -> None:
        owner = type(self).__name__
        check_probabilistic(owner, actor_network)
        self.actor_network = actor_network
        self.qvalue_networks = self._make_critics(qvalue_network, num_qvalue_nets)
        self.loss_function = check_distance(owner, loss_function)
        self.delay_qvalue = delay_qvalue
        self._init_alpha(*alpha)
        if delay_qvalue:
            self._register_target("qvalue_networks")

    def _make_critics(self, qvalue_network: nn.Module, num_qvalue_nets: int) -> nn.Module:
        """The critics: ``qvalue_network`` and re-initialized copies, run one by one."""
        return ensemble(type(self).__name__, "qvalue_network", qvalue_network, num_qvalue_nets)


class SACLoss(_SoftActorCritic):
    """Soft actor-critic with twin critics and automatic entropy tuning (SAC v2).

    With ``a ~ pi(s)`` reparameterized and ``alpha = exp(log_alpha)``:

    - ``loss_actor = mean(alpha * log pi(a|s) - min_i Q_i(s, a))`` (critics frozen);
    - ``y = r + gamma * (1 - terminated) * (min_i Q'_i(s', a') - alpha * log pi(a'|s'))``,
      ``a' ~ pi(s')``; ``loss_qvalue = sum_i mean(d(Q_i(s, a_data), y))``;
    - ``loss_alpha = -mean(log_alpha * (log pi(a|s) + target_entropy))`` (zero when
      ``fixed_alpha``).

    Args:
        actor_network: A ``ProbabilisticActor`` (e.g. with :class:`TanhNormal`).
        qvalue_network: A ``ValueOperator`` on ``observation`` and ``action``; the loss holds
            ``num_qvalue_nets`` re-initialized copies in ``qvalue_networks``.
        num_qvalue_nets: Number of critics.
        loss_function: ``"l2"``, ``"l1"`` or ``"smooth_l1"``.
        alpha_init: Initial temperature.
        min_alpha: Lower bound of the temperature.
        max_alpha: Upper bound of the temperature.
        fixed_alpha: Do not learn the temperature.
        target_entropy: ``"auto"`` (minus the number of action dims) or a number.
        action_spec: Spec of the action, used for ``"auto"`` (default: the actor's spec,
            else the action's shape in the first batch).
        delay_qvalue: Keep target critics (``target_qvalue_networks``).
        gamma: Discount.

    Example:
        >>> loss = SACLoss(actor, qvalue, num_qvalue_nets=2)
        >>> updater = SoftUpdate(loss, tau=0.005)
    """

    default_keys: ClassVar = {**OFF_POLICY_KEYS, "state_action_value": STATE_ACTION_VALUE}

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        *,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        fixed_alpha: bool = False,
        target_entropy: float | str = "auto",
        action_spec: TensorSpec | None = None,
        delay_qvalue: bool = True,
        gamma: float = 0.99,
    ) -> None:
        super().__init__(gamma=gamma)
        alpha = (alpha_init, min_alpha, max_alpha, fixed_alpha)
        self._init_soft(
            actor_network, qvalue_network, num_qvalue_nets, loss_function, delay_qvalue, alpha
        )
        spec = action_spec if action_spec is not None else getattr(actor_network, "spec", None)
        if target_entropy == "auto":
            self.target_entropy = None if spec is None else -float(spec.shape.numel())
        else:
            self.target_entropy = float(target_entropy)

    def _required_keys(self, tensordict=None):
        return self._actor_critic_keys(
            self.actor_network, self.qvalue_networks[0], "qvalue network"
        )

    def _resolve_target_entropy(self, tensordict: TensorDictBase, sample_dims: int) -> float:
        if self.target_entropy is None:
            # "auto" without a spec: minus the number of action dims (per agent for a
            # group), read from the batch.
            action = tensordict.get(self._keys.action)
            return remember(self, "target_entropy", -float(action.shape[sample_dims:].numel()))
        return self.target_entropy

    def _sample(self, tensordict: TensorDictBase) -> tuple[Tensor, Tensor]:
        """A reparameterized action at the root of ``tensordict`` and its raw log-probability.

        Reduce the log-probability like the ``Q`` it goes with (per agent for a group).
        """
        return sample_with_log_prob(self.actor_network.get_dist(shallow_copy(tensordict)))

    def _policy(self, tensordict: TensorDictBase) -> tuple[Tensor, Tensor]:
        """A reparameterized action and its log-probability per sample of ``tensordict``."""
        action, log_prob = self._sample(tensordict)
        return action, reduce_to_batch(log_prob, tensordict.batch_dims)

    def _critic_values(
        self, critics: nn.Module, tensordict: TensorDictBase, frozen: bool
    ) -> Tensor:
        """``Q_i`` of each of ``critics`` on ``tensordict``, stacked: ``[n, *batch, 1]``."""
        key = self._keys.state_action_value
        return torch.stack(self._evaluate(critics, tensordict, key, frozen))

    def _target_q(self, tensordict: TensorDictBase) -> Tensor:
        """``min_i Q'_i(s', a')`` of the target critics, ``a'`` written in ``tensordict``."""
        targets = self._target("qvalue_networks", self.delay_qvalue)
        return self._critic_values(targets, tensordict, frozen=False).amin(0)

    def _actor_q(self, tensordict: TensorDictBase) -> Tensor:
        """``min_i Q_i(s, a)``, through which the actor is trained (critics frozen)."""
        return self._critic_values(self.qvalue_networks, tensordict, frozen=True).amin(0)

    def _soft_value(self, q: Tensor, log_prob: Tensor, batch_dims: int, alpha: Tensor) -> Tensor:
        """``q - alpha * log pi``, the raw ``log_prob`` reduced like ``q`` (per agent)."""
        log_prob = reduce_to_batch(log_prob, per_sample_dims(batch_dims, q))
        return q - alpha * as_column(type(self).__name__, "log pi", log_prob, "Q", q)

    def _next_value(self, tensordict: TensorDictBase, alpha: Tensor) -> Tensor:
        """``min_i Q'_i(s', a') - alpha * log pi(a'|s')`` (no gradient)."""
        with torch.no_grad():
            nxt = tensordict.get("next")
            action, log_prob = self._sample(nxt)
            q = self._target_q(self._with_action(tensordict, action, nested=True))
            return self._soft_value(q, log_prob, nxt.batch_dims, alpha)

    def _qvalue_loss(
        self, tensordict: TensorDictBase, target: Tensor
    ) -> tuple[Tensor, list[Tensor]]:
        preds = list(self._critic_values(self.qvalue_networks, tensordict, frozen=False))
        owner = type(self).__name__
        loss = sum(distance_loss(owner, p, target, self.loss_function).mean() for p in preds)
        return loss, preds

    def _actor_terms(self, tensordict: TensorDictBase, alpha: Tensor) -> dict[str, Tensor]:
        action, log_prob = self._sample(tensordict)
        q = self._actor_q(self._with_action(tensordict, action))
        dims = per_sample_dims(tensordict.batch_dims, q)
        log_prob = reduce_to_batch(log_prob, dims)
        log_prob_col = as_column(type(self).__name__, "log pi", log_prob, "Q", q)
        # target_entropy - H, with the entropy estimated by -log pi(a|s).
        gap = log_prob + self._resolve_target_entropy(tensordict, dims)
        return {
            "loss_actor": (alpha * log_prob_col - q).mean(),
            "loss_alpha": self._alpha_loss(gap),
            "entropy": -log_prob.detach().mean(),
        }

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        alpha = self.alpha
        target = self._bootstrap(tensordict, self._next_value(tensordict, alpha))
        loss_qvalue, preds = self._qvalue_loss(tensordict, target)
        terms = self._actor_terms(tensordict, alpha)
        self._write_priority(tensordict, preds, target)
        return self._output(loss_qvalue=loss_qvalue, alpha=alpha, **terms)


class DiscreteSACLoss(_SoftActorCritic):
    """Soft actor-critic for discrete actions, with expectations computed exactly over actions.

    With ``p = pi(.|s)`` and ``Q_min = min_i Q_i(s, .)``:

    - ``loss_actor = mean(sum_a p(a) * (alpha * log p(a) - Q_min(a)))`` (critics frozen);
    - ``y = r + gamma * (1 - terminated) * sum_a' p'(a') * (min_i Q'_i(s', a') - alpha *
      log p'(a'))``; ``loss_qvalue = sum_i mean(d(Q_i(s, a_data), y))``;
    - ``loss_alpha = -mean(log_alpha * (target_entropy - H(p)))``.

    Args:
        actor_network: A ``ProbabilisticActor`` over ``OneHotCategorical`` or
            ``Categorical`` (its distribution exposes ``probs`` and ``logits``).
        qvalue_network: A module writing ``action_value`` (``[*batch, n]``); the loss holds
            ``num_qvalue_nets`` re-initialized copies.
        num_actions: Number of actions ``n``.
        num_qvalue_nets: Number of critics.
        loss_function: ``"l2"``, ``"l1"`` or ``"smooth_l1"``.
        alpha_init: Initial temperature.
        min_alpha: Lower bound of the temperature.
        max_alpha: Upper bound of the temperature.
        fixed_alpha: Do not learn the temperature.
        target_entropy_weight: ``"auto"`` target entropy is this times ``log(n)``.
        target_entropy: ``"auto"`` or a number.
        delay_qvalue: Keep target critics.
        gamma: Discount.

    Example:
        >>> loss = DiscreteSACLoss(actor, qnet, num_actions=4)
    """

    default_keys: ClassVar = {**OFF_POLICY_KEYS, "action_value": ACTION_VALUE}

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        *,
        num_actions: int,
        num_qvalue_nets: int = 2,
        loss_function: str = "smooth_l1",
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        fixed_alpha: bool = False,
        target_entropy_weight: float = 0.98,
        target_entropy: float | str = "auto",
        delay_qvalue: bool = True,
        gamma: float = 0.99,
    ) -> None:
        super().__init__(gamma=gamma)
        if num_actions < 2:
            raise ObjectiveConfigError(
                f"DiscreteSACLoss: num_actions must be >= 2, got {num_actions}"
            )
        alpha = (alpha_init, min_alpha, max_alpha, fixed_alpha)
        self._init_soft(
            actor_network, qvalue_network, num_qvalue_nets, loss_function, delay_qvalue, alpha
        )
        self.num_actions = num_actions
        if target_entropy == "auto":
            target_entropy = target_entropy_weight * math.log(num_actions)
        self.target_entropy = float(target_entropy)

    def _required_keys(self, tensordict=None):
        keys = {"action": self._keys.action, **self._transition_keys()}
        return keys, merge_network_keys(
            self._network_keys(self.actor_network, "actor network", nested=True),
            self._network_keys(self.qvalue_networks[0], "qvalue network", nested=True),
        )

    def _probs(self, tensordict: TensorDictBase) -> tuple[Tensor, Tensor]:
        """``(p, log p)`` over the actions, ``[*batch, n]``."""
        dist = self.actor_network.get_dist(shallow_copy(tensordict))
        log_p = torch.log_softmax(dist.logits, -1)
        return log_p.exp(), log_p

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        owner = type(self).__name__
        key = self._keys.action_value
        alpha = self.alpha
        with torch.no_grad():
            nxt = tensordict.get("next")
            p_next, log_p_next = self._probs(nxt)
            targets = self._target("qvalue_networks", self.delay_qvalue)
            q_next = torch.stack(self._evaluate(targets, nxt, key, frozen=False)).amin(0)
            next_value = (p_next * (q_next - alpha * log_p_next)).sum(-1, keepdim=True)
        target = self._bootstrap(tensordict, next_value)
        action = tensordict.get(self._keys.action)
        q_all = self._evaluate(self.qvalue_networks, tensordict, key, frozen=False)
        preds = [select_action_values(owner, q, action) for q in q_all]
        loss_qvalue = sum(distance_loss(owner, p, target, self.loss_function).mean() for p in preds)
        p, log_p = self._probs(tensordict)
        frozen_q = self._evaluate(self.qvalue_networks, tensordict, key, frozen=True)
        q_min = torch.stack(frozen_q).amin(0)
        loss_actor = (p * (alpha * log_p - q_min)).sum(-1).mean()
        entropy = -(p * log_p).sum(-1)
        self._write_priority(tensordict, preds, target)
        return self._output(
            loss_actor=loss_actor,
            loss_qvalue=loss_qvalue,
            loss_alpha=self._alpha_loss(self.target_entropy - entropy),
            alpha=alpha,
            entropy=entropy.detach().mean(),
        )
