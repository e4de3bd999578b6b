"""rlblocks-pettingzoo: PettingZoo multi-agent envs as rlblocks environments.

A plugin distribution: installing it registers the ``pettingzoo`` env backend through the
``rlblocks`` entry point, so that ``rlblocks.core.make_env("pettingzoo:mpe2.simple_spread_v3")``
works with no change elsewhere.

- :class:`PettingZooEnv` builds a task by id (``"mpe2.simple_spread_v3"``,
  ``"classic.tictactoe_v3"``); :class:`PettingZooWrapper` wraps any ``pettingzoo.ParallelEnv``
  or ``pettingzoo.AECEnv``. Agents are grouped under top-level keys with an agent dim.
- :func:`list_tasks` lists the known ids.
"""

from __future__ import annotations

from rlblocks.pettingzoo._env import STATE, PettingZooEnv, PettingZooWrapper
from rlblocks.pettingzoo._groups import ACTION_MASK, MASK
from rlblocks.pettingzoo._tasks import list_tasks
from rlblocks.pettingzoo._version import __version__
from rlblocks.pettingzoo.errors import EpisodeOverError, PettingZooError, UnknownTaskError

__all__ = [
    "__version__",
    # environments
    "PettingZooEnv",
    "PettingZooWrapper",
    "list_tasks",
    # keys
    "ACTION_MASK",
    "MASK",
    "STATE",
    # errors
    "PettingZooError",
    "UnknownTaskError",
    "EpisodeOverError",
]
