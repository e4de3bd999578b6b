"""Proximal policy optimization losses (Schulman et al., 2017)."""

from __future__ import annotations

from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor
from torch import distributions as D

from rlblocks.core.fast_td import shallow_copy
from rlblocks.objectives._checks import check_same_shape, fmt_key
from rlblocks.objectives._losses.base import as_column, per_sample_dims, reduce_to_batch
from rlblocks.objectives._losses.policy_gradient import PolicyGradientLoss
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["PPOLoss", "ClipPPOLoss", "KLPENPPOLoss"]


class PPOLoss(PolicyGradientLoss):
    """The importance-weighted policy gradient that PPO's variants build on.

    ``loss_objective = -mean(r * A)`` with ``r = pi(a|s) / pi_old(a|s)`` (``pi_old`` is
    ``exp(sample_log_prob)`` from collection), plus an entropy bonus
    ``loss_entropy = -entropy_coef * H`` and a critic term
    ``loss_critic = critic_coef * mean(d(V(s), value_target))``. When the batch has no
    ``advantage``, it is computed first with the value estimator (GAE by default), which
    also writes ``value_target``.

    Args:
        actor_network: A probabilistic policy (``ProbabilisticActor``).
        critic_network: A ``ValueOperator`` writing ``state_value``, or ``None``.
        entropy_bonus: Add the entropy term.
        samples_mc_entropy: Samples for the entropy when it has no closed form.
        entropy_coef: Weight of the entropy term.
        critic_coef: Weight of the critic term.
        loss_critic_type: ``"l1"``, ``"l2"`` or ``"smooth_l1"``.
        normalize_advantage: Standardize the advantage over the batch.
        clip_value: If set, also clip the value update to ``old +- clip_value`` (PPO2).
        gamma: Discount of the default value estimator.
        lmbda: Lambda of the default value estimator.
        diagnostics: Also return ``kl_approx`` (mean ``log pi_old - log pi``) and ``ESS``
            (normalized effective sample size of the importance weights), plus the
            variants' own (``clip_fraction``). They take no gradient, but in eager mode
            about ten small tensor ops per call (~4% of a 64x64 update step on CPU): set
            ``False``, or change the attribute between calls, when only some minibatches'
            are logged.

    Example:
        >>> loss = PPOLoss(actor, critic)
        >>> total_loss(loss(batch)).backward()
    """

    needs_old_log_prob: ClassVar[bool] = True

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        critic_network: TensorDictModuleBase | None = None,
        *,
        diagnostics: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(actor_network, critic_network, **kwargs)
        self.diagnostics = diagnostics

    def _log_weight(
        self, tensordict: TensorDictBase, dist: D.Distribution, advantage: Tensor
    ) -> Tensor:
        """``log pi(a|s) - log pi_old(a|s)``, shaped like the advantage."""
        owner = type(self).__name__
        keys = self._keys
        new = self._log_prob(dist, tensordict, advantage)
        old = reduce_to_batch(
            tensordict.get(keys.sample_log_prob).detach(),
            per_sample_dims(tensordict.batch_dims, advantage),
        )
        if new.shape != old.shape:  # the keys are formatted for the error only
            name = f"log pi(a|s) of {fmt_key(keys.action)}"
            check_same_shape(owner, name, new, fmt_key(keys.sample_log_prob), old)
        return as_column(owner, "the log-ratio", new - old, "advantage", advantage)

    def _diagnostics(self, log_weight: Tensor, ratio: Tensor) -> dict[str, Tensor]:
        """``kl_approx = mean(-log r)`` and ``ESS = mean(r)^2 / mean(r^2)``, without a graph
        (nothing with ``diagnostics=False``).

        ``ESS = (sum r)^2 / (n * sum r^2)``, read from the ratios the objective computed
        anyway. It reads 0 (or NaN) once a ratio passes ~1e19, whose square overflows
        float32: a policy that far from the collecting one is past measuring.
        """
        if not self.diagnostics:
            return {}
        log_weight, ratio = log_weight.detach(), ratio.detach()
        ess = ratio.mean().square() / ratio.square().mean()
        return {"kl_approx": log_weight.mean().neg(), "ESS": ess}

    def _policy_terms(self, tensordict, dist, advantage):
        log_weight = self._log_weight(tensordict, dist, advantage)
        ratio = log_weight.exp()
        gain = ratio * advantage
        return {"loss_objective": -gain.mean(), **self._diagnostics(log_weight, ratio)}


