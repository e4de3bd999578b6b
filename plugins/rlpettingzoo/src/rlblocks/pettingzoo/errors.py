"""The exceptions rlblocks-pettingzoo raises on purpose.

They derive from :class:`rlblocks.envs.EnvError` (so ``except RLBlocksError`` catches them)
and from the closest builtin exception. An illegal (masked) action raises rlblocks-envs'
own :class:`~rlblocks.envs.errors.InvalidActionError`, as every other invalid action does.
"""

from __future__ import annotations

from rlblocks.envs.errors import EnvError

__all__ = ["PettingZooError", "UnknownTaskError", "EpisodeOverError"]


class PettingZooError(EnvError):
    """Base class of every error rlblocks-pettingzoo raises on purpose."""


class UnknownTaskError(PettingZooError, LookupError):
    """No PettingZoo task has the requested ``<package>.<module>`` id."""

    def __str__(self) -> str:
        # LookupError would otherwise repr() a single argument like KeyError does.
        return str(self.args[0]) if self.args else ""


class EpisodeOverError(PettingZooError, RuntimeError):
    """``step()`` was called after the episode ended, before ``reset()``."""
