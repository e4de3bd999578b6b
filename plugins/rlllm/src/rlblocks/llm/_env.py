"""``TextEnv``: prompt -> completion -> reward, over a dataset of prompts, batched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from tensordict import NonTensorStack, TensorDict, TensorDictBase

from rlblocks.core import DONE, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.specs import Binary, Categorical, Composite, Unbounded
from rlblocks.envs import EnvBase
from rlblocks.llm._keys import (
    ANSWER_TEXT,
    HISTORY_TEXT,
    PROMPT_ID,
    PROMPT_MASK,
    PROMPT_TEXT,
    PROMPT_TOKENS,
    RESPONSE_TOKENS,
    TURN,
)
from rlblocks.llm._tasks import RewardFn, TextDataset
from rlblocks.llm._tokenizer import Tokenizer, encode_batch, pad_token_id
from rlblocks.llm.errors import LLMError, RewardFunctionError

__all__ = ["TextEnv", "FollowupFn", "response_mask", "texts"]

FollowupFn = Callable[[str, str, str], "str | None"]
"""``followup_fn(history, response, answer) -> the env's next message, or None to stop``."""


def response_mask(tokens: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """True on a response's tokens up to and including its first end-of-sequence token."""
    if eos_token_id is None:
        return torch.ones_like(tokens, dtype=torch.bool)
    is_eos = tokens == eos_token_id
    # Positions after the first eos have at least one eos strictly before them.
    before = is_eos.cumsum(-1) - is_eos.to(torch.int64)
    return before == 0


def texts(tensordict: TensorDictBase, key: Any) -> list[str]:
    """The strings stored under ``key`` as a flat list (one per batch element)."""
    value = tensordict.get(key)
    listed = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(listed, str):
        return [listed]
    flat: list[str] = []
    stack = [listed]
    while stack:  # flatten nested lists of any depth, in order
        item = stack.pop()
        if isinstance(item, str):
            flat.append(item)
        else:
            stack.extend(reversed(list(item)))
    return flat


def _text_stack(strings: list[str], batch_size: torch.Size) -> NonTensorStack:
    stack = NonTensorStack.from_list(strings)
    return stack if len(batch_size) == 1 else stack.reshape(batch_size)


class TextEnv(EnvBase):
    """A language task as an env: the observation is a prompt, the action a response.

    Each reset draws prompts from ``dataset`` (each repeated ``group_size`` times in a row,
    the groups GRPO compares) and tokenizes them. The action is the response's tokens
    (``("tokens", "response")``, ``[*batch, max_new_tokens]``): the response ends at the
    first end-of-sequence token. The env decodes it, asks ``reward_fn(prompts, responses,
    answers)`` for one reward per response, and ends the episode, or with ``max_turns > 1``
    and a ``followup_fn`` appends the response and the env's follow-up to the history,
    which becomes the next prompt.

    Tokens and text both live in the TensorDict: ``("text", "prompt")``, ``("text",
    "history")``, ``("text", "answer")`` (strings), ``("tokens", "prompt")`` and ``("masks",
    "prompt")`` (left-padded to ``max_prompt_tokens``), ``"prompt_id"`` (the dataset row),
    ``"turn"``. After a step, ``("next", "text", "history")`` holds the prompt and the
    response (and the env's follow-up when the conversation goes on).

    Args:
        dataset: The prompts with their answers (a :class:`TextDataset`), or a list of prompts.
        reward_fn: ``reward_fn(prompts, responses, answers)`` returning one finite reward per
            response (a list of floats or a tensor ``[B]``/``[B, 1]``).
        tokenizer: A transformers tokenizer or a :class:`CharTokenizer`.
        batch_size: Number of conversations per batch, a multiple of ``group_size``.
        group_size: How many times each prompt is repeated in a row.
        max_prompt_tokens: Width the prompt tokens are padded to; a longer prompt (or
            history) raises :class:`~rlblocks.llm.errors.ContextLengthError`.
        max_new_tokens: Width of the response (the action).
        max_turns: Responses per conversation; more than 1 needs ``followup_fn``.
        followup_fn: ``followup_fn(history, response, answer) -> str | None``: the env's
            next message, appended after the response (``None`` ends the conversation).
        shuffle: Draw prompts in a random order (reshuffled each pass); ``False`` walks the
            dataset in order, e.g. to evaluate on every prompt once.
        device: Where the tensors live.

    Raises:
        LLMError: Bad sizes, or ``max_turns > 1`` without a ``followup_fn``.

    Example:
        >>> tok = CharTokenizer("0123456789+=")
        >>> env = TextEnv(arithmetic_task(100), exact_match_reward, tok, batch_size=8,
        ...               group_size=4, max_prompt_tokens=8, max_new_tokens=4)
        >>> td = env.reset()
        >>> td["tokens", "prompt"].shape
        torch.Size([8, 8])
    """

    step_returns_done_flags = True

    def __init__(
        self,
        dataset: TextDataset | Sequence[str],
        reward_fn: RewardFn,
        tokenizer: Tokenizer,
        *,
        batch_size: int = 8,
        group_size: int = 1,
        max_prompt_tokens: int = 64,
        max_new_tokens: int = 16,
        max_turns: int = 1,
        followup_fn: FollowupFn | None = None,
        shuffle: bool = True,
        device: Any = None,
    ) -> None:
        owner = type(self).__name__
        dataset = dataset if isinstance(dataset, TextDataset) else TextDataset(dataset)
        for name, value in (
            ("batch_size", batch_size),
            ("group_size", group_size),
            ("max_prompt_tokens", max_prompt_tokens),
            ("max_new_tokens", max_new_tokens),
            ("max_turns", max_turns),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LLMError(f"{owner}: {name} must be an int >= 1, got {value!r}")
        if batch_size % group_size:
            raise LLMError(
                f"{owner}: batch_size ({batch_size}) must be a multiple of group_size "
                f"({group_size}): each prompt fills group_size rows"
            )
        if max_turns > 1 and followup_fn is None:
            raise LLMError(
                f"{owner}: max_turns={max_turns} needs a followup_fn(history, response, "
                f"answer) that writes the env's next message"
            )
        if not callable(reward_fn):
            raise LLMError(f"{owner}: reward_fn must be callable, got {type(reward_fn).__name__}")
        super().__init__(device=device, batch_size=[batch_size])
        self.dataset, self.reward_fn, self.tokenizer = dataset, reward_fn, tokenizer
        self.group_size, self.max_turns, self.followup_fn = group_size, max_turns, followup_fn
        self.max_prompt_tokens, self.max_new_tokens = max_prompt_tokens, max_new_tokens
        self.shuffle = shuffle
        self._pad_id = pad_token_id(tokenizer, owner)
        self._eos_id = getattr(tokenizer, "eos_token_id", None)
        vocab = len(tokenizer)
        batch = self.batch_size
        self.observation_spec = Composite(
            {
                PROMPT_TOKENS: Categorical(
                    vocab, shape=(*batch, max_prompt_tokens), device=self.device
                ),
                PROMPT_MASK: Binary(shape=(*batch, max_prompt_tokens), device=self.device),
                PROMPT_ID: Categorical(len(dataset), shape=batch, device=self.device),
                TURN: Unbounded(shape=(*batch, 1), dtype=torch.int64, device=self.device),
            },
            shape=batch,
            device=self.device,
        )
        self.action_spec = Composite(
            {
                RESPONSE_TOKENS: Categorical(
                    vocab, shape=(*batch, max_new_tokens), device=self.device
                )
            },
            shape=batch,
            device=self.device,
        )
        self._generator = torch.Generator()
        self._generator.seed()
        self._order = self._new_order()
        self._cursor = 0
        # The conversation of each row: its dataset row, history and turn.
        self._rows = torch.zeros(batch, dtype=torch.int64)
        self._history = [""] * batch_size
        self._prompts = [""] * batch_size
        self._turn = torch.zeros(batch_size, dtype=torch.int64)

    # -- the dataset ----------------------------------------------------------------------

    def _new_order(self) -> torch.Tensor:
        n = len(self.dataset)
        return torch.randperm(n, generator=self._generator) if self.shuffle else torch.arange(n)

    def _draw(self, n: int) -> torch.Tensor:
        """The next ``n`` dataset rows: a walk through the order, reshuffled each pass."""
        rows = []
        while len(rows) < n:
            if self._cursor == len(self._order):
                self._order, self._cursor = self._new_order(), 0
            take = min(n - len(rows), len(self._order) - self._cursor)
            rows.extend(self._order[self._cursor : self._cursor + take].tolist())
            self._cursor += take
        return torch.as_tensor(rows, dtype=torch.int64)

    # -- the protocol ---------------------------------------------------------------------
    # Each call works out the next state in locals, builds the observation (which may raise,
    # e.g. a prompt too long) and only then commits: a failed call changes nothing.

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        cursor, order = self._cursor, self._order
        # One new prompt per group; the rows being reset take their group's.
        drawn = self._draw(self.batch_size[0] // self.group_size).repeat_interleave(self.group_size)
        if mask is None:
            reset = torch.ones(self.batch_size, dtype=torch.bool)
        else:
            reset = mask.reshape(-1).cpu()
        rows = torch.where(reset, drawn, self._rows)
        turn = torch.where(reset, torch.zeros_like(self._turn), self._turn)
        history = [
            self.dataset.prompts[row] if again else old
            for row, again, old in zip(rows.tolist(), reset.tolist(), self._history)
        ]
        try:
            out, prompts = self._observe(history, rows, turn)
        except Exception:
            self._cursor, self._order = cursor, order  # the prompts drawn are not used
            raise
        self._rows, self._turn, self._history, self._prompts = rows, turn, history, prompts
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        tokens = tensordict.get(RESPONSE_TOKENS)
        keep = response_mask(tokens, self._eos_id)
        responses = [
            self.tokenizer.decode(row[m].tolist(), skip_special_tokens=True)
            for row, m in zip(tokens.cpu(), keep.cpu(), strict=True)
        ]
        answers = [self.dataset.answers[i] for i in self._rows.tolist()]
        reward = self._check_reward(
            self.reward_fn(list(self._history), responses, answers), len(responses)
        )
        turn = self._turn + 1
        ended = torch.ones(self.batch_size, dtype=torch.bool)
        truncated = torch.zeros(self.batch_size, dtype=torch.bool)
        history = [h + r for h, r in zip(self._history, responses)]
        # The prompt of a conversation that goes on is its history; one that ended keeps
        # its prompt's tokens (None: its history may no longer fit).
        prompts: list[str | None] = [None] * len(history)
        if self.followup_fn is not None:
            for i, (before, response, answer) in enumerate(zip(self._history, responses, answers)):
                message = self.followup_fn(before, response, answer)
                if message is None:
                    continue
                if turn[i] >= self.max_turns:
                    truncated[i] = True  # the conversation would go on: cut, not finished
                    continue
                ended[i] = False
                history[i] += message
                prompts[i] = history[i]
        previous = (tensordict.get(PROMPT_TOKENS), tensordict.get(PROMPT_MASK))
        out, kept = self._observe(history, self._rows, turn, prompts, previous)
        self._turn, self._history, self._prompts = turn, history, kept
        terminated = (ended & ~truncated).unsqueeze(-1).to(self.device)
        truncated = truncated.unsqueeze(-1).to(self.device)
        out.update(
            {
                REWARD: reward.to(self.device),
                TERMINATED: terminated,
                TRUNCATED: truncated,
                DONE: terminated | truncated,
            }
        )
        return out

    def _observe(
        self,
        history: list[str],
        rows: torch.Tensor,
        turn: torch.Tensor,
        prompts: list[str | None] | None = None,
        previous: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[TensorDictBase, list[str]]:
        """The observation of ``history``, with ``prompts`` (default: the history) as tokens.

        Rows whose prompt is ``None`` keep their prompt and its tokens from ``previous``.

        Returns:
            ``(observation, the prompt of each row)``.
        """
        prompts = list(history) if prompts is None else prompts
        fresh = [i for i, p in enumerate(prompts) if p is not None]
        tokens, mask = encode_batch(
            self.tokenizer,
            [prompts[i] for i in fresh],
            self.max_prompt_tokens,
            owner=type(self).__name__,
        )
        if len(fresh) < len(prompts):
            assert previous is not None
            index = torch.as_tensor(fresh, dtype=torch.int64)
            tokens = previous[0].cpu().clone().index_copy_(0, index, tokens)
            mask = previous[1].cpu().clone().index_copy_(0, index, mask)
            prompts = [p if p is not None else q for p, q in zip(prompts, self._prompts)]
        batch = self.batch_size
        out = TensorDict(
            {
                PROMPT_TOKENS: tokens.to(self.device),
                PROMPT_MASK: mask.to(self.device),
                PROMPT_ID: rows.to(self.device),
                TURN: turn.unsqueeze(-1).to(self.device),
            },
            batch_size=batch,
            device=self.device,
        )
        answers = [self.dataset.answers[i] for i in rows.tolist()]
        out.set(PROMPT_TEXT, _text_stack(list(prompts), batch))
        out.set(HISTORY_TEXT, _text_stack(list(history), batch))
        out.set(ANSWER_TEXT, _text_stack(answers, batch))
        return out, list(prompts)

    def _check_reward(self, reward: Any, n: int) -> torch.Tensor:
        name = getattr(self.reward_fn, "__name__", type(self.reward_fn).__name__)
        try:
            values = torch.as_tensor(reward, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as error:
            raise RewardFunctionError(
                f"TextEnv: reward_fn {name} returned {type(reward).__name__} ({error}); it "
                f"must return {n} floats, as a list or a tensor [{n}]"
            ) from None
        if values.shape not in ((n,), (n, 1)):
            raise RewardFunctionError(
                f"TextEnv: reward_fn {name} returned shape {list(values.shape)} for {n} "
                f"responses; return one reward per response, shape [{n}] or [{n}, 1]"
            )
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            i = int((~finite).reshape(-1).nonzero()[0])
            raise RewardFunctionError(
                f"TextEnv: reward_fn {name} returned {values.reshape(-1)[i].item()} for "
                f"response {i}; rewards must be finite (check the function for a division "
                f"by zero or a log of 0)"
            )
        return values.reshape(n, 1)

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self._order, self._cursor = self._new_order(), 0

    def __repr__(self) -> str:
        return (
            f"TextEnv(rows={len(self.dataset)}, batch_size={self.batch_size[0]}, "
            f"group_size={self.group_size}, max_prompt_tokens={self.max_prompt_tokens}, "
            f"max_new_tokens={self.max_new_tokens}, max_turns={self.max_turns})"
        )
