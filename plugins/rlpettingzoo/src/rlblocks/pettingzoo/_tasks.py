"""PettingZoo task ids: ``"<package>.<module>"``, listing, resolving and "did you mean".

An id names a module holding PettingZoo's env constructors (``env()`` for the AEC API,
``parallel_env()`` for the parallel API), the way PettingZoo's docs import them:

* ``"classic.tictactoe_v3"``, ``"butterfly.pistonball_v6"``, ``"sisl.pursuit_v5"``: a family
  shipped with PettingZoo (``atari``, ``butterfly``, ``classic``, ``sisl``). These are made
  through PettingZoo's own registry (``pettingzoo.make``), which imports the env without the
  deprecation warning of the old ``pettingzoo.classic.tictactoe_v3`` modules.
* ``"mpe2.simple_spread_v3"``: any other importable package (MPE lives in ``mpe2`` since
  PettingZoo 1.25); the module ``mpe2.simple_spread_v3`` is imported.

A leading ``"pettingzoo."`` is ignored (``"pettingzoo.classic.tictactoe_v3"`` works too).
PettingZoo and the task packages are imported when a task is resolved, never when the
plugin loads.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import pkgutil
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

from rlblocks.core.errors import missing_dependency
from rlblocks.envs.errors import UnsupportedEnvOperationError
from rlblocks.pettingzoo.errors import UnknownTaskError

__all__ = ["import_pettingzoo", "list_tasks", "resolve_task", "EXTERNAL_PACKAGES"]

#: Packages outside PettingZoo whose task modules :func:`list_tasks` lists when installed.
EXTERNAL_PACKAGES = ("mpe2",)
_TASK_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*_v\d+$")


def import_pettingzoo(feature: str) -> ModuleType:
    """Import pettingzoo, or raise the error that names the ``pip install`` fix."""
    try:
        import pettingzoo
    except ImportError as err:
        raise missing_dependency(feature, "pettingzoo", "rlblocks-pettingzoo") from err
    return pettingzoo


def _families(pz: ModuleType) -> set[str]:
    """The task families PettingZoo's registry holds (``classic``, ``butterfly``...)."""
    specs = [*pz.aec_registry.values(), *pz.parallel_registry.values()]
    return {s.namespace for s in specs if s.namespace}


def _task_id(spec: Any) -> str:
    """``"classic.tictactoe_v3"`` for PettingZoo's registry id ``"classic/tictactoe-v3"``."""
    version = "" if spec.version is None else f"_v{spec.version}"
    return f"{spec.namespace}.{spec.name}{version}"


def list_tasks(package: str | None = None) -> list[str]:
    """Return the task ids ``make_env("pettingzoo:<id>")`` accepts, sorted.

    The ids of PettingZoo's registry (every family, whether or not its extra dependencies
    are installed) and the task modules of the packages in :data:`EXTERNAL_PACKAGES` that
    are installed (``mpe2``). Any other package following PettingZoo's module layout works
    too, unlisted.

    Args:
        package: Only the ids of this package or family (e.g. ``"mpe2"``, ``"classic"``).

    Returns:
        The ids, e.g. ``["classic.connect_four_v3", ..., "mpe2.simple_spread_v3", ...]``.

    Example:
        >>> "classic.tictactoe_v3" in list_tasks("classic")
        True
    """
    pz = import_pettingzoo("rlblocks.pettingzoo.list_tasks")
    ids = {_task_id(s) for s in (*pz.aec_registry.values(), *pz.parallel_registry.values())}
    for name in EXTERNAL_PACKAGES:
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
            if _TASK_MODULE.match(info.name):
                ids.add(f"{name}.{info.name}")
    return sorted(i for i in ids if package is None or i.rsplit(".", 1)[0] == package)


