"""The errors rlblocks-objectives raises on purpose.

All derive from :class:`ObjectiveError`, itself a :class:`rlblocks.core.RLBlocksError`, and
from the closest builtin (``KeyError``, ``ValueError``) so code written against the builtins
keeps working.
"""

from __future__ import annotations

from rlblocks.core.errors import MissingKeyError, RLBlocksError

__all__ = ["ObjectiveError", "MissingInputError", "ShapeMismatchError", "ObjectiveConfigError"]


class ObjectiveError(RLBlocksError):
    """Base class of the errors raised by losses, value estimators and modules."""


class MissingInputError(ObjectiveError, MissingKeyError):
    """The input lacks a key a loss or estimator reads; the message says how to rename keys."""


class ShapeMismatchError(ObjectiveError, ValueError):
    """Two inputs that must have the same shape do not; nothing is broadcast silently."""


class ObjectiveConfigError(ObjectiveError, ValueError):
    """A loss, estimator or module was given an invalid argument."""
