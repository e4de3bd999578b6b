"""The exceptions rlblocks-dmcontrol raises on purpose.

They derive from :class:`rlblocks.envs.EnvError` (so ``except RLBlocksError`` catches them)
and from the closest builtin exception.
"""

from __future__ import annotations

from rlblocks.envs.errors import EnvError

__all__ = ["DMControlError", "UnknownTaskError", "RenderingError"]


class DMControlError(EnvError):
    """Base class of every error rlblocks-dmcontrol raises on purpose."""


class UnknownTaskError(DMControlError, LookupError):
    """No dm_control suite task has the requested ``domain/task`` id."""

    def __str__(self) -> str:
        # LookupError would otherwise repr() a single argument like KeyError does.
        return str(self.args[0]) if self.args else ""


class RenderingError(DMControlError, RuntimeError):
    """MuJoCo could not render pixels (no usable OpenGL backend)."""
