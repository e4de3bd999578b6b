"""Generative adversarial imitation learning (Ho & Ermon, 2016): the discriminator's loss
and the reward it gives the policy."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey, unravel_key
from torch import Tensor
from torch.nn import functional as F

from rlblocks.core import ACTION, OBSERVATION, REWARD
from rlblocks.objectives._checks import check_keys, fmt_key
from rlblocks.objectives._losses.base import LossModule, next_key, required_in_keys
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError

__all__ = ["GAILLoss"]

# The data the loss reads, by role: expert pairs (labelled 1) and policy pairs (labelled 0).
_DATA_ROLES = ("expert_observation", "expert_action", "collector_observation", "collector_action")

# -log(1 - D) is capped at -log(_MIN_ONE_MINUS_D) ~= 18.4 where D rounds to 1.
_MIN_ONE_MINUS_D = 1e-8


class GAILLoss(LossModule):
    """The GAIL discriminator loss: tell expert ``(s, a)`` pairs (label 1) from the policy's (0).

    The discriminator ``D(s, a)`` writes a *probability* in ``[0, 1]`` that the pair is the
    expert's (TorchRL's convention: end the network with ``nn.Sigmoid()``; the key is named
    ``d_logits`` as in TorchRL although it holds a probability). With ``D_E`` its outputs on
    the expert pairs and ``D_pi`` on the policy's:

    - ``loss_discriminator = mean(-log D_E) + mean(-log(1 - D_pi))`` (binary cross-entropy
      of each half, summed as in TorchRL; each log is floored at -100 by
      ``F.binary_cross_entropy``, so a saturated ``D`` gives a finite loss);
    - with ``use_grad_penalty=True``, ``loss_gp = gp_lambda * mean((||grad D(x_hat)|| - 1)^2)``
      (WGAN-GP, Gulrajani et al., 2017): ``x_hat = eps * expert + (1 - eps) * policy`` with
      one ``eps ~ U[0, 1]`` per sample, shared by observation and action, drawn with
      ``torch.rand`` from the global generator; the gradient is that of the probability with
      respect to the observation and action together (TorchRL draws one ``eps`` per feature).

    Diagnostics: ``expert_accuracy`` (share of expert pairs with ``D > 0.5``) and
    ``collector_accuracy`` (share of policy pairs with ``D < 0.5``). No gradient reaches
    the data: the policy is trained on :meth:`reward` by an RL loss, not through ``D``.

    The batch holds as many expert as policy pairs (TorchRL's layout): the expert's at
    ``observation``/``action``, the policy's at ``collector_observation``/
    ``collector_action`` (roles ``expert_*`` and ``collector_*`` of :meth:`set_keys`). The
    discriminator reads the expert keys; the loss runs it once on both halves concatenated
    along the first dim. TorchRL's ``GAILLoss`` returns the sum as ``"loss"`` (and the
    penalty, detached, as ``"gp_loss"``): read ``total_loss(out)`` instead; there is no
    ``reduction=``.

    Args:
        discriminator_network: A TensorDictModule reading the ``expert_observation`` and
            ``expert_action`` keys (``"observation"``, ``"action"``) and writing the
            probability ``D(s, a)``, shaped ``[*batch, 1]``, at ``discriminator_pred``
            (``"d_logits"``).
        use_grad_penalty: Add the gradient penalty ``loss_gp``.
        gp_lambda: Weight of the gradient penalty, ``>= 0``.

    Raises:
        ObjectiveConfigError: ``gp_lambda`` is negative or not finite.

    Example:
        >>> disc = TensorDictSequential(
        ...     TensorDictModule(MLP(obs_dim + act_dim, 1, num_cells=[64, 64]),
        ...                      in_keys=["observation", "action"], out_keys=["logit"]),
        ...     TensorDictModule(torch.sigmoid, in_keys=["logit"], out_keys=["d_logits"]))
        >>> gail = GAILLoss(disc, use_grad_penalty=True)
        >>> expert = expert_buffer.sample(256)  # "observation", "action"
        >>> flat = data.reshape(-1)  # a collected batch
        >>> expert["collector_observation"] = flat["observation"][:256]
        >>> expert["collector_action"] = flat["action"][:256]
        >>> total_loss(gail(expert)).backward()
        >>> data = gail.reward(data)  # ("next", "reward") = -log(1 - D(s, a)), then GAE, PPO
    """

    default_keys: ClassVar = {
        "expert_observation": OBSERVATION,
        "expert_action": ACTION,
        "collector_observation": "collector_observation",
        "collector_action": "collector_action",
        "discriminator_pred": "d_logits",
        "reward": REWARD,
    }
    default_value_estimator = None

    def __init__(
        self,
        discriminator_network: TensorDictModuleBase,
        *,
        use_grad_penalty: bool = False,
        gp_lambda: float = 10.0,
    ) -> None:
        super().__init__()
        if not (isinstance(gp_lambda, (int, float)) and math.isfinite(gp_lambda)) or gp_lambda < 0:
            raise ObjectiveConfigError(
                f"GAILLoss: gp_lambda must be a finite number >= 0 (the weight of the gradient "
                f"penalty; WGAN-GP uses 10), got {gp_lambda!r}"
            )
        self.discriminator_network = discriminator_network
        self.use_grad_penalty = use_grad_penalty
        self.gp_lambda = float(gp_lambda)

    # -- keys -----------------------------------------------------------------------------

    def _fed_keys(self) -> list[NestedKey]:
        """The keys the discriminator's input holds (TorchRL: the expert keys)."""
        return [self._keys.expert_observation, self._keys.expert_action]

    def _check_discriminator(self) -> list[NestedKey]:
        """The discriminator's required in_keys, once checked against what it is fed."""
        reads = [unravel_key(k) for k in required_in_keys(self.discriminator_network)]
        fed = self._fed_keys()
        unfed = [k for k in reads if k not in fed]
        if unfed:
            raise ObjectiveConfigError(
                f"GAILLoss: the discriminator reads [{', '.join(map(fmt_key, unfed))}], which "
                f"GAILLoss does not give it: it runs the discriminator on the expert and the "
                f"policy pairs under its expert_observation and expert_action keys "
                f"[{', '.join(map(fmt_key, fed))}]. Build the discriminator with "
                f"in_keys={[*fed]!r}, or rename the loss's keys to the discriminator's with "
                f"loss.set_keys(expert_observation=..., expert_action=...)."
            )
        writes = getattr(self.discriminator_network, "out_keys", None)
        pred = self._keys.discriminator_pred
        if writes is not None and pred not in [unravel_key(k) for k in writes]:
            raise ObjectiveConfigError(
                f"GAILLoss: the discriminator writes [{', '.join(map(fmt_key, writes))}] but "
                f"GAILLoss reads D(s, a) at {fmt_key(pred)}: set out_keys=[{pred!r}] or "
                f"rename with loss.set_keys(discriminator_pred=...)."
            )
        return reads

    def _required_keys(self, tensordict=None):
        self._check_discriminator()
        return {role: getattr(self._keys, role) for role in _DATA_ROLES}, {}

    # -- the loss -------------------------------------------------------------------------

    def _discriminate(self, observation: Tensor, action: Tensor) -> Tensor:
        """``D(s, a)`` for a batch of pairs, shaped ``[n, ..., 1]``."""
        obs_key, act_key = self._fed_keys()
        inputs = TensorDict(
            {obs_key: observation, act_key: action}, batch_size=observation.shape[:1]
        )
        pred = self.discriminator_network(inputs).get(self._keys.discriminator_pred)
        if pred.shape[-1:] != (1,):
            raise ShapeMismatchError(
                f"GAILLoss: the discriminator wrote {fmt_key(self._keys.discriminator_pred)} "
                f"with shape {list(pred.shape)} for observations {list(observation.shape)}; it "
                f"must write one probability per sample in a trailing dim of size 1, "
                f"[*batch, 1] (a last layer with out_features=1)."
            )
        return pred

    def _halves(self, tensordict: TensorDictBase) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Expert and policy observations and actions, detached, checked to pair up."""
        keys = self._keys
        out = [tensordict.get(getattr(keys, role)).detach() for role in _DATA_ROLES]
        for i, what in ((0, "observations"), (1, "actions")):
            expert, policy = out[i], out[i + 2]
            if expert.shape != policy.shape:
                expert_key = fmt_key(getattr(keys, _DATA_ROLES[i]))
                policy_key = fmt_key(getattr(keys, _DATA_ROLES[i + 2]))
                raise ShapeMismatchError(
                    f"GAILLoss: the expert {what} {expert_key} have shape "
                    f"{list(expert.shape)} but the policy's {policy_key} have shape "
                    f"{list(policy.shape)}; the discriminator is trained on as many expert as "
                    f"policy pairs, shaped alike. Sample the expert data with the batch size "
                    f"of the policy's (or slice both to the same size, e.g. data[:n])."
                )
        return out[0], out[1], out[2], out[3]

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        expert_obs, expert_act, policy_obs, policy_act = self._halves(tensordict)
        pred = self._discriminate(
            torch.cat([expert_obs, policy_obs]), torch.cat([expert_act, policy_act])
        )
        expert_pred, policy_pred = pred.chunk(2)
        expert_loss = F.binary_cross_entropy(expert_pred, torch.ones_like(expert_pred))
        policy_loss = F.binary_cross_entropy(policy_pred, torch.zeros_like(policy_pred))
        terms = {"loss_discriminator": expert_loss + policy_loss}
        if self.use_grad_penalty:
            penalty = self._gradient_penalty(
                expert_obs, expert_act, policy_obs, policy_act, expert_pred.shape[:-1]
            )
            terms["loss_gp"] = self.gp_lambda * penalty
        with torch.no_grad():
            terms["expert_accuracy"] = (expert_pred > 0.5).to(pred.dtype).mean()
            terms["collector_accuracy"] = (policy_pred < 0.5).to(pred.dtype).mean()
        return self._output(**terms)

    def _gradient_penalty(
        self,
        expert_obs: Tensor,
        expert_act: Tensor,
        policy_obs: Tensor,
        policy_act: Tensor,
        samples: torch.Size,
    ) -> Tensor:
        """``mean((||grad_(s, a) D(x_hat)|| - 1)^2)`` over interpolates, one per sample."""
        inputs = (expert_obs, expert_act, policy_obs, policy_act)
        for role, x in zip(_DATA_ROLES, inputs):
            if not x.is_floating_point():
                raise ObjectiveConfigError(
                    f"GAILLoss: use_grad_penalty=True differentiates D with respect to its "
                    f"inputs, but {fmt_key(getattr(self._keys, role))} has dtype {x.dtype}; "
                    f"give the discriminator floating-point observations and actions (one-hot "
                    f"encode discrete actions) or set use_grad_penalty=False."
                )
            if x.shape[: len(samples)] != samples:
                raise ShapeMismatchError(
                    f"GAILLoss: the discriminator wrote one probability per sample for "
                    f"samples {list(samples)}, which do not lead "
                    f"{fmt_key(getattr(self._keys, role))} shaped {list(x.shape)}; the "
                    f"gradient penalty is taken per sample."
                )
        eps = torch.rand(samples, dtype=expert_obs.dtype, device=expert_obs.device)

        def interpolate(expert: Tensor, policy: Tensor) -> Tensor:
            return torch.lerp(
                policy, expert, eps.reshape(*samples, *(1,) * (expert.ndim - len(samples)))
            )

        # torch.func.vjp rather than torch.autograd.grad: one graph under torch.compile, and
        # the gradients stay differentiable in the discriminator's parameters.
        pred, pullback = torch.func.vjp(
            self._discriminate,
            interpolate(expert_obs, policy_obs),
            interpolate(expert_act, policy_act),
        )
        grads = pullback(torch.ones_like(pred))
        flat = torch.cat([g.reshape(*samples, -1) for g in grads], dim=-1)
        return (torch.linalg.vector_norm(flat, dim=-1) - 1).square().mean()

    # -- the reward -----------------------------------------------------------------------

    @torch.no_grad()
    def reward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the GAIL reward ``-log(1 - D(s, a))`` of a collected batch, in place.

        The policy is rewarded for pairs the discriminator takes for the expert's: the
        reward is ``0`` where ``D = 0`` and grows without bound as ``D -> 1`` (capped at
        ``-log(1e-8) ~= 18.4``); it is Ho & Ermon's cost ``log D_pi(s, a)``, negated, with
        ``D_pi = 1 - D``, and the reward TorchRL's GAIL example trains PPO on.
        (``log D - log(1 - D)``, AIRL's choice, would also penalize un-expert-like pairs.)
        Computed without gradient, in float32 or wider. Call it before the advantage:
        ``data = gail.reward(data)``, then GAE and the PPO loss as usual.

        Args:
            tensordict: A collected batch holding the keys the discriminator reads (the
                ``expert_observation``/``expert_action`` keys, by default the env's
                ``"observation"`` and ``"action"``).

        Returns:
            ``tensordict``, with the reward at ``("next", reward)`` (``set_keys(reward=...)``
            to write it elsewhere, e.g. to keep the env's reward), shaped ``[*batch, 1]``.

        Raises:
            MissingInputError: The batch lacks a key the discriminator reads.
            ShapeMismatchError: The discriminator's output is not shaped ``[*batch, 1]``.
            ObjectiveConfigError: It is not a probability (e.g. a logit: no final sigmoid).
        """
        reads = self._check_discriminator()
        check_keys("GAILLoss.reward", tensordict, {}, {k: "discriminator network" for k in reads})
        pred_key = self._keys.discriminator_pred
        pred = self.discriminator_network(tensordict.select(*reads)).get(pred_key)
        expected = [*tensordict.batch_size, 1]
        if list(pred.shape) != expected:
            raise ShapeMismatchError(
                f"GAILLoss.reward: the discriminator wrote {fmt_key(pred_key)} with shape "
                f"{list(pred.shape)} for a batch of shape {list(tensordict.batch_size)}; "
                f"expected one probability per sample, {expected}, the reward's shape."
            )
        if pred.numel():
            low, high = (float(v) for v in torch.aminmax(pred))
            if not (low >= 0.0 and high <= 1.0):
                raise ObjectiveConfigError(
                    f"GAILLoss.reward: the discriminator wrote values in [{low:.4g}, "
                    f"{high:.4g}] at {fmt_key(pred_key)}; GAILLoss reads a probability "
                    f"D(s, a) in [0, 1] (TorchRL's convention): end the network with "
                    f"nn.Sigmoid()."
                )
        pred = pred.to(torch.promote_types(pred.dtype, torch.float32))
        reward = (1 - pred).clamp_min(_MIN_ONE_MINUS_D).log().neg()
        tensordict.set(next_key(self._keys.reward), reward)
        return tensordict
