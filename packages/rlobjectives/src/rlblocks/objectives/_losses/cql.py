"""Conservative Q-learning (Kumar et al., 2020), CQL(H) on top of SAC."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor, nn

from rlblocks.core.specs import TensorSpec
from rlblocks.objectives._losses.base import as_column
from rlblocks.objectives._losses.off_policy import action_bounds
from rlblocks.objectives._losses.sac import SACLoss
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["CQLLoss"]


class CQLLoss(SACLoss):
    """CQL(H): SAC plus a penalty that pushes Q down on out-of-dataset actions.

    For each critic ``i``, with ``N = num_random`` actions of each kind per state (uniform
    in the action box, from ``pi(s)`` and from ``pi(s')``, all evaluated at ``s``) and their
    log-densities ``log q``:
    ``penalty_i = mean(T * logsumexp((Q_i(s, a_k) - log q(a_k)) / T over k)) -
    mean(Q_i(s, a_data))`` and ``loss_cql = min_q_weight * sum_i penalty_i``. With
    ``with_lagrange`` the weight is a learned ``alpha_prime`` driving the penalty to
    ``lagrange_thresh`` (``loss_alpha_prime``). The other terms are :class:`SACLoss`'s, with
    ``deterministic_backup`` dropping the entropy from the target and ``max_q_backup``
    taking the max over ``num_random`` next actions.

    Args:
        actor_network: See :class:`SACLoss`.
        qvalue_network: See :class:`SACLoss`.
        min_q_weight: Weight of the penalty.
        temperature: ``T`` of the log-sum-exp.
        num_random: Sampled actions of each kind per state.
        with_lagrange: Learn the penalty weight.
        lagrange_thresh: Target of the penalty with ``with_lagrange``.
        max_q_backup: Back up the max over sampled next actions.
        deterministic_backup: No entropy term in the target.
        action_spec: ``Bounded`` spec of the action box (default: the actor's, else
            ``[-1, 1]``).
        **kwargs: The other arguments of :class:`SACLoss`.

    Example:
        >>> loss = CQLLoss(actor, qvalue, min_q_weight=5.0)
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        *,
        min_q_weight: float = 1.0,
        temperature: float = 1.0,
        num_random: int = 10,
        with_lagrange: bool = False,
        lagrange_thresh: float = 0.0,
        max_q_backup: bool = False,
        deterministic_backup: bool = True,
        action_spec: TensorSpec | None = None,
        **kwargs,
    ) -> None:
        super().__init__(actor_network, qvalue_network, action_spec=action_spec, **kwargs)
        if num_random < 1 or temperature <= 0:
            raise ObjectiveConfigError(
                f"CQLLoss: num_random must be >= 1 and temperature > 0, got {num_random}, "
                f"{temperature}"
            )
        self.min_q_weight = min_q_weight
        self.temperature = temperature
        self.num_random = num_random
        self.with_lagrange = with_lagrange
        self.lagrange_thresh = lagrange_thresh
        self.max_q_backup = max_q_backup
        self.deterministic_backup = deterministic_backup
        bounds = action_bounds(action_spec, actor_network)
        low, high = bounds if bounds is not None else (torch.tensor(-1.0), torch.tensor(1.0))
        self.register_buffer("_low", low.clone().float())
        self.register_buffer("_high", high.clone().float())
        if with_lagrange:
            self.log_alpha_prime = nn.Parameter(torch.zeros(()))

    def _repeat(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict.expand(self.num_random, *tensordict.batch_size)

    def _next_value(self, tensordict: TensorDictBase, alpha: Tensor) -> Tensor:
        if not (self.max_q_backup or self.deterministic_backup):
            return super()._next_value(tensordict, alpha)
        key = self._keys.state_action_value
        targets = self._target("qvalue_networks", self.delay_qvalue)
        with torch.no_grad():
            nxt = tensordict.get("next")
            if not self.max_q_backup:
                action, _ = self._policy(nxt)
                q = self._evaluate(targets, self._with_action(tensordict, action, True), key, False)
                return torch.stack(q).amin(0)
            repeated = self._repeat(nxt)
            action, _ = self._policy(repeated)
            q = self._evaluate(targets, self._with_action(repeated, action), key, False)
            return torch.stack(q).amin(0).amax(0)

    def _penalties(self, tensordict: TensorDictBase, preds: list[Tensor]) -> list[Tensor]:
        """``penalty_i`` for each critic (gradients reach the critics only)."""
        key = self._keys.state_action_value
        action = tensordict.get(self._keys.action)
        repeated = self._repeat(tensordict)
        low = self._low.to(action.device, action.dtype)
        high = self._high.to(action.device, action.dtype)
        event = action.shape[tensordict.batch_dims :]
        with torch.no_grad():
            uniform = low + (high - low) * torch.rand(
                self.num_random, *action.shape, device=action.device, dtype=action.dtype
            )
            log_uniform = -torch.log(high - low).expand(event).sum()
            current, current_lp = self._policy(repeated)
            following, following_lp = self._policy(self._repeat(tensordict.get("next")))
        candidates = [(uniform, log_uniform), (current, current_lp), (following, following_lp)]
        penalties = []
        for i, pred in enumerate(preds):
            net = self.qvalue_networks[i : i + 1]
            scores = []
            for sampled, log_density in candidates:
                q = self._evaluate(net, self._with_action(repeated, sampled), key, False)[0]
                if log_density.ndim:
                    log_density = as_column("CQLLoss", "log-density", log_density, "Q", q)
                scores.append(q - log_density)
            stacked = torch.cat(scores, 0) / self.temperature
            lse = torch.logsumexp(stacked, 0) * self.temperature
            penalties.append(self.min_q_weight * (lse.mean() - pred.mean()))
        return penalties

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        alpha = self.alpha
        target = self._bootstrap(tensordict, self._next_value(tensordict, alpha))
        loss_qvalue, preds = self._qvalue_loss(tensordict, target)
        penalties = self._penalties(tensordict, preds)
        terms = self._actor_terms(tensordict, alpha)
        if self.with_lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
            gaps = [p - self.lagrange_thresh for p in penalties]
            terms["loss_cql"] = alpha_prime.detach() * sum(gaps)
            terms["loss_alpha_prime"] = -0.5 * alpha_prime * sum(g.detach() for g in gaps)
            terms["alpha_prime"] = alpha_prime.detach()
        else:
            terms["loss_cql"] = sum(penalties)
        self._write_priority(tensordict, preds, target)
        return self._output(loss_qvalue=loss_qvalue, alpha=alpha, **terms)
