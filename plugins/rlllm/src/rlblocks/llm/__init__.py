"""rlblocks-llm: language-model post-training with rlblocks' envs, buffers and collectors.

- :class:`TextEnv`: prompt -> completion -> reward over a dataset of prompts, batched,
  optionally multi-turn; tokens, masks and text all in the TensorDict.
- :class:`TransformersWrapper`: a transformers causal LM as a policy (generation with
  per-token log-probabilities) or as a scorer (log-probabilities of given responses).
- :class:`CharTokenizer`: a character-level tokenizer for tests and examples (no download).
- Losses (registered as the ``sft`` and ``grpo`` loss plugins): :class:`SFTLoss`,
  :class:`GRPOLoss`, with :class:`GroupRelativeAdvantage`; :class:`KLRewardTransform`
  shapes an env's reward with a KL penalty to a reference model, for PPO and friends.
- Tasks with verifiable rewards: :func:`arithmetic_task`, :func:`reversal_task`,
  :func:`exact_match_reward`, :func:`format_reward`.
"""

from __future__ import annotations

from rlblocks.llm._data import encode_responses, encode_sft_batch
from rlblocks.llm._env import FollowupFn, TextEnv, response_mask, texts
from rlblocks.llm._keys import (
    ANSWER_TEXT,
    HISTORY_TEXT,
    PROMPT_ID,
    PROMPT_MASK,
    PROMPT_TEXT,
    PROMPT_TOKENS,
    REF_LOG_PROBS,
    RESPONSE_LOG_PROBS,
    RESPONSE_MASK,
    RESPONSE_TEXT,
    RESPONSE_TOKENS,
    TURN,
)
from rlblocks.llm._kl import KL_PENALTY, KLRewardTransform
from rlblocks.llm._losses import GroupRelativeAdvantage, GRPOLoss, SFTLoss, group_relative_advantage
from rlblocks.llm._tasks import (
    RewardFn,
    TextDataset,
    arithmetic_task,
    exact_match_reward,
    format_reward,
    reversal_task,
)
from rlblocks.llm._tokenizer import CharTokenizer, Tokenizer
from rlblocks.llm._version import __version__
from rlblocks.llm._wrapper import TokenDistribution, TransformersWrapper, context_length
from rlblocks.llm.errors import (
    ContextLengthError,
    GroupSizeError,
    LLMError,
    RewardFunctionError,
    TokenizerError,
    VocabularyMismatchError,
)

__all__ = [
    "__version__",
    # env and data
    "TextEnv",
    "TextDataset",
    "FollowupFn",
    "RewardFn",
    "arithmetic_task",
    "reversal_task",
    "exact_match_reward",
    "format_reward",
    "encode_sft_batch",
    "encode_responses",
    "response_mask",
    "texts",
    # models
    "CharTokenizer",
    "Tokenizer",
    "TransformersWrapper",
    "TokenDistribution",
    "context_length",
    # losses and reward shaping
    "SFTLoss",
    "GRPOLoss",
    "GroupRelativeAdvantage",
    "group_relative_advantage",
    "KLRewardTransform",
    "KL_PENALTY",
    # keys
    "PROMPT_TEXT",
    "RESPONSE_TEXT",
    "HISTORY_TEXT",
    "ANSWER_TEXT",
    "PROMPT_TOKENS",
    "PROMPT_MASK",
    "RESPONSE_TOKENS",
    "RESPONSE_MASK",
    "RESPONSE_LOG_PROBS",
    "REF_LOG_PROBS",
    "PROMPT_ID",
    "TURN",
    # errors
    "LLMError",
    "ContextLengthError",
    "GroupSizeError",
    "RewardFunctionError",
    "TokenizerError",
    "VocabularyMismatchError",
]
