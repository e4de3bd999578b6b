"""Input validation shared by losses and value estimators: keys, shapes, plain-tensor calls."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import DONE, NEXT, REWARD, TERMINATED, TRUNCATED
from rlblocks.objectives.errors import MissingInputError, ShapeMismatchError

__all__ = [
    "fmt_key",
    "check_same_shape",
    "check_keys",
    "read_terminated",
    "tensordict_from_tensors",
    "flat_name",
    "FALLBACK_ROLES",
]

FALLBACK_ROLES: dict[str, str] = {"terminated": "done"}
"""Roles read only when the input has them, with the role read in their place otherwise.

TorchRL's convention: a batch with ``("next", "done")`` but no ``("next", "terminated")``
treats every end of episode as a termination. :func:`check_keys` does not ask for these keys
and :func:`read_terminated` does the fallback.
"""


def fmt_key(key: NestedKey) -> str:
    """Render a key the way users write it: ``'reward'`` or ``('next', 'reward')``."""
    if isinstance(key, tuple) and len(key) == 1:
        key = key[0]
    return repr(key)


def flat_name(key: NestedKey) -> str:
    """The keyword-argument name of ``key`` in a plain-tensor call (``next_reward``)."""
    if isinstance(key, str):
        return key
    return "_".join(key)


def check_same_shape(
    owner: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor
) -> None:
    """Raise unless ``a`` and ``b`` have exactly the same shape.

    Raises:
        ShapeMismatchError: Naming ``owner``, both inputs and both shapes.
    """
    if a.shape != b.shape:
        raise ShapeMismatchError(
            f"{owner}: {name_a} has shape {list(a.shape)} but {name_b} has shape "
            f"{list(b.shape)}; they must be equal (nothing is broadcast). Rewards, done flags "
            f"and values carry a trailing singleton dim, e.g. [batch, 1]: fix the producer "
            f"or reshape with x.unsqueeze(-1) / x.squeeze(-1)."
        )


def check_keys(
    owner: str,
    tensordict: TensorDictBase,
    loss_keys: Mapping[str, NestedKey],
    network_keys: Mapping[NestedKey, str],
) -> None:
    """Raise if ``tensordict`` lacks any key that ``owner`` needs.

    Args:
        owner: The loss or estimator class name.
        tensordict: The input.
        loss_keys: ``{set_keys name: key}`` for the keys ``owner`` reads itself; a key under
            ``"next"`` is given as ``("next", key)`` with the same ``set_keys`` name. Roles
            of :data:`FALLBACK_ROLES` may be absent when their fallback role is listed.
        network_keys: ``{key: network description}`` for keys read by a network.

    Raises:
        MissingInputError: Listing what is needed, what is missing, what was given and how
            to rename keys with ``set_keys``.
    """
    present = set(tensordict.keys(include_nested=True))
    # A fallback role is needed only when the role it falls back to is not read either.
    required = {
        name: key
        for name, key in loss_keys.items()
        if FALLBACK_ROLES.get(name) not in loss_keys or _norm(key) in present
    }
    missing_loss = [(name, key) for name, key in required.items() if _norm(key) not in present]
    own = {_norm(k) for k in loss_keys.values()}
    missing_net = [
        (key, who)
        for key, who in network_keys.items()
        if _norm(key) not in present and _norm(key) not in own
    ]
    if not missing_loss and not missing_net:
        return
    needed = [fmt_key(k) for k in required.values()] + [fmt_key(k) for k in network_keys]
    missing = list(
        dict.fromkeys([fmt_key(k) for _, k in missing_loss] + [fmt_key(k) for k, _ in missing_net])
    )
    given = sorted(fmt_key(k) for k in present if not _is_subtree(tensordict, k))
    fixes = []
    if missing_loss:
        name, key = missing_loss[0]
        leaf = key[-1] if isinstance(key, tuple) else key
        fixes.append(
            f"if your data names it differently, rename with loss.set_keys({name}='my_{leaf}') "
            f"(renamable: {', '.join(sorted(set(loss_keys)))})"
        )
    if missing_net:
        key, who = missing_net[0]
        fixes.append(f"{fmt_key(key)} is read by the {who}: change that network's in_keys")
    raise MissingInputError(
        f"{owner} needs the keys [{', '.join(dict.fromkeys(needed))}] but the input lacks "
        f"[{', '.join(missing)}]. The input has [{', '.join(given)}]. Fix: "
        + "; ".join(fixes)
        + ". Plain-tensor calls pass nested keys flattened, e.g. next_reward=..."
    )


def read_terminated(tensordict: TensorDictBase, key: NestedKey, done: torch.Tensor) -> torch.Tensor:
    """The terminal flags at ``key``, or ``done`` when the input has none (TorchRL's fallback).

    Args:
        tensordict: The input (or its ``"next"`` sub-TensorDict).
        key: Where the terminal flags are, in ``tensordict``.
        done: The done flags, used in their place when ``key`` is absent.

    Returns:
        The terminal flags.
    """
    terminated = tensordict.get(key, None)
    return done if terminated is None else terminated


def _norm(key: NestedKey) -> NestedKey:
    if isinstance(key, tuple) and len(key) == 1:
        return key[0]
    return key


def _is_subtree(tensordict: TensorDictBase, key: NestedKey) -> bool:
    return isinstance(tensordict.get(key), TensorDictBase)


def tensordict_from_tensors(
    tensors: Mapping[str, Any], feature_keys: Iterable[NestedKey] = ()
) -> TensorDict:
    """Build the TensorDict of a plain-tensor call.

    ``next_<name>`` arguments go to ``("next", <name>)``. The batch size is the shape of a
    reward or done flag without its trailing singleton dim (the contract's layout); when
    none is given, it is the longest shape prefix all tensors share.

    Args:
        tensors: Keyword arguments of the call.
        feature_keys: Further keys (besides reward and done flags) known to carry one
            trailing feature dim, e.g. a loss's renamed reward key.

    Returns:
        The TensorDict, on the device of the tensors.
    """
    entries: dict[NestedKey, torch.Tensor] = {}
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        key: NestedKey = (NEXT, name[len(NEXT) + 1 :]) if name.startswith(f"{NEXT}_") else name
        entries[key] = value
    if not entries:
        raise MissingInputError(
            "a loss called without a TensorDict needs its inputs as keyword arguments, e.g. "
            "loss(observation=obs, action=act, next_reward=rew, ...); none were given"
        )
    leaves = {REWARD, DONE, TERMINATED, TRUNCATED} | {
        k[-1] if isinstance(k, tuple) else k for k in feature_keys
    }
    batch: torch.Size | None = None
    for key, value in entries.items():
        leaf = key[-1] if isinstance(key, tuple) else key
        if leaf in leaves and value.ndim >= 1:
            batch = value.shape[:-1]
            break
    if batch is None:
        shapes = [v.shape for v in entries.values()]
        prefix = []
        for dims in zip(*shapes):
            if len(set(dims)) != 1:
                break
            prefix.append(dims[0])
        batch = torch.Size(prefix)
    td = TensorDict(batch_size=batch)
    for key, value in entries.items():
        if value.shape[: len(batch)] != batch:
            raise ShapeMismatchError(
                f"plain-tensor call: {flat_name(key)} has shape {list(value.shape)}, which "
                f"does not start with the batch shape {list(batch)} (read from the reward or "
                f"done flags, which carry a trailing singleton dim). Give every input the "
                f"same leading batch dims."
            )
        td.set(key, value)
    return td
