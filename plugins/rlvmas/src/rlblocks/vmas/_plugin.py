"""rlblocks-vmas's plugin: registers the ``vmas`` env backend.

``make_env("vmas:navigation", num_envs=32, **kwargs)`` calls
``VmasEnv("navigation", num_envs=32, **kwargs)``. This module imports neither VMAS nor
pyglet, so listing plugins stays cheap; an unknown scenario fails when the env is made, with
the closest names suggested.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import hookimpl

__all__ = ["rlblocks_env_backends", "make_vmas_env"]


def make_vmas_env(env_id: str, **kwargs: Any) -> Any:
    """Create ``VmasEnv(env_id, **kwargs)``; ``num_envs`` is required."""
    from rlblocks.vmas._env import VmasEnv
    from rlblocks.vmas._scenarios import check_scenario

    check_scenario(env_id)
    if "num_envs" not in kwargs:
        raise TypeError(
            f"make_env('vmas:{env_id}') needs num_envs=N, the number of envs VMAS simulates "
            f"together, e.g. make_env('vmas:{env_id}', num_envs=32)"
        )
    return VmasEnv(env_id, **kwargs)


@hookimpl
def rlblocks_env_backends() -> Mapping[str, Callable[..., Any]]:
    """Provide the ``vmas`` backend."""
    return {"vmas": make_vmas_env}
