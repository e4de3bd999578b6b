"""``TDValueLoss``: the template's loss, TD(0) regression of a state-value network."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase

from rlblocks.objectives import STATE_VALUE, LossModule, ObjectiveConfigError, ShapeMismatchError

__all__ = ["TDValueLoss"]


class TDValueLoss(LossModule):
    """Fit ``V(s)`` to the one-step target ``r + gamma * (1 - terminated) * V(s')``.

    ``loss_value = mean((V(s) - target)^2)``, with the target computed without gradient.
    The keys are renamed by role with ``set_keys`` (``value``, ``reward``, ``done``,
    ``terminated``); ``reward`` and ``terminated`` are read under ``"next"``.

    Args:
        value_network: A TensorDict module writing ``"state_value"`` (e.g. a
            ``ValueOperator``); it is also run on the ``"next"`` observations.
        gamma: Discount, in ``[0, 1]``.

    Raises:
        ObjectiveConfigError: ``gamma`` is outside ``[0, 1]``.

    Example:
        >>> from rlblocks.objectives.modules import MLP, ValueOperator
        >>> loss = TDValueLoss(ValueOperator(MLP(in_features=7, out_features=1)), gamma=0.9)
        >>> total_loss(loss(batch)).backward()
    """

    # Roles the loss reads, with their default keys (LossModule.set_keys renames them).
    default_keys: ClassVar = {
        "value": STATE_VALUE,
        "reward": "reward",
        "done": "done",
        "terminated": "terminated",
    }

    def __init__(self, value_network: TensorDictModuleBase, *, gamma: float = 0.99) -> None:
        if not 0.0 <= gamma <= 1.0:
            raise ObjectiveConfigError(f"TDValueLoss: gamma must be in [0, 1], got {gamma}")
        super().__init__(gamma=gamma)
        self.value_network = value_network

    def _required_keys(self, tensordict: TensorDictBase | None = None) -> tuple[Any, Any]:
        # What LossModule checks before _loss runs, so a missing key fails with a message
        # that names it and says how to rename: our own keys, then the network's inputs.
        transition = self._transition_keys()
        own = {"reward": transition["reward"], "terminated": transition["terminated"]}
        return own, self._network_keys(self.value_network, "value network", nested=True)

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        transition = self._transition_keys()
        value = self.value_network(tensordict.copy()).get(self._keys.value)
        with torch.no_grad():
            next_value = self.value_network(tensordict.get("next").copy()).get(self._keys.value)
            reward = tensordict.get(transition["reward"])
            alive = 1.0 - tensordict.get(transition["terminated"]).to(next_value.dtype)
            target = reward + self.gamma * alive * next_value
        if value.shape != target.shape:
            raise ShapeMismatchError(
                f"TDValueLoss: V(s) has shape {list(value.shape)} but the TD target has shape "
                f"{list(target.shape)}; the value network must write one value per sample "
                f"shaped like the reward ([*batch, 1])"
            )
        return self._output(
            loss_value=(value - target).pow(2).mean(),
            td_error=(target - value).detach().abs().mean(),
        )
