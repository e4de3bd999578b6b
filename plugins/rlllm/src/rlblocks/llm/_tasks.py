"""Datasets of prompts with reference answers, and verifiable reward functions.

A reward function takes ``(prompts, responses, answers)`` (three lists of ``str`` of one
length, the batch's) and returns one reward per response: a list of floats or a tensor
``[B]`` (or ``[B, 1]``). :class:`~rlblocks.llm.TextEnv` checks what it returns.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rlblocks.llm.errors import LLMError

__all__ = [
    "RewardFn",
    "TextDataset",
    "arithmetic_task",
    "reversal_task",
    "exact_match_reward",
    "format_reward",
]

RewardFn = Callable[[list[str], list[str], list[str]], "torch.Tensor | Sequence[float]"]
"""``reward_fn(prompts, responses, answers) -> one reward per response``."""


@dataclass(frozen=True)
class TextDataset:
    """Prompts and the reference answer of each (``""`` where there is none).

    Args:
        prompts: The prompts.
        answers: One answer per prompt; ``None`` gives every prompt the answer ``""``.

    Raises:
        LLMError: The dataset is empty, or ``answers`` has another length than ``prompts``.

    Example:
        >>> data = TextDataset(["1+1=", "2+2="], ["2", "4"])
        >>> train, test = data.split(1, seed=0)
    """

    prompts: tuple[str, ...]
    answers: tuple[str, ...]

    def __init__(self, prompts: Sequence[str], answers: Sequence[str] | None = None) -> None:
        prompts = tuple(prompts)
        answers = tuple(answers) if answers is not None else ("",) * len(prompts)
        if not prompts:
            raise LLMError("TextDataset: no prompts were given; give at least one")
        if len(answers) != len(prompts):
            raise LLMError(
                f"TextDataset: {len(prompts)} prompts but {len(answers)} answers; give one "
                f"answer per prompt (or answers=None)"
            )
        bad = [p for p in (*prompts, *answers) if not isinstance(p, str)]
        if bad:
            raise LLMError(f"TextDataset: prompts and answers must be str, got {bad[0]!r}")
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "answers", answers)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> tuple[str, str]:
        return self.prompts[index], self.answers[index]

    def split(self, n_test: int, *, seed: int = 0) -> tuple[TextDataset, TextDataset]:
        """``(train, test)``: ``n_test`` rows drawn at random are held out as ``test``."""
        if not 0 < n_test < len(self):
            raise LLMError(
                f"TextDataset.split: n_test must be in [1, {len(self) - 1}] for {len(self)} "
                f"rows, got {n_test}"
            )
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        test, train = sorted(order[:n_test]), sorted(order[n_test:])
        return self._subset(train), self._subset(test)

    def _subset(self, rows: list[int]) -> TextDataset:
        return TextDataset([self.prompts[i] for i in rows], [self.answers[i] for i in rows])


def arithmetic_task(
    n: int | None = None, *, low: int = 0, high: int = 99, ops: str = "+", seed: int = 0
) -> TextDataset:
    """Problems ``"a+b="`` with the answer ``"c"``, for operands in ``[low, high]``.

    Args:
        n: How many distinct problems to draw; ``None`` gives every one, in order.
        low: Smallest operand (``>= 0``).
        high: Largest operand.
        ops: The operators to use, among ``"+-*"``.
        seed: Seeds the draw.

    Raises:
        LLMError: Bad bounds or operators, or ``n`` exceeds the number of problems.
    """
    if not 0 <= low <= high:
        raise LLMError(f"arithmetic_task: need 0 <= low <= high, got low={low}, high={high}")
    if not ops or set(ops) - set("+-*"):
        raise LLMError(f"arithmetic_task: ops must be made of '+', '-', '*', got {ops!r}")
    apply = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}
    problems = [
        (a, op, b) for op in ops for a in range(low, high + 1) for b in range(low, high + 1)
    ]
    if n is not None:
        if not 0 < n <= len(problems):
            raise LLMError(
                f"arithmetic_task: n must be in [1, {len(problems)}] for these operands, got {n}"
            )
        problems = random.Random(seed).sample(problems, n)
    return TextDataset(
        [f"{a}{op}{b}=" for a, op, b in problems], [str(apply[op](a, b)) for a, op, b in problems]
    )


def reversal_task(
    n: int, *, min_length: int = 3, max_length: int = 6, alphabet: str = "abcdefgh", seed: int = 0
) -> TextDataset:
    """Strings ``"abc>"`` with the answer ``"cba"``.

    Raises:
        LLMError: Bad lengths or an empty alphabet.
    """
    if not 1 <= min_length <= max_length or not alphabet or n < 1:
        raise LLMError(
            f"reversal_task: need n >= 1, 1 <= min_length <= max_length and an alphabet, got "
            f"n={n}, min_length={min_length}, max_length={max_length}, alphabet={alphabet!r}"
        )
    rng = random.Random(seed)
    words = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(min_length, max_length)))
        for _ in range(n)
    ]
    return TextDataset([f"{w}>" for w in words], [w[::-1] for w in words])


def exact_match_reward(
    prompts: list[str], responses: list[str], answers: list[str]
) -> torch.Tensor:
    """1 where the response, stripped of surrounding spaces, is the answer; else 0."""
    return torch.tensor(
        [float(r.strip() == a.strip()) for r, a in zip(responses, answers, strict=True)]
    )


def format_reward(pattern: str, *, reward: float = 1.0) -> RewardFn:
    """A reward function paying ``reward`` where the whole response matches ``pattern``.

    Example:
        >>> digits_only = format_reward(r"-?[0-9]+")
        >>> digits_only(["1+1="], ["2"], ["2"])
        tensor([1.])
    """
    compiled = re.compile(pattern)

    def reward_fn(prompts: list[str], responses: list[str], answers: list[str]) -> torch.Tensor:
        return torch.tensor([reward if compiled.fullmatch(r) else 0.0 for r in responses])

    reward_fn.__name__ = f"format_reward({pattern!r})"
    return reward_fn
