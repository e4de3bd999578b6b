"""Calls of tensordict.nn modules for per-step hot paths, with the module's call as fallback.

Calling a ``tensordict.nn.TensorDictModule`` costs more than the small MLP it usually wraps:
argument dispatch, skip-existing handling, key unravelling and error wrapping take ~10 us a
call, and a ``TensorDictSequential`` adds its own walk over its modules. A collector calls its
policy once per env step and a loss calls its networks once per update, so for modules whose
call does nothing beyond reading inputs, calling the wrapped module and writing outputs,
:func:`direct_call` does just that: same outputs, a fraction of the overhead. Anything else
(hooks, keyword inputs, selected out keys, other module classes) keeps its own call.
:func:`plain_forward` is the same read-call-write for the ``forward`` of a subclass that
keeps ``TensorDictModule``'s (hooks then run in ``nn.Module.__call__`` around it).

Used by the collectors (the policy) and, in rlblocks-objectives, by the actors' stages
(a sampling ``ProbabilisticTensorDictModule`` included), the ``forward`` of ``ValueOperator``
and ``SafeModule``, and the losses' network calls (:func:`module_call`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import (
    CompositeDistribution,
    InteractionType,
    ProbabilisticTensorDictModule,
    TensorDictModule,
    TensorDictSequential,
    interaction_type,
    skip_existing,
)
from torch import nn

from rlblocks.core.errors import ModuleOutputError

__all__ = ["TensorDictFn", "direct_call", "keeps_plain_forward", "module_call", "plain_forward"]

TensorDictFn = Callable[[TensorDictBase], TensorDictBase]


def _has_hooks(module: nn.Module) -> bool:
    """Whether ``module(...)`` does more than ``module.forward(...)``: hooks, or a
    ``module.compile()``d call."""
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._compiled_call_impl is not None
    )


def _is_plain_module(policy: Any) -> bool:
    return type(policy) is TensorDictModule and not _has_hooks(policy) and _reads_and_writes(policy)


def _reads_and_writes(policy: TensorDictModule) -> bool:
    """Whether ``policy.forward`` only reads the inputs, calls the network and writes the
    outputs in place. Keyword inputs, a method, non in-place output or selected out keys
    all change what it does; such modules keep going through it."""
    if policy._kwargs is not None:
        return False
    if policy.method is not None or policy.method_kwargs or policy._get_kwargs:
        return False
    if policy.inplace is not True or "_" in policy.out_keys:
        return False
    return list(policy.out_keys) == list(policy.out_keys_source)


def _is_plain_sequence(policy: Any) -> bool:
    """A ``TensorDictSequential`` (or a subclass that keeps its call, e.g. ``QValueActor``)
    that runs its modules in place, in order, and returns what they wrote."""
    if not isinstance(policy, TensorDictSequential) or _has_hooks(policy):
        return False
    cls = type(policy)
    for name in ("forward", "_run_module", "_module_iter"):
        if getattr(cls, name) is not getattr(TensorDictSequential, name):
            return False
    if policy.partial_tolerant or policy.inplace not in (None, True):
        return False
    return list(policy.out_keys) == list(policy.out_keys_source)


def direct_call(module: Any) -> TensorDictFn | None:
    """A function computing ``module(td)`` without tensordict.nn's per-call wrappers, or
    ``None`` when ``module`` must keep its own call.

    A plain ``TensorDictModule`` (its own class, no hooks, no keyword inputs, no method,
    written in place, no selected out keys) is called as "read the inputs, call the wrapped
    module, write the outputs"; a plain ``TensorDictSequential`` (or a subclass that keeps
    its call, e.g. ``QValueActor``) runs the direct calls of its modules in order, other
    modules as they are; a ``ProbabilisticTensorDictModule`` (its own class) that samples
    is called as "build the distribution, draw, write the draw and its log-probability".
    Each falls back to ``module(td)`` for a missing input (so that tensordict's error names
    it), for hooks registered since, and for a sequence given other modules since; the
    sampler also for anything but a plain draw (see :func:`_sampler_call`).

    Args:
        module: Anything; only the three kinds above get a direct call.

    Returns:
        The function (``td -> td``, writing into ``td`` as ``module`` does), or ``None``.
    """
    if _is_plain_module(module):
        return _module_call(module)
    if _is_plain_sequence(module):
        return _sequence_call(module)
    if type(module) is ProbabilisticTensorDictModule and not module._warn_default_out_key:
        return _sampler_call(module)
    return None


def _module_call(policy: TensorDictModule) -> TensorDictFn:
    """Read the inputs, call the wrapped module, write the outputs."""
    module = policy.module
    in_keys = list(policy.in_keys)
    out_keys = list(policy.out_keys)

    def call(td: TensorDictBase) -> TensorDictBase:
        if _has_hooks(policy) or skip_existing():  # hooks registered since run
            return policy(td)
        out = _read_call_write(policy, module, in_keys, out_keys, td)
        return policy(td) if out is None else out  # a missing input: tensordict names it

    return call


# TensorDictModule subclasses whose forward does what TensorDictModule's does (see
# keeps_plain_forward): module_call may skip their call.
_PLAIN_FORWARD: set[type] = {TensorDictModule}


def keeps_plain_forward(cls: type[TensorDictModule]) -> type[TensorDictModule]:
    """Declare (as a class decorator) that ``cls.forward`` computes what
    ``TensorDictModule.forward`` does, so that :func:`module_call` may run its
    read-call-write directly. Returns ``cls``."""
    _PLAIN_FORWARD.add(cls)
    return cls


def module_call(module: Any, td: TensorDictBase) -> TensorDictBase:
    """``module(td)``: for a ``TensorDictModule`` (or a class declared with
    :func:`keeps_plain_forward`) without hooks, its read-call-write directly where
    :func:`plain_forward` serves; any other module, or setting, through its own call.

    For calls that look their module up each time (a loss's networks, once or twice per
    update): the checks run at each call, nothing is cached.
    """
    if type(module) in _PLAIN_FORWARD and not _has_hooks(module):
        out = plain_forward(module, td)
        if out is not None:
            return out
    return module(td)


def plain_forward(policy: TensorDictModule, td: TensorDictBase) -> TensorDictBase | None:
    """``policy.forward(td)`` without tensordict.nn's per-call wrappers, for a module class
    that keeps ``TensorDictModule``'s forward: the inputs read, the network called, the
    outputs written into ``td``, which is returned. ``None``, having done nothing, when the
    forward must run as it is: keyword inputs, a method, outputs not written in place or
    selected, ``skip_existing`` on, or an input missing (so that tensordict's error names it).

    For a subclass's ``forward`` (hooks run around it, in ``nn.Module.__call__``); checked at
    each call, so attributes changed since are honoured.
    """
    if skip_existing() or not _reads_and_writes(policy):
        return None
    return _read_call_write(policy, policy.module, policy.in_keys, policy.out_keys, td)


def _read_call_write(
    policy: TensorDictModule,
    module: Callable,
    in_keys: list,
    out_keys: list,
    td: TensorDictBase,
) -> TensorDictBase | None:
    """``module`` on ``td``'s ``in_keys``, its outputs written at ``out_keys``; ``None``,
    having done nothing, when an input is missing."""
    inputs = [td.get(k, None) for k in in_keys]
    for value in inputs:
        if value is None:
            return None
    out = module(*inputs)
    if len(out_keys) == 1 and type(out) is torch.Tensor:
        td.set(out_keys[0], out)
    else:
        _write_outputs(policy, td, out)
    return td


def _sampler_call(sampler: ProbabilisticTensorDictModule) -> TensorDictFn:
    """Build the distribution, draw one value, write it (and its log-probability) in place.

    What ``sampler(td)`` does under ``InteractionType.RANDOM`` without a generator, extra
    samples or ``skip_existing``, for a distribution that is not a ``CompositeDistribution``:
    ``rsample_and_log_prob``/``sample_and_log_prob`` where the distribution defines it and
    the log-probability is written (the score of the very draw), else ``rsample()`` or
    ``sample()`` then ``log_prob``. Anything else, checked at each call, is the sampler's
    own call: its generic path costs about 20 us a call, most of a small policy's overhead.
    """

    def call(td: TensorDictBase) -> TensorDictBase:
        if (
            _has_hooks(sampler)
            or skip_existing()
            or sampler._generator is not None
            or sampler._generator_key is not None
            or sampler.num_samples is not None
            or (interaction_type() or sampler.default_interaction_type)
            is not InteractionType.RANDOM
        ):
            return sampler(td)
        dist = sampler.get_dist(td)
        if isinstance(dist, CompositeDistribution):  # built twice: composites are rare
            return sampler(td)
        with_log_prob = sampler.return_log_prob
        joint = _joint_sample_and_log_prob(dist) if with_log_prob else None
        if joint is not None:
            sample, log_prob = joint(torch.Size(()))
        else:
            sample, log_prob = (dist.rsample() if dist.has_rsample else dist.sample()), None
        samples = (sample,) if isinstance(sample, torch.Tensor) else sample
        for key, value in zip(sampler.dist_sample_keys, samples, strict=True):
            td.set(key, value)
        if with_log_prob:
            td.set(sampler.log_prob_key, dist.log_prob(*samples) if log_prob is None else log_prob)
        return td

    return call


def _joint_sample_and_log_prob(dist: Any) -> Callable | None:
    """The method that draws and scores the same draw, where the distribution has one."""
    name = "rsample_and_log_prob" if dist.has_rsample else "sample_and_log_prob"
    return getattr(dist, name) if callable(getattr(type(dist), name, None)) else None


def _sequence_call(policy: TensorDictSequential) -> TensorDictFn:
    """Run the modules' direct calls in order, as ``TensorDictSequential`` runs them."""
    children = policy.module
    modules = _children(children)
    steps = [(direct_call(m) or m, m) for m in modules]
    out_keys = list(policy.out_keys)
    into_input = policy.inplace is True  # None: return what the last module returned

    def call(td: TensorDictBase) -> TensorDictBase:
        if _has_hooks(policy) or _children(children) != modules:  # changed since: as it is
            return policy(td)
        current = td
        for number, (step, module) in enumerate(steps):
            try:
                current = step(current)
            except Exception as error:
                # The note TensorDictSequential adds: which module failed.
                error.add_note(f"Failed while executing module '{number}' ({module}).")
                raise
        if into_input and current is not td:  # a module returned a new TensorDict
            td.update(current, keys_to_update=out_keys)
            return td
        return current

    return call


def _children(container: nn.Module) -> tuple[nn.Module, ...]:
    return tuple(container.values() if isinstance(container, nn.ModuleDict) else container)


def _write_outputs(policy: TensorDictModule, td: TensorDictBase, out: Any) -> None:
    """Write a module's output to ``td`` the way ``TensorDictModule`` does."""
    out_keys = list(policy.out_keys)
    if isinstance(out, (dict, TensorDictBase)) and all(k in out for k in out_keys):
        out = tuple(out[k] for k in out_keys)
    elif not isinstance(out, tuple):
        out = (out,)
    if len(out) != len(out_keys):
        raise ModuleOutputError(
            f"{type(policy.module).__name__} returned {len(out)} outputs but its "
            f"TensorDictModule has {len(out_keys)} out_keys {out_keys}. Fix: give one out_key "
            f"per output."
        )
    for key, value in zip(out_keys, out):
        td.set(key, value if isinstance(value, torch.Tensor) else TensorDict.from_any(value))
