"""rlblocks-atari: ALE games (through gymnasium and ale-py, which ships the ROMs) with the
standard Atari preprocessing built from rlblocks transforms.

Installing this distribution registers the ``atari`` env backend through the ``rlblocks``
entry point: ``rlblocks.core.make_env("atari:Breakout")`` works with no change elsewhere.

- :func:`make_atari_env` builds a preprocessed game; :func:`list_games` lists the ids.
"""

from __future__ import annotations

from rlblocks.atari._env import OBSERVATION, atari_env_id, list_games, make_atari_env
from rlblocks.atari._version import __version__

__all__ = ["__version__", "OBSERVATION", "atari_env_id", "list_games", "make_atari_env"]
