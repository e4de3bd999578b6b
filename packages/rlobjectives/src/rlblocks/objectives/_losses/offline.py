"""Offline-RL losses that learn from a fixed dataset: IQL (Kostrikov et al., 2022) and BC."""

from __future__ import annotations

from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from rlblocks.core import ACTION
from rlblocks.core.fast_td import shallow_copy
from rlblocks.objectives._checks import check_same_shape
from rlblocks.objectives._keys import STATE_ACTION_VALUE, STATE_VALUE
from rlblocks.objectives._losses.base import (
    LossModule,
    as_column,
    check_distance,
    distance_loss,
    ensemble,
    merge_network_keys,
    network_output,
    reduce_to_batch,
)
from rlblocks.objectives._losses.off_policy import OFF_POLICY_KEYS, OffPolicyLoss
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["IQLLoss", "BCLoss"]


class IQLLoss(OffPolicyLoss):
    """Implicit Q-learning: in-sample value learning, no query of unseen actions.

    With ``Q' = min_i Q'_i(s, a_data)`` (target critics) and ``u = Q' - V(s)``:

    - ``loss_value = mean(|expectile - 1(u < 0)| * u^2)`` (expectile regression of ``V``);
    - ``loss_qvalue = sum_i mean(d(Q_i(s, a_data), r + gamma * (1 - terminated) * V(s')))``;
    - ``loss_actor = -mean(min(exp(temperature * u), 100) * log pi(a_data|s))`` (advantage-
      weighted regression, weights detached).

    Args:
        actor_network: A ``ProbabilisticActor``.
        qvalue_network: A ``ValueOperator`` on ``observation`` and ``action``; the loss holds
            ``num_qvalue_nets`` re-initialized copies.
        value_network: A ``ValueOperator`` writing ``state_value``.
        num_qvalue_nets: Number of critics.
        temperature: Inverse temperature ``beta`` of the advantage weights.
        expectile: ``tau`` of the expectile regression, in ``(0, 1)``.
        loss_function: ``"l2"``, ``"l1"`` or ``"smooth_l1"`` for the critics.
        delay_qvalue: Keep target critics.
        gamma: Discount.

    Example:
        >>> loss = IQLLoss(actor, qvalue, value, expectile=0.7, temperature=3.0)
    """

    default_keys: ClassVar = {
        **OFF_POLICY_KEYS,
        "state_action_value": STATE_ACTION_VALUE,
        "value": STATE_VALUE,
    }

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        value_network: TensorDictModuleBase,
        *,
        num_qvalue_nets: int = 2,
        temperature: float = 1.0,
        expectile: float = 0.5,
        loss_function: str = "smooth_l1",
        delay_qvalue: bool = True,
        gamma: float = 0.99,
    ) -> None:
        super().__init__(gamma=gamma)
        if not 0.0 < expectile < 1.0:
            raise ObjectiveConfigError(f"IQLLoss: expectile must be in (0, 1), got {expectile}")
        if not callable(getattr(actor_network, "get_dist", None)):
            raise ObjectiveConfigError("IQLLoss: actor_network must be probabilistic (get_dist)")
        self.actor_network = actor_network
        self.qvalue_networks = ensemble(
            "IQLLoss", "qvalue_network", qvalue_network, num_qvalue_nets
        )
        self.value_network = value_network
        self.temperature = temperature
        self.expectile = expectile
        self.loss_function = check_distance("IQLLoss", loss_function)
        self.delay_qvalue = delay_qvalue
        if delay_qvalue:
            self._register_target("qvalue_networks")

    def _required_keys(self, tensordict=None):
        keys = {"action": self._keys.action, **self._transition_keys()}
        return keys, merge_network_keys(
            self._network_keys(self.actor_network, "actor network"),
            self._network_keys(self.qvalue_networks[0], "qvalue network"),
            self._network_keys(self.value_network, "value network", nested=True),
        )

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        q_key, v_key = self._keys.state_action_value, self._keys.value
        with torch.no_grad():
            targets = self._target("qvalue_networks", self.delay_qvalue)
            q_target = torch.stack(self._evaluate(targets, tensordict, q_key, False)).amin(0)
            next_value = self.value_network(self._with_action(tensordict, None, True)).get(v_key)
        value = network_output(self.value_network, tensordict, v_key)
        check_same_shape("IQLLoss", "min_i Q'_i(s, a)", q_target, "V(s)", value)
        diff = q_target - value
        weight = (self.expectile - (diff < 0).to(diff.dtype)).abs()
        loss_value = (weight * diff.pow(2)).mean()

        target = self._bootstrap(tensordict, next_value)
        preds = self._evaluate(self.qvalue_networks, tensordict, q_key, frozen=False)
        loss_qvalue = sum(
            distance_loss("IQLLoss", p, target, self.loss_function).mean() for p in preds
        )

        dist = self.actor_network.get_dist(shallow_copy(tensordict))
        action = tensordict.get(self._keys.action)
        log_prob = reduce_to_batch(dist.log_prob(action), tensordict.batch_dims)
        with torch.no_grad():
            exp_adv = torch.exp((q_target - value) * self.temperature).clamp(max=100.0)
        log_prob = as_column("IQLLoss", "log pi(a|s)", log_prob, "Q", exp_adv)
        self._write_priority(tensordict, preds, target)
        return self._output(
            loss_actor=-(exp_adv * log_prob).mean(),
            loss_qvalue=loss_qvalue,
            loss_value=loss_value,
            entropy=-log_prob.detach().mean(),
        )


class BCLoss(LossModule):
    """Behavior cloning: fit the policy to the dataset's actions.

    A probabilistic actor is trained by maximum likelihood, ``loss_bc = -mean(log
    pi(a_data|s))``; a deterministic one by regression, ``loss_bc = mean(d(mu(s), a_data))``.

    Args:
        actor_network: A ``ProbabilisticActor`` or a deterministic ``Actor``.
        loss_function: ``"nll"`` (probabilistic actors only), ``"l2"``, ``"l1"`` or
            ``"smooth_l1"``; default ``"nll"`` for probabilistic actors, else ``"l2"``.

    Example:
        >>> loss = BCLoss(actor)
        >>> loss(observation=obs, action=expert_actions)["loss_bc"].backward()
    """

    default_keys: ClassVar = {"action": ACTION}
    default_value_estimator = None

    def __init__(
        self, actor_network: TensorDictModuleBase, *, loss_function: str | None = None
    ) -> None:
        super().__init__()
        probabilistic = callable(getattr(actor_network, "get_dist", None))
        if loss_function is None:
            loss_function = "nll" if probabilistic else "l2"
        if loss_function == "nll":
            if not probabilistic:
                raise ObjectiveConfigError(
                    "BCLoss: loss_function='nll' needs a probabilistic actor (with get_dist)"
                )
        else:
            check_distance("BCLoss", loss_function)
        self.actor_network = actor_network
        self.loss_function = loss_function

    def _required_keys(self, tensordict=None):
        return {"action": self._keys.action}, self._network_keys(self.actor_network, "actor")

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get(self._keys.action)
        if self.loss_function == "nll":
            dist = self.actor_network.get_dist(shallow_copy(tensordict))
            log_prob = reduce_to_batch(dist.log_prob(action), tensordict.batch_dims)
            return self._output(loss_bc=-log_prob.mean())
        predicted = network_output(self.actor_network, tensordict, self._keys.action)
        loss = distance_loss("BCLoss", predicted, action, self.loss_function)
        return self._output(loss_bc=loss.mean())
