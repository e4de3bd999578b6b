"""rlblocks-vmas: VMAS's vectorized multi-agent scenarios as rlblocks environments.

A third-party-style plugin: installing this distribution registers the ``vmas`` env backend
through the ``rlblocks`` entry point, so that
``rlblocks.core.make_env("vmas:navigation", num_envs=32, n_agents=3)`` works with no change
elsewhere.

- :class:`VmasEnv` builds a scenario; :class:`VmasWrapper` wraps a VMAS ``Environment``.
- Agents are grouped (``env.group_map``): ``("agents", "observation")`` is
  ``[num_envs, n_agents, obs_dim]``; see :class:`VmasWrapper` for every key.
- :func:`list_scenarios` lists the scenario names.

Importing this package imports neither VMAS nor pyglet; building an env does.
"""

from __future__ import annotations

from rlblocks.vmas._env import INFO, VmasEnv, VmasWrapper
from rlblocks.vmas._scenarios import list_scenarios
from rlblocks.vmas._version import __version__
from rlblocks.vmas.errors import UnknownScenarioError, VmasError

__all__ = [
    "__version__",
    # environments
    "VmasEnv",
    "VmasWrapper",
    "INFO",
    "list_scenarios",
    # errors
    "VmasError",
    "UnknownScenarioError",
]
