"""The V-trace estimator: off-policy corrected targets for actor-learner setups (IMPALA)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor

from rlblocks.core import ACTION
from rlblocks.core.fast_td import shallow_copy
from rlblocks.objectives._checks import check_probabilistic, check_same_shape, fmt_key
from rlblocks.objectives._keys import SAMPLE_LOG_PROB
from rlblocks.objectives.value._estimators import (
    _ESTIMATORS,
    ValueEstimatorBase,
    ValueEstimators,
)
from rlblocks.objectives.value.functional import check_clip_threshold, vtrace_advantage_estimate

__all__ = ["VTrace"]


class VTrace(ValueEstimatorBase):
    """V-trace targets and advantages, correcting for data collected by an older policy.

    The behaviour policy's log-probability of each action is read from the data
    (``sample_log_prob``, written by the actor that collected it); the target policy's is
    computed with ``actor_network.get_dist`` under ``torch.no_grad()``, so no gradient
    reaches the actor from the estimate. See :func:`vtrace_advantage_estimate` for the
    recursion. TorchRL's name and arguments.

    Args:
        gamma: Discount factor.
        actor_network: The policy being learned: a probabilistic actor (with ``get_dist``).
        value_network: See :class:`ValueEstimatorBase`.
        rho_thresh: Clip of the importance weights in the TD errors and advantages (> 0).
        c_thresh: Clip of the importance weights in the traces (> 0).
        average_adv: Standardize the advantage (zero mean, unit std over the whole batch).
        differentiable: See :class:`ValueEstimatorBase` (the actor stays out of the graph).
        time_dim: See :class:`ValueEstimatorBase`.

    Raises:
        ObjectiveConfigError: ``actor_network`` has no ``get_dist``, or a threshold is
            ``<= 0``.

    Example:
        >>> vtrace = VTrace(gamma=0.99, actor_network=actor, value_network=critic)
        >>> batch = vtrace(batch)  # batch["advantage"], batch["value_target"]
    """

    default_keys: ClassVar[Mapping[str, NestedKey]] = {
        **ValueEstimatorBase.default_keys,
        "action": ACTION,
        "sample_log_prob": SAMPLE_LOG_PROB,
    }
    needs_state_value = True

    def __init__(
        self,
        *,
        gamma: float | Tensor = 0.99,
        actor_network: TensorDictModuleBase,
        value_network: TensorDictModuleBase | None = None,
        rho_thresh: float | Tensor = 1.0,
        c_thresh: float | Tensor = 1.0,
        average_adv: bool = False,
        differentiable: bool = False,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(
            gamma=gamma,
            value_network=value_network,
            differentiable=differentiable,
            time_dim=time_dim,
        )
        owner = type(self).__name__
        check_probabilistic(owner, actor_network)
        self.actor_network = actor_network
        self.rho_thresh = check_clip_threshold(owner, "rho_thresh", rho_thresh)
        self.c_thresh = check_clip_threshold(owner, "c_thresh", c_thresh)
        self.average_adv = average_adv

    def _extra_keys(self) -> tuple[dict[str, NestedKey], dict[NestedKey, str]]:
        keys = self._keys
        loss_keys = {"action": keys.action, "sample_log_prob": keys.sample_log_prob}
        return loss_keys, {k: "actor network" for k in self.actor_network.in_keys}

    def _extra_inputs(
        self, tensordict: TensorDictBase, reward_key: NestedKey, reward: Tensor
    ) -> dict[str, Tensor]:
        keys = self._keys
        with torch.no_grad():
            # A shallow copy: the actor's intermediate outputs (loc, scale...) stay out of
            # the caller's data.
            dist = self.actor_network.get_dist(shallow_copy(tensordict))
            log_pi = dist.log_prob(tensordict.get(keys.action))
        log_mu = tensordict.get(keys.sample_log_prob).detach()
        batch_dims = tensordict.batch_dims
        return {
            "log_pi": self._per_step(log_pi, "log pi(a|s)", batch_dims, reward_key, reward),
            "log_mu": self._per_step(
                log_mu, fmt_key(keys.sample_log_prob), batch_dims, reward_key, reward
            ),
        }

    def _per_step(
        self, log_prob: Tensor, name: str, batch_dims: int, reward_key: NestedKey, reward: Tensor
    ) -> Tensor:
        """Shape a log-probability like the reward: summed over action dims, one column."""
        keep = max(batch_dims, reward.ndim - 1)  # per agent too, for a group
        if log_prob.ndim > keep:
            log_prob = log_prob.sum(tuple(range(keep, log_prob.ndim)))
        if reward.shape[-1:] == (1,) and log_prob.shape == reward.shape[:-1]:
            log_prob = log_prob.unsqueeze(-1)
        check_same_shape(type(self).__name__, name, log_prob, fmt_key(reward_key), reward)
        return log_prob.to(reward.dtype)

    def _estimate(
        self,
        *,
        gamma,
        reward,
        done,
        terminated,
        state_value,
        next_value,
        time_dim,
        log_pi,
        log_mu,
    ):
        advantage, target = vtrace_advantage_estimate(
            gamma,
            log_pi,
            log_mu,
            state_value,
            next_value,
            reward,
            done,
            terminated,
            self.rho_thresh,
            self.c_thresh,
            time_dim=time_dim,
        )
        if self.average_adv:
            advantage = (advantage - advantage.mean()) / advantage.std().clamp_min(1e-6)
        return advantage, target

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, rho_thresh={self.rho_thresh}, c_thresh={self.c_thresh}, "
            f"average_adv={self.average_adv}"
        )


# Registered here rather than in the table itself: this module builds on that one, and the
# package imports both, so every make_value_estimator call sees it.
_ESTIMATORS[ValueEstimators.VTrace] = VTrace
