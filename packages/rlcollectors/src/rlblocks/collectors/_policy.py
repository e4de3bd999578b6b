"""How a collector calls its policy: the fast path, compiling, device moves, weight syncing.

A policy is any callable ``TensorDict -> TensorDict``. A plain ``TensorDictModule`` or
``TensorDictSequential`` (a Q-value actor followed by epsilon-greedy exploration) is called
through :func:`rlblocks.core.fast_module.direct_call`, without tensordict.nn's per-call
wrappers: the same result, a fraction of the overhead. Anything else is called as given.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from rlblocks.collectors.errors import CollectorConfigError
from rlblocks.core.fast_module import direct_call
from rlblocks.core.utils import TORCH_COMPILE_ARGS, error_summary

__all__ = [
    "CompiledPolicy",
    "PolicyFn",
    "check_compile_policy",
    "check_policy",
    "fast_policy_call",
    "policy_weights",
    "place_policy",
    "as_weights",
]

PolicyFn = Callable[[TensorDictBase], TensorDictBase]


def check_policy(owner: str, policy: Any) -> None:
    """Raise unless ``policy`` is ``None`` or a callable."""
    if policy is not None and not callable(policy):
        raise CollectorConfigError(
            f"{owner}: policy must be a callable TensorDict -> TensorDict (e.g. a "
            f"tensordict.nn.TensorDictModule) or None for random actions, got "
            f"{type(policy).__name__}. Fix: wrap your network, e.g. "
            f"TensorDictModule(net, in_keys=['observation'], out_keys=['action'])."
        )


def fast_policy_call(policy: PolicyFn) -> PolicyFn:
    """Return a function that computes ``policy(td)`` with the least Python overhead: the
    :func:`~rlblocks.core.fast_module.direct_call` of a plain ``TensorDictModule`` or
    ``TensorDictSequential`` (``QValueActor``, ``TensorDictSequential(actor,
    EGreedyModule(spec))``...), unless global module hooks are set.

    Args:
        policy: The policy.

    Returns:
        A callable with the semantics of ``policy`` (writes into and returns ``td``), with
        the policy's ``in_keys``/``out_keys``; ``policy`` itself when nothing is gained.
    """
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return policy
    call = direct_call(policy)
    if call is None:
        return policy
    # What the policy reads and writes: lets an env's fast rollout loop drive the call.
    call.in_keys = list(policy.in_keys)  # type: ignore[attr-defined]
    call.out_keys = list(policy.out_keys)  # type: ignore[attr-defined]
    return call


def check_compile_policy(owner: str, compile_policy: Any) -> dict[str, Any] | None:
    """The ``torch.compile`` keyword arguments ``compile_policy`` asks for, or ``None``.

    Raises:
        CollectorConfigError: ``compile_policy`` is not a bool or a mapping of
            ``torch.compile`` arguments.
    """
    if compile_policy is None or compile_policy is False:
        return None
    if compile_policy is True:
        return {}
    if not isinstance(compile_policy, Mapping):
        raise CollectorConfigError(
            f"{owner}: compile_policy must be True, False or a dict of torch.compile keyword "
            f"arguments (e.g. {{'mode': 'reduce-overhead'}}), got "
            f"{type(compile_policy).__name__} {compile_policy!r}"
        )
    unknown = sorted(set(compile_policy) - TORCH_COMPILE_ARGS)
    if unknown:
        raise CollectorConfigError(
            f"{owner}: compile_policy has {unknown}, which torch.compile does not take; its "
            f"arguments are {sorted(TORCH_COMPILE_ARGS)}"
        )
    try:  # torch.compile checks the mode, backend and options when called (lazily compiles)
        torch.compile(_identity, **compile_policy)
    except Exception as error:
        raise CollectorConfigError(
            f"{owner}: torch.compile rejected compile_policy={dict(compile_policy)!r} "
            f"({type(error).__name__}: {error}); fix that argument, or pass "
            f"compile_policy=True for torch.compile's defaults"
        ) from error
    return dict(compile_policy)


def _identity(tensordict: TensorDictBase) -> TensorDictBase:
    return tensordict


class CompiledPolicy:
    """``policy`` called through ``torch.compile``, eager from the first call that fails
    to compile (after one warning), with the same results.

    Compiling happens at the first call. If a call fails, the policy runs eager on the
    same input: when that fails too, the input was at fault and its error is raised (the
    compiled path stays); otherwise compiling was at fault, and every later call runs
    eager. ``in_keys``/``out_keys`` are the policy's (an env's fast loop reads them).

    Args:
        policy: The policy (or its fast call, see :func:`fast_policy_call`).
        options: ``torch.compile`` keyword arguments, as :func:`check_compile_policy`
            returns them.
        owner: Who compiles it, for the messages.
    """

    def __init__(self, policy: PolicyFn, options: Mapping[str, Any], owner: str) -> None:
        self._eager = policy
        self._owner = owner
        self._compiled: PolicyFn | None = torch.compile(policy, **options)
        for name in ("in_keys", "out_keys"):
            if hasattr(policy, name):
                setattr(self, name, list(getattr(policy, name)))

    @property
    def compiled(self) -> bool:
        """Whether calls run compiled (``False`` after a fallback)."""
        return self._compiled is not None

    def __call__(self, tensordict: TensorDictBase) -> TensorDictBase:
        compiled = self._compiled
        if compiled is None:
            return self._eager(tensordict)
        try:
            return compiled(tensordict)
        except Exception as error:
            failure = error
        # Bad input fails eager too, with the policy's own error: raised as is.
        out = self._eager(tensordict)
        self._compiled = None
        warnings.warn(
            f"{self._owner}: compiling the policy failed ({error_summary(failure)}); it runs "
            f"eager now, with the same results (pass compile_policy=False to skip compiling).",
            UserWarning,
            stacklevel=2,
        )
        return out


def policy_weights(policy: Any) -> TensorDictBase | None:
    """The parameters and buffers of ``policy`` as a TensorDict of plain tensors, or ``None``."""
    if not isinstance(policy, nn.Module):
        return None
    weights = TensorDict.from_module(policy, as_module=False).data
    return weights if not weights.is_empty() else None


def as_weights(weights: Mapping[str, Any] | TensorDictBase) -> TensorDictBase:
    """Weights given as a TensorDict, or as a ``state_dict`` (``"a.b.weight"`` keys)."""
    if isinstance(weights, TensorDictBase):
        return weights
    return TensorDict(dict(weights)).unflatten_keys(".")


def place_policy(policy: Any, device: torch.device | None) -> tuple[Any, Any | None]:
    """Put ``policy`` on ``device``, copying it when its weights live elsewhere.

    Returns:
        ``(policy_to_call, source)``: ``source`` is the user's policy when a copy was made
        (its weights are copied into the copy by ``update_policy_weights_``), else ``None``.
    """
    if device is None or not isinstance(policy, nn.Module):
        return policy, None
    tensors = [*policy.parameters(), *policy.buffers()]
    if all(t.device == device for t in tensors):
        return policy, None
    return copy.deepcopy(policy).to(device), policy
