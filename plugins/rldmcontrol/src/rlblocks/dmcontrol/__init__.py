"""rlblocks-dmcontrol: DeepMind Control Suite tasks as rlblocks environments.

A third-party-style plugin: installing this distribution registers the ``dm_control`` env
backend through the ``rlblocks`` entry point, so that
``rlblocks.core.make_env("dm_control:cartpole/swingup")`` works with no change elsewhere.

- :class:`DMControlEnv` builds a suite task; :class:`DMControlWrapper` wraps any
  ``dm_env.Environment``.
- :func:`list_tasks` lists the ``domain/task`` ids.
"""

from __future__ import annotations

from rlblocks.dmcontrol._env import DISCOUNT, DMControlEnv, DMControlWrapper
from rlblocks.dmcontrol._tasks import list_tasks
from rlblocks.dmcontrol._version import __version__
from rlblocks.dmcontrol.errors import DMControlError, RenderingError, UnknownTaskError

__all__ = [
    "__version__",
    # environments
    "DMControlEnv",
    "DMControlWrapper",
    "DISCOUNT",
    "list_tasks",
    # errors
    "DMControlError",
    "UnknownTaskError",
    "RenderingError",
]
