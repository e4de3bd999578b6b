"""Input validation shared by losses and value estimators: keys, shapes, plain-tensor calls."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import DONE, NEXT, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.fast_td import fast_get, flat_entries, has_key
from rlblocks.objectives.errors import (
    MissingInputError,
    ObjectiveConfigError,
    ShapeMismatchError,
)

__all__ = [
    "fmt_key",
    "check_same_shape",
    "check_probabilistic",
    "check_keys",
    "env_level_key",
    "broadcast_flag",
    "read_flags",
    "read_discount",
    "tensordict_from_tensors",
    "flat_name",
    "FALLBACK_ROLES",
    "FLAG_ROLES",
]

FALLBACK_ROLES: dict[str, str] = {"terminated": "done"}
"""Roles read only when the input has them, with the role read in their place otherwise.

TorchRL's convention: a batch with ``("next", "done")`` but no ``("next", "terminated")``
treats every end of episode as a termination. :func:`check_keys` does not ask for these keys
and :func:`read_flags` does the fallback.
"""

FLAG_ROLES: tuple[str, ...] = ("done", "terminated")
"""End-of-episode flags. Set to a group's key (``("agents", "done")``), they fall back to the
env-level flags at the root when the group has none of its own (:func:`read_flags`)."""


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


def check_probabilistic(owner: str, actor_network: Any, example: str = "") -> None:
    """Raise unless ``actor_network`` has ``get_dist`` (a probabilistic actor).

    Args:
        owner: The loss or estimator, for the message.
        actor_network: The module given as ``actor_network``.
        example: Words after ``ProbabilisticActor`` in the suggested fix
            (e.g. ``" with TanhNormal"``).

    Raises:
        ObjectiveConfigError: Naming ``owner``, what is needed and the type given.
    """
    if not callable(getattr(actor_network, "get_dist", None)):
        raise ObjectiveConfigError(
            f"{owner}: actor_network must be probabilistic (have get_dist), e.g. a "
            f"ProbabilisticActor{example}; got {type(actor_network).__name__}"
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
    # A flat TensorDict's own dict answers ``in`` for its keys (a nested key is in none);
    # otherwise each key is looked up along its path, without listing every nested key.
    flat = flat_entries(tensordict)

    def present(key: NestedKey) -> bool:
        key = _norm(key)
        return key in flat if flat is not None else has_key(tensordict, key)

    # A fallback role is needed only when the role it falls back to is not read either.
    required = {
        name: key
        for name, key in loss_keys.items()
        if FALLBACK_ROLES.get(name) not in loss_keys or present(key)
    }
    missing_loss = [
        (name, key)
        for name, key in required.items()
        if not present(key)
        # A group without flags of its own reads the env-level ones (read_flags).
        and not (name in FLAG_ROLES and present(env_level_key(key)))
    ]
    own = {_norm(k) for k in loss_keys.values()}
    missing_net = [
        (key, who)
        for key, who in network_keys.items()
        if not present(key) and _norm(key) not in own
    ]
    if not missing_loss and not missing_net:
        return
    needed = [fmt_key(k) for k in required.values()] + [fmt_key(k) for k in network_keys]
    missing = list(
        dict.fromkeys([fmt_key(k) for _, k in missing_loss] + [fmt_key(k) for k, _ in missing_net])
    )
    keys = tensordict.keys(include_nested=True)
    given = sorted(fmt_key(k) for k in keys if not _is_subtree(tensordict, k))
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


def env_level_key(key: NestedKey) -> NestedKey:
    """The env-level flag that a group's flag falls back to.

    ``(g, "done")`` -> ``"done"`` and ``("next", g, "done")`` -> ``("next", "done")``; a key
    at the root (``"done"``, ``("next", "done")``) is returned as is.
    """
    if not isinstance(key, tuple):
        return key
    if key[0] == NEXT:
        return key if len(key) <= 2 else (NEXT, key[-1])
    return key[-1]


def broadcast_flag(
    owner: str,
    key: NestedKey,
    flag: torch.Tensor,
    like_key: NestedKey,
    like: torch.Tensor,
    batch_dims: int,
) -> torch.Tensor:
    """``flag`` shaped like ``like``: env-level flags broadcast over a group's agent dims.

    A flag shaped like ``like`` is returned as is (the single-agent case costs one shape
    comparison). An env-level flag ``[*batch, 1]`` read for a grouped ``like``
    ``[*batch, n_agents, 1]`` gets singleton dims inserted after the batch dims and is
    expanded (a view, no copy): every agent's episode ends with the env's.

    Args:
        owner: The loss or estimator, for the error message.
        key: Where ``flag`` was read.
        flag: The flags.
        like_key: Where ``like`` was read (the reward).
        like: The tensor whose shape the flags take.
        batch_dims: The number of batch dims of the input TensorDict.

    Returns:
        The flags, shaped like ``like``.

    Raises:
        ShapeMismatchError: ``flag`` is neither shaped like ``like`` nor ``like`` without
            its agent dims; the message names both keys and shapes.
    """
    if flag.shape == like.shape:
        return flag
    extra = like.ndim - flag.ndim
    batch, features = flag.shape[:batch_dims], flag.shape[batch_dims:]
    if (
        extra > 0
        and like.shape[:batch_dims] == batch
        and like.shape[batch_dims + extra :] == features
    ):
        return flag.reshape(*batch, *(1,) * extra, *features).expand(like.shape)
    raise ShapeMismatchError(
        f"{owner}: {fmt_key(key)} has shape {list(flag.shape)} but {fmt_key(like_key)} has "
        f"shape {list(like.shape)}; flags must have the reward's shape or, read at the root "
        f"for a group, its shape without the agent dim. Rewards and flags carry a trailing "
        f"singleton dim ([*batch, 1]; per agent [*batch, n_agents, 1]): fix the producer, "
        f"and check that every key of a group has the same number of agents."
    )


def read_flags(
    owner: str,
    tensordict: TensorDictBase,
    done_key: NestedKey,
    terminated_key: NestedKey,
    like_key: NestedKey,
    like: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``done`` and ``terminated`` flags of a batch, shaped like ``like`` (the reward).

    The two are read from one place: at ``done_key``/``terminated_key`` when ``done_key`` is
    in ``tensordict``, else at their :func:`env_level_key` (a group whose env writes only
    the env-level flags, e.g. VMAS). A missing ``terminated`` is ``done`` (TorchRL's
    fallback). Env-level flags read for a group are broadcast over its agent dims with
    :func:`broadcast_flag`.

    Args:
        owner: The loss or estimator, for error messages.
        tensordict: The input (keys are looked up from its root).
        done_key: Where the done flags are (e.g. ``("next", "agents", "done")``).
        terminated_key: Where the terminal flags are.
        like_key: Where ``like`` was read.
        like: The reward the flags go with.

    Returns:
        ``(done, terminated)``, shaped like ``like``.
    """
    done = fast_get(tensordict, done_key)
    if done is None:
        done_key, terminated_key = env_level_key(done_key), env_level_key(terminated_key)
        done = tensordict.get(done_key)
    terminated = fast_get(tensordict, terminated_key)
    if terminated is None:
        terminated, terminated_key = done, done_key
    batch_dims = tensordict.batch_dims
    return (
        broadcast_flag(owner, done_key, done, like_key, like, batch_dims),
        broadcast_flag(owner, terminated_key, terminated, like_key, like, batch_dims),
    )


