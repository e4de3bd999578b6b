"""TransformersWrapper: generation and scoring agree, greedy decoding, masks, any causal LM
built from a config, and the errors for a mismatched tokenizer or a too-long context."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.llm import (
    ContextLengthError,
    LLMError,
    TextEnv,
    TransformersWrapper,
    VocabularyMismatchError,
    exact_match_reward,
    reversal_task,
)


def reversal_env(tokenizer, batch_size=8):
    # Prompts of 4 to 7 characters: rows are padded differently.
    data = reversal_task(32, min_length=3, max_length=6, seed=0)
    return TextEnv(
        data, exact_match_reward, tokenizer, batch_size=batch_size, max_prompt_tokens=8,
        max_new_tokens=7,
    )  # fmt: skip


def tiny_llama(vocab_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generation_log_probs_equal_scoring_log_probs(tiny_gpt2, tokenizer, family):
    model = tiny_gpt2(len(tokenizer)) if family == "gpt2" else tiny_llama(len(tokenizer))
    env = reversal_env(tokenizer)
    policy = TransformersWrapper(model, tokenizer, max_new_tokens=7, temperature=0.8)
    scorer = TransformersWrapper(
        model, tokenizer, generate=False, max_new_tokens=7, temperature=0.8
    )
    td = policy(env.reset())
    assert td["masks", "prompt"].sum(-1).unique().numel() > 1  # differently padded rows
    generated = td["log_probs", "response"]
    scored = scorer(td.clone())["log_probs", "response"]
    torch.testing.assert_close(scored, generated, atol=2e-5, rtol=1e-4)
    assert scored.requires_grad and not generated.requires_grad
    # padding after the end of a response: no log-probability, no mask
    mask = td["masks", "response"]
    assert (generated[~mask] == 0).all() and (generated[mask] < 0).all()
    # the distribution PPO-style losses read gives the same numbers
    dist = scorer.get_dist(td)
    torch.testing.assert_close(dist.log_prob(td["tokens", "response"]), scored)
    assert dist.entropy().shape == mask.shape and (dist.entropy()[~mask] == 0).all()


def test_responses_stop_at_eos_and_text_matches_tokens(tokenizer, model):
    # Make end-of-sequence the likeliest token after two steps: bias its logit.
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] *= 0
    env = reversal_env(tokenizer)
    policy = TransformersWrapper(model, tokenizer, max_new_tokens=7)
    td = policy(env.reset())
    tokens, mask = td["tokens", "response"], td["masks", "response"]
    for row in range(tokens.shape[0]):
        n = int(mask[row].sum())
        real = tokens[row, :n].tolist()
        assert tokenizer.eos_token_id not in real[:-1]  # eos, if any, is the last real token
        if n < tokens.shape[1]:
            assert real[-1] == tokenizer.eos_token_id
            assert (tokens[row, n:] == tokenizer.pad_token_id).all()
        assert td["text", "response"][row] == tokenizer.decode(real)


def test_greedy_decoding_is_deterministic_and_the_likeliest(tokenizer, model):
    env = reversal_env(tokenizer)
    policy = TransformersWrapper(model, tokenizer, max_new_tokens=7)
    start = env.reset()
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        first = policy(start.clone())
        second = policy(start.clone())
    assert torch.equal(first["tokens", "response"], second["tokens", "response"])
    # the first token is the argmax of the model's next-token distribution
    prompt, mask = start["tokens", "prompt"], start["masks", "prompt"].long()
    logits = model(
        input_ids=prompt, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)
    ).logits[:, -1]
    assert torch.equal(first["tokens", "response"][:, 0], logits.argmax(-1))


def test_sampling_follows_the_seed(tokenizer, model):
    env = reversal_env(tokenizer)
    policy = TransformersWrapper(model, tokenizer, max_new_tokens=7)
    start = env.reset()
    torch.manual_seed(3)
    a = policy(start.clone())["tokens", "response"]
    torch.manual_seed(3)
    b = policy(start.clone())["tokens", "response"]
    assert torch.equal(a, b)


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(tiny_gpt2, tokenizer):
    model = tiny_gpt2(len(tokenizer) - 2)
    with pytest.raises(VocabularyMismatchError, match=r"tokenizer has 23 tokens.*embeds only 21"):
        TransformersWrapper(model, tokenizer)


def test_a_prompt_plus_response_beyond_the_context_is_refused(tiny_gpt2, tokenizer):
    model = tiny_gpt2(len(tokenizer), n_positions=10)
    env = reversal_env(tokenizer)
    policy = TransformersWrapper(model, tokenizer, max_new_tokens=7)
    with pytest.raises(ContextLengthError, match=r"exceeds the model's context of 10 positions"):
        policy(env.reset())


def test_bad_arguments(tokenizer, model):
    with pytest.raises(LLMError, match="max_new_tokens"):
        TransformersWrapper(model, tokenizer, max_new_tokens=0)
    with pytest.raises(LLMError, match="temperature must be > 0"):
        TransformersWrapper(model, tokenizer, temperature=0.0)
