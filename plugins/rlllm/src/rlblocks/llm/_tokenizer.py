"""``CharTokenizer``, a character-level tokenizer, and the padding helpers the env and the
policy wrapper share.

Anything with transformers' tokenizer surface works where a tokenizer is taken:
``encode(text, add_special_tokens=False) -> list[int]``, ``decode(ids,
skip_special_tokens=True) -> str``, ``pad_token_id``, ``eos_token_id`` and ``len()``.
:class:`CharTokenizer` offers exactly that, with no download, for tests and examples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import torch

from rlblocks.llm.errors import ContextLengthError, TokenizerError

__all__ = ["CharTokenizer", "Tokenizer", "encode_batch", "pad_token_id"]


class Tokenizer(Protocol):
    """What rlblocks-llm uses of a tokenizer (transformers' tokenizers have it)."""

    eos_token_id: int | None
    pad_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Any, skip_special_tokens: bool = ...) -> str: ...

    def __len__(self) -> int: ...


class CharTokenizer:
    """One token per character of ``alphabet``, plus a padding and an end-of-sequence token.

    Ids: ``0`` is padding, ``1`` end-of-sequence, then the characters in ``alphabet`` order.
    It has the part of transformers' tokenizer surface rlblocks-llm uses, so the env, the
    policy wrapper and the losses take it where they take a transformers tokenizer.

    Args:
        alphabet: The characters, each once.
        pad_token: How padding decodes when special tokens are kept.
        eos_token: How end-of-sequence decodes when special tokens are kept.

    Raises:
        TokenizerError: ``alphabet`` is empty or repeats a character.

    Example:
        >>> tok = CharTokenizer("0123456789+=")
        >>> tok.encode("12+3=")
        [3, 4, 12, 5, 13]
        >>> tok.decode([6, 1, 0])
        '4'
        >>> len(tok)
        14
    """

    def __init__(
        self, alphabet: str, *, pad_token: str = "<pad>", eos_token: str = "<eos>"
    ) -> None:
        if not isinstance(alphabet, str) or not alphabet:
            raise TokenizerError(
                f"CharTokenizer: alphabet must be a non-empty str, got {alphabet!r}"
            )
        repeated = sorted({c for c in alphabet if alphabet.count(c) > 1})
        if repeated:
            raise TokenizerError(
                f"CharTokenizer: alphabet {alphabet!r} repeats {repeated}; give each character once"
            )
        self.alphabet = alphabet
        self.pad_token, self.eos_token = pad_token, eos_token
        self.pad_token_id, self.eos_token_id = 0, 1
        self._ids = {c: i + 2 for i, c in enumerate(alphabet)}
        self._tokens = [pad_token, eos_token, *alphabet]

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def vocab_size(self) -> int:
        """Number of tokens, the special ones included (as ``len(tokenizer)``)."""
        return len(self._tokens)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """The ids of ``text``'s characters (plus end-of-sequence with ``add_special_tokens``).

        Raises:
            TokenizerError: ``text`` holds a character outside the alphabet.
        """
        try:
            ids = [self._ids[c] for c in text]
        except KeyError as error:
            raise TokenizerError(
                f"CharTokenizer: {text!r} holds {error.args[0]!r}, which is not in the alphabet "
                f"{self.alphabet!r}; add it to the alphabet"
            ) from None
        return [*ids, self.eos_token_id] if add_special_tokens else ids

    def decode(
        self, token_ids: Iterable[int] | torch.Tensor, skip_special_tokens: bool = True
    ) -> str:
        """The text of ``token_ids``; padding and end-of-sequence are dropped by default."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        specials = (self.pad_token_id, self.eos_token_id) if skip_special_tokens else ()
        return "".join(self._tokens[i] for i in token_ids if i not in specials)

    def batch_decode(
        self, sequences: Iterable[Iterable[int]] | torch.Tensor, skip_special_tokens: bool = True
    ) -> list[str]:
        """:meth:`decode` of each sequence."""
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens) for s in sequences]

    def __repr__(self) -> str:
        return f"CharTokenizer({self.alphabet!r})"


def pad_token_id(tokenizer: Tokenizer, owner: str) -> int:
    """The id to pad with: the tokenizer's padding token, else its end-of-sequence token.

    (GPT-2's tokenizer has no padding token; padding is masked out, so any id serves.)

    Raises:
        TokenizerError: The tokenizer has neither.
    """
    for token_id in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if token_id is not None:
            return int(token_id)
    raise TokenizerError(
        f"{owner}: the tokenizer {type(tokenizer).__name__} has neither a pad_token_id nor an "
        f"eos_token_id; set one (e.g. tokenizer.pad_token = tokenizer.eos_token)"
    )


def encode_batch(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    width: int,
    *,
    owner: str,
    what: str = "prompt",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize ``texts`` and left-pad them to ``width`` tokens.

    Returns:
        ``(tokens int64 [len(texts), width], mask bool [len(texts), width])``.

    Raises:
        ContextLengthError: A text has more than ``width`` tokens; the message names it and
            its length.
    """
    pad = pad_token_id(tokenizer, owner)
    tokens = torch.full((len(texts), width), pad, dtype=torch.int64)
    mask = torch.zeros((len(texts), width), dtype=torch.bool)
    for row, text in enumerate(texts):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > width:
            raise ContextLengthError(
                f"{owner}: the {what} {text!r} is {len(ids)} tokens long, more than the "
                f"{width} allowed; raise max_prompt_tokens (and the model's context) or "
                f"shorten the {what}"
            )
        if ids:
            tokens[row, width - len(ids) :] = torch.as_tensor(ids, dtype=torch.int64)
            mask[row, width - len(ids) :] = True
    return tokens, mask
