"""Return-conditioned sequence losses: Decision Transformer (Chen et al., 2021) and Online DT
(Zheng et al., 2022).

Batches are slices of trajectories, ``[B, T]``: ``observation`` ``[B, T, obs]``, ``action``
``[B, T, act]``, ``return_to_go`` ``[B, T, 1]`` (and what else the actor reads). Steps where
the mask (``("collector", "mask")`` by default, True at real steps) is False are padding
and count for nothing.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from rlblocks.core import ACTION
from rlblocks.core.fast_td import shallow_copy
from rlblocks.core.specs import TensorSpec
from rlblocks.objectives._checks import check_probabilistic, fmt_key
from rlblocks.objectives._losses.base import (
    LossModule,
    check_distance,
    distance_loss,
    entropy,
    reduce_to_batch,
    remember,
)
from rlblocks.objectives._losses.ddpg import _mu
from rlblocks.objectives._losses.off_policy import TemperatureMixin
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules._decision_transformer import MASK, expand_mask, per_step

__all__ = ["DecisionTransformerLoss", "DTLoss", "OnlineDTLoss"]


class _SequenceLoss(LossModule):
    """Shared by the DT losses: the keys and the mean over the real steps of a slice."""

    default_keys: ClassVar = {"action": ACTION, "mask": MASK}
    default_value_estimator = None

    def _required_keys(self, tensordict=None):
        # The mask is optional: without it every step counts.
        return {"action": self._keys.action}, self._network_keys(
            self.actor_network, "actor network"
        )

    def _step_mask(self, tensordict: TensorDictBase, action: Tensor) -> Tensor | None:
        """The mask, ``[*steps]`` (``action`` is ``[*steps, act]``), or ``None`` if absent."""
        key = fmt_key(self._keys.mask)
        return per_step(
            type(self).__name__,
            f"the mask {key} (True at real steps)",
            tensordict.get(self._keys.mask, None),
            action.shape[:-1],
            torch.bool,
            fix=f"; if {key} is not a step mask, rename the mask key with set_keys(mask=...)",
        )

    @staticmethod
    def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
        """The mean of ``x`` over the real steps (0 when there are none).

        ``x`` starts with the mask's dims; padded entries are dropped, not multiplied by 0.
        """
        if mask is None:
            return x.mean()
        keep = expand_mask(mask, x)
        return x.masked_fill(~keep, 0.0).sum() / keep.sum().clamp(min=1)

    def _target_action(self, tensordict: TensorDictBase) -> tuple[Tensor, Tensor | None]:
        """The data's action (zeros at padding, which may hold NaN) and the step mask."""
        action = tensordict.get(self._keys.action).detach()
        mask = self._step_mask(tensordict, action)
        if mask is not None:
            # A NaN target would turn the zero gradient of a dropped entry into NaN.
            action = action.masked_fill(~expand_mask(mask, action), 0.0)
        return action, mask


class DecisionTransformerLoss(_SequenceLoss):
    """The Decision Transformer's loss: regress the actor's action on the data's, per step.

    ``loss_actor = mean over real steps and action dims of d(pi(R_<=t, s_<=t, a_<t), a_t)``:
    the actor (e.g. ``Actor(DTActor(...), in_keys=["observation", "action",
    "return_to_go"])``) reads the whole slice and predicts every step's action; causal
    attention keeps ``a_t`` out of its own prediction. The actor runs deterministically
    (a ``TanhDelta`` actor gives its location). Steps where the mask (``("collector",
    "mask")``, renamable with ``set_keys(mask=...)``) is False are left out.

    TorchRL's ``DTLoss`` names the term ``loss``; rlblocks names every term ``loss_<name>``
    (what :func:`total_loss`, ``make_update_step`` and the trainer sum), hence
    ``loss_actor``.

    Args:
        actor_network: A TensorDict module writing the predicted action at the
            ``action_pred`` key (``"action"`` by default; the data's action is read first).
        loss_function: ``"l2"`` (the paper's), ``"l1"`` or ``"smooth_l1"``.

    Example:
        >>> actor = Actor(DTActor(obs_dim, act_dim, n_embd=128, n_layer=3, n_head=1,
        ...                       context_length=20),
        ...               in_keys=["observation", "action", "return_to_go"])
        >>> loss = DecisionTransformerLoss(actor)
        >>> loss(slices)["loss_actor"].backward()    # slices: [B, T] from a SliceSampler
    """

    default_keys: ClassVar = {**_SequenceLoss.default_keys, "action_pred": ACTION}

    def __init__(self, actor_network: TensorDictModuleBase, *, loss_function: str = "l2") -> None:
        super().__init__()
        self.actor_network = actor_network
        self.loss_function = check_distance(type(self).__name__, loss_function)

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        target, mask = self._target_action(tensordict)
        predicted = _mu(self.actor_network, shallow_copy(tensordict)).get(self._keys.action_pred)
        error = distance_loss(type(self).__name__, predicted, target, self.loss_function)
        return self._output(loss_actor=self._masked_mean(error, mask))


