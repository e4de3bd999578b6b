"""rlblocks-dmcontrol's plugin: registers the ``dm_control`` env backend.

``make_env("dm_control:cartpole/swingup", **kwargs)`` calls
``DMControlEnv("cartpole", "swingup", **kwargs)``. This module imports neither dm_control
nor MuJoCo, so listing plugins stays cheap; an unknown id fails when the env is made, with
the closest ids suggested.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import hookimpl

__all__ = ["rlblocks_env_backends", "make_dm_control_env"]


def make_dm_control_env(env_id: str, **kwargs: Any) -> Any:
    """Create ``DMControlEnv(domain, task, **kwargs)`` from ``"domain/task"``."""
    from rlblocks.dmcontrol._env import DMControlEnv
    from rlblocks.dmcontrol._tasks import parse_task_id

    domain, task = parse_task_id(env_id)
    return DMControlEnv(domain, task, **kwargs)


@hookimpl
def rlblocks_env_backends() -> Mapping[str, Callable[..., Any]]:
    """Provide the ``dm_control`` backend."""
    return {"dm_control": make_dm_control_env}
