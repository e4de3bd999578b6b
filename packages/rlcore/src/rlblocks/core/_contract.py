"""The dict-tensor contract: key names, ``step_mdp`` and done-flag helpers.

A transition is one TensorDict with the keys below at its root (the state the action was
taken in) and the consequences under ``"next"``::

    TensorDict({
        "observation": ..., "action": ..., "done": ..., "terminated": ..., "truncated": ...,
        "next": {
            "observation": ..., "reward": ...,
            "done": ..., "terminated": ..., "truncated": ...,
        },
    }, batch_size=[*batch])

Flags are ``bool`` and rewards float, both with a trailing singleton dimension
(``[*batch, 1]``), and ``done == terminated | truncated`` always.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core.errors import MissingKeyError
from rlblocks.core.fast_td import PLAIN_LAYOUT, new_tensordict

__all__ = [
    "OBSERVATION",
    "ACTION",
    "REWARD",
    "DONE",
    "TERMINATED",
    "TRUNCATED",
    "NEXT",
    "RESET",
    "IS_INIT",
    "PIXELS",
    "DONE_KEYS",
    "step_mdp",
    "terminated_or_truncated",
]

OBSERVATION = "observation"
ACTION = "action"
REWARD = "reward"
DONE = "done"
TERMINATED = "terminated"
TRUNCATED = "truncated"
NEXT = "next"
RESET = "_reset"
"""Boolean mask ``[*batch, 1]`` passed to ``reset`` of a batched env: which ones to reset."""
IS_INIT = "is_init"
"""True on the first step of an episode (written by ``InitTracker``, read by RNNs)."""
PIXELS = "pixels"
DONE_KEYS: tuple[str, str, str] = (DONE, TERMINATED, TRUNCATED)


def _as_keys(keys: NestedKey | Sequence[NestedKey]) -> tuple[NestedKey, ...]:
    # A tuple is one nested key (TensorDict's convention); a list is several keys.
    if isinstance(keys, (str, tuple)):
        return (keys,)
    return tuple(keys)


def step_mdp(
    tensordict: TensorDictBase,
    *,
    keep_other: bool = True,
    exclude_reward: bool = True,
    exclude_done: bool = False,
    exclude_action: bool = True,
    reward_keys: NestedKey | Sequence[NestedKey] = REWARD,
    done_keys: NestedKey | Sequence[NestedKey] | None = None,
    action_keys: NestedKey | Sequence[NestedKey] = ACTION,
) -> TensorDictBase:
    """Move ``tensordict["next"]`` up one level, ready to pick the next action.

    The result holds the next observation and done flags at its root. The old root
    observation and done flags are replaced, the action and reward are dropped (by default),
    and any other root entry (e.g. collector metadata) is kept when ``keep_other``.
    The input is not modified; tensors are shared, not copied.

    Args:
        tensordict: A transition with a ``"next"`` entry.
        keep_other: Keep root entries that ``"next"`` does not overwrite.
        exclude_reward: Drop ``reward_keys`` from the result.
        exclude_done: Drop ``done_keys`` from the result.
        exclude_action: Drop ``action_keys`` from the result.
        reward_keys: Reward key(s).
        done_keys: Done flag key(s); ``None`` means :data:`DONE_KEYS`.
        action_keys: Action key(s).

    Returns:
        A new TensorDict with the same batch size.

    Raises:
        MissingKeyError: ``tensordict`` has no ``"next"`` entry.

    Example:
        >>> td = env.step(env.rand_action(env.reset()))
        >>> td = step_mdp(td)  # td["observation"] is now the next observation
    """
    exact = PLAIN_LAYOUT and type(tensordict) is TensorDict
    next_td = tensordict._tensordict.get(NEXT) if exact else tensordict.get(NEXT, None)
    if next_td is None:
        raise MissingKeyError(
            f"step_mdp needs a 'next' entry (the output of env.step), but the TensorDict has "
            f"keys {sorted(map(str, tensordict.keys()))}. Call env.step(td) first."
        )
    flags = (exclude_reward, exclude_done, exclude_action)
    if done_keys is None and reward_keys == REWARD and action_keys == ACTION:
        # The per-step common case: no key argument to normalize, and with the default
        # flags not even a plan to look up.
        plan = _DEFAULT_PLAN if flags == (True, False, True) else _plan(*_DEFAULT_KEYS, *flags)
    else:
        keys = (
            _as_keys(reward_keys),
            _as_keys(list(DONE_KEYS) if done_keys is None else done_keys),
            _as_keys(action_keys),
        )
        plan = _plan(*keys, *flags)
    dropped, root_dropped, action_keys, flat = plan
    if flat and exact and type(next_td) is TensorDict:
        out = _step_mdp_flat(tensordict, next_td, keep_other, exclude_action, dropped, root_dropped)
        if out is not None:
            return out
    # General path: nested keys, or sub-TensorDicts at the root and under "next" to merge.
    next_part = next_td.exclude(*dropped) if dropped else next_td.copy()
    if not keep_other:
        if not exclude_action:
            for key in action_keys:
                value = tensordict.get(key, None)
                if value is not None:
                    next_part.set(key, value)
        return next_part
    return tensordict.exclude(*root_dropped).update(next_part)


_DEFAULT_KEYS = ((REWARD,), DONE_KEYS, (ACTION,))


@functools.lru_cache(maxsize=64)
def _plan(
    reward_keys: tuple[NestedKey, ...],
    done_keys: tuple[NestedKey, ...],
    action_keys: tuple[NestedKey, ...],
    exclude_reward: bool,
    exclude_done: bool,
    exclude_action: bool,
) -> tuple[frozenset[NestedKey], frozenset[NestedKey], tuple[NestedKey, ...], bool]:
    """What ``step_mdp`` drops at each level, computed once per key configuration."""
    dropped = (reward_keys if exclude_reward else ()) + (done_keys if exclude_done else ())
    root_dropped = (NEXT, *reward_keys, *done_keys, *(action_keys if exclude_action else ()))
    flat = all(isinstance(key, str) for key in (*root_dropped, *dropped, *action_keys))
    return frozenset(dropped), frozenset(root_dropped), action_keys, flat


_DEFAULT_PLAN = _plan(*_DEFAULT_KEYS, True, False, True)


def _step_mdp_flat(
    tensordict: TensorDict,
    next_td: TensorDict,
    keep_other: bool,
    exclude_action: bool,
    dropped: frozenset[NestedKey],
    root_dropped: frozenset[NestedKey],
) -> TensorDictBase | None:
    """``step_mdp`` for top-level keys in one pass over each level (it runs once per step).

    Both are plain TensorDicts: their entry dicts are read directly, and the result is
    built without re-validating entries that come from valid TensorDicts of its batch size.
    Returns ``None`` when a root sub-TensorDict would have to be merged with one under
    ``"next"`` (e.g. ``"agents"`` at both levels): the general path handles that.
    """
    if not keep_other and not exclude_action:
        return None  # a rare combination: the general path keeps this function simple
    data = dict(next_td._tensordict)
    for key in dropped:
        data.pop(key, None)
    if keep_other:
        for key, value in tensordict._tensordict.items():
            if key in root_dropped:
                continue
            if key in data:
                if type(value) is not torch.Tensor and isinstance(value, TensorDictBase):
                    return None
                continue
            data[key] = value
    return new_tensordict(data, tensordict._batch_size, tensordict._device)


def terminated_or_truncated(
    tensordict: TensorDictBase, *, write_done: bool = False
) -> torch.Tensor:
    """Return ``terminated | truncated`` for the flags at the root of ``tensordict``.

    Pass ``td["next"]`` to read the flags a step produced. If neither ``terminated`` nor
    ``truncated`` is present, ``done`` is returned as is.

    Args:
        tensordict: Holds ``terminated`` and/or ``truncated`` (or only ``done``).
        write_done: Also store the result as ``tensordict["done"]``.

    Returns:
        A ``bool`` tensor shaped like the flags (``[*batch, 1]``).

    Raises:
        MissingKeyError: None of ``done``, ``terminated``, ``truncated`` is present.
    """
    terminated = tensordict.get(TERMINATED, None)
    truncated = tensordict.get(TRUNCATED, None)
    if terminated is None and truncated is None:
        done = tensordict.get(DONE, None)
        if done is None:
            raise MissingKeyError(
                f"terminated_or_truncated needs 'terminated', 'truncated' or 'done', but the "
                f"TensorDict has keys {sorted(map(str, tensordict.keys()))}. Pass td['next'] "
                f"to read the flags of a step."
            )
        return done.bool()
    if terminated is None:
        done = truncated.bool()
    elif truncated is None:
        done = terminated.bool()
    else:
        done = terminated | truncated
    if write_done:
        tensordict.set(DONE, done)
    return done