def read_discount(
    owner: str,
    tensordict: TensorDictBase,
    gamma: float | torch.Tensor,
    steps_key: NestedKey,
    like_key: NestedKey,
    like: torch.Tensor,
) -> float | torch.Tensor:
    """The discount of the bootstrapped value: ``gamma``, or ``gamma ** steps`` per sample.

    A batch of n-step transitions (``rlblocks.buffers.MultiStepTransform``) says at
    ``steps_key`` how many steps each next observation is ahead; without that key the
    discount is ``gamma`` (one-step transitions).

    Args:
        owner: The loss or estimator, for error messages.
        tensordict: The input.
        gamma: The one-step discount (a float, or a tensor shaped like ``like``).
        steps_key: Where the step counts are (``"steps_to_next_obs"``), shaped
            ``[*batch, 1]`` or ``[*batch]`` (TorchRL's layout).
        like_key: Where ``like`` was read.
        like: The reward the discount goes with.

    Returns:
        ``gamma``, or a tensor shaped like ``like``.
    """
    steps = fast_get(tensordict, steps_key)
    if steps is None:
        return gamma
    if steps.shape == like.shape[:-1] and like.shape[-1:] == (1,):
        steps = steps.unsqueeze(-1)
    steps = broadcast_flag(owner, steps_key, steps, like_key, like, tensordict.batch_dims)
    return gamma ** steps.to(like.dtype)


def _norm(key: NestedKey) -> NestedKey:
    if isinstance(key, tuple) and len(key) == 1:
        return key[0]
    return key


def _is_subtree(tensordict: TensorDictBase, key: NestedKey) -> bool:
    return isinstance(tensordict.get(key), TensorDictBase)


def tensordict_from_tensors(
    tensors: Mapping[str, Any],
    feature_keys: Iterable[NestedKey] = (),
    nested_keys: Mapping[str, NestedKey] | None = None,
) -> TensorDict:
    """Build the TensorDict of a plain-tensor call.

    An argument named like one of ``nested_keys`` (a loss's keys, flattened with ``_``)
    goes to that key: ``agents_action`` to ``("agents", "action")``, ``next_agents_reward``
    to ``("next", "agents", "reward")``. Other ``next_<name>`` arguments go to
    ``("next", <name>)``, the rest to the root.

    The batch size is the shape of a reward, done flag or feature key without its trailing
    singleton dim (the contract's layout), read preferably from one at the root such as
    ``next_done``; one under a group (``[*batch, n_agents, 1]``) also loses its agent dim.
    When none is given, it is the longest shape prefix all tensors share.

    Args:
        tensors: Keyword arguments of the call.
        feature_keys: Further keys (besides reward and done flags) known to carry one
            trailing feature dim, e.g. a loss's renamed reward key.
        nested_keys: ``{flattened name: key}`` for the nested keys the caller reads.

    Returns:
        The TensorDict, on the device of the tensors.
    """
    nested_keys = nested_keys or {}
    entries: dict[NestedKey, torch.Tensor] = {}
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        key = nested_keys.get(name)
        if key is None:
            key = (NEXT, name[len(NEXT) + 1 :]) if name.startswith(f"{NEXT}_") else name
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
        if leaf not in leaves or value.ndim < 1:
            continue
        if _group_depth(key) == 0:
            batch = value.shape[:-1]
            break
        if batch is None and value.ndim >= 2:
            batch = value.shape[:-2]  # under a group: [*batch, n_agents, 1]
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


def _group_depth(key: NestedKey) -> int:
    """How many groups ``key`` is nested under (``"next"`` aside)."""
    if not isinstance(key, tuple):
        return 0
    return len(key) - 1 - (key[0] == NEXT)
