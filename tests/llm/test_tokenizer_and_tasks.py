"""CharTokenizer, the padding helpers and the task datasets with their reward functions."""

from __future__ import annotations

import pytest
import torch

from rlblocks.llm import (
    CharTokenizer,
    ContextLengthError,
    LLMError,
    TextDataset,
    TokenizerError,
    arithmetic_task,
    encode_responses,
    encode_sft_batch,
    exact_match_reward,
    format_reward,
    reversal_task,
)
from rlblocks.llm._tokenizer import encode_batch


def test_char_tokenizer_round_trip_and_special_tokens():
    tok = CharTokenizer("ab+")
    assert len(tok) == tok.vocab_size == 5
    assert tok.encode("ab+a") == [2, 3, 4, 2]
    assert tok.encode("ab", add_special_tokens=True) == [2, 3, tok.eos_token_id]
    assert tok.decode([2, 3, 1, 0, 0]) == "ab"
    assert tok.decode([2, 1], skip_special_tokens=False) == "a<eos>"
    assert tok.batch_decode(torch.tensor([[2, 1], [4, 0]])) == ["a", "+"]


def test_char_tokenizer_rejects_unknown_characters_and_repeats():
    tok = CharTokenizer("ab")
    with pytest.raises(TokenizerError, match=r"'c'.*not in the alphabet 'ab'"):
        tok.encode("abc")
    with pytest.raises(TokenizerError, match=r"repeats \['a'\]"):
        CharTokenizer("aba")
    with pytest.raises(TokenizerError, match="non-empty"):
        CharTokenizer("")


def test_prompts_are_left_padded_and_responses_right_padded_with_eos(tokenizer):
    tokens, mask = encode_batch(tokenizer, ["12=", "3="], 5, owner="test")
    assert mask.tolist() == [[False, False, True, True, True], [False, False, False, True, True]]
    assert tokenizer.decode(tokens[1]) == "3=" and tokens[1, 0] == tokenizer.pad_token_id
    tokens, mask = encode_responses(tokenizer, ["12", ""], 4)
    assert tokens[0].tolist()[:3] == [*tokenizer.encode("12"), tokenizer.eos_token_id]
    assert mask.tolist() == [[True, True, True, False], [True, False, False, False]]
    with pytest.raises(ContextLengthError, match=r"'1234567' is 7 tokens.*more than the 5"):
        encode_batch(tokenizer, ["1234567"], 5, owner="test")
    with pytest.raises(ContextLengthError, match=r"'123' is 4 tokens.*max_new_tokens=3"):
        encode_responses(tokenizer, ["123"], 3)


def test_sft_batch_holds_tokens_masks_and_text(tokenizer):
    data = TextDataset(["1+2=", "10+20="], ["3", "30"])
    batch = encode_sft_batch(tokenizer, data, max_prompt_tokens=6, max_new_tokens=3)
    assert batch.batch_size == (2,)
    assert batch["masks", "response"].sum(-1).tolist() == [2, 3]
    assert batch["text", "response"].tolist() == ["3", "30"]


def test_arithmetic_and_reversal_tasks_are_correct_and_seeded():
    data = arithmetic_task(50, high=20, ops="+-*", seed=3)
    assert len(data) == 50 and len(set(data.prompts)) == 50
    for prompt, answer in zip(data.prompts, data.answers):
        assert int(answer) == eval(prompt[:-1])  # the prompt is "a<op>b="
    assert arithmetic_task(50, high=20, ops="+-*", seed=3) == data
    assert len(arithmetic_task(high=9)) == 100
    rev = reversal_task(20, seed=1)
    assert all(p[:-1][::-1] == a for p, a in zip(rev.prompts, rev.answers))
    with pytest.raises(LLMError, match="ops must be made of"):
        arithmetic_task(ops="/")
    with pytest.raises(LLMError, match=r"n must be in \[1, 100\]"):
        arithmetic_task(101, high=9)


def test_split_holds_out_rows_without_overlap():
    data = arithmetic_task(high=9)
    train, test = data.split(10, seed=0)
    assert len(train) == 90 and len(test) == 10
    assert not set(train.prompts) & set(test.prompts)
    with pytest.raises(LLMError, match="answers"):
        TextDataset(["a"], ["1", "2"])


def test_reward_functions():
    assert exact_match_reward(["p", "p"], [" 4", "5"], ["4", "4"]).tolist() == [1.0, 0.0]
    digits = format_reward(r"[0-9]+", reward=0.5)
    assert digits(["p", "p"], ["12", "1a"], ["", ""]).tolist() == [0.5, 0.0]
