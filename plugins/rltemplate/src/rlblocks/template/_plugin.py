"""The template's hook implementations: what the ``rlblocks`` entry point points at.

Each hook returns ``{name: factory}``. rlblocks merges the mappings of every installed
plugin, so the names are prefixed with the plugin's name to stay clear of other plugins'
(a name claimed twice is an error that names both distributions).

The components are imported inside the hooks, not at module level: rlblocks imports this
module whenever it discovers plugins (``rlblocks plugins``, the first ``make_*``), so it
must be cheap and must not fail because of an optional dependency.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import UnknownComponentError, hookimpl

__all__ = [
    "ENV_IDS",
    "make_template_env",
    "rlblocks_env_backends",
    "rlblocks_losses",
    "rlblocks_samplers",
]

ENV_IDS = ("ChainWalk-v0",)
"""The env ids of the ``template`` backend: ``make_env("template:ChainWalk-v0")``."""


def make_template_env(env_id: str, **kwargs: Any) -> Any:
    """Build the env called ``env_id`` with ``kwargs`` (the ``template`` backend's factory).

    Raises:
        UnknownComponentError: ``env_id`` is not one of :data:`ENV_IDS`; the message says
            which one is closest.
    """
    from rlblocks.template._env import ChainWalkEnv

    if env_id not in ENV_IDS:
        close = difflib.get_close_matches(env_id, ENV_IDS, n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        raise UnknownComponentError(
            f"the template backend has no env {env_id!r}. {hint}Its envs: {', '.join(ENV_IDS)}."
        )
    return ChainWalkEnv(**kwargs)


@hookimpl
def rlblocks_env_backends() -> Mapping[str, Callable[..., Any]]:
    """``make_env("template:ChainWalk-v0", **kwargs)``."""
    return {"template": make_template_env}


@hookimpl
def rlblocks_losses() -> Mapping[str, Callable[..., Any]]:
    """``make_loss("template_td_value", value_network=..., gamma=...)``."""
    from rlblocks.template._loss import TDValueLoss

    return {"template_td_value": TDValueLoss}


@hookimpl
def rlblocks_samplers() -> Mapping[str, Callable[..., Any]]:
    """``make_sampler("template_recent", window=...)``."""
    from rlblocks.template._sampler import RecentSampler

    return {"template_recent": RecentSampler}
