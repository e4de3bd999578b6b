"""Policy and value wrappers on ``tensordict.nn`` modules.

``Actor``, ``ValueOperator`` and ``QValueModule`` read and write keys of the contract;
``ProbabilisticActor`` adds a distribution (tensordict's ``ProbabilisticTensorDictModule``)
that samples under ``ExplorationType.RANDOM`` and acts deterministically otherwise.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from tensordict import TensorDictBase
from tensordict.nn import (
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
    TensorDictModuleBase,
    TensorDictSequential,
    dispatch,
    interaction_type,
    set_interaction_type,
)
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn

from rlblocks.core import ACTION, DEFAULT_EXPLORATION_TYPE, OBSERVATION, ExplorationType
from rlblocks.core.fast_module import direct_call, keeps_plain_forward, plain_forward
from rlblocks.core.specs import Bounded, Categorical, Composite, OneHot, TensorSpec
from rlblocks.objectives._keys import (
    ACTION_VALUE,
    CHOSEN_ACTION_VALUE,
    SAMPLE_LOG_PROB,
    STATE_ACTION_VALUE,
    STATE_VALUE,
)
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules._distributions import TanhDelta, TanhNormal

__all__ = [
    "SafeModule",
    "Actor",
    "ProbabilisticActor",
    "ValueOperator",
    "QValueModule",
    "QValueActor",
    "ActorValueOperator",
    "ActorCriticOperator",
    "project_outputs",
]


def _keys(
    keys: NestedKey | Sequence[NestedKey] | None, default: list[NestedKey]
) -> list[NestedKey]:
    if keys is None:
        return list(default)
    if isinstance(keys, (str, tuple)):
        return [keys]
    return list(keys)


def _output_specs(
    spec: TensorSpec | None, out_keys: Sequence[NestedKey]
) -> dict[NestedKey, TensorSpec]:
    """``{out_key: spec}``: a Composite is looked up by key, a leaf spec is the first key's."""
    if spec is None:
        return {}
    if isinstance(spec, Composite):
        return {k: spec.get(k, None) for k in out_keys if spec.get(k, None) is not None}
    return {out_keys[0]: spec}


def project_outputs(tensordict: TensorDictBase, specs: dict[NestedKey, TensorSpec]) -> None:
    """Replace each ``tensordict[key]`` by its projection into ``specs[key]``, in place."""
    for key, spec in specs.items():
        value = tensordict.get(key, None)
        if value is not None:
            tensordict.set(key, spec.project(value))


