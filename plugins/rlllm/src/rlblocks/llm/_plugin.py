"""rlblocks-llm's plugin: registers the ``sft`` and ``grpo`` losses.

``make_loss("grpo", actor_network=..., group_size=8)`` builds a :class:`GRPOLoss`. The
losses are imported inside the hook, so listing plugins never imports transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import hookimpl

__all__ = ["rlblocks_losses"]


@hookimpl
def rlblocks_losses() -> Mapping[str, Callable[..., Any]]:
    """``make_loss("sft", ...)`` and ``make_loss("grpo", ...)``."""
    from rlblocks.llm._losses import GRPOLoss, SFTLoss

    return {"sft": SFTLoss, "grpo": GRPOLoss}
