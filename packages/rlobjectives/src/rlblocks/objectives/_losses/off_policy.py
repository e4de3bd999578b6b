"""Shared machinery of the off-policy (replay) losses: targets, Q ensembles, priorities."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import Tensor, nn

from rlblocks.core import ACTION, DONE, NEXT, REWARD, TERMINATED
from rlblocks.core.fast_td import fast_get, shallow_copy
from rlblocks.core.specs import Bounded, TensorSpec
from rlblocks.objectives._keys import STEPS_TO_NEXT_OBS, TD_ERROR
from rlblocks.objectives._losses.base import (
    LossModule,
    frozen_call,
    merge_network_keys,
    network_output,
    next_key,
)
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["OffPolicyLoss", "action_bounds", "TemperatureMixin"]

OFF_POLICY_KEYS: dict[str, NestedKey] = {
    "action": ACTION,
    "reward": REWARD,
    "done": DONE,
    "terminated": TERMINATED,
    "priority": TD_ERROR,
    "steps_to_next_obs": STEPS_TO_NEXT_OBS,
}
#: Prioritized replay's importance weights, read by the losses that apply them.
PRIORITY_WEIGHT = "_weight"


def action_bounds(spec: TensorSpec | None, actor: nn.Module | None) -> tuple[Tensor, Tensor] | None:
    """``(low, high)`` of the action from ``spec``, else from the actor's spec, else ``None``."""
    for candidate in (spec, getattr(actor, "spec", None)):
        if isinstance(candidate, Bounded):
            return candidate.low, candidate.high
    return None


class OffPolicyLoss(LossModule):
    """Base of the replay losses.

    Targets come from ``value_estimator.value_estimate(batch, next_value=...)`` (one-step TD
    by default) with ``next_value`` from the target networks; ``|prediction - target|`` is
    written back into the batch at the ``priority`` key (``"td_error"``) for prioritized
    replay.
    """

    default_keys: ClassVar = OFF_POLICY_KEYS

    def _actor_critic_keys(
        self, actor: nn.Module, critic: nn.Module, critic_name: str
    ) -> tuple[dict[str, NestedKey], dict[NestedKey, str]]:
        """Keys of a loss that runs ``actor`` and a ``Q(s, a)`` ``critic`` at s and s'."""
        keys = {"action": self._keys.action, **self._transition_keys()}
        actor_keys = self._network_keys(actor, "actor network", nested=True)
        # The critic reads the next action from the actor, not from the data.
        critic_keys = {
            k: v
            for k, v in self._network_keys(critic, critic_name, nested=True).items()
            if k != next_key(self._keys.action)
        }
        return keys, merge_network_keys(actor_keys, critic_keys)

    def _bootstrap(self, tensordict: TensorDictBase, next_value: Tensor) -> Tensor:
        """The (detached) TD target for ``next_value``."""
        return self.value_estimator.value_estimate(tensordict, next_value=next_value.detach())

    def _weighted_mean(self, tensordict: TensorDictBase, per_sample: Tensor) -> Tensor:
        """The mean of ``per_sample`` (``[*batch, ...]``), each sample weighted by prioritized
        replay's importance weight when the batch carries one (role ``priority_weight``,
        ``"_weight"``, in the losses that declare it); uniform otherwise."""
        key = getattr(self._keys, "priority_weight", None)
        weight = None if key is None else fast_get(tensordict, key)
        if weight is None:
            return per_sample.mean()
        weight = weight.to(per_sample.dtype).reshape(
            *tensordict.batch_size, *([1] * (per_sample.ndim - tensordict.batch_dims))
        )
        return (weight * per_sample).mean()

    def _write_priority(
        self, tensordict: TensorDictBase, predictions: Sequence[Tensor] | Tensor, target: Tensor
    ) -> Tensor:
        """Write ``max |prediction - target|`` per sample at the priority key and return it.

        ``predictions``: one per critic, in a list or stacked along a first dim.
        """
        with torch.no_grad():
            if isinstance(predictions, Tensor):
                errors = (predictions - target).abs().amax(0)
            elif len(predictions) == 1:  # one critic: nothing to stack or reduce over
                errors = (predictions[0] - target).abs()
            else:
                errors = (torch.stack(list(predictions)) - target).abs().amax(0)
            batch = tensordict.batch_dims
            if errors.ndim > batch:
                errors = errors.flatten(batch).amax(-1)
            tensordict.set(self._keys.priority, errors)
        return errors

    def _with_action(
        self, tensordict: TensorDictBase, action: Tensor | None, nested: bool = False
    ) -> TensorDictBase:
        """A shallow copy of the root (or of ``"next"``), with ``action`` written into it."""
        out = shallow_copy(tensordict.get(NEXT) if nested else tensordict)
        if action is not None:
            out.set(self._keys.action, action)
        return out

    @staticmethod
    def _evaluate(
        networks: Sequence[nn.Module], tensordict: TensorDictBase, key: NestedKey, frozen: bool
    ) -> list[Tensor]:
        """Run each network on ``tensordict`` and read ``key``; frozen: no parameter grads."""
        if frozen:
            return [frozen_call(net, tensordict).get(key) for net in networks]
        return [network_output(net, tensordict, key) for net in networks]


class TemperatureMixin(nn.Module):
    """The entropy temperature ``alpha`` of the SAC family, learned through ``log_alpha``."""

    def _init_alpha(
        self,
        alpha_init: float,
        min_alpha: float | None,
        max_alpha: float | None,
        fixed_alpha: bool,
    ) -> None:
        if alpha_init <= 0:
            raise ObjectiveConfigError(
                f"{type(self).__name__}: alpha_init must be > 0, got {alpha_init}"
            )
        log_alpha = torch.tensor(math.log(alpha_init))
        if fixed_alpha:
            self.register_buffer("log_alpha", log_alpha)
        else:
            self.log_alpha = nn.Parameter(log_alpha)
        self.fixed_alpha = fixed_alpha
        self._log_alpha_bounds = (
            -math.inf if min_alpha is None else math.log(min_alpha),
            math.inf if max_alpha is None else math.log(max_alpha),
        )

    @property
    def alpha(self) -> Tensor:
        """The current temperature (detached)."""
        low, high = self._log_alpha_bounds
        return self.log_alpha.detach().clamp(low, high).exp()

    def _alpha_loss(self, entropy_gap: Tensor) -> Tensor:
        """``-mean(log_alpha * gap)``; ``gap = target_entropy - entropy`` (detached)."""
        if self.fixed_alpha:
            return torch.zeros((), device=self.log_alpha.device)
        return -(self.log_alpha * entropy_gap.detach()).mean()
