"""``LossModule``: keys, value estimators, target networks and the plain-tensor call.

Also the target-network updaters :class:`SoftUpdate` and :class:`HardUpdate`, and helpers
the losses share (distance functions, frozen-parameter calls, log-probabilities).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torch import Tensor, nn
from torch import distributions as D
from torch.nn.parameter import is_lazy

from rlblocks.core import NEXT
from rlblocks.core.fast_module import module_call
from rlblocks.core.fast_td import new_tensordict, shallow_copy
from rlblocks.objectives._checks import (
    check_keys,
    check_same_shape,
    flat_name,
    tensordict_from_tensors,
)
from rlblocks.objectives._keys import TensorKeys
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules._ensemble import BatchedEnsemble, reinitialized_copies
from rlblocks.objectives.value import (
    ValueEstimatorBase,
    ValueEstimators,
    make_value_estimator,
    parse_value_estimator,
)

__all__ = [
    "LossModule",
    "remember",
    "RequiredKeys",
    "SoftUpdate",
    "HardUpdate",
    "total_loss",
    "distance_loss",
    "network_output",
    "check_distance",
    "next_key",
    "frozen_call",
    "reduce_to_batch",
    "per_sample_dims",
    "as_column",
    "entropy",
    "sample_with_log_prob",
    "ensemble",
    "check_initialized",
    "required_in_keys",
    "merge_network_keys",
]


def remember(owner: object, name: str, value: Any) -> Any:
    """``setattr(owner, name, value)``, except while ``torch.compile`` traces; ``value``.

    For what a loss works out at its first call and keeps (a target entropy read from the
    batch's action...): set inside a compiled call's trace, it would change what the
    graph's guards read and compile the loss again at the next call. The traced graph holds
    the value; the next eager call keeps it.
    """
    if not torch.compiler.is_compiling():
        setattr(owner, name, value)
    return value


_SCALAR = torch.Size([])  # the batch size of a loss's output

# Roles a loss shares with its value estimator (renaming one renames both). Their keys also
# carry one trailing feature dim, which tells a plain-tensor call the batch shape.
_VALUE_ROLES = ("reward", "done", "terminated", "advantage", "value_target", "value")
# Renaming these renames them in the estimator too (n-step step counts have no feature dim
# in TorchRL's layout, so they do not tell the batch shape; V-trace reads the actions and
# their behaviour log-probabilities).
_FORWARDED_ROLES = (*_VALUE_ROLES, "steps_to_next_obs", "action", "sample_log_prob")

RequiredKeys = tuple[dict[str, NestedKey], dict[NestedKey, str]]
"""What a call reads: ``({role: key} read by the loss, {key: network} read by its networks)``."""


def next_key(key: NestedKey) -> tuple[str, ...]:
    """``("next", *key)``."""
    return (NEXT, *key) if isinstance(key, tuple) else (NEXT, key)


def total_loss(losses: Mapping[str, Tensor] | TensorDictBase) -> Tensor:
    """Sum the ``loss_*`` entries of a loss output (what you call ``backward()`` on).

    Example:
        >>> total_loss(loss(batch)).backward()
    """
    terms = [v for k, v in losses.items() if isinstance(k, str) and k.startswith("loss_")]
    if not terms:
        raise ObjectiveConfigError(f"total_loss: no 'loss_*' entry in {sorted(losses.keys())}")
    scalars = [t if t.ndim == 0 else t.sum() for t in terms]
    return sum(scalars[1:], start=scalars[0])


_DISTANCES = {
    "l1": lambda a, b: (a - b).abs(),
    # mse_loss(reduction="none")'s values and gradients, without its Python-side
    # broadcasting checks (shapes are checked before): ~5 us of a small critic's update.
    "l2": lambda a, b: (a - b).square(),
    "smooth_l1": lambda a, b: nn.functional.smooth_l1_loss(a, b, reduction="none"),
}


def distance_loss(owner: str, prediction: Tensor, target: Tensor, kind: str) -> Tensor:
    """Elementwise ``l1``, ``l2`` (squared error) or ``smooth_l1`` (Huber, delta 1).

    Raises:
        ShapeMismatchError: ``prediction`` and ``target`` differ in shape.
    """
    check_same_shape(owner, "the prediction", prediction, "the target", target)
    return _DISTANCES[kind](prediction, target)


def check_distance(owner: str, kind: str) -> str:
    """Validate a ``loss_function`` argument."""
    if kind not in _DISTANCES:
        raise ObjectiveConfigError(
            f"{owner}: loss_function must be one of {sorted(_DISTANCES)}, got {kind!r}"
        )
    return kind


def network_output(network: nn.Module, tensordict: TensorDictBase, key: NestedKey) -> Any:
    """What ``network`` writes at ``key`` when run on a shallow copy of ``tensordict``
    (which is left as it was): how a loss reads its networks, once or twice per update,
    without tensordict.nn's per-call wrappers where they change nothing
    (:func:`~rlblocks.core.fast_module.module_call`)."""
    return module_call(network, shallow_copy(tensordict)).get(key)


def frozen_call(module: nn.Module, tensordict: TensorDictBase) -> TensorDictBase:
    """Run ``module`` on a shallow copy of ``tensordict`` with its parameters detached.

    Gradients still flow through the inputs (e.g. an action from the actor) but none reach
    the module's parameters: how an actor loss reads a critic.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    # Dynamo cannot trace requires_grad_(), and only leaves have the flag to change (not,
    # e.g., parameters an outer torch.func.functional_call swapped in as computed tensors).
    if torch.compiler.is_compiling() or not all(p.is_leaf for p in params):
        detached = {name: p.detach() for name, p in module.named_parameters()}
        return torch.func.functional_call(
            module, detached, (shallow_copy(tensordict),), strict=False
        )
    # Otherwise the parameters stop requiring grad for the call (autograd records that at
    # each op, so their uses before and after are unaffected): the result of the functional
    # call above, without its swapping of every parameter in and out, which cost ~10% of a
    # 256x256 critic's forward pass at batch 256 (380 vs 345 us).
    for p in params:
        p.requires_grad_(False)
    try:
        return module_call(module, shallow_copy(tensordict))
    finally:
        for p in params:
            p.requires_grad_(True)


def reduce_to_batch(x: Tensor, batch_dims: int) -> Tensor:
    """Sum the dims after the first ``batch_dims`` (e.g. per-dimension log-probabilities)."""
    if x.ndim > batch_dims:
        return x.sum(tuple(range(batch_dims, x.ndim)))
    return x


def per_sample_dims(batch_dims: int, like: Tensor) -> int:
    """How many leading dims a per-sample quantity keeps: those of ``like`` but its last.

    ``like`` is a per-sample value (an advantage, ``Q(s, a)``) shaped ``[*batch, 1]``, or
    ``[*batch, n_agents, 1]`` for a group: log-probabilities and entropies are reduced to
    ``[*batch]`` or ``[*batch, n_agents]`` accordingly (per agent, never summed over
    agents). Never fewer than ``batch_dims``, so a ``like`` without its trailing singleton
    dim keeps the single-agent reduction.
    """
    return max(batch_dims, like.ndim - 1)


def as_column(owner: str, name: str, x: Tensor, like_name: str, like: Tensor) -> Tensor:
    """Give a per-sample tensor ``[*batch]`` the trailing singleton dim of ``like``.

    Raises:
        ShapeMismatchError: ``x`` is neither shaped like ``like`` nor like it without its
            trailing singleton dim.
    """
    if x.shape == like.shape:
        return x
    if like.shape[-1:] == (1,) and x.shape == like.shape[:-1]:
        return x.unsqueeze(-1)
    raise ShapeMismatchError(
        f"{owner}: {name} has shape {list(x.shape)} and {like_name} has shape "
        f"{list(like.shape)}; expected {name} shaped {list(like.shape[:-1])} (per sample) or "
        f"{list(like.shape)}. Nothing is broadcast: fix the producer of {name}."
    )


def entropy(dist: D.Distribution, batch_dims: int, samples: int) -> Tensor:
    """The entropy per sample, estimated from ``samples`` draws where it has no closed form."""
    try:
        return reduce_to_batch(dist.entropy(), batch_dims)
    except NotImplementedError:
        pass
    shape = torch.Size([samples])
    joint = getattr(dist, "rsample_and_log_prob", None)
    if joint is not None:
        _, log_prob = joint(shape)
    else:
        draw = dist.rsample(shape) if dist.has_rsample else dist.sample(shape)
        log_prob = dist.log_prob(draw)
    return -reduce_to_batch(log_prob, batch_dims + 1).mean(0)


def sample_with_log_prob(dist: D.Distribution) -> tuple[Tensor, Tensor]:
    """A reparameterized action and its log-probability as ``dist`` gives it.

    Reduce the log-probability with :func:`reduce_to_batch` (a plain ``Normal`` gives one
    per action dim).
    """
    joint = getattr(dist, "rsample_and_log_prob", None)
    if joint is not None:
        return joint()
    action = dist.rsample()
    return action, dist.log_prob(action)


def _frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters are buffers: saved and moved, never trained."""
    target = copy.deepcopy(module)
    for sub in target.modules():
        for pname, param in list(sub._parameters.items()):
            if param is None:
                continue
            del sub._parameters[pname]
            sub.register_buffer(pname, param.detach())
    return target


def ensemble(
    owner: str, name: str, module: nn.Module, n: int, *, batched: bool = False
) -> nn.ModuleList | BatchedEnsemble:
    """``n`` critics: ``module`` and copies re-initialized so that the members differ.

    Returns:
        ``[module, copy_1, ...]`` as an ``nn.ModuleList`` (run one after the other), or with
        ``batched`` a :class:`BatchedEnsemble` (stacked parameters, one vmapped call).
    """
    if n < 1:
        raise ObjectiveConfigError(f"{owner}: num_qvalue_nets must be >= 1, got {n}")
    check_initialized(owner, name, module)
    if batched:
        return BatchedEnsemble(module, n)
    return nn.ModuleList(reinitialized_copies(module, n))


def check_initialized(owner: str, name: str, module: nn.Module) -> None:
    """Raise if ``module`` still has uninitialized lazy parameters."""
    if any(is_lazy(p) for p in module.parameters()):
        raise ObjectiveConfigError(
            f"{owner}: {name} has uninitialized lazy layers; call it once on a sample batch "
            f"(e.g. {name}(batch)) before building the loss"
        )


def merge_network_keys(*maps: Mapping[NestedKey, str]) -> dict[NestedKey, str]:
    """Merge ``{key: network}`` maps; a key read by several networks names them all."""
    out: dict[NestedKey, str] = {}
    for mapping in maps:
        for key, who in mapping.items():
            out[key] = who if key not in out or who in out[key] else f"{out[key]} and the {who}"
    return out


def required_in_keys(module: nn.Module) -> list[NestedKey]:
    """A network's ``in_keys`` without those its submodules read only when present."""
    optional = {k for m in module.modules() for k in getattr(m, "optional_in_keys", ()) or ()}
    return [k for k in getattr(module, "in_keys", []) if k not in optional]


class LossModule(nn.Module):
    """Base class of the losses.

    A loss reads a TensorDict batch and returns a TensorDict of scalar ``loss_*`` terms
    (sum them with :func:`total_loss` and call ``backward()``) plus detached diagnostics.
    It can also be called with plain tensors as keyword arguments, nested keys flattened with
    ``_`` (``loss(observation=..., next_reward=...)``; for a group's keys
    ``agents_action=...``, ``next_agents_reward=...``); it then returns a ``dict`` with the
    same values.

    Losses work on grouped (multi-agent) batches too: set group keys with :meth:`set_keys`
    (``action=("agents", "action")``...). Rewards, values and advantages then carry an agent
    dim (``[*batch, n_agents, 1]``), log-probabilities and entropies are taken per agent,
    and reductions average over agents as over samples. When the group has no done flags of
    its own, the env-level ``("next", "done")``/``("next", "terminated")`` are read and
    broadcast over the agents.

    The keys it reads are renamed by role with :meth:`set_keys`; :attr:`tensor_keys` lists
    the roles. As in TorchRL, ``("next", "terminated")`` may be absent: ``("next", "done")``
    is then read in its place. Target networks are frozen copies held by the loss
    (``target_<name>``), moved with it and saved in its ``state_dict`` but absent from
    ``parameters()``; update them with :class:`SoftUpdate` or :class:`HardUpdate`.

    Subclasses set :attr:`default_keys` and implement :meth:`_required_keys` and
    :meth:`_loss`.

    Example:
        >>> loss = SACLoss(actor, qvalue).set_keys(reward="rew")
        >>> out = loss(batch)                      # TensorDict of loss_* terms
        >>> out = loss(observation=obs, action=act, next_observation=obs2,
        ...            next_rew=r, next_done=d, next_terminated=t)   # dict, same values
        >>> total_loss(out).backward()
    """

    default_keys: ClassVar[Mapping[str, NestedKey]] = {}
    default_value_estimator: ClassVar[ValueEstimators | None] = ValueEstimators.TD0
    # Roles whose presence in the input changes what else is needed (an advantage given
    # in the batch spares the transitions its estimator would read).
    _precomputed_roles: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, gamma: float = 0.99, lmbda: float = 0.95) -> None:
        super().__init__()
        self._keys = TensorKeys(type(self).__name__, self.default_keys)
        self.gamma = gamma
        self.lmbda = lmbda
        # Kept out of the module tree: its value network is the loss's own critic, which
        # would otherwise be saved twice in state_dict (and break loading into a fresh loss).
        self.__dict__["_value_estimator"] = None
        self._target_names: list[tuple[str, str]] = []
        # What a call needs depends only on the keys, the networks' in_keys and which of
        # the `_precomputed_roles` the input carries: worked out once per such case, not
        # at every call (it walks the networks' submodules).
        self._required_cache: dict[tuple[bool, ...], RequiredKeys] = {}
        # {flattened name: nested key} of a plain-tensor call, worked out on its first use.
        self._nested_names: dict[str, NestedKey] | None = None

    # -- keys -----------------------------------------------------------------------------

    @property
    def tensor_keys(self) -> TensorKeys:
        """The keys the loss reads and writes, by role (see :meth:`set_keys`)."""
        return self._keys

    def set_keys(self, **keys: NestedKey) -> LossModule:
        """Rename keys by role, e.g. ``loss.set_keys(reward="rew", action=("agent", "act"))``.

        ``reward``, ``done`` and ``terminated`` are read under ``"next"``. Renames reach the
        value estimator too.

        Returns:
            ``self``.

        Raises:
            ObjectiveConfigError: A role is unknown.
        """
        self._keys.update(**keys)
        self._required_cache.clear()
        self._nested_names = None
        if self._value_estimator is not None:
            self._forward_keys(self._value_estimator)
        return self

    def _forward_keys(self, estimator: ValueEstimatorBase) -> None:
        shared = {
            role: getattr(self._keys, role)
            for role in _FORWARDED_ROLES
            if role in self._keys.as_dict() and role in estimator.tensor_keys.as_dict()
        }
        estimator.set_keys(**shared)

    def _required_keys(self, tensordict: TensorDictBase | None = None) -> RequiredKeys:
        """``({role: key} read by the loss, {key: network} read by its networks)``.

        With ``tensordict``, keys whose values the loss would otherwise compute (e.g. an
        advantage already present) decide what else is needed; their roles must be listed
        in :attr:`_precomputed_roles`.
        """
        raise NotImplementedError

    @property
    def in_keys(self) -> list[NestedKey]:
        """Every key a call needs (when nothing is precomputed)."""
        loss_keys, network_keys = self._required_keys()
        return list(dict.fromkeys([*loss_keys.values(), *network_keys]))

    @staticmethod
    def _network_keys(
        module: nn.Module, name: str, *, root: bool = True, nested: bool = False
    ) -> dict[NestedKey, str]:
        keys = required_in_keys(module)
        out: dict[NestedKey, str] = {}
        if root:
            out.update({k: name for k in keys})
        if nested:
            out.update({next_key(k): name for k in keys})
        return out

    def _transition_keys(self) -> dict[str, NestedKey]:
        return {
            "reward": next_key(self._keys.reward),
            "done": next_key(self._keys.done),
            "terminated": next_key(self._keys.terminated),
        }

    # -- value estimation -----------------------------------------------------------------

    def make_value_estimator(
        self, value_type: ValueEstimators | str | None = None, **hyperparams: Any
    ) -> LossModule:
        """Choose how targets and advantages are estimated (``"td0"``, ``"gae"``...).

        The estimators are ``"td0"``, ``"td1"``, ``"td_lambda"``, ``"gae"`` and ``"vtrace"``
        (which also runs the loss's actor, or the ``actor_network`` given).

        Args:
            value_type: The estimator; ``None`` picks the loss's default.
            **hyperparams: Override ``gamma``, ``lmbda``, ``value_network``... (by default
                the loss's ``gamma``/``lmbda`` and, for on-policy losses, its critic).

        Returns:
            ``self``.
        """
        kind = parse_value_estimator(value_type or self.default_value_estimator)
        params: dict[str, Any] = {"gamma": self.gamma, "value_network": self._estimator_network()}
        if kind in (ValueEstimators.TDLambda, ValueEstimators.GAE):
            params["lmbda"] = self.lmbda
        if kind is ValueEstimators.VTrace:
            params["actor_network"] = self._estimator_actor()
        params.update(hyperparams)
        estimator = make_value_estimator(kind, **params)
        self._forward_keys(estimator)
        self.__dict__["_value_estimator"] = estimator
        return self

    def _estimator_network(self) -> nn.Module | None:
        """The value network the estimator runs (off-policy losses pass values themselves)."""
        return None

    def _estimator_actor(self) -> nn.Module | None:
        """The policy V-trace weighs the data by (the policy being learned), if any."""
        return None

    @property
    def value_estimator(self) -> ValueEstimatorBase:
        """The estimator in use (built with defaults on first use)."""
        if self._value_estimator is None:
            self.make_value_estimator()
        return self._value_estimator

    def _build_lazy_parts(self) -> None:
        """Build now what the loss builds at its first call (its default estimator).

        ``make_update_step(compile=...)`` calls it: built inside the first compiled call,
        it would change what the graph's guards read and compile the loss again at the
        second call.
        """
        if self._value_estimator is None and self.default_value_estimator is not None:
            self.make_value_estimator()

    # -- target networks ------------------------------------------------------------------

    def _register_target(self, name: str) -> None:
        """Hold a frozen copy of ``self.<name>`` as ``self.target_<name>``."""
        owner = type(self).__name__
        module = getattr(self, name)
        check_initialized(owner, name, module)
        setattr(self, f"target_{name}", _frozen_copy(module))
        self._target_names.append((name, f"target_{name}"))

    def _target(self, name: str, delayed: bool) -> nn.Module:
        return getattr(self, f"target_{name}") if delayed else getattr(self, name)

    def target_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``[(online network, its target copy), ...]``."""
        return [(getattr(self, a), getattr(self, b)) for a, b in self._target_names]

    # -- calling --------------------------------------------------------------------------

    def forward(
        self, tensordict: TensorDictBase | None = None, **tensors: Any
    ) -> TensorDictBase | dict[str, Tensor]:
        """Compute the loss terms.

        Args:
            tensordict: The batch. Or leave it out and pass tensors as keyword arguments.
            **tensors: The batch as tensors, nested keys flattened with ``_``
                (``next_reward``, ``agents_action`` for ``("agents", "action")``). The
                batch shape is read from the reward or done flags (see
                :func:`~rlblocks.objectives._checks.tensordict_from_tensors`).

        Returns:
            A TensorDict of scalars for a TensorDict call, a ``dict`` for a tensor call.

        Raises:
            MissingInputError: A needed key is missing (the message says how to rename).
            ShapeMismatchError: Two inputs disagree in shape.
        """
        if tensordict is None:
            feature_keys = [
                getattr(self._keys, r) for r in _VALUE_ROLES if r in self._keys.as_dict()
            ]
            batch = tensordict_from_tensors(tensors, feature_keys, self._nested_key_names())
            return dict(self._checked_loss(batch).items())
        if tensors:
            raise ObjectiveConfigError(
                f"{type(self).__name__}: pass either a TensorDict or keyword tensors, not both "
                f"(got keyword arguments {sorted(tensors)})"
            )
        if not isinstance(tensordict, TensorDictBase):
            raise ObjectiveConfigError(
                f"{type(self).__name__} takes a TensorDict or keyword tensors, got "
                f"{type(tensordict).__name__}"
            )
        return self._checked_loss(tensordict)

    def _nested_key_names(self) -> dict[str, NestedKey]:
        """``{flattened name: key}`` for the nested keys a plain-tensor call may pass."""
        if self._nested_names is None:
            loss_keys, network_keys = self._required_keys()
            keys = [*loss_keys.values(), *network_keys, *self._keys.as_dict().values()]
            keys += [next_key(k) for k in keys]
            self._nested_names = {flat_name(k): k for k in keys if isinstance(k, tuple)}
        return self._nested_names

    def _checked_loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        case = tuple(
            tensordict.get(getattr(self._keys, role), None) is not None
            for role in self._precomputed_roles
        )
        required = self._required_cache.get(case)
        if required is None:
            required = self._required_keys(tensordict)
            if not torch.compiler.is_compiling():  # see remember()
                self._required_cache[case] = required
        check_keys(type(self).__name__, tensordict, *required)
        return self._loss(tensordict)

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise NotImplementedError

    @staticmethod
    def _output(**terms: Tensor) -> TensorDictBase:
        if torch.compiler.is_compiling() or not all(type(t) is Tensor for t in terms.values()):
            return TensorDict(terms, batch_size=[])
        return new_tensordict(terms, _SCALAR, None)  # once per update: no per-entry checks


class _TargetUpdater:
    """Shared by :class:`SoftUpdate` and :class:`HardUpdate`: pairs online/target tensors."""

    def __init__(self, loss: LossModule) -> None:
        if not loss.target_pairs():
            raise ObjectiveConfigError(
                f"{type(self).__name__}: {type(loss).__name__} holds no target network "
                f"(were they disabled, e.g. delay_value=False?)"
            )
        self.loss = loss

    def _tensors(self) -> tuple[list[Tensor], list[Tensor]]:
        # Looked up at each update: moving the loss to a device replaces its buffers.
        online_tensors, target_tensors = [], []
        for online, target in self.loss.target_pairs():
            buffers = dict(target.named_buffers(remove_duplicate=False))
            for name, param in online.named_parameters():
                online_tensors.append(param)
                target_tensors.append(buffers[name])
        return online_tensors, target_tensors

    @torch.no_grad()
    def copy_(self) -> None:
        """Copy the online parameters into the targets now."""
        online, target = self._tensors()
        torch._foreach_copy_(target, online)


class SoftUpdate(_TargetUpdater):
    """Polyak averaging: ``target <- (1 - tau) * target + tau * online`` at each ``step()``.

    Args:
        loss: The loss holding the target networks.
        tau: Weight of the online parameters, in ``(0, 1]``.

    Example:
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> for batch in batches:
        ...     total_loss(loss(batch)).backward(); optim.step(); optim.zero_grad()
        ...     updater.step()
    """

    def __init__(self, loss: LossModule, tau: float = 0.005) -> None:
        if not 0.0 < tau <= 1.0:
            raise ObjectiveConfigError(f"SoftUpdate: tau must be in (0, 1], got {tau}")
        super().__init__(loss)
        self.tau = tau

    @torch.no_grad()
    def step(self) -> None:
        """Move every target towards its online network by ``tau``."""
        online, target = self._tensors()
        torch._foreach_lerp_(target, online, self.tau)


class HardUpdate(_TargetUpdater):
    """Copy the online parameters into the targets every ``period`` calls of ``step()``.

    Args:
        loss: The loss holding the target networks.
        period: Number of ``step()`` calls between copies.

    Example:
        >>> updater = HardUpdate(loss, period=1000)
    """

    def __init__(self, loss: LossModule, period: int = 1000) -> None:
        if period < 1:
            raise ObjectiveConfigError(f"HardUpdate: period must be >= 1, got {period}")
        super().__init__(loss)
        self.period = period
        self.counter = 0

    def step(self) -> None:
        """Count one step; copy the parameters when the count reaches ``period``."""
        self.counter += 1
        if self.counter % self.period == 0:
            self.copy_()