def _takes_validate_args(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` (a distribution class or function) accepts ``validate_args``."""
    try:
        return "validate_args" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some callables have no signature
        return False


def _as_td_module(
    module: nn.Module | Callable, in_keys: list[NestedKey], out_keys: list[NestedKey]
) -> TensorDictModuleBase:
    if isinstance(module, TensorDictModuleBase):
        return module
    return TensorDictModule(module, in_keys=in_keys, out_keys=out_keys)


class SafeModule(TensorDictModule):
    """A ``TensorDictModule`` that knows the spec of its outputs and can keep them inside it.

    With ``safe=True`` every output that has a spec is projected into it after each call
    (``spec.project``: a ``Bounded`` output is clamped into its box, a discrete one mapped
    to a valid value), which guards against exploration noise or numerical overflow.

    Args:
        module: A network (or callable) taking the ``in_keys`` tensors.
        in_keys: Keys read.
        out_keys: Keys written, one per output of ``module``.
        spec: Spec of the outputs: a ``Composite`` keyed by out key, or a leaf spec that
            describes the first out key.
        safe: Project the outputs into ``spec``; needs a ``spec``.

    Raises:
        ObjectiveConfigError: ``safe=True`` without a ``spec``.

    Example:
        >>> module = SafeModule(
        ...     nn.Linear(3, 2), in_keys=["observation"], out_keys=["action"],
        ...     spec=Bounded(-1.0, 1.0, shape=(2,)), safe=True,
        ... )
        >>> td = module(TensorDict(observation=10 * torch.randn(4, 3), batch_size=[4]))
        >>> bool(td["action"].abs().max() <= 1.0)
        True
    """

    def __init__(
        self,
        module: nn.Module | Callable,
        in_keys: NestedKey | Sequence[NestedKey],
        out_keys: NestedKey | Sequence[NestedKey],
        spec: TensorSpec | None = None,
        safe: bool = False,
    ) -> None:
        out = _keys(out_keys, [])
        super().__init__(module, in_keys=_keys(in_keys, []), out_keys=out)
        if safe and spec is None:
            raise ObjectiveConfigError(
                f"{type(self).__name__}: safe=True needs a spec to project into; pass "
                f"spec=... (e.g. Bounded(low, high, shape=...)) or safe=False"
            )
        self.spec = spec
        self.safe = safe
        self._specs = _output_specs(spec, out) if safe else {}

    @dispatch(auto_batch_size=False)
    def forward(self, tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        """Run the network and, with ``safe=True``, project the outputs into the spec."""
        out = None if args or kwargs else plain_forward(self, tensordict)
        if out is None:
            out = super().forward(tensordict, *args, **kwargs)
        project_outputs(out, self._specs)
        return out


class Actor(SafeModule):
    """A deterministic policy: ``action = module(observation)``.

    A :class:`SafeModule` with the policy's default keys.

    Args:
        module: A network taking the ``in_keys`` tensors.
        in_keys: Keys read (default ``["observation"]``).
        out_keys: Keys written (default ``["action"]``).
        spec: Spec of the action (or a ``Composite`` keyed by out key).
        safe: Project the outputs into ``spec`` (e.g. clamp into a ``Bounded`` box).

    Example:
        >>> actor = Actor(MLP(out_features=2), spec=Bounded(-1.0, 1.0, shape=(2,)), safe=True)
        >>> actor(TensorDict(observation=torch.randn(4, 3), batch_size=[4]))["action"].shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        module: nn.Module | Callable,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        *,
        spec: TensorSpec | None = None,
        safe: bool = False,
    ) -> None:
        super().__init__(
            module,
            _keys(in_keys, [OBSERVATION]),
            _keys(out_keys, [ACTION]),
            spec=spec,
            safe=safe,
        )


# _ProjectingSequential -> _StageCalls for its current stages, see _stage_calls.
_DIRECT_STAGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _StageCalls(NamedTuple):
    """How to run a pipeline's stages without the sequence's generic machinery."""

    stages: tuple[nn.Module, ...]  # what the verdict was reached for (compared by identity)
    calls: tuple[Callable, ...] | None  # each stage's call, the sampler last; None: no shortcut
    params_only: bool  # no stage before the sampler draws: get_dist may run calls[:-1]


def _stage_calls(stages: tuple[nn.Module, ...]) -> _StageCalls:
    """The stages' calls if a sampler last that samples what no earlier stage writes."""
    sampler = stages[-1]
    written = {key for stage in stages[:-1] for key in getattr(stage, "out_keys", ())}
    if not isinstance(sampler, ProbabilisticTensorDictModule) or written & set(sampler.out_keys):
        return _StageCalls(stages, None, False)
    draws = (ProbabilisticTensorDictModule, ProbabilisticTensorDictSequential)
    params_only = not any(isinstance(stage, draws) for stage in stages[:-1])
    return _StageCalls(stages, tuple(direct_call(stage) or stage for stage in stages), params_only)


class _ProjectingSequential(ProbabilisticTensorDictSequential):
    """A probabilistic pipeline that projects its outputs into ``_specs`` (empty: no-op)."""

    _specs: dict[NestedKey, TensorSpec] = {}  # noqa: RUF012 (replaced per instance)

    @dispatch(auto_batch_size=False)
    def forward(self, tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        """Compute the parameters, sample (or act deterministically), project if ``safe``."""
        stages = None if args or kwargs else self._direct_stages()
        if stages is None:
            out = super().forward(tensordict, *args, **kwargs)
        else:
            # The plain call of a policy, once per env step: each stage in turn (the sampler
            # draws as it does inside the sequence) without the sequence's generic
            # machinery, which costs about a third of a small MLP policy's call.
            out = tensordict
            for call in stages.calls:
                out = call(out)
        project_outputs(out, self._specs)
        return out

    def _direct_stages(self) -> _StageCalls | None:
        """The calls of the stages (``direct_call`` where it serves), when calling them in
        turn is exactly what the sequence would do: the outputs written in place, no
        selection or composite output, a sampler last that samples, and no earlier stage
        writing what it samples (the sequence would keep that value instead of sampling)."""
        if (
            self.inplace not in (None, True)
            or self._select_before_return
            or self.return_composite
            or not self._requires_sample
        ):
            return None
        current = tuple(self.module)
        if torch.compiler.is_compiling():  # traced once: no cache for dynamo to guard on
            found = _stage_calls(current)
        else:
            # Kept outside the module: the calls close over its stages, so a copy or a
            # pickle of the module must not carry them.
            found = _DIRECT_STAGES.get(self)
            if found is None or found.stages != current:  # modules compare by identity
                found = _DIRECT_STAGES[self] = _stage_calls(current)
        return None if found.calls is None else found

    def get_dist(
        self, tensordict: TensorDictBase, tensordict_out: TensorDictBase | None = None, **kwargs
    ) -> D.Distribution:
        """The distribution the policy samples from; the parameters are written into
        ``tensordict`` (see ``ProbabilisticTensorDictSequential.get_dist``)."""
        # Once per loss call: the stages before the sampler run through their direct calls,
        # as the policy's own call does, when none of them draws.
        found = None if tensordict_out is not None or kwargs else self._direct_stages()
        if found is None or not found.params_only:
            return super().get_dist(tensordict, tensordict_out, **kwargs)
        sampler = found.stages[-1]
        # As tensordict's get_dist_params: the stages run under the interaction type in
        # force, else the sampler's default (an exploration stage may read it).
        with set_interaction_type(interaction_type() or sampler.default_interaction_type):
            for call in found.calls[:-1]:
                tensordict = call(tensordict)
        return sampler.get_dist(tensordict)

    def build_dist_from_params(self, tensordict: TensorDictBase) -> D.Distribution:
        """The distribution of the last stage, from the parameters in ``tensordict``."""
        # The last stage is the sampler whenever rlblocks builds the pipeline: reading it
        # directly spares the walk over every submodule that tensordict does per call.
        last = self.module[-1]
        if isinstance(last, ProbabilisticTensorDictModule):
            return last.get_dist(tensordict)
        return super().build_dist_from_params(tensordict)


class ProbabilisticActor(_ProjectingSequential):
    """A stochastic policy: a network writing distribution parameters, then a sampler.

    Under ``ExplorationType.RANDOM`` (the default when nothing is set) the action is sampled;
    under ``DETERMINISTIC``/``MODE``/``MEAN`` the distribution's deterministic value is used.

    Args:
        module: A TensorDict module writing the distribution parameters (e.g. ``loc`` and
            ``scale`` from an ``MLP`` followed by ``NormalParamExtractor``).
        in_keys: The parameter keys the distribution reads, e.g. ``["loc", "scale"]`` (or a
            dict ``{distribution kwarg: key}``).
        out_keys: Keys of the sample (default ``["action"]``).
        spec: Spec of the action. For :class:`TanhNormal`/:class:`TanhDelta` with a
            ``Bounded`` spec, ``low``/``high`` default to the spec's bounds.
        safe: Project the sampled action into ``spec`` (the logged log-probability is that
            of the sample before projection).
        distribution_class: A ``torch.distributions`` class (or factory).
        distribution_kwargs: Extra keyword arguments of ``distribution_class``.
        return_log_prob: Also write the sample's log-probability at ``log_prob_key``.
        log_prob_key: Where the log-probability goes (default ``"sample_log_prob"``).
        default_interaction_type: The exploration type used when none is set.
        validate_args: Have the distribution check its parameters and the values it scores
            (torch's ``validate_args``). Off by default, as every per-step check in rlblocks:
            it costs about as much as the distribution itself. Turn it on to track down NaN
            parameters or out-of-support actions. Ignored by distributions that take no
            ``validate_args`` (e.g. :class:`TanhDelta`); a ``validate_args`` in
            ``distribution_kwargs`` wins.

    Example:
        >>> net = TensorDictModule(
        ...     nn.Sequential(MLP(out_features=4), NormalParamExtractor()),
        ...     in_keys=["observation"], out_keys=["loc", "scale"],
        ... )
        >>> actor = ProbabilisticActor(net, ["loc", "scale"], distribution_class=TanhNormal,
        ...                            return_log_prob=True)
    """

    def __init__(
        self,
        module: TensorDictModuleBase,
        in_keys: NestedKey | Sequence[NestedKey] | dict[str, NestedKey],
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        *,
        spec: TensorSpec | None = None,
        safe: bool = False,
        distribution_class: type[D.Distribution] | Callable[..., D.Distribution] = TanhNormal,
        distribution_kwargs: dict[str, Any] | None = None,
        return_log_prob: bool = False,
        log_prob_key: NestedKey = SAMPLE_LOG_PROB,
        default_interaction_type: ExplorationType = DEFAULT_EXPLORATION_TYPE,
        validate_args: bool = False,
    ) -> None:
        out = _keys(out_keys, [ACTION])
        kwargs = dict(distribution_kwargs or {})
        if "validate_args" not in kwargs and _takes_validate_args(distribution_class):
            kwargs["validate_args"] = validate_args
        if (
            distribution_class in (TanhNormal, TanhDelta)
            and isinstance(spec, Bounded)
            and "low" not in kwargs
            and "high" not in kwargs
        ):
            kwargs.update(low=spec.low, high=spec.high)
        if not isinstance(in_keys, dict):
            in_keys = _keys(in_keys, [])
        sampler = ProbabilisticTensorDictModule(
            in_keys=in_keys,
            out_keys=out,
            distribution_class=distribution_class,
            distribution_kwargs=kwargs,
            return_log_prob=return_log_prob,
            log_prob_key=log_prob_key,
            default_interaction_type=default_interaction_type,
        )
        super().__init__(module, sampler)
        self.spec = spec
        self.safe = safe
        if safe and spec is None:
            raise ObjectiveConfigError("ProbabilisticActor: safe=True needs a spec to project into")
        self._specs = _output_specs(spec, out) if safe else {}


@keeps_plain_forward
class ValueOperator(TensorDictModule):
    """A critic: ``state_value = V(observation)`` or ``state_action_value = Q(obs, action)``.

    Args:
        module: The network.
        in_keys: Keys read (default ``["observation"]``).
        out_keys: Keys written; by default ``["state_action_value"]`` when ``"action"`` is an
            input, else ``["state_value"]``.

    Example:
        >>> critic = ValueOperator(MLP(out_features=1))
        >>> qvalue = ValueOperator(QNet(), in_keys=["observation", "action"])
    """

    def __init__(
        self,
        module: nn.Module | Callable,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        ins = _keys(in_keys, [OBSERVATION])
        default_out = STATE_ACTION_VALUE if ACTION in ins else STATE_VALUE
        super().__init__(module, in_keys=ins, out_keys=_keys(out_keys, [default_out]))

    @dispatch(auto_batch_size=False)
    def forward(self, tensordict: TensorDictBase, *args: Any, **kwargs: Any) -> TensorDictBase:
        """Read the inputs, run the network, write the values into ``tensordict``."""
        # A critic is called once or twice per update: tensordict's generic forward costs
        # ~15 us of a 64x64 MLP's ~75 (plain_forward says when it must run instead).
        out = None if args or kwargs else plain_forward(self, tensordict)
        return super().forward(tensordict, *args, **kwargs) if out is None else out


_ACTION_SPACES = ("one_hot", "categorical")


class QValueModule(TensorDictModuleBase):
    """Greedy action from per-action values: ``action``, ``action_value``, ``chosen_action_value``.

    Args:
        spec: The action spec: ``OneHot`` gives one-hot actions, ``Categorical`` indices.
        action_space: ``"one_hot"`` or ``"categorical"`` when no spec is given.
        action_value_key: Where the per-action values are read.
        out_keys: ``[action, action_value, chosen_action_value]`` keys. By default they sit
            next to ``action_value_key``: ``("agents", "action")``... for a group's values
            ``("agents", "action_value")`` (one greedy action per agent).
        action_mask_key: Optional boolean mask of allowed actions (``[*batch, n]``).

    Example:
        >>> qmodule = QValueModule(spec=Categorical(4))
        >>> td = qmodule(TensorDict(action_value=torch.randn(8, 4), batch_size=[8]))
        >>> td["action"].shape, td["chosen_action_value"].shape
        (torch.Size([8]), torch.Size([8, 1]))
    """

    def __init__(
        self,
        spec: TensorSpec | None = None,
        action_space: str | None = None,
        *,
        action_value_key: NestedKey = ACTION_VALUE,
        out_keys: Sequence[NestedKey] | None = None,
        action_mask_key: NestedKey | None = None,
    ) -> None:
        super().__init__()
        if isinstance(spec, Composite):
            spec = spec.get(ACTION)
        if action_space is None:
            if isinstance(spec, OneHot):
                action_space = "one_hot"
            elif isinstance(spec, Categorical):
                action_space = "categorical"
        if action_space not in _ACTION_SPACES:
            raise ObjectiveConfigError(
                f"QValueModule needs a OneHot or Categorical spec, or action_space in "
                f"{_ACTION_SPACES}; got spec={spec!r}, action_space={action_space!r}"
            )
        self.spec = spec
        self.action_space = action_space
        self.action_value_key = action_value_key
        self.action_mask_key = action_mask_key
        self.in_keys = [action_value_key] + ([action_mask_key] if action_mask_key else [])
        prefix = action_value_key[:-1] if isinstance(action_value_key, tuple) else ()
        defaults = [(*prefix, ACTION), action_value_key, (*prefix, CHOSEN_ACTION_VALUE)]
        defaults = [k[0] if isinstance(k, tuple) and len(k) == 1 else k for k in defaults]
        self.out_keys = _keys(out_keys, defaults)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the greedy action and its value."""
        return self._act(tensordict, tensordict.get(self.action_value_key))

    def _act(self, tensordict: TensorDictBase, values: torch.Tensor) -> TensorDictBase:
        """Write the action maximizing ``values`` (``[*batch, n]``), and that maximum."""
        chosen_from = values
        if self.action_mask_key is not None:
            mask = tensordict.get(self.action_mask_key)
            values = values.masked_fill(~mask.bool(), float("-inf"))
        greedy = values.argmax(-1, keepdim=True)
        chosen = chosen_from.gather(-1, greedy)
        if self.action_space == "one_hot":
            dtype = self.spec.dtype if self.spec is not None else torch.long
            action = torch.zeros_like(values, dtype=dtype).scatter_(-1, greedy, 1)
        else:
            action = greedy.squeeze(-1)
            if self.spec is not None:
                # A Categorical spec of shape (..., 1) keeps a trailing singleton dim.
                if self.spec.shape[-1:] == (1,):
                    action = action.unsqueeze(-1)
                action = action.to(self.spec.dtype)
        action_key, value_key, chosen_key = self.out_keys
        tensordict.set(action_key, action)
        if value_key != self.action_value_key:
            tensordict.set(value_key, tensordict.get(self.action_value_key))
        tensordict.set(chosen_key, chosen)
        return tensordict


class QValueActor(TensorDictSequential):
    """A value network writing ``action_value``, followed by a greedy :class:`QValueModule`.

    Args:
        module: Network mapping observations to one value per action (or a TensorDict
            module writing ``action_value_key``).
        in_keys: Keys the network reads (default ``["observation"]``).
        spec: Action spec (``OneHot`` or ``Categorical``).
        action_space: ``"one_hot"`` or ``"categorical"`` when no spec is given.
        action_value_key: Key of the per-action values.
        action_mask_key: Optional mask of allowed actions.
        out_keys: ``[action, action_value, chosen_action_value]`` keys (by default next to
            ``action_value_key``, see :class:`QValueModule`).

    Example:
        >>> actor = QValueActor(MLP(out_features=4), spec=Categorical(4))
        >>> actor(TensorDict(observation=torch.randn(8, 3), batch_size=[8]))["action"]
    """

    def __init__(
        self,
        module: nn.Module | Callable,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        *,
        spec: TensorSpec | None = None,
        action_space: str | None = None,
        action_value_key: NestedKey = ACTION_VALUE,
        action_mask_key: NestedKey | None = None,
        out_keys: Sequence[NestedKey] | None = None,
    ) -> None:
        net = _as_td_module(module, _keys(in_keys, [OBSERVATION]), [action_value_key])
        qmodule = QValueModule(
            spec,
            action_space,
            action_value_key=action_value_key,
            action_mask_key=action_mask_key,
            out_keys=out_keys,
        )
        super().__init__(net, qmodule)
        self.spec = qmodule.spec
        self.action_space = qmodule.action_space
        self.action_value_key = action_value_key

    @property
    def action_value_module(self) -> TensorDictModuleBase:
        """The network alone, writing ``action_value_key`` (no greedy action): what a loss
        that reads only the per-action values calls (DQN's online and target values)."""
        return self[0]


class ActorValueOperator(TensorDictSequential):
    """A shared trunk feeding a policy head and a value head.

    Calling it runs all three. :meth:`get_policy_operator` and :meth:`get_value_operator`
    return trunk+head pipelines that share the parameters, to give to a collector and to a
    loss.

    Args:
        common_operator: The trunk (writes e.g. ``"hidden"``).
        policy_operator: The policy head (reads the trunk's output); may be probabilistic.
        value_operator: The value head.

    Example:
        >>> trunk = TensorDictModule(MLP(out_features=32), ["observation"], ["hidden"])
        >>> policy_head = ProbabilisticActor(...)  # reads "hidden"
        >>> value_head = ValueOperator(MLP(out_features=1), in_keys=["hidden"])
        >>> model = ActorValueOperator(trunk, policy_head, value_head)
        >>> policy, critic = model.get_policy_operator(), model.get_value_operator()
    """

    def __init__(
        self,
        common_operator: TensorDictModuleBase,
        policy_operator: TensorDictModuleBase,
        value_operator: TensorDictModuleBase,
    ) -> None:
        self._check_value_head(value_operator)
        super().__init__(common_operator, policy_operator, value_operator)

    @staticmethod
    def _check_value_head(value_operator: TensorDictModuleBase) -> None:
        """Raise if ``value_operator`` cannot be this operator's value head (subclasses)."""

    def get_policy_operator(self) -> TensorDictSequential:
        """Trunk followed by the policy head (probabilistic if the head is)."""
        trunk, head = self.module[0], self.module[1]
        if isinstance(head, ProbabilisticTensorDictSequential):
            # Flattened: tensordict cannot build the distribution of a nested pipeline
            # whose last stage has its own deterministic part.
            policy = _ProjectingSequential(trunk, *head.module)
            policy._specs = getattr(head, "_specs", {})
            return policy
        if isinstance(head, ProbabilisticTensorDictModule):
            return ProbabilisticTensorDictSequential(trunk, head)
        return TensorDictSequential(trunk, head)

    def get_value_operator(self) -> TensorDictSequential:
        """Trunk followed by the value head."""
        return TensorDictSequential(self.module[0], self.module[2])

    def get_policy_head(self) -> TensorDictModuleBase:
        """The policy head alone."""
        return self.module[1]

    def get_value_head(self) -> TensorDictModuleBase:
        """The value head alone."""
        return self.module[2]


class ActorCriticOperator(ActorValueOperator):
    """A shared trunk feeding a policy head and a critic head that values the chosen action.

    Like :class:`ActorValueOperator`, but the critic head reads the policy's action and
    writes ``Q(s, a)`` (``state_action_value``): calling the operator runs the trunk, the
    policy head, then the critic on the action just chosen. :meth:`get_policy_operator`
    returns trunk + policy head; :meth:`get_critic_operator` returns the whole pipeline
    (what computes ``Q(s, pi(s))``). Both share the trunk's parameters.

    Args:
        common_operator: The trunk (writes e.g. ``"hidden"``).
        policy_operator: The policy head (reads the trunk's output, writes ``action``).
        value_operator: The critic head (reads the trunk's output and ``action``, writes
            ``state_action_value``).

    Raises:
        ObjectiveConfigError: The critic head writes ``state_value`` (a state value).

    Example:
        >>> trunk = TensorDictModule(MLP(out_features=32), ["observation"], ["hidden"])
        >>> policy_head = Actor(MLP(out_features=2), in_keys=["hidden"])
        >>> critic_head = ValueOperator(MLP(out_features=1), in_keys=["hidden", "action"])
        >>> model = ActorCriticOperator(trunk, policy_head, critic_head)
        >>> policy, critic = model.get_policy_operator(), model.get_critic_operator()
    """

    @staticmethod
    def _check_value_head(value_operator: TensorDictModuleBase) -> None:
        if STATE_VALUE in value_operator.out_keys[:1]:
            raise ObjectiveConfigError(
                f"ActorCriticOperator: the critic head writes {STATE_VALUE!r} "
                f"(out_keys={value_operator.out_keys}), but this operator values the action "
                f"the policy head chose. Give the critic head in_keys that include "
                f"{ACTION!r} and out_keys=[{STATE_ACTION_VALUE!r}], or use "
                f"ActorValueOperator for a state-value head."
            )

    def get_critic_operator(self) -> ActorCriticOperator:
        """The whole pipeline: trunk, policy head, then the critic on the chosen action."""
        return self

    def get_value_operator(self) -> TensorDictSequential:
        """Not available: the critic of this operator values state-action pairs.

        Raises:
            ObjectiveConfigError: Always; the message points to :meth:`get_critic_operator`.
        """
        raise ObjectiveConfigError(
            "ActorCriticOperator.get_value_operator(): a value operator maps a state to "
            "V(s), but this operator's critic values the chosen action, Q(s, a). Call "
            "get_critic_operator() instead (as in TorchRL), or build an ActorValueOperator "
            "for a state-value head."
        )
