"""REDQ (Chen et al., 2021): randomized ensembled double Q-learning."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from rlblocks.core.utils import check_int
from rlblocks.objectives._losses.batched_sac import BatchedSACLoss
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["REDQLoss"]


class REDQLoss(BatchedSACLoss):
    """REDQ: soft actor-critic with ``N`` critics and a target over a random subset of ``M``.

    With ``a ~ pi(s)`` reparameterized, ``alpha = exp(log_alpha)`` and the ``N`` critics run
    as one batched ensemble (:class:`~rlblocks.objectives.modules.BatchedEnsemble`):

    - at each call a subset ``S`` of ``M = sub_sample_len`` of the ``N`` target critics is
      drawn (``torch.randperm``, the global generator);
      ``y = r + gamma * (1 - terminated) * (min_{i in S} Q'_i(s', a') - alpha * log pi(a'|s'))``;
    - ``loss_qvalue = sum_i mean(d(Q_i(s, a_data), y))`` over all ``N`` critics;
    - ``loss_actor = mean(alpha * log pi(a|s) - mean_i Q_i(s, a))``: the mean over all
      ``N`` critics (frozen), not the min;
    - ``loss_alpha = -mean(log_alpha * (log pi(a|s) + target_entropy))``.

    The random draws happen in this order: ``a'`` at ``s'``, the subset, then ``a`` at ``s``.

    REDQ's other ingredient, a high update-to-data ratio (the paper: ``G = 20`` gradient
    updates per environment step, with ``N = 10``, ``M = 2``), belongs to the training
    loop: run ``G`` updates (each with its own replay sample and target update) per
    collected step.

    The output holds ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha`` and
    ``entropy``; the batch gets ``td_error``, the largest ``|Q_i(s, a) - y|`` per sample.

    Args:
        actor_network: A ``ProbabilisticActor`` (e.g. with :class:`TanhNormal`).
        qvalue_network: A ``ValueOperator`` on ``observation`` and ``action``; the loss holds
            ``num_qvalue_nets`` re-initialized copies, stacked, in ``qvalue_networks``.
        num_qvalue_nets: ``N``, the number of critics.
        sub_sample_len: ``M``, how many target critics the target takes the min over
            (``1 <= M <= N``).
        min_alpha: Lower bound of the temperature (TorchRL's default, 0.1).
        max_alpha: Upper bound of the temperature (TorchRL's default, 10).
        **kwargs: The other arguments of :class:`SACLoss`: ``loss_function``,
            ``alpha_init``, ``fixed_alpha``, ``target_entropy``, ``action_spec``,
            ``delay_qvalue`` (target critics, ``target_qvalue_networks``, updated with
            :class:`SoftUpdate`) and ``gamma``.

    Raises:
        ObjectiveConfigError: ``sub_sample_len`` is not a positive int, or
            ``num_qvalue_nets`` is smaller than it.

    Example:
        >>> loss = REDQLoss(actor, qvalue, num_qvalue_nets=10, sub_sample_len=2)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> for _ in range(20):  # the update-to-data ratio, per collected step
        ...     total_loss(loss(buffer.sample())).backward(); optim.step(); optim.zero_grad()
        ...     updater.step()
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        *,
        num_qvalue_nets: int = 10,
        sub_sample_len: int = 2,
        min_alpha: float | None = 0.1,
        max_alpha: float | None = 10.0,
        **kwargs: Any,
    ) -> None:
        owner = "REDQLoss"
        sub_sample_len = check_int(
            sub_sample_len, "sub_sample_len", owner, error=ObjectiveConfigError
        )
        num_qvalue_nets = check_int(
            num_qvalue_nets, "num_qvalue_nets", owner, error=ObjectiveConfigError
        )
        if num_qvalue_nets < sub_sample_len:
            raise ObjectiveConfigError(
                f"{owner}: num_qvalue_nets={num_qvalue_nets} is smaller than "
                f"sub_sample_len={sub_sample_len}; the target takes the min over "
                f"sub_sample_len of the num_qvalue_nets critics, so num_qvalue_nets must be "
                f">= {sub_sample_len} (or lower sub_sample_len; the paper uses 10 and 2)"
            )
        super().__init__(
            actor_network,
            qvalue_network,
            num_qvalue_nets=num_qvalue_nets,
            min_alpha=min_alpha,
            max_alpha=max_alpha,
            **kwargs,
        )
        self.sub_sample_len = sub_sample_len

    def _target_q(self, tensordict: TensorDictBase) -> Tensor:
        """``min`` over a random subset of ``sub_sample_len`` target critics."""
        device = self.log_alpha.device
        subset = torch.randperm(self.num_qvalue_nets, device=device)[: self.sub_sample_len]
        targets = self._target("qvalue_networks", self.delay_qvalue)
        return self._critic_values(targets, tensordict, frozen=False, members=subset).amin(0)

    def _actor_q(self, tensordict: TensorDictBase) -> Tensor:
        """``mean_i Q_i(s, a)`` over every critic (frozen)."""
        return self._critic_values(self.qvalue_networks, tensordict, frozen=True).mean(0)
