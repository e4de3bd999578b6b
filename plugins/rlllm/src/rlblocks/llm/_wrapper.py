"""``TransformersWrapper``: a transformers causal LM as a TensorDict policy."""

from __future__ import annotations

import inspect
from typing import ClassVar

import torch
from tensordict import NonTensorStack, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torch import distributions as D

from rlblocks.core import ExplorationType, exploration_type
from rlblocks.llm._keys import (
    PROMPT_MASK,
    PROMPT_TOKENS,
    RESPONSE_LOG_PROBS,
    RESPONSE_MASK,
    RESPONSE_TEXT,
    RESPONSE_TOKENS,
)
from rlblocks.llm._tokenizer import Tokenizer, pad_token_id
from rlblocks.llm.errors import ContextLengthError, LLMError, VocabularyMismatchError

__all__ = ["TransformersWrapper", "TokenDistribution", "context_length"]


def context_length(model: nn.Module) -> int | None:
    """The most positions ``model`` takes (``n_positions`` or ``max_position_embeddings``)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


class TokenDistribution(D.Distribution):
    """The per-token categorical distributions of a response, with its padding masked out.

    ``log_prob(tokens)`` and ``entropy()`` are ``[*batch, max_new_tokens]``, 0 on padding:
    a loss that sums the last dim (as the PPO losses do) gets the response's log-probability
    and the sum of its tokens' entropies.
    """

    arg_constraints: ClassVar[dict] = {}

    def __init__(self, logits: Tensor, mask: Tensor) -> None:
        self.logits, self.mask = logits, mask
        self._categorical = D.Categorical(logits=logits, validate_args=False)
        super().__init__(batch_shape=mask.shape, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        log_prob = self._categorical.log_prob(value)
        return torch.where(self.mask, log_prob, torch.zeros_like(log_prob))

    def entropy(self) -> Tensor:
        entropy = self._categorical.entropy()
        return torch.where(self.mask, entropy, torch.zeros_like(entropy))


class TransformersWrapper(TensorDictModuleBase):
    """Generate responses with a causal LM, or score given ones, through TensorDicts.

    **Generation** (``generate=True``) reads the left-padded prompt
    (``("tokens", "prompt")``, ``("masks", "prompt")``) and writes, in one pass with the
    model's key/value cache, the response tokens ``("tokens", "response")`` (right-padded
    after the end-of-sequence token), their mask ``("masks", "response")``, each token's
    log-probability ``("log_probs", "response")`` and the decoded ``("text", "response")``.
    Tokens are sampled at ``temperature``; under ``set_exploration_type(DETERMINISTIC)``
    (or ``MODE``) the most likely token is taken instead. Generation runs without gradient.

    **Scoring** (``generate=False``) reads the prompt and a given response and writes the
    log-probabilities of the response's tokens under the model (with gradient): the same
    numbers generation reported for its own tokens, so the two give the importance ratio
    of PPO and GRPO. The losses call :meth:`log_prob` directly.

    Positions are counted from each sequence's first real token, so padding never shifts
    them. Any ``AutoModelForCausalLM`` works, e.g. one built from a config::

        model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=len(tok), ...))

    Args:
        model: A causal LM taking ``input_ids``, ``attention_mask``, ``position_ids`` and
            ``past_key_values`` and returning ``logits`` (transformers' interface).
        tokenizer: A transformers tokenizer or a :class:`~rlblocks.llm.CharTokenizer`.
        generate: Generate (the policy) or score (the loss, the reference model).
        max_new_tokens: Width of the response.
        temperature: Divides the logits, in generation and in scoring alike.
        log_probs_key: Where the log-probabilities go.
        return_text: Also write the decoded response (generation only).

    Raises:
        VocabularyMismatchError: The tokenizer has more tokens than the model's embedding.
        LLMError: A bad ``max_new_tokens`` or ``temperature``.

    Example:
        >>> policy = TransformersWrapper(model, tok, max_new_tokens=4)
        >>> td = policy(env.reset())            # writes ("tokens", "response"), ...
        >>> scorer = TransformersWrapper(model, tok, generate=False, max_new_tokens=4)
        >>> torch.testing.assert_close(scorer(td.clone())["log_probs", "response"],
        ...                            td["log_probs", "response"])
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        *,
        generate: bool = True,
        max_new_tokens: int = 16,
        temperature: float = 1.0,
        log_probs_key: NestedKey = RESPONSE_LOG_PROBS,
        return_text: bool = True,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if (
            isinstance(max_new_tokens, bool)
            or not isinstance(max_new_tokens, int)
            or max_new_tokens < 1
        ):
            raise LLMError(f"{owner}: max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        if not temperature > 0:
            raise LLMError(f"{owner}: temperature must be > 0, got {temperature!r}")
        embeddings = model.get_input_embeddings().num_embeddings
        if len(tokenizer) > embeddings:
            raise VocabularyMismatchError(
                f"{owner}: the tokenizer has {len(tokenizer)} tokens but the model embeds only "
                f"{embeddings}; build the model with vocab_size={len(tokenizer)} (e.g. "
                f"GPT2Config(vocab_size=len(tokenizer))) or use the model's own tokenizer"
            )
        self.model, self.tokenizer = model, tokenizer
        self.generate, self.max_new_tokens, self.temperature = generate, max_new_tokens, temperature
        self.return_text = return_text
        self.log_probs_key = log_probs_key
        self.pad_token_id = pad_token_id(tokenizer, owner)
        self.eos_token_id = getattr(tokenizer, "eos_token_id", None)
        self.context = context_length(model)
        # transformers renamed the key/value cache argument (and output) from
        # past_key_values to cache; take whichever this model's forward has.
        parameters = inspect.signature(model.forward).parameters
        self._cache_name = "cache" if "cache" in parameters else "past_key_values"
        if generate:
            self.in_keys = [PROMPT_TOKENS, PROMPT_MASK]
            self.out_keys = [RESPONSE_TOKENS, RESPONSE_MASK, log_probs_key]
            self.out_keys += [RESPONSE_TEXT] if return_text else []
        else:
            self.in_keys = [PROMPT_TOKENS, PROMPT_MASK, RESPONSE_TOKENS, RESPONSE_MASK]
            self.out_keys = [log_probs_key]

    # -- TensorDict interface -------------------------------------------------------------

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        prompt, prompt_mask = tensordict.get(PROMPT_TOKENS), tensordict.get(PROMPT_MASK)
        if not self.generate:
            log_probs = self.log_prob(
                prompt, prompt_mask, tensordict.get(RESPONSE_TOKENS), tensordict.get(RESPONSE_MASK)
            )
            tensordict.set(self.log_probs_key, log_probs)
            return tensordict
        tokens, mask, log_probs = self.sample(prompt, prompt_mask)
        tensordict.set(RESPONSE_TOKENS, tokens)
        tensordict.set(RESPONSE_MASK, mask)
        tensordict.set(self.log_probs_key, log_probs)
        if self.return_text:
            flat = tokens.reshape(-1, tokens.shape[-1]).cpu()
            flat_mask = mask.reshape(-1, mask.shape[-1]).cpu()
            strings = [
                self.tokenizer.decode(row[m].tolist(), skip_special_tokens=True)
                for row, m in zip(flat, flat_mask, strict=True)
            ]
            stack = NonTensorStack.from_list(strings)
            tensordict.set(
                RESPONSE_TEXT, stack.reshape(tokens.shape[:-1]) if tokens.ndim > 2 else stack
            )
        return tensordict

    def get_dist(self, tensordict: TensorDictBase) -> TokenDistribution:
        """The per-token distributions of the given response (for PPO-style losses)."""
        logits = self._response_logits(
            tensordict.get(PROMPT_TOKENS),
            tensordict.get(PROMPT_MASK),
            tensordict.get(RESPONSE_TOKENS),
            tensordict.get(RESPONSE_MASK),
        )
        return TokenDistribution(logits, tensordict.get(RESPONSE_MASK))

    # -- tensors --------------------------------------------------------------------------

    def _check_context(self, prompt_mask: Tensor, response_width: int) -> None:
        if self.context is None:
            return
        longest = int(prompt_mask.sum(-1).max()) if prompt_mask.numel() else 0
        if longest + response_width > self.context:
            raise ContextLengthError(
                f"{type(self).__name__}: a prompt of {longest} tokens plus {response_width} "
                f"response tokens exceeds the model's context of {self.context} positions; "
                f"shorten the prompts, lower max_new_tokens, or build the model with "
                f"n_positions >= {longest + response_width}"
            )

    @staticmethod
    def _flat(x: Tensor) -> Tensor:
        return x.reshape(-1, x.shape[-1])

    def _response_logits(
        self, prompt: Tensor, prompt_mask: Tensor, response: Tensor, response_mask: Tensor
    ) -> Tensor:
        """Logits at the positions that predict the response tokens, ``[*batch, R, V]``."""
        self._check_context(prompt_mask, response.shape[-1])
        batch = response.shape[:-1]
        ids = torch.cat([self._flat(prompt), self._flat(response)], -1)
        attention = torch.cat([self._flat(prompt_mask), self._flat(response_mask)], -1).long()
        positions = (attention.cumsum(-1) - 1).clamp_min(0)
        logits = self.model(input_ids=ids, attention_mask=attention, position_ids=positions).logits
        width = prompt.shape[-1]
        logits = logits[:, width - 1 : width - 1 + response.shape[-1]].float() / self.temperature
        return logits.reshape(*batch, *logits.shape[-2:])

    def log_prob(
        self, prompt: Tensor, prompt_mask: Tensor, response: Tensor, response_mask: Tensor
    ) -> Tensor:
        """Log-probability of each response token, ``[*batch, R]`` (0 on padding).

        Args:
            prompt: Left-padded prompt tokens ``[*batch, P]``.
            prompt_mask: True on the prompt's real tokens.
            response: Right-padded response tokens ``[*batch, R]``.
            response_mask: True on the response's real tokens.

        Raises:
            ContextLengthError: A prompt plus the response exceeds the model's context.
        """
        logits = self._response_logits(prompt, prompt_mask, response, response_mask)
        log_probs = torch.log_softmax(logits, -1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
        return torch.where(response_mask, log_probs, torch.zeros_like(log_probs))

    @torch.no_grad()
    def sample(self, prompt: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Generate responses: ``(tokens, mask, log_probs)``, each ``[*batch, max_new_tokens]``.

        Raises:
            ContextLengthError: A prompt plus ``max_new_tokens`` exceeds the model's context.
        """
        self._check_context(prompt_mask, self.max_new_tokens)
        batch = prompt.shape[:-1]
        ids, attention = self._flat(prompt), self._flat(prompt_mask).long()
        n, width = ids.shape[0], self.max_new_tokens
        positions = (attention.cumsum(-1) - 1).clamp_min(0)
        next_position = attention.sum(-1, keepdim=True)
        greedy = exploration_type() in (ExplorationType.DETERMINISTIC, ExplorationType.MODE)
        tokens = torch.full((n, width), self.pad_token_id, dtype=torch.int64, device=ids.device)
        mask = torch.zeros((n, width), dtype=torch.bool, device=ids.device)
        log_probs = torch.zeros((n, width), dtype=torch.float32, device=ids.device)
        finished = torch.zeros(n, dtype=torch.bool, device=ids.device)
        out = self.model(
            input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True
        )
        for t in range(width):
            step_log_probs = torch.log_softmax(out.logits[:, -1].float() / self.temperature, -1)
            if greedy:
                token = step_log_probs.argmax(-1)
            else:
                token = torch.multinomial(step_log_probs.exp(), 1).squeeze(-1)
            token = torch.where(finished, self.pad_token_id, token)
            tokens[:, t] = token
            mask[:, t] = ~finished
            chosen = step_log_probs.gather(-1, token.unsqueeze(-1)).squeeze(-1)
            log_probs[:, t] = torch.where(finished, 0.0, chosen)
            if self.eos_token_id is not None:
                finished = finished | (token == self.eos_token_id)
            if t == width - 1 or bool(finished.all()):
                break
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], -1)
            out = self.model(
                input_ids=token.unsqueeze(-1),
                attention_mask=attention,
                position_ids=next_position + t,
                use_cache=True,
                **{self._cache_name: getattr(out, self._cache_name)},
            )
        return (
            tokens.reshape(*batch, width),
            mask.reshape(*batch, width),
            log_probs.reshape(*batch, width),
        )

    def extra_repr(self) -> str:
        mode = "generate" if self.generate else "score"
        return f"{mode}, max_new_tokens={self.max_new_tokens}, temperature={self.temperature}"
