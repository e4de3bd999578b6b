"""The language-model losses: ``SFTLoss`` and ``GRPOLoss``, with GRPO's group-relative
advantage."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import Tensor

from rlblocks.core import REWARD
from rlblocks.llm._keys import (
    PROMPT_ID,
    PROMPT_MASK,
    PROMPT_TOKENS,
    REF_LOG_PROBS,
    RESPONSE_LOG_PROBS,
    RESPONSE_MASK,
    RESPONSE_TOKENS,
)
from rlblocks.llm._wrapper import TransformersWrapper
from rlblocks.llm.errors import GroupSizeError
from rlblocks.objectives import ADVANTAGE, LossModule, ObjectiveConfigError

__all__ = ["GRPOLoss", "GroupRelativeAdvantage", "SFTLoss", "group_relative_advantage"]

_NETWORK_KEYS = (PROMPT_TOKENS, PROMPT_MASK, RESPONSE_TOKENS, RESPONSE_MASK)


def _check_group_size(owner: str, group_size: Any) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise GroupSizeError(
            f"{owner}: group_size must be an int >= 2, got {group_size!r}. GRPO compares "
            f"several completions of one prompt: build the env with group_size >= 2 (e.g. "
            f"TextEnv(..., group_size=8)) and pass the same value here"
        )
    return group_size


def group_relative_advantage(
    reward: Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-6
) -> Tensor:
    """GRPO's advantage: each reward minus its group's mean, over the group's std.

    Args:
        reward: ``[B]`` or ``[B, 1]``, rows ``k * group_size ... (k + 1) * group_size - 1``
            being completions of one prompt (as :class:`~rlblocks.llm.TextEnv` lays them out).
        group_size: Completions per prompt (``>= 2``).
        scale: Divide by the group's (unbiased) std; ``False`` keeps only the baseline.
        eps: Added to the std, so a group with equal rewards gets advantage 0.

    Returns:
        ``[B, 1]``.

    Raises:
        GroupSizeError: ``group_size < 2``, or ``B`` is not a multiple of it.
    """
    owner = "group_relative_advantage"
    _check_group_size(owner, group_size)
    flat = reward.reshape(-1)
    if flat.numel() % group_size:
        raise GroupSizeError(
            f"{owner}: {flat.numel()} rewards do not split into groups of {group_size}; the "
            f"batch must hold whole groups (batch_size a multiple of group_size, unshuffled)"
        )
    groups = flat.reshape(-1, group_size)
    advantage = groups - groups.mean(-1, keepdim=True)
    if scale:
        advantage = advantage / (groups.std(-1, keepdim=True) + eps)
    return advantage.reshape(-1, 1)


class GroupRelativeAdvantage:
    """Write GRPO's advantage into a batch: ``batch["advantage"]`` from ``("next", "reward")``.

    Run it on a collected batch before it goes to a replay buffer (the groups must still
    be whole and in order). Where the batch has ``"prompt_id"``, the rows of each group are
    checked to share it.

    Args:
        group_size: Completions per prompt (``>= 2``).
        scale: See :func:`group_relative_advantage`.
        reward_key: Where the reward is (under ``"next"``).
        advantage_key: Where the advantage goes.

    Raises:
        GroupSizeError: ``group_size < 2``.

    Example:
        >>> batch = GroupRelativeAdvantage(group_size=8)(collector_batch)
    """

    def __init__(
        self,
        group_size: int,
        *,
        scale: bool = True,
        reward_key: NestedKey = ("next", REWARD),
        advantage_key: NestedKey = ADVANTAGE,
    ) -> None:
        self.group_size = _check_group_size(type(self).__name__, group_size)
        self.scale, self.reward_key, self.advantage_key = scale, reward_key, advantage_key

    def __call__(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the advantage (shaped like the reward) and return ``tensordict``.

        Raises:
            GroupSizeError: The batch is not made of whole groups sharing a prompt.
        """
        reward = tensordict.get(self.reward_key)
        prompt_id = tensordict.get(PROMPT_ID, None)
        if prompt_id is not None:
            groups = prompt_id.reshape(-1)
            if groups.numel() % self.group_size == 0:
                groups = groups.reshape(-1, self.group_size)
                mixed = (groups != groups[:, :1]).any(-1)
                if bool(mixed.any()):
                    g = int(mixed.nonzero()[0])
                    raise GroupSizeError(
                        f"{type(self).__name__}: rows {g * self.group_size}..."
                        f"{(g + 1) * self.group_size - 1} should be completions of one prompt "
                        f"but have prompt ids {groups[g].tolist()}; compute the advantage on "
                        f"the batch as collected (not shuffled), with the env's group_size"
                    )
        advantage = group_relative_advantage(reward, self.group_size, scale=self.scale)
        tensordict.set(self.advantage_key, advantage.reshape(reward.shape))
        return tensordict


