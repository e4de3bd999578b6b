"""``KLRewardTransform``: a penalty on the reward for straying from a reference model."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from rlblocks.core import REWARD
from rlblocks.envs.transforms import Transform
from rlblocks.llm._keys import (
    PROMPT_MASK,
    PROMPT_TOKENS,
    REF_LOG_PROBS,
    RESPONSE_LOG_PROBS,
    RESPONSE_MASK,
    RESPONSE_TOKENS,
)
from rlblocks.llm._wrapper import TransformersWrapper
from rlblocks.llm.errors import LLMError

__all__ = ["KLRewardTransform", "KL_PENALTY"]

KL_PENALTY = "kl_penalty"
"""``("next", "kl_penalty")``: the response's summed log-ratio to the reference, ``[*batch, 1]``."""


class KLRewardTransform(Transform):
    """Subtract ``coef * sum_t (log pi(o_t) - log pi_ref(o_t))`` from each response's reward.

    The RLHF reward shaping of Ziegler et al. (2019) and InstructGPT: the sampled
    estimate of ``KL(pi || pi_ref)`` over the response, taken from the log-probabilities
    the policy reported when it generated (``("log_probs", "response")``) and those of the
    frozen ``reference`` on the same tokens. The env's reward then carries the penalty, so
    any loss that maximizes reward (PPO, A2C, GRPO) keeps the policy near the reference.
    The reference log-probabilities are written next to the policy's
    (``("ref_log_probs", "response")``) and the penalty under ``("next", "kl_penalty")``.

    Args:
        reference: The frozen reference, a :class:`TransformersWrapper` (``generate=False``
            or not: its :meth:`~TransformersWrapper.log_prob` is used, without gradient).
        coef: Weight of the penalty (``>= 0``).

    Raises:
        LLMError: ``coef < 0`` or a ``reference`` that cannot score responses.

    Example:
        >>> env = TransformedEnv(TextEnv(...), KLRewardTransform(reference, coef=0.05))
    """

    def __init__(self, reference: TransformersWrapper, coef: float = 0.1) -> None:
        super().__init__(in_keys=[], out_keys=[])
        if not coef >= 0:
            raise LLMError(f"KLRewardTransform: coef must be >= 0, got {coef!r}")
        if not callable(getattr(reference, "log_prob", None)):
            raise LLMError(
                f"KLRewardTransform: reference must score responses (a TransformersWrapper), "
                f"got {type(reference).__name__}"
            )
        # Not a submodule: the reference is frozen and never saved with the env.
        self.__dict__["reference"] = reference
        self.coef = coef

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        log_probs = tensordict.get(RESPONSE_LOG_PROBS, None)
        if log_probs is None:
            raise LLMError(
                f"KLRewardTransform: the step input lacks {RESPONSE_LOG_PROBS}, the policy's "
                f"log-probabilities of its response; generate with a TransformersWrapper "
                f"(which writes them)"
            )
        mask = tensordict.get(RESPONSE_MASK)
        with torch.no_grad():
            ref = self.reference.log_prob(
                tensordict.get(PROMPT_TOKENS),
                tensordict.get(PROMPT_MASK),
                tensordict.get(RESPONSE_TOKENS),
                mask,
            )
        kl = torch.where(mask, log_probs - ref, torch.zeros_like(ref)).sum(-1, keepdim=True)
        tensordict.set(REF_LOG_PROBS, ref)
        next_tensordict.set(KL_PENALTY, kl)
        next_tensordict.set(REWARD, next_tensordict.get(REWARD) - self.coef * kl)
        return next_tensordict

    def extra_repr(self) -> str:
        return f"coef={self.coef}"
