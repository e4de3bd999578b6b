"""The keys the text env, the policy wrapper and the losses share.

Text, tokens, masks and log-probabilities are grouped as in TorchRL's LLM stack: the
prompt's tokens are ``("tokens", "prompt")``, the response's ``("tokens", "response")``, and
so on. Tokens are padded to fixed widths, so batches stack, go through replay buffers and
compile like any other: prompts are left-padded (the last prompt token is always at the
right edge, where generation continues), responses right-padded; the masks say which
positions are real tokens.
"""

from __future__ import annotations

__all__ = [
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
]

PROMPT_TEXT = ("text", "prompt")
"""The prompt the model is asked to continue (for a multi-turn env, the whole history)."""
RESPONSE_TEXT = ("text", "response")
"""The decoded response, up to (not including) the end-of-sequence token."""
HISTORY_TEXT = ("text", "history")
"""The conversation so far: the prompt, then the responses and the env's follow-ups."""
ANSWER_TEXT = ("text", "answer")
"""The reference answer of the prompt's dataset row, given to the reward function."""
PROMPT_TOKENS = ("tokens", "prompt")
"""``int64 [*batch, max_prompt_tokens]``, left-padded with the tokenizer's pad id."""
PROMPT_MASK = ("masks", "prompt")
"""``bool [*batch, max_prompt_tokens]``: True on the prompt's real tokens."""
RESPONSE_TOKENS = ("tokens", "response")
"""``int64 [*batch, max_new_tokens]``: the action, right-padded after end-of-sequence."""
RESPONSE_MASK = ("masks", "response")
"""``bool [*batch, max_new_tokens]``: True up to and including the end-of-sequence token."""
RESPONSE_LOG_PROBS = ("log_probs", "response")
"""``float [*batch, max_new_tokens]``: log-probability of each response token (0 on padding)."""
REF_LOG_PROBS = ("ref_log_probs", "response")
"""The same under the frozen reference model (written by :class:`KLRewardTransform`)."""
PROMPT_ID = "prompt_id"
"""``int64 [*batch]``: the dataset row of the prompt (rows of one GRPO group share it)."""
TURN = "turn"
"""``int64 [*batch, 1]``: how many responses the conversation holds so far."""
