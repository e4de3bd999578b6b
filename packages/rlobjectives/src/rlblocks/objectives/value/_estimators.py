"""Value estimator modules: read trajectories, write ``advantage`` and ``value_target``."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor, nn

from rlblocks.core import DONE, NEXT, REWARD, TERMINATED
from rlblocks.core.fast_td import fast_get
from rlblocks.objectives._checks import (
    check_keys,
    check_same_shape,
    fmt_key,
    read_discount,
    read_flags,
)
from rlblocks.objectives._keys import (
    ADVANTAGE,
    STATE_VALUE,
    STEPS_TO_NEXT_OBS,
    VALUE_TARGET,
    TensorKeys,
)
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.value.functional import (
    generalized_advantage_estimate,
    td0_return_estimate,
    td_lambda_return_estimate,
)

__all__ = [
    "ValueEstimators",
    "ValueEstimatorBase",
    "TD0Estimator",
    "TD1Estimator",
    "TDLambdaEstimator",
    "GAE",
    "make_value_estimator",
    "parse_value_estimator",
]


class ValueEstimators(enum.StrEnum):
    """The value estimators a loss can use (``loss.make_value_estimator(...)``)."""

    TD0 = "td0"
    TD1 = "td1"
    TDLambda = "td_lambda"
    GAE = "gae"
    VTrace = "vtrace"


class ValueEstimatorBase(nn.Module):
    """Base of the estimators: key handling, value-network calls and the time dimension.

    Subclasses implement :meth:`_estimate` on tensors.

    Args:
        gamma: Discount factor in ``[0, 1]``.
        value_network: A TensorDict module writing ``state_value`` (the ``value`` key), or
            ``None`` to read values (at the root and under ``"next"``) from the input.
        differentiable: Keep the graph through the value network; by default the estimate
            is computed under ``torch.no_grad()``.
        time_dim: The batch dim that is time; by default the one named ``"time"`` if the
            TensorDict has names, else the last batch dim.

    With a value network, ``state_value`` is also written at the root and under ``"next"``.
    An input without ``("next", "terminated")`` is read as if it were ``("next", "done")``
    (every end of episode a termination), as TorchRL does. An input with
    ``steps_to_next_obs`` (n-step transitions) discounts each next value by
    ``gamma ** steps_to_next_obs`` instead of ``gamma``, as TorchRL does.

    Example:
        >>> estimator = TDLambdaEstimator(gamma=0.99, lmbda=0.9, value_network=critic)
        >>> estimator(trajectories)  # writes "advantage" and "value_target"
        >>> targets = estimator.value_estimate(batch, next_value=my_next_values)
    """

    default_keys: ClassVar[Mapping[str, NestedKey]] = {
        "advantage": ADVANTAGE,
        "value_target": VALUE_TARGET,
        "value": STATE_VALUE,
        "reward": REWARD,
        "done": DONE,
        "terminated": TERMINATED,
        "steps_to_next_obs": STEPS_TO_NEXT_OBS,
    }
    needs_time: ClassVar[bool] = True

    def __init__(
        self,
        *,
        gamma: float | Tensor = 0.99,
        value_network: TensorDictModuleBase | None = None,
        differentiable: bool = False,
        time_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.gamma = _check_unit(type(self).__name__, "gamma", gamma)
        self.value_network = value_network
        self.differentiable = differentiable
        self.time_dim = time_dim
        self._keys = TensorKeys(type(self).__name__, self.default_keys)

    # -- keys -----------------------------------------------------------------------------

    @property
    def tensor_keys(self) -> TensorKeys:
        """The keys read and written, by role (see :meth:`set_keys`)."""
        return self._keys

    def set_keys(self, **keys: NestedKey) -> ValueEstimatorBase:
        """Rename keys by role, e.g. ``set_keys(reward="my_reward", value="v")``.

        ``reward``, ``done`` and ``terminated`` are read under ``"next"``.

        Returns:
            ``self``.
        """
        self._keys.update(**keys)
        return self

    # -- computing ------------------------------------------------------------------------

    def _grad_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if self.differentiable else torch.no_grad()

    def _values(self, tensordict: TensorDictBase, nested: bool) -> Tensor:
        """``V`` at the root or (``nested``) under ``"next"``, computed if a network is set."""
        target = tensordict.get(NEXT) if nested else tensordict
        if self.value_network is not None:
            self.value_network(target)
        return target.get(self._keys.value)

    def _resolve_time_dim(self, tensordict: TensorDictBase) -> int:
        owner = type(self).__name__
        if tensordict.batch_dims == 0:
            if not self.needs_time:
                return 0
            raise ShapeMismatchError(
                f"{owner} needs a time dimension, but the TensorDict has batch_size=[]. Pass "
                f"trajectories with batch_size [*batch, T] (T consecutive steps)."
            )
        if self.time_dim is not None:
            if not -tensordict.batch_dims <= self.time_dim < tensordict.batch_dims:
                raise ShapeMismatchError(
                    f"{owner}: time_dim={self.time_dim} is not a batch dim of a TensorDict "
                    f"with batch_size {list(tensordict.batch_size)}"
                )
            return self.time_dim % tensordict.batch_dims
        names = tensordict.names if tensordict._has_names() else []
        if "time" in names:
            return names.index("time")
        return tensordict.batch_dims - 1

    def _read(
        self,
        tensordict: TensorDictBase,
        state_value: Tensor | None,
        next_value: Tensor | None,
        need_state_value: bool,
    ) -> dict[str, Any]:
        keys = self._keys
        need_state_value = need_state_value and state_value is None
        loss_keys = {name: _next(getattr(keys, name)) for name in ("reward", "done", "terminated")}
        network_keys: dict[NestedKey, str] = {}
        in_keys = self.value_network.in_keys if self.value_network is not None else []
        for needed, nest in ((need_state_value, False), (next_value is None, True)):
            if not needed:
                continue
            if self.value_network is None:
                loss_keys["value"] = _next(keys.value) if nest else keys.value
            else:
                network_keys.update({_next(k) if nest else k: "value network" for k in in_keys})
        extra_loss_keys, extra_network_keys = self._extra_keys()
        loss_keys.update(extra_loss_keys)
        network_keys.update(extra_network_keys)
        check_keys(type(self).__name__, tensordict, loss_keys, network_keys)
        owner = type(self).__name__
        reward_key = _next(keys.reward)
        reward = fast_get(tensordict, reward_key)
        with self._grad_context():
            if need_state_value:
                state_value = self._values(tensordict, nested=False)
                _check_value(owner, keys.value, state_value, reward_key, reward)
            if next_value is None:
                next_value = self._values(tensordict, nested=True)
                _check_value(owner, _next(keys.value), next_value, reward_key, reward)
        done, terminated = read_flags(
            owner, tensordict, _next(keys.done), _next(keys.terminated), reward_key, reward
        )
        gamma = read_discount(
            owner, tensordict, self.gamma, keys.steps_to_next_obs, reward_key, reward
        )
        return {
            "gamma": gamma,
            "reward": reward,
            "done": done,
            "terminated": terminated,
            "state_value": state_value,
            "next_value": next_value,
            "time_dim": self._resolve_time_dim(tensordict),
            **self._extra_inputs(tensordict, reward_key, reward),
        }

    def _extra_keys(self) -> tuple[dict[str, NestedKey], dict[NestedKey, str]]:
        """``({role: key}, {key: network})`` read on top of the transitions and values."""
        return {}, {}

    def _extra_inputs(
        self, tensordict: TensorDictBase, reward_key: NestedKey, reward: Tensor
    ) -> dict[str, Tensor]:
        """Further keyword arguments of :meth:`_estimate`, read from ``tensordict``."""
        return {}

    needs_state_value: ClassVar[bool] = False

    def value_estimate(
        self,
        tensordict: TensorDictBase,
        *,
        state_value: Tensor | None = None,
        next_value: Tensor | None = None,
    ) -> Tensor:
        """Return the value target for each step without writing it.

        Losses call this with ``next_value`` computed by their (target) networks.

        Args:
            tensordict: Holds ``("next", reward)``, ``("next", done)``, optionally
                ``("next", terminated)`` (``done`` is read in its place when absent, as in
                TorchRL) and, when the values are not given and no value network is set,
                the values.
            state_value: ``V(s_t)``, needed by :class:`GAE` only.
            next_value: ``V(s_{t+1})``; computed or read when ``None``.

        Returns:
            The target, shaped like the reward.
        """
        inputs = self._read(tensordict, state_value, next_value, self.needs_state_value)
        with self._grad_context():
            return self._estimate(**inputs)[1]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write ``advantage`` and ``value_target`` into ``tensordict`` and return it.

        Raises:
            MissingInputError: A key is missing; the message says how to rename.
            ShapeMismatchError: Rewards, flags and values differ in shape.
        """
        inputs = self._read(tensordict, None, None, need_state_value=True)
        with self._grad_context():
            advantage, target = self._estimate(**inputs)
            if advantage is None:
                advantage = target - inputs["state_value"]
        tensordict.set(self._keys.advantage, advantage)
        tensordict.set(self._keys.value_target, target)
        return tensordict

    def _estimate(
        self,
        *,
        gamma: float | Tensor,
        reward: Tensor,
        done: Tensor,
        terminated: Tensor,
        state_value: Tensor | None,
        next_value: Tensor,
        time_dim: int,
    ) -> tuple[Tensor | None, Tensor]:
        """Return ``(advantage or None, value_target)``; ``time_dim`` counts from the front.

        ``gamma`` is the estimator's, or ``gamma ** steps_to_next_obs`` for n-step data.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, differentiable={self.differentiable}"


def _next(key: NestedKey) -> tuple[str, ...]:
    return (NEXT, *key) if isinstance(key, tuple) else (NEXT, key)


def _check_value(
    owner: str, key: NestedKey, value: Tensor, reward_key: NestedKey, reward: Tensor
) -> None:
    """Raise, naming both keys, unless ``value`` is shaped like ``reward`` (per agent too)."""
    if value.shape != reward.shape:  # the keys are formatted for the error only
        check_same_shape(owner, fmt_key(key), value, fmt_key(reward_key), reward)


def _check_unit(owner: str, name: str, value: float | Tensor) -> float | Tensor:
    if isinstance(value, Tensor) and value.ndim > 0:
        return value
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ObjectiveConfigError(f"{owner}: {name} must be in [0, 1], got {number}")
    return number


class TD0Estimator(ValueEstimatorBase):
    """One-step TD: ``value_target = r + gamma * (1 - terminated) * V(s')``.

    Example:
        >>> estimator = TD0Estimator(gamma=0.99, value_network=critic)
        >>> estimator(batch)["advantage"]  # value_target - V(s)
    """

    needs_time = False

    def _estimate(self, *, gamma, reward, done, terminated, state_value, next_value, time_dim):
        return None, td0_return_estimate(gamma, next_value, reward, terminated)


class _LambdaEstimator(ValueEstimatorBase):
    """An estimator with a trace-decay ``lmbda`` on top of ``gamma``."""

    def __init__(
        self,
        *,
        gamma: float | Tensor = 0.99,
        lmbda: float | Tensor = 0.95,
        value_network: TensorDictModuleBase | None = None,
        differentiable: bool = False,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(
            gamma=gamma,
            value_network=value_network,
            differentiable=differentiable,
            time_dim=time_dim,
        )
        self.lmbda = _check_unit(type(self).__name__, "lmbda", lmbda)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lmbda={self.lmbda}"


class TDLambdaEstimator(_LambdaEstimator):
    """TD(lambda) returns over trajectories; ``advantage = value_target - V(s)``.

    Args:
        gamma: Discount factor.
        lmbda: Trace decay in ``[0, 1]``.
        value_network: See :class:`ValueEstimatorBase`.
        differentiable: See :class:`ValueEstimatorBase`.
        time_dim: See :class:`ValueEstimatorBase`.

    Example:
        >>> estimator = TDLambdaEstimator(gamma=0.99, lmbda=0.9, value_network=critic)
        >>> estimator(trajectories)["value_target"]
    """

    def _estimate(self, *, gamma, reward, done, terminated, state_value, next_value, time_dim):
        target = td_lambda_return_estimate(
            gamma, self.lmbda, next_value, reward, done, terminated, time_dim=time_dim
        )
        return None, target


class TD1Estimator(TDLambdaEstimator):
    """Discounted returns to the episode end (TD(1)), bootstrapped after truncation.

    Example:
        >>> TD1Estimator(gamma=0.99, value_network=critic)(trajectories)["value_target"]
    """

    def __init__(
        self,
        *,
        gamma: float | Tensor = 0.99,
        value_network: TensorDictModuleBase | None = None,
        differentiable: bool = False,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(
            gamma=gamma,
            lmbda=1.0,
            value_network=value_network,
            differentiable=differentiable,
            time_dim=time_dim,
        )


class GAE(_LambdaEstimator):
    """Generalized advantage estimation, writing ``advantage`` and ``value_target``.

    Args:
        gamma: Discount factor.
        lmbda: GAE lambda in ``[0, 1]``.
        value_network: See :class:`ValueEstimatorBase`.
        average_gae: Standardize the advantage (zero mean, unit std over the whole batch)
            after ``value_target`` is computed.
        differentiable: See :class:`ValueEstimatorBase`.
        time_dim: See :class:`ValueEstimatorBase`.

    Example:
        >>> gae = GAE(gamma=0.99, lmbda=0.95, value_network=critic)
        >>> batch = gae(batch)  # batch["advantage"], batch["value_target"]
    """

    needs_state_value = True

    def __init__(
        self,
        *,
        gamma: float | Tensor = 0.99,
        lmbda: float | Tensor = 0.95,
        value_network: TensorDictModuleBase | None = None,
        average_gae: bool = False,
        differentiable: bool = False,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(
            gamma=gamma,
            lmbda=lmbda,
            value_network=value_network,
            differentiable=differentiable,
            time_dim=time_dim,
        )
        self.average_gae = average_gae

    def _estimate(self, *, gamma, reward, done, terminated, state_value, next_value, time_dim):
        advantage, target = generalized_advantage_estimate(
            gamma,
            self.lmbda,
            state_value,
            next_value,
            reward,
            done,
            terminated,
            time_dim=time_dim,
        )
        if self.average_gae:
            advantage = (advantage - advantage.mean()) / advantage.std().clamp_min(1e-6)
        return advantage, target

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, average_gae={self.average_gae}"


_ESTIMATORS: dict[ValueEstimators, type[ValueEstimatorBase]] = {
    ValueEstimators.TD0: TD0Estimator,
    ValueEstimators.TD1: TD1Estimator,
    ValueEstimators.TDLambda: TDLambdaEstimator,
    ValueEstimators.GAE: GAE,
}


def make_value_estimator(
    value_type: ValueEstimators | str, **hyperparams: Any
) -> ValueEstimatorBase:
    """Build an estimator by name: ``"td0"``, ``"td1"``, ``"td_lambda"``, ``"gae"``...

    ``"vtrace"`` (:class:`VTrace`) also needs ``actor_network``.

    Args:
        value_type: A :class:`ValueEstimators` member or its value.
        **hyperparams: Passed to the estimator (``gamma``, ``lmbda``, ``value_network``...).

    Raises:
        ObjectiveConfigError: The name is unknown.
    """
    return _ESTIMATORS[parse_value_estimator(value_type)](**hyperparams)


def parse_value_estimator(value_type: ValueEstimators | str) -> ValueEstimators:
    """The :class:`ValueEstimators` member named ``value_type``.

    Raises:
        ObjectiveConfigError: The name is unknown; the message lists the known ones.
    """
    try:
        return ValueEstimators(value_type)
    except ValueError:
        names = ", ".join(repr(v.value) for v in ValueEstimators)
        raise ObjectiveConfigError(
            f"unknown value estimator {value_type!r}; expected one of {names}"
        ) from None
