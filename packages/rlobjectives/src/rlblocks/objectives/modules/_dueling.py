"""Dueling Q-networks (Wang et al., 2016): ``Q = V + A - mean(A)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules._networks import MLP

__all__ = ["DuelingMlpDQNet"]


def _output_kwargs(kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """TorchRL's defaults for the heads, updated with ``kwargs``.

    TorchRL's ``MLP`` takes ``bias_last_layer``; rlblocks' always has a last bias, so
    ``bias_last_layer=True`` is accepted (and dropped) for code written for TorchRL.
    """
    out: dict[str, Any] = {"depth": 1, "activation_class": nn.ELU, "num_cells": 512}
    out.update(kwargs or {})
    if not out.pop("bias_last_layer", True):
        raise ObjectiveConfigError(
            "DuelingMlpDQNet: mlp_kwargs_output has bias_last_layer=False, but rlblocks' MLP "
            "always has a bias on its last layer; drop the argument"
        )
    return out


class DuelingMlpDQNet(nn.Module):
    """A dueling Q-network: a shared MLP trunk, then a value and an advantage head.

    ``Q(s, a) = V(s) + A(s, a) - mean_a A(s, a)``: the mean over actions (the last dim)
    makes ``V`` and ``A`` identifiable. The arguments and defaults are TorchRL's: a trunk
    ``[256, 256] -> 256`` with ELU activations (its last layer activated too) and heads of
    one hidden layer of 512 cells; the first layer of each part is lazy unless
    ``in_features`` is given in its kwargs.

    For a distributional (C51) network, give the atoms first:
    ``out_features=(n_atoms, n_actions)`` and ``out_features_value=(n_atoms, 1)``; the
    mean is still taken over actions (then apply a log-softmax over the atoms, as
    :class:`DistributionalQValueActor` does).

    Args:
        out_features: Number of actions, or the advantage head's output shape (actions
            last).
        out_features_value: The value head's output shape: as many dims as
            ``out_features``, each 1 or equal (``1``, or ``(n_atoms, 1)``).
        mlp_kwargs_feature: :class:`MLP` keyword arguments of the trunk, over the defaults
            above (e.g. ``{"in_features": 4, "num_cells": [64], "out_features": 64}``).
        mlp_kwargs_output: :class:`MLP` keyword arguments of both heads (e.g.
            ``{"num_cells": 64, "layer_class": NoisyLinear}`` for a noisy dueling net).
        device: Device of the parameters.

    Raises:
        ObjectiveConfigError: The value head's shape does not broadcast against the
            advantage head's, dim by dim.

    Example:
        >>> net = DuelingMlpDQNet(
        ...     2, mlp_kwargs_feature={"in_features": 4, "num_cells": [64], "out_features": 64},
        ...     mlp_kwargs_output={"in_features": 64, "num_cells": 64},
        ... )
        >>> actor = QValueActor(net, spec=Categorical(2))
    """

    def __init__(
        self,
        out_features: int | Sequence[int],
        out_features_value: int | Sequence[int] = 1,
        mlp_kwargs_feature: dict[str, Any] | None = None,
        mlp_kwargs_output: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        advantage_shape = _shape(out_features)
        value_shape = _shape(out_features_value)
        # Same number of dims: a value [*batch, 1] would not line up with an advantage
        # [*batch, n_atoms, n_actions] under the batch dims.
        if len(value_shape) != len(advantage_shape) or any(
            v not in (1, a) for v, a in zip(value_shape, advantage_shape)
        ):
            raise ObjectiveConfigError(
                f"DuelingMlpDQNet: out_features_value={out_features_value!r} does not "
                f"broadcast against out_features={out_features!r}: give it as many dims, "
                f"each 1 or equal (1 for n actions, (n_atoms, 1) for (n_atoms, n_actions))"
            )
        feature = {
            "num_cells": [256, 256],
            "out_features": 256,
            "activation_class": nn.ELU,
            "activate_last_layer": True,
            **(mlp_kwargs_feature or {}),
        }
        output = _output_kwargs(mlp_kwargs_output)
        self.features = MLP(device=device, **feature)
        self.advantage = MLP(out_features=out_features, device=device, **output)
        self.value = MLP(out_features=out_features_value, device=device, **output)
        self.out_features = out_features
        self.out_features_value = out_features_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``V + A - mean(A)`` over the last dim (the actions)."""
        hidden = self.features(x)
        advantage = self.advantage(hidden)
        value = self.value(hidden)
        return value + advantage - advantage.mean(-1, keepdim=True)


def _shape(size: int | Sequence[int]) -> tuple[int, ...]:
    return (size,) if isinstance(size, int) else tuple(size)
