"""The errors rlblocks-llm raises on purpose: one base, :class:`LLMError`, and its kinds."""

from __future__ import annotations

from rlblocks.core import RLBlocksError

__all__ = [
    "LLMError",
    "ContextLengthError",
    "GroupSizeError",
    "RewardFunctionError",
    "TokenizerError",
    "VocabularyMismatchError",
]


class LLMError(RLBlocksError, ValueError):
    """Base class of the errors of rlblocks-llm (a ``ValueError``: they are about input)."""


class ContextLengthError(LLMError):
    """A prompt (with the response to come) does not fit the model's or the env's context."""


class GroupSizeError(LLMError):
    """GRPO was given groups it cannot compare (a group of 1, or a batch not made of groups)."""


class RewardFunctionError(LLMError):
    """A reward function returned the wrong number or shape of rewards, or non-finite ones."""


class TokenizerError(LLMError):
    """A text holds a character the tokenizer does not know, or a tokenizer lacks a token."""


class VocabularyMismatchError(LLMError):
    """The tokenizer has more tokens than the model has embeddings."""
