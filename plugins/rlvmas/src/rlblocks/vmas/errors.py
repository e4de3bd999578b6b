"""The exceptions rlblocks-vmas raises on purpose.

They derive from :class:`rlblocks.envs.EnvError` (so ``except RLBlocksError`` catches them)
and from the closest builtin exception.
"""

from __future__ import annotations

from rlblocks.envs.errors import EnvError

__all__ = ["VmasError", "UnknownScenarioError"]


class VmasError(EnvError):
    """Base class of every error rlblocks-vmas raises on purpose."""


class UnknownScenarioError(VmasError, LookupError):
    """VMAS has no scenario of the requested name."""

    def __str__(self) -> str:
        # LookupError would otherwise repr() a single argument like KeyError does.
        return str(self.args[0]) if self.args else ""
