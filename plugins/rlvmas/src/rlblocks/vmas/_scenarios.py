"""VMAS's scenario names: listing, checking and "did you mean".

VMAS is imported lazily, on the first call that needs it, so that loading the plugin
(``rlblocks plugins``, any ``make_env``) stays cheap and never imports pyglet.
"""

from __future__ import annotations

import difflib
from types import ModuleType

from rlblocks.core.errors import missing_dependency
from rlblocks.vmas.errors import UnknownScenarioError

__all__ = ["import_vmas", "list_scenarios", "check_scenario"]


def import_vmas() -> ModuleType:
    """Import ``vmas``, or raise the error that names the ``pip install`` fix."""
    try:
        import vmas
    except ImportError as err:
        raise missing_dependency("rlblocks.vmas", "vmas", "rlblocks-vmas") from err
    return vmas


def list_scenarios() -> list[str]:
    """Return the names of VMAS's scenarios, sorted: its own, the MPE ones and the debug ones.

    These are the ids ``make_env("vmas:<name>", num_envs=...)`` and ``VmasEnv(name, ...)``
    accept.

    Example:
        >>> "navigation" in list_scenarios()
        True
    """
    vmas = import_vmas()
    return sorted({*vmas.scenarios, *vmas.mpe_scenarios, *vmas.debug_scenarios})


def check_scenario(name: str) -> None:
    """Raise :class:`UnknownScenarioError` unless ``name`` is a VMAS scenario.

    Raises:
        UnknownScenarioError: No scenario has that name; the message suggests the closest
            names and lists them all.
    """
    known = list_scenarios()
    if isinstance(name, str) and name in known:
        return
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    hint = f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise UnknownScenarioError(
        f"VMAS has no scenario {name!r}. {hint}Scenarios: {', '.join(known)}. (A scenario of "
        f"your own: pass an instance of vmas.simulator.scenario.BaseScenario to VmasEnv.)"
    )
