"""Deep Q-learning loss (Mnih et al., 2015), with the double-DQN target as an option."""

from __future__ import annotations

from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor

from rlblocks.core import NEXT
from rlblocks.objectives._keys import ACTION_VALUE
from rlblocks.objectives._losses.base import check_distance, distance_loss, network_output
from rlblocks.objectives._losses.off_policy import (
    OFF_POLICY_KEYS,
    PRIORITY_WEIGHT,
    OffPolicyLoss,
)
from rlblocks.objectives.errors import ShapeMismatchError
from rlblocks.objectives.modules._actors import QValueModule

__all__ = ["DQNLoss", "action_mask_key", "greedy_values", "select_action_values", "values_only"]


def select_action_values(owner: str, values: Tensor, action: Tensor) -> Tensor:
    """``Q(s, a)`` of the taken actions: ``values [*batch, n]``, one-hot or index actions.

    Returns:
        ``[*batch, 1]``.
    """
    if action.shape == values.shape:  # one-hot
        return (values * action.to(values.dtype)).sum(-1, keepdim=True)
    batch = values.shape[:-1]
    if action.shape in (batch, (*batch, 1)):
        return values.gather(-1, action.reshape(*batch, 1).long())
    raise ShapeMismatchError(
        f"{owner}: the action has shape {list(action.shape)} but the action values have shape "
        f"{list(values.shape)}; expected a one-hot action {list(values.shape)} or an index "
        f"{list(batch)} / {[*batch, 1]}"
    )


def action_mask_key(network: TensorDictModuleBase) -> NestedKey | None:
    """The ``action_mask_key`` of the greedy head (``QValueModule``) inside ``network``."""
    greedy = next((m for m in network.modules() if isinstance(m, QValueModule)), None)
    return getattr(greedy, "action_mask_key", None)


def greedy_values(
    values: Tensor, choose_from: Tensor | None = None, mask: Tensor | None = None
) -> Tensor:
    """``values`` of the best allowed action, ``[*batch, 1]``.

    The action maximizes ``choose_from`` (default ``values``; the online network's values
    for double DQN) among those ``mask`` allows. A state with no allowed action (a terminal
    one) gets a finite value rather than ``-inf``, so that ``(1 - terminated) * value`` is 0.
    """
    scores = values if choose_from is None else choose_from
    if mask is not None:
        scores = scores.masked_fill(~mask.bool(), float("-inf"))
    return values.gather(-1, scores.argmax(-1, keepdim=True))


def values_only(network: TensorDictModuleBase) -> TensorDictModuleBase:
    """The part of ``network`` that writes the action values: a ``QValueActor``'s
    ``action_value_module`` (its greedy action is not needed here), else ``network``."""
    return getattr(network, "action_value_module", network)


class DQNLoss(OffPolicyLoss):
    """The DQN loss ``mean(d(Q(s, a), r + gamma * (1 - terminated) * max_a' Q_target(s', a')))``.

    With ``double_dqn=True`` the next action is chosen by the online network and valued by
    the target network (van Hasselt et al., 2016). When the network's ``QValueModule`` has an
    ``action_mask_key``, the next action is the best one the next state's mask allows. The
    target network is a frozen copy (``target_value_network``) updated by
    :class:`SoftUpdate`/:class:`HardUpdate`; with
    ``delay_value=False`` the online network is used (without gradient). On n-step
    transitions (``rlblocks.buffers.MultiStepTransform``), which carry
    ``steps_to_next_obs``, the next value is discounted by ``gamma ** steps_to_next_obs``.

    Args:
        value_network: A ``QValueActor`` (writes ``action_value``, one value per action).
        loss_function: ``"l2"``, ``"l1"`` or ``"smooth_l1"``.
        delay_value: Keep a target network.
        double_dqn: Use the double-DQN target.
        gamma: Discount.

    Returns (per call): ``loss_qvalue`` and, per sample (``[*batch]``) as in the other
    value-based losses, the diagnostics ``pred_value`` (``Q(s, a)``) and ``target_value``.
    The batch gets ``td_error`` (``|Q - target|`` per sample) for prioritized replay, and a
    batch that carries its importance weights (``"_weight"``, role ``priority_weight``)
    weights each sample's term by them (all 1 with ``beta = 0``).
    TorchRL's ``DQNLoss`` names its term ``"loss"``: read ``out["loss_qvalue"]`` (or
    ``total_loss(out)``) instead.

    Example:
        >>> loss = DQNLoss(QValueActor(MLP(out_features=2), spec=Categorical(2)))
        >>> updater = HardUpdate(loss, period=500)
    """

    default_keys: ClassVar = {
        **OFF_POLICY_KEYS,
        "action_value": ACTION_VALUE,
        "priority_weight": PRIORITY_WEIGHT,
    }

    def __init__(
        self,
        value_network: TensorDictModuleBase,
        *,
        loss_function: str = "l2",
        delay_value: bool = True,
        double_dqn: bool = False,
        gamma: float = 0.99,
    ) -> None:
        super().__init__(gamma=gamma)
        self.value_network = value_network
        self.loss_function = check_distance("DQNLoss", loss_function)
        self.delay_value = delay_value
        self.double_dqn = double_dqn
        # The greedy head's action mask: the max over next actions obeys it.
        self._mask_key = action_mask_key(value_network)
        if delay_value:
            self._register_target("value_network")

    def _required_keys(self, tensordict=None):
        loss_keys = {"action": self._keys.action, **self._transition_keys()}
        return loss_keys, self._network_keys(self.value_network, "value network", nested=True)

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        key = self._keys.action_value
        value_net = values_only(self.value_network)
        values = network_output(value_net, tensordict, key)
        pred = select_action_values("DQNLoss", values, tensordict.get(self._keys.action))
        with torch.no_grad():
            target_net = values_only(self._target("value_network", self.delay_value))
            next_td = tensordict.get(NEXT)
            next_values = network_output(target_net, next_td, key)
            online = network_output(value_net, next_td, key) if self.double_dqn else None
            mask = None if self._mask_key is None else next_td.get(self._mask_key)
            next_value = greedy_values(next_values, online, mask)
        target = self._bootstrap(tensordict, next_value)
        loss = self._weighted_mean(
            tensordict, distance_loss("DQNLoss", pred, target, self.loss_function)
        )
        self._write_priority(tensordict, [pred], target)
        return self._output(
            loss_qvalue=loss,
            pred_value=pred.detach().squeeze(-1),
            target_value=target.detach().squeeze(-1),
        )
