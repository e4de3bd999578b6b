"""The tiny models and the tokenizer the rlblocks-llm tests share (from configs: no download)."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlblocks.llm import CharTokenizer

ALPHABET = "0123456789+=abcdefgh>"


@pytest.fixture(autouse=True)
def _single_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer(ALPHABET)


def _tiny_gpt2(vocab_size: int, n_positions: int = 24, seed: int = 0) -> GPT2LMHeadModel:
    """A 2-layer GPT-2 without dropout, so generation and scoring see the same function."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=1,
        eos_token_id=1,
    )
    return GPT2LMHeadModel(config)


@pytest.fixture
def tiny_gpt2():
    """The factory: ``tiny_gpt2(vocab_size, n_positions=24, seed=0)``."""
    return _tiny_gpt2


@pytest.fixture
def model(tokenizer: CharTokenizer) -> GPT2LMHeadModel:
    return _tiny_gpt2(len(tokenizer))