def resolve_task(task: str, parallel: bool | None) -> tuple[Callable[..., Any], bool]:
    """Find the constructor of ``task``'s env.

    Args:
        task: A ``"<package>.<module>"`` id.
        parallel: ``True`` for the parallel API, ``False`` for the AEC API, ``None`` for the
            parallel API where the task has one.

    Returns:
        ``(make, parallel)``: ``make(**task_kwargs)`` builds the PettingZoo env; ``parallel``
        says which API it has.

    Raises:
        UnknownTaskError: No task has this id; the message says what was tried and
            suggests close ids.
        UnsupportedEnvOperationError: ``parallel=True`` for a task with only the AEC API.
    """
    pz = import_pettingzoo("rlblocks.pettingzoo.PettingZooEnv")
    name = task.strip() if isinstance(task, str) else task
    if isinstance(name, str) and name.startswith("pettingzoo."):
        name = name[len("pettingzoo.") :]
    if not isinstance(name, str) or "." not in name.strip("."):
        raise _unknown(
            f"PettingZoo task ids are '<package>.<module>', e.g. 'mpe2.simple_spread_v3' or "
            f"'classic.tictactoe_v3'; got {task!r}.",
            str(task),
        )
    package, module = name.rsplit(".", 1)
    if package in _families(pz):
        return _from_registry(pz, task, f"{package}/{module}", parallel)
    return _from_module(task, name, parallel)


def _from_registry(
    pz: ModuleType, task: str, registry_id: str, parallel: bool | None
) -> tuple[Callable[..., Any], bool]:
    found: dict[str, Any] = {}
    problems = []
    for kind in ("parallel", "aec"):
        try:
            found[kind] = pz.spec(kind, registry_id)
        except Exception as err:  # the registry's NameNotFound / VersionNotFound / ...
            # Its NameNotFound lists every registered id: the suggestions below say more.
            message = str(err).split(" Available environments:")[0]
            problems.append(f"{type(err).__name__}: {message}")
    if not found:
        raise _unknown(
            f"PettingZoo has no task {task!r}: tried PettingZoo's registry id "
            f"{registry_id!r} ({problems[-1]}).",
            task,
        )
    kind = _choose_api(task, parallel, has_parallel="parallel" in found)
    return functools.partial(pz.make, kind, found[kind].id), kind == "parallel"


def _from_module(task: str, name: str, parallel: bool | None) -> tuple[Callable[..., Any], bool]:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if not missing or not (name == missing or name.startswith(missing + ".")):
            raise  # the task exists; one of its own dependencies is missing
        raise _unknown(
            f"PettingZoo has no task {task!r}: tried to import the module {name!r} "
            f"(ModuleNotFoundError: {err}).",
            task,
        ) from None
    except ImportError as err:
        # e.g. pettingzoo.mpe, which now only raises "MPE has been moved ... mpe2"
        raise _unknown(
            f"PettingZoo has no task {task!r}: importing the module {name!r} failed "
            f"(ImportError: {err}).",
            task,
        ) from None
    has_parallel = callable(getattr(module, "parallel_env", None))
    if not has_parallel and not callable(getattr(module, "env", None)):
        raise _unknown(
            f"PettingZoo task {task!r}: the module {name!r} has neither env() (AEC API) nor "
            f"parallel_env() (parallel API), so it is not a PettingZoo task module.",
            task,
        )
    kind = _choose_api(task, parallel, has_parallel=has_parallel)
    return (module.parallel_env if kind == "parallel" else module.env), kind == "parallel"


def _choose_api(task: str, parallel: bool | None, *, has_parallel: bool) -> str:
    if parallel is None:
        return "parallel" if has_parallel else "aec"
    if parallel and not has_parallel:
        raise UnsupportedEnvOperationError(
            f"PettingZooEnv({task!r}, parallel=True): this task has only the AEC (turn-based) "
            f"API; use parallel=False (or leave parallel unset)"
        )
    return "parallel" if parallel else "aec"


def _unknown(problem: str, wanted: str) -> UnknownTaskError:
    try:
        ids = list_tasks()
    except Exception:  # listing is a courtesy: never hide the real problem behind it
        ids = []
    scored = [(difflib.SequenceMatcher(None, wanted, i).ratio(), i) for i in ids]
    best = max((r for r, _ in scored), default=0.0)
    # The best match and those nearly as good: siblings of a typo'd id are not suggestions.
    close = [i for r, i in sorted(scored, reverse=True) if r >= max(0.6, best - 0.1)][:3]
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UnknownTaskError(
        f"{problem}{hint} See rlblocks.pettingzoo.list_tasks() for the {len(ids)} known ids."
    )
