"""Distributions over the allowed actions only: :class:`MaskedCategorical`,
:class:`MaskedOneHotCategorical`.

A forbidden action gets logit ``-inf``: probability exactly 0, never sampled, never the
mode, ``log_prob`` ``-inf``; the others are renormalized among themselves, and the entropy is
that of the renormalized distribution (torch's categorical entropy treats ``0 * log 0`` as 0).
Gradients reach only the logits of allowed actions.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch import distributions as D

from rlblocks.objectives.errors import ShapeMismatchError

__all__ = ["MaskedCategorical", "MaskedOneHotCategorical", "check_action_mask", "masked_logits"]


def check_action_mask(owner: str, mask: Tensor, like: Tensor) -> Tensor:
    """``mask`` as a bool tensor of ``like``'s shape, or an error naming what is wrong.

    Every row (last dim) needs one allowed action. The checks read the mask's values, so
    they are skipped while ``torch.compile`` traces (the eager run has made them).
    """
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        given = f"dtype {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ShapeMismatchError(
            f"{owner}: the action mask must be a bool tensor of shape {list(like.shape)} "
            f"(True = allowed), got {given} (fix: mask.bool())"
        )
    try:
        mask = mask.expand_as(like)
    except RuntimeError:
        raise ShapeMismatchError(
            f"{owner}: the action mask has shape {list(mask.shape)}, the logits "
            f"{list(like.shape)}; expected one entry per action: {list(like.shape)} (or a "
            f"shape that broadcasts to it)"
        ) from None
    if not torch.compiler.is_compiling():
        empty = ~mask.any(-1)
        if bool(empty.any()):
            where = [int(i) for i in empty.nonzero()[0]]
            raise ShapeMismatchError(
                f"{owner}: the action mask allows no action at batch index {where} (of "
                f"{list(empty.shape)}); every state needs at least one legal action (an env "
                f"with none should end its episode there)"
            )
    return mask


def masked_logits(
    owner: str, logits: Tensor | None, probs: Tensor | None, mask: Tensor
) -> tuple[Tensor, Tensor]:
    """``(logits with -inf where the mask is False, the checked mask)``, from ``logits`` or
    ``probs``."""
    if (logits is None) == (probs is None):
        given = "both" if logits is not None else "neither"
        raise ShapeMismatchError(
            f"{owner}: expected exactly one of logits and probs, got {given}. Fix: pass "
            f"logits=... (or probs=...) and mask=..."
        )
    if logits is None:
        logits = probs.log()
    mask = check_action_mask(owner, mask, logits)
    return logits.masked_fill(~mask, float("-inf")), mask


class MaskedCategorical(D.Categorical):
    """A categorical distribution (action indices) restricted to the allowed actions.

    Args:
        logits: Unnormalized log-probabilities ``[*batch, n]`` (or give ``probs``).
        probs: Probabilities ``[*batch, n]`` (renormalized among the allowed actions).
        mask: Bool ``[*batch, n]`` (or broadcastable to it), ``True`` where allowed; every
            row needs one allowed action.
        validate_args: As for ``torch.distributions``.

    Raises:
        ShapeMismatchError: A mask that is not bool, does not match the logits' shape, or
            allows no action in some row (its index is named).

    With a :class:`~rlblocks.objectives.modules.ProbabilisticActor`, read the mask from the
    TensorDict: ``in_keys={"logits": "logits", "mask": "action_mask"}``. TorchRL's name.

    Example:
        >>> dist = MaskedCategorical(logits=torch.zeros(3), mask=torch.tensor([True, False, True]))
        >>> dist.probs
        tensor([0.5000, 0.0000, 0.5000])
    """

    def __init__(
        self,
        logits: Tensor | None = None,
        probs: Tensor | None = None,
        *,
        mask: Tensor,
        validate_args: bool | None = None,
    ) -> None:
        logits, self.mask = masked_logits("MaskedCategorical", logits, probs, mask)
        super().__init__(logits=logits, validate_args=validate_args)

    @property
    def deterministic_sample(self) -> Tensor:
        """The most probable allowed action (what greedy evaluation takes)."""
        return self.mode


class MaskedOneHotCategorical(D.OneHotCategorical):
    """A one-hot categorical distribution restricted to the allowed actions.

    Arguments and errors as for :class:`MaskedCategorical`; samples are one-hot rows (float,
    as torch's ``OneHotCategorical``). TorchRL's name.
    """

    def __init__(
        self,
        logits: Tensor | None = None,
        probs: Tensor | None = None,
        *,
        mask: Tensor,
        validate_args: bool | None = None,
    ) -> None:
        logits, self.mask = masked_logits("MaskedOneHotCategorical", logits, probs, mask)
        super().__init__(logits=logits, validate_args=validate_args)

    @property
    def deterministic_sample(self) -> Tensor:
        """The most probable allowed action (what greedy evaluation takes)."""
        return self.mode