def _masked_mean(x: Tensor, mask: Tensor, per_sequence: bool) -> Tensor:
    """Mean over real tokens: per sequence then over sequences, or over all tokens."""
    x = torch.where(mask, x, torch.zeros_like(x))
    if per_sequence:
        return (x.sum(-1) / mask.sum(-1).clamp_min(1)).mean()
    return x.sum() / mask.sum().clamp_min(1)


class _ResponseLoss(LossModule):
    """What SFT and GRPO share: a policy scored on responses, an optional frozen reference."""

    def __init__(
        self,
        actor_network: TransformersWrapper,
        *,
        kl_to_ref_coeff: float | None,
        reference_network: TransformersWrapper | None,
        reduction: str,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if not callable(getattr(actor_network, "log_prob", None)):
            raise ObjectiveConfigError(
                f"{owner}: actor_network must score responses (have log_prob(prompt, "
                f"prompt_mask, response, response_mask)), e.g. a TransformersWrapper; got "
                f"{type(actor_network).__name__}"
            )
        if reduction not in ("sequence", "token"):
            raise ObjectiveConfigError(
                f"{owner}: reduction must be 'sequence' (mean per response, then over "
                f"responses) or 'token' (mean over all tokens), got {reduction!r}"
            )
        if kl_to_ref_coeff is not None and kl_to_ref_coeff < 0:
            raise ObjectiveConfigError(
                f"{owner}: kl_to_ref_coeff must be >= 0, got {kl_to_ref_coeff}"
            )
        self.actor_network = actor_network
        self.kl_to_ref_coeff = kl_to_ref_coeff
        # Held outside the module tree: frozen, not trained, not saved with the loss.
        self.__dict__["reference_network"] = reference_network
        self.per_sequence = reduction == "sequence"

    def _network_inputs(self, tensordict: TensorDictBase) -> tuple[Tensor, ...]:
        keys = self._keys
        return (
            tensordict.get(PROMPT_TOKENS),
            tensordict.get(PROMPT_MASK),
            tensordict.get(keys.response),
            tensordict.get(keys.response_mask),
        )

    def _network_keys_needed(self) -> dict[NestedKey, str]:
        keys = self._keys
        needed = (PROMPT_TOKENS, PROMPT_MASK, keys.response, keys.response_mask)
        return {k: "actor network" for k in needed}

    def _kl_terms(
        self, tensordict: TensorDictBase, log_prob: Tensor, mask: Tensor
    ) -> dict[str, Tensor]:
        """``k3 = exp(ref - new) - (ref - new) - 1`` (Schulman's unbiased, positive estimator)."""
        if not self.kl_to_ref_coeff:
            return {}
        ref = tensordict.get(self._keys.ref_log_prob, None)
        if ref is None:
            if self.reference_network is None:
                raise ObjectiveConfigError(
                    f"{type(self).__name__}: kl_to_ref_coeff is set but the batch has no "
                    f"{self._keys.ref_log_prob} and no reference_network was given; pass "
                    f"reference_network=TransformersWrapper(frozen_model, tok, generate=False)"
                )
            with torch.no_grad():
                ref = self.reference_network.log_prob(*self._network_inputs(tensordict))
        diff = ref.detach() - log_prob
        k3 = diff.exp() - diff - 1
        kl = _masked_mean(k3, mask, self.per_sequence)
        return {"loss_kl": self.kl_to_ref_coeff * kl, "kl_to_ref": kl.detach()}


class SFTLoss(_ResponseLoss):
    """Supervised fine-tuning: the masked next-token loss on the responses.

    ``loss_sft = -mean(log pi(response token | prompt, previous tokens))`` over the real
    response tokens (the end-of-sequence token included, so the model learns to stop);
    the prompt's tokens condition but are not trained on. With ``kl_to_ref_coeff``, a KL
    penalty to a frozen reference keeps the model near it.

    Batches hold ``("tokens", "prompt")``, ``("masks", "prompt")``, ``("tokens",
    "response")`` and ``("masks", "response")``: :func:`~rlblocks.llm.encode_sft_batch`
    builds them from text.

    Args:
        actor_network: The model, as a :class:`TransformersWrapper` (any mode).
        kl_to_ref_coeff: Weight of the KL to the reference; ``None`` for none.
        reference_network: The frozen reference (needed with ``kl_to_ref_coeff`` unless
            the batch has ``("ref_log_probs", "response")``).
        reduction: ``"token"`` (mean over all real tokens, the default) or ``"sequence"``.

    Example:
        >>> loss = SFTLoss(TransformersWrapper(model, tok, generate=False, max_new_tokens=6))
        >>> batch = encode_sft_batch(tok, data, max_prompt_tokens=8, max_new_tokens=6)
        >>> total_loss(loss(batch)).backward()
    """

    default_keys: ClassVar = {
        "response": RESPONSE_TOKENS,
        "response_mask": RESPONSE_MASK,
        "ref_log_prob": REF_LOG_PROBS,
    }

    def __init__(
        self,
        actor_network: TransformersWrapper,
        *,
        kl_to_ref_coeff: float | None = None,
        reference_network: TransformersWrapper | None = None,
        reduction: str = "token",
    ) -> None:
        super().__init__(
            actor_network,
            kl_to_ref_coeff=kl_to_ref_coeff,
            reference_network=reference_network,
            reduction=reduction,
        )

    def _required_keys(self, tensordict: TensorDictBase | None = None) -> tuple[Any, Any]:
        return {}, self._network_keys_needed()

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        mask = tensordict.get(self._keys.response_mask)
        log_prob = self.actor_network.log_prob(*self._network_inputs(tensordict))
        nll = _masked_mean(-log_prob, mask, self.per_sequence)
        terms = {"loss_sft": nll, "perplexity": nll.detach().exp()}
        terms.update(self._kl_terms(tensordict, log_prob, mask))
        return self._output(**terms)


class GRPOLoss(_ResponseLoss):
    """Group Relative Policy Optimization (Shao et al., 2024, DeepSeekMath).

    Several completions of each prompt are sampled; each one's advantage is its reward
    against its group's (:func:`group_relative_advantage`), so no critic is needed. The
    policy term is PPO's clipped surrogate per token,
    ``-min(r_t A, clip(r_t, 1 - eps, 1 + eps) A)`` with ``r_t = pi(o_t) / pi_old(o_t)``,
    averaged over each response's tokens and then over responses (``reduction=
    "sequence"``, the paper's) or over all tokens (``"token"``). With ``kl_to_ref_coeff``
    the k3 estimate of ``KL(pi || pi_ref)`` is added, per token.

    Reads the prompt and response tokens and masks, the log-probabilities generation
    reported (``("log_probs", "response")``) and ``"advantage"``; where the advantage is
    absent it is computed from ``("next", "reward")`` with ``group_size`` (the batch must
    then hold whole groups, in order).

    Args:
        actor_network: The policy, a :class:`TransformersWrapper` (it scores responses).
        group_size: Completions per prompt, for an advantage computed here (``>= 2``).
        clip_epsilon: PPO's clip range.
        kl_to_ref_coeff: Weight of the KL to the reference (the paper's beta); ``None``
            for none.
        reference_network: The frozen reference model (needed with ``kl_to_ref_coeff``
            unless the batch has ``("ref_log_probs", "response")``).
        reduction: ``"sequence"`` or ``"token"`` (see above).

    Raises:
        GroupSizeError: ``group_size`` is given and ``< 2``.
        ObjectiveConfigError: Bad ``clip_epsilon``, ``kl_to_ref_coeff`` or ``reduction``.

    Diagnostics: ``clip_fraction``, ``kl_approx`` (mean ``log pi_old - log pi`` over
    tokens), ``kl_to_ref``, ``advantage_std``.

    Example:
        >>> loss = GRPOLoss(TransformersWrapper(model, tok, generate=False), group_size=8)
        >>> total_loss(loss(batch)).backward()
    """

    default_keys: ClassVar = {
        "advantage": ADVANTAGE,
        "sample_log_prob": RESPONSE_LOG_PROBS,
        "ref_log_prob": REF_LOG_PROBS,
        "response": RESPONSE_TOKENS,
        "response_mask": RESPONSE_MASK,
        "reward": REWARD,
        "done": "done",
        "terminated": "terminated",
    }
    _precomputed_roles: ClassVar[tuple[str, ...]] = ("advantage",)

    def __init__(
        self,
        actor_network: TransformersWrapper,
        *,
        group_size: int | None = None,
        clip_epsilon: float = 0.2,
        kl_to_ref_coeff: float | None = None,
        reference_network: TransformersWrapper | None = None,
        reduction: str = "sequence",
    ) -> None:
        super().__init__(
            actor_network,
            kl_to_ref_coeff=kl_to_ref_coeff,
            reference_network=reference_network,
            reduction=reduction,
        )
        owner = type(self).__name__
        if not 0 < clip_epsilon < 1:
            raise ObjectiveConfigError(
                f"{owner}: clip_epsilon must be in (0, 1), got {clip_epsilon}"
            )
        self.group_size = None if group_size is None else _check_group_size(owner, group_size)
        self.clip_epsilon = clip_epsilon

    def _required_keys(self, tensordict: TensorDictBase | None = None) -> tuple[Any, Any]:
        keys = self._keys
        loss_keys: dict[str, NestedKey] = {"sample_log_prob": keys.sample_log_prob}
        has_advantage = tensordict is not None and keys.advantage in tensordict.keys(True)
        if has_advantage or self.group_size is None:
            loss_keys["advantage"] = keys.advantage
        else:
            loss_keys["reward"] = self._transition_keys()["reward"]
        return loss_keys, self._network_keys_needed()

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self._keys
        advantage = tensordict.get(keys.advantage, None)
        if advantage is None:
            reward = tensordict.get(self._transition_keys()["reward"])
            advantage = group_relative_advantage(reward, self.group_size)
        mask = tensordict.get(keys.response_mask)
        advantage = advantage.reshape(*mask.shape[:-1], 1).detach()
        log_prob = self.actor_network.log_prob(*self._network_inputs(tensordict))
        log_ratio = log_prob - tensordict.get(keys.sample_log_prob).detach()
        ratio = log_ratio.exp()
        clipped = ratio.clamp(1 - self.clip_epsilon, 1 + self.clip_epsilon)
        surrogate = torch.minimum(ratio * advantage, clipped * advantage)
        terms = {"loss_objective": -_masked_mean(surrogate, mask, self.per_sequence)}
        terms.update(self._kl_terms(tensordict, log_prob, mask))
        with torch.no_grad():
            outside = ((ratio - 1).abs() > self.clip_epsilon).to(ratio.dtype)
            terms["clip_fraction"] = _masked_mean(outside, mask, per_sequence=False)
            terms["kl_approx"] = _masked_mean(-log_ratio, mask, per_sequence=False)
            terms["advantage_std"] = advantage.std(unbiased=False)  # 0 for one row, not NaN
        return self._output(**terms)
