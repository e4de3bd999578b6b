"""Plain ``torch.nn`` networks: :class:`MLP`, :class:`ConvNet` and :class:`SquashDims`.

They take and return tensors; wrap them in a TensorDict module (``Actor``,
``ValueOperator``, ``TensorDictModule``...) to read and write keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from rlblocks.core.utils import check_int
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["MLP", "ConvNet", "SquashDims"]

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


def _norm_layer(
    norm_class: type[nn.Module],
    norm_kwargs: dict[str, Any] | None,
    size: int,
    device: torch.device | str | None,
) -> nn.Module:
    kwargs = dict(norm_kwargs or {})
    layer = norm_class(**kwargs) if "num_features" in kwargs else norm_class(size, **kwargs)
    return layer if device is None else layer.to(device)


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
        norm_class: A normalization layer put between each linear layer and its activation,
            built as ``norm_class(size, **norm_kwargs)`` (e.g. :class:`BatchRenorm1d` for a
            CrossQ critic, ``nn.LayerNorm``). With ``num_features`` in ``norm_kwargs``
            (TorchRL's convention) it is built as ``norm_class(**norm_kwargs)``.
        norm_kwargs: Keyword arguments of ``norm_class``.
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
        norm_class: type[nn.Module] | None = None,
        norm_kwargs: dict[str, Any] | None = None,
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
                if norm_class is not None:
                    layers.append(_norm_layer(norm_class, norm_kwargs, size, device))
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


def _per_layer(owner: str, name: str, value: Any, layers: int) -> list[Any]:
    """``value`` for each of ``layers`` layers: a list/tuple gives one entry per layer."""
    if not isinstance(value, (list, tuple)):
        return [value] * layers
    values = list(value)
    if len(values) != layers:
        raise ObjectiveConfigError(
            f"{owner}: {name} has {len(values)} entries but there are {layers} layers"
        )
    return values


class SquashDims(nn.Module):
    """Flatten the last ``ndims_in`` dims into one, e.g. ``[*batch, C, H, W] -> [*batch, C*H*W]``.

    :class:`ConvNet`'s default aggregator, as in TorchRL.

    Args:
        ndims_in: How many trailing dims to flatten.

    Example:
        >>> SquashDims()(torch.zeros(5, 8, 4, 4)).shape
        torch.Size([5, 128])
    """

    def __init__(self, ndims_in: int = 3) -> None:
        super().__init__()
        self.ndims_in = check_int(ndims_in, "ndims_in", "SquashDims", error=ObjectiveConfigError)

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        """Flatten the last ``ndims_in`` dims of ``value``."""
        if value.ndim < self.ndims_in:
            raise ObjectiveConfigError(
                f"SquashDims(ndims_in={self.ndims_in}) flattens the last {self.ndims_in} dims "
                f"but got a tensor of shape {list(value.shape)}; lower ndims_in or check the "
                f"input"
            )
        return value.flatten(-self.ndims_in)

    def extra_repr(self) -> str:
        return f"ndims_in={self.ndims_in}"


def _conv_cells(
    num_cells: int | Sequence[int] | None, depth: int | None, *per_layer: Any
) -> list[int]:
    """The output channels of each layer of a :class:`ConvNet` (TorchRL's rules for depth).

    ``depth`` comes from ``depth``, else from ``num_cells`` as a list, else from the first
    per-layer argument given as a list, else it is 3.
    """
    if depth is not None:
        depth = check_int(depth, "depth", "ConvNet", error=ObjectiveConfigError)
    elif num_cells is None or isinstance(num_cells, int):
        depth = next((len(v) for v in per_layer if isinstance(v, (list, tuple))), None)
    cells = _cells("ConvNet", num_cells, depth)
    if not cells:
        raise ObjectiveConfigError(
            "ConvNet: needs at least one layer, got num_cells=[] (or depth 0); pass e.g. "
            "num_cells=[32, 32] or depth=2"
        )
    return cells


class ConvNet(nn.Module):
    """A stack of 2-d convolutions followed by an aggregator (by default, a flatten).

    Input ``[*batch, C, H, W]``, output ``[*batch, features]`` with the default
    :class:`SquashDims` aggregator (``[*batch, C', H', W']`` with ``aggregator_class=None``);
    any number of leading batch dims is accepted. The arguments are TorchRL's.

    Args:
        in_features: Input channels; ``None`` makes the first layer lazy.
        num_cells: Output channels: one per layer, or an int repeated ``depth`` times.
            Defaults to 32 channels.
        depth: Number of layers when ``num_cells`` is an int or ``None``; by default the
            length of the first of ``kernel_sizes``/``strides``/``paddings`` given as a list,
            else 3.
        kernel_sizes: One kernel size, or one per layer.
        strides: One stride, or one per layer.
        paddings: One padding, or one per layer.
        activation_class: Activation after each convolution.
        activation_kwargs: Keyword arguments of ``activation_class`` (or a list, one dict
            per layer).
        bias_last_layer: Give the last convolution a bias.
        aggregator_class: Module class applied to the output of the last layer (``None``:
            keep the feature maps).
        aggregator_kwargs: Keyword arguments of ``aggregator_class``.
        device: Device of the parameters.

    Raises:
        ObjectiveConfigError: ``depth`` is not a positive int, or the per-layer arguments
            disagree on the number of layers.

    Example:
        >>> net = ConvNet(num_cells=[16, 32], kernel_sizes=[8, 4], strides=[4, 2])
        >>> net(torch.zeros(2, 4, 84, 84)).shape
        torch.Size([2, 2592])
    """

    def __init__(
        self,
        in_features: int | None = None,
        *,
        num_cells: int | Sequence[int] | None = None,
        depth: int | None = None,
        kernel_sizes: int | Sequence[int] = 3,
        strides: int | Sequence[int] = 1,
        paddings: int | Sequence[int] = 0,
        activation_class: type[nn.Module] = nn.ELU,
        activation_kwargs: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        bias_last_layer: bool = True,
        aggregator_class: type[nn.Module] | Callable[..., nn.Module] | None = SquashDims,
        aggregator_kwargs: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        cells = _conv_cells(num_cells, depth, kernel_sizes, strides, paddings)
        n = len(cells)
        kernels = _per_layer("ConvNet", "kernel_sizes", kernel_sizes, n)
        strides_ = _per_layer("ConvNet", "strides", strides, n)
        paddings_ = _per_layer("ConvNet", "paddings", paddings, n)
        activations = _per_layer("ConvNet", "activation_kwargs", activation_kwargs or {}, n)
        layers: list[nn.Module] = []
        previous = in_features
        for i, (size, k, s, p, act) in enumerate(
            zip(cells, kernels, strides_, paddings_, activations)
        ):
            bias = bias_last_layer or i < n - 1
            if previous is None:
                conv = nn.LazyConv2d(size, k, stride=s, padding=p, bias=bias, device=device)
            else:
                conv = nn.Conv2d(previous, size, k, stride=s, padding=p, bias=bias, device=device)
            layers += [conv, activation_class(**act)]
            previous = size
        if aggregator_class is not None:
            layers.append(aggregator_class(**(aggregator_kwargs or {})))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[*batch, C, H, W]`` to ``[*batch, *aggregated]``."""
        if x.ndim < 3:
            raise ObjectiveConfigError(
                f"ConvNet expects inputs shaped [*batch, C, H, W], got shape {list(x.shape)}"
            )
        batch = x.shape[:-3]
        y = self.layers(x.reshape(-1, *x.shape[-3:]))
        return y.reshape(*batch, *y.shape[1:])
