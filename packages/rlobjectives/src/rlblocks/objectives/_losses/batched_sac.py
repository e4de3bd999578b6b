"""Soft actor-critic over a batched critic ensemble: what REDQ, CrossQ and TQC share."""

from __future__ import annotations

from typing import Any

from tensordict import TensorDictBase
from torch import Tensor, nn

from rlblocks.objectives._checks import check_same_shape
from rlblocks.objectives._losses.base import distance_loss, ensemble
from rlblocks.objectives._losses.sac import SACLoss

__all__ = ["BatchedSACLoss"]


class BatchedSACLoss(SACLoss):
    """:class:`SACLoss` whose critics are one :class:`BatchedEnsemble` in ``qvalue_networks``.

    Every evaluation of the critics (``Q_i(s, a)`` for their loss, ``Q'_i(s', a')`` for the
    target, ``Q_i(s, pi(s))`` for the actor) is one vmapped call over the stacked
    parameters, and the critics' loss is reduced in one go: no Python loop over critics.
    The target critics (``target_qvalue_networks``) are a frozen copy of the ensemble.
    """

    @property
    def num_qvalue_nets(self) -> int:
        """The number of critics."""
        return self.qvalue_networks.num_copies

    def _make_critics(self, qvalue_network: nn.Module, num_qvalue_nets: int) -> nn.Module:
        owner = type(self).__name__
        return ensemble(owner, "qvalue_network", qvalue_network, num_qvalue_nets, batched=True)

    def _required_keys(self, tensordict=None):
        return self._actor_critic_keys(self.actor_network, self.qvalue_networks, "qvalue network")

    def _critic_values(
        self, critics: nn.Module, tensordict: TensorDictBase, frozen: bool, **options: Any
    ) -> Tensor:
        """``Q_i`` of the ensemble ``critics``, ``[n, *batch, ...]`` (``options``: members,
        training; see :meth:`BatchedEnsemble.forward`)."""
        return critics(tensordict, frozen=frozen, **options).get(self._keys.state_action_value)

    def _qvalue_loss(self, tensordict: TensorDictBase, target: Tensor) -> tuple[Tensor, Tensor]:
        preds = self._critic_values(self.qvalue_networks, tensordict, frozen=False)
        return self._critic_loss(preds, target), preds

    def _critic_loss(self, preds: Tensor, target: Tensor) -> Tensor:
        """``sum_i mean(d(Q_i, y))``: summed, each critic gets the gradient of its own loss."""
        owner = type(self).__name__
        check_same_shape(owner, "Q_i(s, a)", preds[0], "the target", target)
        errors = distance_loss(owner, preds, target.expand_as(preds), self.loss_function)
        return errors.flatten(1).mean(1).sum()
