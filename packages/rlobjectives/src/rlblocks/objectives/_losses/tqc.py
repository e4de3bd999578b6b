"""TQC (Kuznetsov et al., 2020): truncated quantile critics."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from rlblocks.core.utils import check_int
from rlblocks.objectives._losses.base import per_sample_dims, reduce_to_batch
from rlblocks.objectives._losses.batched_sac import BatchedSACLoss
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError

__all__ = ["TQCLoss", "quantile_huber_loss"]


def quantile_huber_loss(quantiles: Tensor, target: Tensor) -> Tensor:
    """The quantile Huber loss of each critic against a set of target atoms, summed.

    With ``z_ik`` the ``K`` quantiles of critic ``i`` at fractions ``tau_k = (2k + 1) / 2K``
    and ``y_j`` the target atoms, ``delta = y_j - z_ik``:
    ``sum_i mean_{batch, k, j}(|tau_k - 1{delta < 0}| * huber(delta))``, ``huber`` with
    threshold 1.

    Args:
        quantiles: ``[n_critics, *batch, K]``.
        target: ``[*batch, J]`` (no gradient flows into it).

    Raises:
        ShapeMismatchError: The batch shapes differ.
    """
    if quantiles.shape[1:-1] != target.shape[:-1]:
        raise ShapeMismatchError(
            f"quantile_huber_loss: quantiles [n_critics, *batch, K] have shape "
            f"{list(quantiles.shape)} but the target atoms [*batch, J] have shape "
            f"{list(target.shape)}; the batch shapes must be equal"
        )
    k = quantiles.shape[-1]
    tau = (torch.arange(k, device=quantiles.device, dtype=quantiles.dtype) + 0.5) / k
    delta = target.detach().unsqueeze(-2) - quantiles.unsqueeze(-1)  # [n, *batch, K, J]
    size = delta.abs()
    huber = torch.where(size <= 1.0, 0.5 * delta.square(), size - 0.5)
    weight = (tau.unsqueeze(-1) - (delta.detach() < 0).to(delta.dtype)).abs()
    return (weight * huber).flatten(1).mean(1).sum()


def _critic_outputs(qvalue_network: TensorDictModuleBase) -> int | None:
    """The output size of a ``ValueOperator(MLP(...))``-like critic, if it says."""
    size = getattr(getattr(qvalue_network, "module", None), "out_features", None)
    return size if isinstance(size, int) else None


class TQCLoss(BatchedSACLoss):
    """TQC: soft actor-critic with ``N`` distributional critics and a truncated target.

    Each critic ``i`` predicts ``K = n_quantiles`` quantiles ``z_ik(s, a)`` of the return
    (its ``state_action_value`` is ``[*batch, K]``); the ``N`` critics run as one batched
    ensemble. With ``d = top_quantiles_to_drop_per_net``:

    - the target atoms: pool the ``N * K`` quantiles of the target critics at
      ``(s', a')``, ``a' ~ pi(s')``, sort them and drop the ``d * N`` largest (the
      truncation that controls overestimation); then
      ``y_j = r + gamma * (1 - terminated) * (atom_j - alpha * log pi(a'|s'))``;
    - ``loss_qvalue``: the quantile Huber loss of every critic against all the atoms
      (:func:`quantile_huber_loss`), summed over critics;
    - ``loss_actor = mean(alpha * log pi(a|s) - mean_{i, k} z_ik(s, a))``, ``a ~ pi(s)``,
      the critics frozen (the full, untruncated mixture);
    - ``loss_alpha = -mean(log_alpha * (log pi(a|s) + target_entropy))``.

    The atoms go through the value estimator one by one (one-step TD by default). The
    output holds ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha`` and
    ``entropy``; the batch gets ``td_error``: ``max_i |mean_k z_ik(s, a) - mean_j y_j|``.

    Args:
        actor_network: A ``ProbabilisticActor`` (e.g. with :class:`TanhNormal`).
        qvalue_network: A ``ValueOperator`` on ``observation`` and ``action`` writing ``K``
            values, e.g. ``ValueOperator(MLP(obs + act, 25, num_cells=[512, 512, 512]),
            in_keys=["observation", "action"])``; the loss holds ``num_qvalue_nets``
            re-initialized copies, stacked, in ``qvalue_networks``.
        num_qvalue_nets: ``N``, the number of critics (TorchRL's default 5; the paper 5,
            SB3-contrib 2).
        n_quantiles: ``K``; by default the critic's ``module.out_features`` when it has one
            (an :class:`MLP`), else read from its output at each call.
        top_quantiles_to_drop_per_net: ``d``, ``0 <= d < K`` (the paper: 2 of 25).
        **kwargs: The other arguments of :class:`SACLoss` but ``loss_function``:
            ``alpha_init``, ``min_alpha``, ``max_alpha``, ``fixed_alpha``,
            ``target_entropy``, ``action_spec``, ``delay_qvalue`` (target critics,
            ``target_qvalue_networks``) and ``gamma``.

    Raises:
        ObjectiveConfigError: ``n_quantiles`` is not a positive int,
            ``top_quantiles_to_drop_per_net`` is not an int ``>= 0``, it drops every
            quantile (``d >= K``), or ``loss_function`` is given.

    Example:
        >>> loss = TQCLoss(actor, qvalue, num_qvalue_nets=5, top_quantiles_to_drop_per_net=2)
        >>> updater = SoftUpdate(loss, tau=0.005)
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        *,
        num_qvalue_nets: int = 5,
        n_quantiles: int | None = None,
        top_quantiles_to_drop_per_net: int = 2,
        **kwargs: Any,
    ) -> None:
        owner = "TQCLoss"
        if "loss_function" in kwargs:
            raise ObjectiveConfigError(
                f"{owner}: the critics learn with the quantile Huber loss, so it takes no "
                f"loss_function (got loss_function={kwargs['loss_function']!r})"
            )
        drop = check_int(
            top_quantiles_to_drop_per_net,
            "top_quantiles_to_drop_per_net",
            owner,
            minimum=0,
            error=ObjectiveConfigError,
        )
        if n_quantiles is None:
            n_quantiles = _critic_outputs(qvalue_network)
        if n_quantiles is not None:
            n_quantiles = check_int(n_quantiles, "n_quantiles", owner, error=ObjectiveConfigError)
            self._check_drop(n_quantiles, drop)
        super().__init__(actor_network, qvalue_network, num_qvalue_nets=num_qvalue_nets, **kwargs)
        self.n_quantiles = n_quantiles
        self.top_quantiles_to_drop_per_net = drop

    @staticmethod
    def _check_drop(n_quantiles: int, drop: int) -> None:
        if drop >= n_quantiles:
            raise ObjectiveConfigError(
                f"TQCLoss: top_quantiles_to_drop_per_net={drop} drops every one of the "
                f"critic's n_quantiles={n_quantiles} quantiles; it must be in "
                f"[0, {n_quantiles - 1}] (the paper drops 2 of 25)"
            )

    def _quantiles(
        self, critics: TensorDictModuleBase, tensordict: TensorDictBase, frozen: bool
    ) -> Tensor:
        """The critics' quantiles ``[n, *batch, K]``, their count checked."""
        quantiles = self._critic_values(critics, tensordict, frozen)
        count = quantiles.shape[-1]
        if self.n_quantiles is None:
            self._check_drop(count, self.top_quantiles_to_drop_per_net)
        elif count != self.n_quantiles:
            raise ShapeMismatchError(
                f"TQCLoss: the critic writes {count} values per sample at "
                f"{self._keys.state_action_value!r} (shape {list(quantiles.shape[1:])}) but "
                f"n_quantiles={self.n_quantiles}; pass the critic's output size as n_quantiles"
            )
        return quantiles

    def _target_q(self, tensordict: TensorDictBase) -> Tensor:
        """The pooled target quantiles, sorted, the ``d * N`` largest dropped: ``[*batch, J]``."""
        targets = self._target("qvalue_networks", self.delay_qvalue)
        quantiles = self._quantiles(targets, tensordict, frozen=False)
        pooled = quantiles.movedim(0, -2).flatten(-2)
        keep = pooled.shape[-1] - self.top_quantiles_to_drop_per_net * quantiles.shape[0]
        return pooled.sort(-1).values[..., :keep]

    def _soft_value(self, q: Tensor, log_prob: Tensor, batch_dims: int, alpha: Tensor) -> Tensor:
        """``atom_j - alpha * log pi`` for every atom of ``q`` (``[*batch, J]``)."""
        log_prob = reduce_to_batch(log_prob, per_sample_dims(batch_dims, q))
        return q - alpha * log_prob.unsqueeze(-1)

    def _bootstrap(self, tensordict: TensorDictBase, next_value: Tensor) -> Tensor:
        """``y_j`` for each atom ``j`` of ``next_value`` (``[*batch, J]``), no gradient."""
        atoms = next_value.shape[-1]
        # The atoms as a leading batch dim: the estimator sees J copies of the transitions,
        # each with one atom as the next value (``[J, *batch, 1]``, the reward's shape).
        repeated = tensordict.expand(atoms, *tensordict.batch_size)
        per_atom = next_value.detach().movedim(-1, 0).unsqueeze(-1)
        target = self.value_estimator.value_estimate(repeated, next_value=per_atom)
        return target.squeeze(-1).movedim(0, -1)

    def _qvalue_loss(self, tensordict: TensorDictBase, target: Tensor) -> tuple[Tensor, Tensor]:
        quantiles = self._quantiles(self.qvalue_networks, tensordict, frozen=False)
        return quantile_huber_loss(quantiles, target), quantiles

    def _actor_q(self, tensordict: TensorDictBase) -> Tensor:
        """``mean_{i, k} z_ik(s, a)``, ``[*batch, 1]`` (critics frozen)."""
        quantiles = self._quantiles(self.qvalue_networks, tensordict, frozen=True)
        return quantiles.mean(0).mean(-1, keepdim=True)

    def _write_priority(
        self, tensordict: TensorDictBase, predictions: Tensor, target: Tensor
    ) -> Tensor:
        """``max_i |mean_k z_ik - mean_j y_j|`` per sample, from the quantiles and the atoms."""
        means = predictions.mean(-1, keepdim=True)
        return super()._write_priority(tensordict, means, target.mean(-1, keepdim=True))
