"""rlblocks-atari's plugin: registers the ``atari`` env backend.

``make_env("atari:Pong", **kwargs)`` calls ``make_atari_env("Pong", **kwargs)``. This module
imports neither gymnasium nor the ALE, so listing plugins stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import hookimpl

__all__ = ["rlblocks_env_backends", "make_atari_backend_env"]


def make_atari_backend_env(env_id: str, **kwargs: Any) -> Any:
    """``make_atari_env(env_id, **kwargs)``: the ``atari`` backend's factory."""
    from rlblocks.atari._env import make_atari_env

    return make_atari_env(env_id, **kwargs)


@hookimpl
def rlblocks_env_backends() -> Mapping[str, Callable[..., Any]]:
    """Provide the ``atari`` backend."""
    return {"atari": make_atari_backend_env}
