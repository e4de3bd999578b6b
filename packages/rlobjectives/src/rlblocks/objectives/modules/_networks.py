"""Plain ``torch.nn`` networks: :class:`MLP` and :class:`ConvNet`.

They take and return tensors; wrap them in a TensorDict module (``Actor``,
``ValueOperator``, ``TensorDictModule``...) to read and write keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["MLP", "ConvNet"]

_DEFAULT_DEPTH = 3
_DEFAULT_CELLS = 32


def _cells(owner: str, num_cells: int | Sequence[int] | None, depth: int | None) -> list[int]:
    if num_cells is None:
        num_cells = _DEFAULT_CELLS
    if isinstance(num_cells, int):
        depth = _DEFAULT_DEPTH if depth is None else depth
        if depth < 0:
            raise ObjectiveConfigError(f"{owner}: depth must be >= 0, got {depth}")
        return [num_cells] * depth
    cells = list(num_cells)
    if depth is not None and depth != len(cells):
        raise ObjectiveConfigError(
            f"{owner}: depth={depth} disagrees with num_cells={cells} ({len(cells)} layers); "
            f"pass one of them"
        )
    return cells


class MLP(nn.Sequential):
    """A multi-layer perceptron over the last dim; any leading dims are batch dims.

    Several inputs (e.g. observation and action for a Q-network) are concatenated along
    the last dim.

    Args:
        in_features: Input size; ``None`` makes the first layer lazy (sized on first call).
        out_features: Output size; a tuple reshapes the last dim to it.
        num_cells: Hidden sizes: a list (one per layer) or an int repeated ``depth`` times.
            Defaults to 32 cells.
        depth: Number of hidden layers when ``num_cells`` is an int (default 3).
        activation_class: Activation after each hidden layer.
        activation_kwargs: Keyword arguments of ``activation_class``.
        activate_last_layer: Also apply the activation to the output.
        layer_class: The linear layer class (``nn.Linear`` or a compatible one).
        device: Device of the parameters.

    Example:
        >>> net = MLP(out_features=2, num_cells=[64, 64])
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        in_features: int | None = None,
        out_features: int | Sequence[int] | None = None,
        *,
        num_cells: int | Sequence[int] | None = None,
        depth: int | None = None,
        activation_class: type[nn.Module] = nn.Tanh,
        activation_kwargs: dict[str, Any] | None = None,
        activate_last_layer: bool = False,
        layer_class: type[nn.Module] = nn.Linear,
        device: torch.device | str | None = None,
    ) -> None:
        if out_features is None:
            raise ObjectiveConfigError("MLP: out_features is required, e.g. MLP(out_features=2)")
        out_shape = (out_features,) if isinstance(out_features, int) else tuple(out_features)
        out_total = int(torch.Size(out_shape).numel())
        sizes = [*_cells("MLP", num_cells, depth), out_total]
        layers: list[nn.Module] = []
        previous = in_features
        for i, size in enumerate(sizes):
            if previous is None:
                layers.append(nn.LazyLinear(size, device=device))
            else:
                layers.append(layer_class(previous, size, device=device))
            if i < len(sizes) - 1 or activate_last_layer:
                layers.append(activation_class(**(activation_kwargs or {})))
            previous = size
        if len(out_shape) > 1:
            layers.append(nn.Unflatten(-1, out_shape))
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_shape if len(out_shape) > 1 else out_total

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Apply the layers; several inputs are concatenated along the last dim first."""
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, -1)
        return super().forward(x)


def _per_layer(owner: str, name: str, value: int | Sequence[int], layers: int) -> list[int]:
    if isinstance(value, int):
        return [value] * layers
    values = list(value)
    if len(values) != layers:
        raise ObjectiveConfigError(
            f"{owner}: {name} has {len(values)} entries but there are {layers} layers"
        )
    return values


class ConvNet(nn.Module):
    """A stack of 2-d convolutions, flattened to a feature vector.

    Input ``[*batch, C, H, W]``, output ``[*batch, features]``; any number of leading batch
    dims is accepted.

    Args:
        in_features: Input channels; ``None`` makes the first layer lazy.
        num_cells: Output channels of each convolution.
        kernel_sizes: One kernel size, or one per layer.
        strides: One stride, or one per layer.
        paddings: One padding, or one per layer.
        activation_class: Activation after each convolution.
        device: Device of the parameters.

    Example:
        >>> net = ConvNet(num_cells=[16, 32], kernel_sizes=[8, 4], strides=[4, 2])
        >>> net(torch.zeros(2, 4, 84, 84)).shape
        torch.Size([2, 2592])
    """

    def __init__(
        self,
        in_features: int | None = None,
        *,
        num_cells: Sequence[int] = (32, 32, 32),
        kernel_sizes: int | Sequence[int] = 3,
        strides: int | Sequence[int] = 1,
        paddings: int | Sequence[int] = 0,
        activation_class: type[nn.Module] = nn.ELU,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        cells = list(num_cells)
        n = len(cells)
        kernels = _per_layer("ConvNet", "kernel_sizes", kernel_sizes, n)
        strides_ = _per_layer("ConvNet", "strides", strides, n)
        paddings_ = _per_layer("ConvNet", "paddings", paddings, n)
        layers: list[nn.Module] = []
        previous = in_features
        for size, k, s, p in zip(cells, kernels, strides_, paddings_):
            if previous is None:
                layers.append(nn.LazyConv2d(size, k, stride=s, padding=p, device=device))
            else:
                layers.append(nn.Conv2d(previous, size, k, stride=s, padding=p, device=device))
            layers.append(activation_class())
            previous = size
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[*batch, C, H, W]`` to ``[*batch, features]``."""
        if x.ndim < 3:
            raise ObjectiveConfigError(
                f"ConvNet expects inputs shaped [*batch, C, H, W], got shape {list(x.shape)}"
            )
        batch = x.shape[:-3]
        y = self.layers(x.reshape(-1, *x.shape[-3:]))
        return y.reshape(*batch, -1)
