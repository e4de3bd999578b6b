"""rlblocks-envs' plugin: registers the ``gymnasium`` env backend.

``make_env("gymnasium:CartPole-v1", **kwargs)`` calls ``GymEnv("CartPole-v1", **kwargs)``.
Importing this module does not import gymnasium; a missing gymnasium is reported when an
env is made, with the ``pip install`` that fixes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import hookimpl

__all__ = ["rlblocks_env_backends", "make_gymnasium_env"]


def make_gymnasium_env(env_id: str, **kwargs: Any) -> Any:
    """Create ``GymEnv(env_id, **kwargs)`` (the factory behind the ``gymnasium`` backend)."""
    from rlblocks.envs._gym import GymEnv

    return GymEnv(env_id, **kwargs)


@hookimpl
def rlblocks_env_backends() -> Mapping[str, Callable[..., Any]]:
    """Provide the ``gymnasium`` backend."""
    return {"gymnasium": make_gymnasium_env}