class ClipPPOLoss(PPOLoss):
    """PPO with the clipped surrogate objective.

    ``loss_objective = -mean(min(r * A, clip(r, 1 - eps, 1 + eps) * A))``; otherwise as
    :class:`PPOLoss` (same arguments, plus ``clip_epsilon``). Adds the diagnostic
    ``clip_fraction`` (share of samples with ``|r - 1| > eps``; with ``diagnostics``).

    Args:
        actor_network: See :class:`PPOLoss`.
        critic_network: See :class:`PPOLoss`.
        clip_epsilon: The clipping range ``eps``.
        **kwargs: The other arguments of :class:`PPOLoss`.

    Example:
        >>> loss = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_coef=0.01)
        >>> out = loss(batch)  # loss_objective, loss_critic, loss_entropy, clip_fraction...
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        critic_network: TensorDictModuleBase | None = None,
        *,
        clip_epsilon: float = 0.2,
        **kwargs,
    ) -> None:
        super().__init__(actor_network, critic_network, **kwargs)
        if not clip_epsilon > 0:
            raise ObjectiveConfigError(f"ClipPPOLoss: clip_epsilon must be > 0, got {clip_epsilon}")
        self.clip_epsilon = clip_epsilon

    def _policy_terms(self, tensordict, dist, advantage):
        log_weight = self._log_weight(tensordict, dist, advantage)
        ratio = log_weight.exp()
        eps = self.clip_epsilon
        clipped = ratio.clamp(1 - eps, 1 + eps)
        gain = torch.minimum(ratio * advantage, clipped * advantage)
        terms = {"loss_objective": -gain.mean()}
        if self.diagnostics:
            # |r - 1| > eps exactly where clamping changed r; a comparison builds no graph.
            terms["clip_fraction"] = (clipped != ratio).float().mean()
        return {**terms, **self._diagnostics(log_weight, ratio)}


class KLPENPPOLoss(PPOLoss):
    """PPO with an adaptive KL penalty instead of clipping.

    ``loss_objective = -mean(r * A) + beta * mean(KL(pi_old || pi))``. ``pi_old`` is
    rebuilt from the distribution parameters stored in the batch at collection (e.g.
    ``loc``/``scale``); the KL is analytic when torch knows it, else estimated from
    ``samples_mc_kl`` samples of ``pi_old``. After each call ``beta`` is multiplied by
    ``increment`` when the KL exceeds ``1.5 * dtarg`` and by ``decrement`` when it is below
    ``dtarg / 1.5``.

    Under ``torch.compile``: dynamo can trace torch's ``kl_divergence`` for a pair of
    distribution types only once torch has looked that pair up in eager mode (it traces the
    memo, not the lookup). Call the loss once eagerly (or ``kl_divergence`` on two
    distributions of the actor's type) before compiling it; a compiled first call fails and
    ``make_update_step`` falls back to eager with a warning.

    Args:
        actor_network: See :class:`PPOLoss`.
        critic_network: See :class:`PPOLoss`.
        dtarg: Target KL.
        beta: Initial penalty weight.
        increment: Factor applied to ``beta`` when the KL is too large.
        decrement: Factor applied to ``beta`` when the KL is too small.
        samples_mc_kl: Samples for a Monte-Carlo KL.
        **kwargs: The other arguments of :class:`PPOLoss`.

    Example:
        >>> loss = KLPENPPOLoss(actor, critic, dtarg=0.01)
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        critic_network: TensorDictModuleBase | None = None,
        *,
        dtarg: float = 0.01,
        beta: float = 1.0,
        increment: float = 2.0,
        decrement: float = 0.5,
        samples_mc_kl: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(actor_network, critic_network, **kwargs)
        if not callable(getattr(actor_network, "build_dist_from_params", None)):
            raise ObjectiveConfigError(
                "KLPENPPOLoss: actor_network must rebuild the collection-time distribution "
                "from stored parameters (a ProbabilisticActor has build_dist_from_params)"
            )
        self.dtarg = dtarg
        self.increment = increment
        self.decrement = decrement
        self.samples_mc_kl = samples_mc_kl
        self.register_buffer("beta", torch.tensor(float(beta)))

    def _required_keys(self, tensordict=None):
        loss_keys, network_keys = super()._required_keys(tensordict)
        for key in self.actor_network.dist_params_keys:
            network_keys.setdefault(key, "actor network, whose pi_old is rebuilt from them")
        return loss_keys, network_keys

    def _kl(self, old: D.Distribution, new: D.Distribution, sample_dims: int) -> Tensor:
        try:
            return reduce_to_batch(D.kl_divergence(old, new), sample_dims)
        except NotImplementedError:
            draws = old.sample((self.samples_mc_kl,))
            diff = old.log_prob(draws) - new.log_prob(draws)
            return reduce_to_batch(diff, sample_dims + 1).mean(0)

    def _policy_terms(self, tensordict, dist, advantage):
        log_weight = self._log_weight(tensordict, dist, advantage)
        with torch.no_grad():
            old = self.actor_network.build_dist_from_params(shallow_copy(tensordict))
        kl = self._kl(old, dist, per_sample_dims(tensordict.batch_dims, advantage)).mean()
        ratio = log_weight.exp()
        gain = (ratio * advantage).mean()
        beta = self.beta.clone()
        with torch.no_grad():
            grow = kl > 1.5 * self.dtarg
            shrink = kl < self.dtarg / 1.5
            factor = torch.where(grow, self.increment, torch.where(shrink, self.decrement, 1.0))
            self.beta.mul_(factor)
        return {
            "loss_objective": -gain + beta * kl,
            "kl": kl.detach(),
            "beta": beta,
            **self._diagnostics(log_weight, ratio),
        }
