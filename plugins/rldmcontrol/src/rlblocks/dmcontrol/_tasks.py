"""The dm_control suite's ``domain/task`` ids: listing, parsing and "did you mean".

dm_control is imported lazily, on the first call that needs it, so that loading the plugin
(``rlblocks plugins``, any ``make_env``) stays cheap and never touches OpenGL.
"""

from __future__ import annotations

import difflib
from types import ModuleType

from rlblocks.core.errors import missing_dependency
from rlblocks.dmcontrol.errors import UnknownTaskError

__all__ = ["import_suite", "list_tasks", "parse_task_id", "check_task"]


def import_suite() -> ModuleType:
    """Import ``dm_control.suite``, or raise the error that names the ``pip install`` fix."""
    try:
        from dm_control import suite
    except ImportError as err:
        raise missing_dependency("rlblocks.dmcontrol", "dm_control", "rlblocks-dmcontrol") from err
    return suite


def list_tasks(domain: str | None = None) -> list[str]:
    """Return the ids of the dm_control suite tasks, as sorted ``"domain/task"`` strings.

    These are the ids ``make_env("dm_control:<id>")`` accepts: the benchmarking tasks and
    the extra ones (``lqr``, ``humanoid_CMU``, ...).

    Args:
        domain: Only the tasks of this domain (e.g. ``"cartpole"``).

    Returns:
        The ids, e.g. ``["cartpole/balance", "cartpole/balance_sparse", ...]``.

    Raises:
        UnknownTaskError: ``domain`` is not a suite domain; the message suggests close names.

    Example:
        >>> list_tasks("cartpole")[:2]
        ['cartpole/balance', 'cartpole/balance_sparse']
    """
    suite = import_suite()
    ids = sorted(f"{d}/{t}" for d, t in suite.ALL_TASKS)
    if domain is None:
        return ids
    domains = sorted(suite.TASKS_BY_DOMAIN)
    if domain not in domains:
        raise UnknownTaskError(
            f"list_tasks: dm_control has no domain {domain!r}. {_suggest(_close(domain, domains))}"
            f"Domains: {', '.join(domains)}."
        )
    return [i for i in ids if i.split("/", 1)[0] == domain]


def parse_task_id(task_id: str) -> tuple[str, str]:
    """Split and check a ``"domain/task"`` id.

    Raises:
        UnknownTaskError: The id is malformed or names no suite task; the message suggests
            the closest ids and says how to list them all.
    """
    if not isinstance(task_id, str) or task_id.count("/") != 1:
        ids = list_tasks()
        raise UnknownTaskError(
            f"dm_control env id must be '<domain>/<task>', e.g. 'cartpole/swingup', got "
            f"{task_id!r}. {_suggest(_close(str(task_id), ids))}"
            f"See rlblocks.dmcontrol.list_tasks() for the {len(ids)} ids."
        )
    domain, task = task_id.split("/")
    check_task(domain, task)
    return domain, task


def check_task(domain: str, task: str) -> None:
    """Raise :class:`UnknownTaskError` unless ``domain/task`` is a suite task."""
    suite = import_suite()
    if task in suite.TASKS_BY_DOMAIN.get(domain, ()):
        return
    ids = list_tasks()
    wanted = f"{domain}/{task}"
    tasks = suite.TASKS_BY_DOMAIN.get(domain)
    if tasks is None:
        hint = _suggest(_close(wanted, ids))
    else:
        # Within a known domain compare task names alone: the shared domain prefix would
        # make every task of the domain look close.
        close = [f"{domain}/{t}" for t in _close(task, list(tasks))]
        hint = _suggest(close) + f"Tasks of {domain!r}: {', '.join(sorted(tasks))}. "
    raise UnknownTaskError(
        f"dm_control has no task {wanted!r}. {hint}"
        f"See rlblocks.dmcontrol.list_tasks() for the {len(ids)} ids."
    )


def _close(wanted: str, known: list[str]) -> list[str]:
    return difflib.get_close_matches(wanted, known, n=3, cutoff=0.6)


def _suggest(close: list[str]) -> str:
    return f"Did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
