"""On-policy policy-gradient losses: A2C, REINFORCE and the PPO family share this base."""

from __future__ import annotations

from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor
from torch import distributions as D

from rlblocks.core import ACTION, DONE, REWARD, TERMINATED
from rlblocks.core.fast_td import shallow_copy
from rlblocks.objectives._checks import check_probabilistic
from rlblocks.objectives._keys import ADVANTAGE, SAMPLE_LOG_PROB, STATE_VALUE, VALUE_TARGET
from rlblocks.objectives._losses.base import (
    LossModule,
    RequiredKeys,
    as_column,
    check_distance,
    distance_loss,
    entropy,
    merge_network_keys,
    network_output,
    per_sample_dims,
    reduce_to_batch,
)
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.value import ValueEstimators

__all__ = ["PolicyGradientLoss"]


class PolicyGradientLoss(LossModule):
    """Shared machinery of the actor-critic policy-gradient losses.

    Reads ``action``, ``advantage`` (computed with the value estimator, GAE by default,
    when absent), ``value_target`` for the critic, and for importance-weighted losses
    ``sample_log_prob``. Subclasses implement :meth:`_policy_terms`.
    """

    default_keys: ClassVar = {
        "action": ACTION,
        "sample_log_prob": SAMPLE_LOG_PROB,
        "advantage": ADVANTAGE,
        "value_target": VALUE_TARGET,
        "value": STATE_VALUE,
        "reward": REWARD,
        "done": DONE,
        "terminated": TERMINATED,
    }
    default_value_estimator = ValueEstimators.GAE
    needs_old_log_prob: ClassVar[bool] = False
    critic_term: ClassVar[str] = "loss_critic"
    _precomputed_roles: ClassVar[tuple[str, ...]] = ("advantage",)

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        critic_network: TensorDictModuleBase | None = None,
        *,
        entropy_bonus: bool = True,
        samples_mc_entropy: int = 1,
        entropy_coef: float = 0.01,
        critic_coef: float = 1.0,
        loss_critic_type: str = "smooth_l1",
        normalize_advantage: bool = False,
        clip_value: float | None = None,
        gamma: float = 0.99,
        lmbda: float = 0.95,
    ) -> None:
        super().__init__(gamma=gamma, lmbda=lmbda)
        owner = type(self).__name__
        check_probabilistic(owner, actor_network)
        if clip_value is not None and clip_value <= 0:
            raise ObjectiveConfigError(f"{owner}: clip_value must be > 0, got {clip_value}")
        self.actor_network = actor_network
        self.critic_network = critic_network
        self.entropy_bonus = entropy_bonus
        self.samples_mc_entropy = samples_mc_entropy
        self.entropy_coef = entropy_coef
        self.critic_coef = critic_coef
        self.loss_critic_type = check_distance(owner, loss_critic_type)
        self.normalize_advantage = normalize_advantage
        self.clip_value = clip_value

    def _estimator_network(self) -> TensorDictModuleBase | None:
        return self.critic_network

    def _estimator_actor(self) -> TensorDictModuleBase:
        return self.actor_network

    # -- keys -----------------------------------------------------------------------------

    def _required_keys(self, tensordict: TensorDictBase | None = None) -> RequiredKeys:
        keys = self._keys
        loss_keys: dict[str, NestedKey] = {"action": keys.action}
        if self.needs_old_log_prob:
            loss_keys["sample_log_prob"] = keys.sample_log_prob
        actor_keys = self._network_keys(self.actor_network, "actor network")
        critic_keys: dict[NestedKey, str] = {}
        has_advantage = tensordict is not None and keys.advantage in tensordict.keys(True)
        if has_advantage or self.critic_network is None:
            if self._advantage_needs_key():
                loss_keys["advantage"] = keys.advantage
            if self.critic_network is not None:
                loss_keys["value_target"] = keys.value_target
        else:
            # The estimator computes the advantage from the transitions and the critic.
            loss_keys.update(self._transition_keys())
            critic_keys = self._network_keys(self.critic_network, "critic network", nested=True)
        if self.critic_network is not None:
            critic_keys.update(self._network_keys(self.critic_network, "critic network"))
            if self.clip_value is not None:
                loss_keys["value"] = keys.value
        network_keys = merge_network_keys(actor_keys, critic_keys)
        return loss_keys, network_keys

    def _advantage_needs_key(self) -> bool:
        return True

    # -- terms ----------------------------------------------------------------------------

    def _advantage(self, tensordict: TensorDictBase) -> Tensor:
        advantage = tensordict.get(self._keys.advantage, None)
        if advantage is None:
            with torch.no_grad():
                self.value_estimator(tensordict)
            advantage = tensordict.get(self._keys.advantage)
        if self.normalize_advantage and advantage.numel() > 1:
            std, mean = torch.std_mean(advantage)
            advantage = (advantage - mean) / std.clamp_min(1e-8)
        return advantage

    def _log_prob(
        self, dist: D.Distribution, tensordict: TensorDictBase, advantage: Tensor
    ) -> Tensor:
        """``log pi(a|s)`` per sample (and per agent for a group), like ``advantage``."""
        action = tensordict.get(self._keys.action)
        dims = per_sample_dims(tensordict.batch_dims, advantage)
        return reduce_to_batch(dist.log_prob(action), dims)

    def _entropy_terms(self, dist: D.Distribution, sample_dims: int) -> dict[str, Tensor]:
        if not self.entropy_bonus:
            return {}
        # A zero weight trains nothing: spare the term its graph and its backward pass.
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.entropy_coef != 0):
            ent = entropy(dist, sample_dims, self.samples_mc_entropy).mean()
        return {"loss_entropy": -self.entropy_coef * ent, "entropy": ent.detach()}

    def _critic_terms(self, tensordict: TensorDictBase) -> dict[str, Tensor]:
        if self.critic_network is None:
            return {}
        owner = type(self).__name__
        target = tensordict.get(self._keys.value_target)
        value = network_output(self.critic_network, tensordict, self._keys.value)
        loss = distance_loss(owner, value, target, self.loss_critic_type)
        terms: dict[str, Tensor] = {}
        if self.clip_value is not None:
            old = tensordict.get(self._keys.value)
            clipped = old + (value - old).clamp(-self.clip_value, self.clip_value)
            loss = torch.maximum(loss, distance_loss(owner, clipped, target, self.loss_critic_type))
            outside = (value - old).abs() > self.clip_value
            terms["value_clip_fraction"] = outside.float().mean().detach()
        terms[self.critic_term] = self.critic_coef * loss.mean()
        return terms

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        advantage = self._advantage(tensordict)
        dist = self.actor_network.get_dist(shallow_copy(tensordict))
        terms = self._policy_terms(tensordict, dist, advantage)
        terms.update(self._entropy_terms(dist, per_sample_dims(tensordict.batch_dims, advantage)))
        terms.update(self._critic_terms(tensordict))
        return self._output(**terms)

    def _policy_terms(
        self, tensordict: TensorDictBase, dist: D.Distribution, advantage: Tensor
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def _score_function_loss(
        self, tensordict: TensorDictBase, dist: D.Distribution, advantage: Tensor
    ) -> Tensor:
        """``-mean(log pi(a|s) * A)`` with ``A`` detached (A2C, REINFORCE)."""
        log_prob = self._log_prob(dist, tensordict, advantage)
        log_prob = as_column(type(self).__name__, "log pi(a|s)", log_prob, "advantage", advantage)
        return -(log_prob * advantage.detach()).mean()