DTLoss = DecisionTransformerLoss
"""TorchRL's name of :class:`DecisionTransformerLoss`."""


class OnlineDTLoss(TemperatureMixin, _SequenceLoss):
    """The Online Decision Transformer's loss: likelihood of the data's actions plus entropy.

    With ``pi`` the actor's distribution at each step (e.g. a ``ProbabilisticActor`` over
    :class:`~rlblocks.objectives.modules.OnlineDTActor` with ``TanhNormal``), ``H`` its
    entropy per step (estimated from ``samples_mc_entropy`` draws where it has no closed
    form) and ``alpha = exp(log_alpha)``, all means over the real steps:

    - ``loss_log_likelihood = -mean(log pi(a_t))``;
    - ``loss_entropy = -alpha * mean(H)`` (alpha detached);
    - ``loss_alpha = -log_alpha * (target_entropy - mean(H))`` (zero when ``fixed_alpha``):
      the temperature rises while the entropy is below its target. TorchRL weighs the gap
      by ``alpha`` rather than ``log_alpha``; both move ``alpha`` the same way.

    The output also holds the detached ``entropy`` and ``alpha``.

    Args:
        actor_network: A probabilistic actor (with ``get_dist``).
        alpha_init: Initial temperature.
        min_alpha: Lower bound of the temperature.
        max_alpha: Upper bound of the temperature.
        fixed_alpha: Do not learn the temperature.
        target_entropy: ``"auto"`` (minus the number of action dims) or a number.
        samples_mc_entropy: Draws per step to estimate an entropy without closed form.
        action_spec: Spec of the action for ``"auto"`` (default: the actor's spec, else the
            action's size in the first batch).

    Example:
        >>> loss = OnlineDTLoss(actor, alpha_init=0.1)
        >>> total_loss(loss(slices)).backward()
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        *,
        alpha_init: float = 1.0,
        min_alpha: float | None = None,
        max_alpha: float | None = None,
        fixed_alpha: bool = False,
        target_entropy: float | str = "auto",
        samples_mc_entropy: int = 1,
        action_spec: TensorSpec | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_probabilistic(owner, actor_network, " with TanhNormal")
        if samples_mc_entropy < 1:
            raise ObjectiveConfigError(
                f"{owner}: samples_mc_entropy must be >= 1, got {samples_mc_entropy}"
            )
        self.actor_network = actor_network
        self.samples_mc_entropy = samples_mc_entropy
        self._init_alpha(alpha_init, min_alpha, max_alpha, fixed_alpha)
        spec = action_spec if action_spec is not None else getattr(actor_network, "spec", None)
        if target_entropy == "auto":
            self.target_entropy = None if spec is None else -float(spec.shape.numel())
        else:
            self.target_entropy = float(target_entropy)

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        action, mask = self._target_action(tensordict)
        steps = action.ndim - 1
        target_entropy = self.target_entropy
        if target_entropy is None:
            target_entropy = remember(self, "target_entropy", -float(action.shape[-1]))
        dist = self.actor_network.get_dist(shallow_copy(tensordict))
        log_prob = reduce_to_batch(dist.log_prob(action), steps)
        entropy_mean = self._masked_mean(entropy(dist, steps, self.samples_mc_entropy), mask)
        alpha = self.alpha
        return self._output(
            loss_log_likelihood=-self._masked_mean(log_prob, mask),
            loss_entropy=-alpha * entropy_mean,
            loss_alpha=self._alpha_loss(target_entropy - entropy_mean),
            entropy=entropy_mean.detach(),
            alpha=alpha,
        )
