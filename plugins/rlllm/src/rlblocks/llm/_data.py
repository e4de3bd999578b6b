"""From text to the padded token batches the losses read."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import NonTensorStack, TensorDict

from rlblocks.llm._keys import (
    PROMPT_MASK,
    PROMPT_TEXT,
    PROMPT_TOKENS,
    RESPONSE_MASK,
    RESPONSE_TEXT,
    RESPONSE_TOKENS,
)
from rlblocks.llm._tasks import TextDataset
from rlblocks.llm._tokenizer import Tokenizer, encode_batch, pad_token_id
from rlblocks.llm.errors import ContextLengthError, LLMError, TokenizerError

__all__ = ["encode_responses", "encode_sft_batch"]


def encode_responses(
    tokenizer: Tokenizer, responses: Sequence[str], width: int, *, owner: str = "encode_responses"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize ``responses``, end each with end-of-sequence and right-pad to ``width``.

    Returns:
        ``(tokens int64 [len(responses), width], mask bool [len(responses), width])``, the
        mask True on the response's tokens and its end-of-sequence token.

    Raises:
        ContextLengthError: A response (with its end-of-sequence token) exceeds ``width``.
        TokenizerError: The tokenizer has no end-of-sequence token.
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise TokenizerError(
            f"{owner}: the tokenizer {type(tokenizer).__name__} has no eos_token_id; responses "
            f"must end with one so the model learns to stop"
        )
    pad = pad_token_id(tokenizer, owner)
    tokens = torch.full((len(responses), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(responses), width), dtype=torch.bool)
    for row, text in enumerate(responses):
        ids = [*tokenizer.encode(text, add_special_tokens=False), eos]
        if len(ids) > width:
            raise ContextLengthError(
                f"{owner}: the response {text!r} is {len(ids)} tokens with end-of-sequence, "
                f"more than max_new_tokens={width}; raise max_new_tokens"
            )
        tokens[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.int64)
        mask[row, : len(ids)] = True
    return tokens, mask


def encode_sft_batch(
    tokenizer: Tokenizer,
    dataset: TextDataset,
    *,
    max_prompt_tokens: int,
    max_new_tokens: int,
    responses: Sequence[str] | None = None,
) -> TensorDict:
    """A supervised batch: the prompts left-padded, the target responses right-padded.

    Args:
        tokenizer: The model's tokenizer.
        dataset: The prompts; their answers are the targets unless ``responses`` is given.
        max_prompt_tokens: Width of the prompt tokens (as the env's).
        max_new_tokens: Width of the response tokens (as the policy's).
        responses: The targets, one per prompt (default: ``dataset.answers``).

    Returns:
        A TensorDict ``[len(dataset)]`` with the prompt and response tokens, masks and text.

    Raises:
        ContextLengthError: A prompt or a response is too long for its width.
        LLMError: ``responses`` has another length than the dataset.
    """
    owner = "encode_sft_batch"
    targets = list(dataset.answers if responses is None else responses)
    if len(targets) != len(dataset):
        raise LLMError(f"{owner}: {len(dataset)} prompts but {len(targets)} responses")
    prompt, prompt_mask = encode_batch(tokenizer, dataset.prompts, max_prompt_tokens, owner=owner)
    response, response_mask = encode_responses(tokenizer, targets, max_new_tokens, owner=owner)
    batch = TensorDict(
        {
            PROMPT_TOKENS: prompt,
            PROMPT_MASK: prompt_mask,
            RESPONSE_TOKENS: response,
            RESPONSE_MASK: response_mask,
        },
        batch_size=[len(dataset)],
    )
    batch.set(PROMPT_TEXT, NonTensorStack.from_list(list(dataset.prompts)))
    batch.set(RESPONSE_TEXT, NonTensorStack.from_list(targets))
    return batch
