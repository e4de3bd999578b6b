"""rlblocks-pettingzoo's plugin: registers the ``pettingzoo`` env backend.

``make_env("pettingzoo:mpe2.simple_spread_v3", **kwargs)`` calls
``PettingZooEnv("mpe2.simple_spread_v3", **kwargs)``. This module imports neither PettingZoo
nor any task package, so listing plugins stays cheap; an unknown id fails when the env is
made, with the closest ids suggested.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import hookimpl

__all__ = ["rlblocks_env_backends", "make_pettingzoo_env"]


def make_pettingzoo_env(env_id: str, **kwargs: Any) -> Any:
    """Create ``PettingZooEnv(env_id, **kwargs)`` (``parallel=`` may be among the kwargs)."""
    from rlblocks.pettingzoo._env import PettingZooEnv

    return PettingZooEnv(env_id, **kwargs)


@hookimpl
def rlblocks_env_backends() -> Mapping[str, Callable[..., Any]]:
    """Provide the ``pettingzoo`` backend."""
    return {"pettingzoo": make_pettingzoo_env}
