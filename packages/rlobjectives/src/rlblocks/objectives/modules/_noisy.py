"""Noisy linear layers (Fortunato et al., 2018, "Noisy Networks for Exploration").

A :class:`NoisyLinear` layer learns, beside each weight ``mu``, the scale ``sigma`` of a
Gaussian perturbation: ``w = mu + sigma * eps``. The noise ``eps`` is factorised (one
vector per input and one per output, ``eps_ij = f(e_i) f(e_j)`` with
``f(x) = sign(x) sqrt(|x|)``), so drawing it costs ``in + out`` normal samples. It is kept
fixed until :meth:`NoisyLinear.reset_noise` (or :func:`reset_noise` on a whole network)
draws new noise: typically once per collected step and once per update. In eval mode the
layers use ``mu`` only (the greedy, deterministic network).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter

from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["NoisyLinear", "NoisyLazyLinear", "reset_noise"]


def _scaled_noise(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``f(e) = sign(e) * sqrt(|e|)`` of ``size`` standard normal draws."""
    noise = torch.randn(size, device=device, dtype=dtype)
    return noise.sign() * noise.abs().sqrt()


def _check_std_init(owner: str, std_init: float) -> float:
    if not (isinstance(std_init, (int, float)) and math.isfinite(std_init)) or std_init < 0:
        raise ObjectiveConfigError(
            f"{owner}: std_init must be a finite number >= 0 (the initial noise scale; "
            f"TorchRL uses 0.1, the paper 0.5), got {std_init!r}"
        )
    return float(std_init)


class NoisyLinear(nn.Linear):
    """A linear layer with learned, factorised Gaussian noise on its weights and bias.

    ``y = (mu_w + sigma_w * eps_w) x + mu_b + sigma_b * eps_b`` in train mode,
    ``y = mu_w x + mu_b`` in eval mode. ``mu`` starts uniform in ``+-1/sqrt(in_features)``
    and ``sigma`` at ``std_init / sqrt(in_features)`` (weights) and
    ``std_init / sqrt(out_features)`` (bias), as in TorchRL. ``weight`` and ``bias`` read
    the effective (noisy or mean) values; the trained parameters are ``weight_mu``,
    ``weight_sigma``, ``bias_mu`` and ``bias_sigma``.

    Args:
        in_features: Input size.
        out_features: Output size.
        bias: Learn a (noisy) bias.
        device: Device of the parameters.
        dtype: Dtype of the parameters.
        std_init: Initial noise scale ``sigma_0``.

    Raises:
        ObjectiveConfigError: ``std_init`` is negative or not finite.

    Example:
        >>> layer = NoisyLinear(4, 2)
        >>> y1 = layer(torch.ones(4))
        >>> layer.reset_noise()        # new noise: another network
        >>> y2 = layer(torch.ones(4))  # differs from y1
        >>> _ = layer.eval()           # the mean network: deterministic
        >>> MLP(4, 2, layer_class=NoisyLinear)  # every layer noisy
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        std_init: float = 0.1,
    ) -> None:
        # nn.Linear's own weight/bias are replaced by the mu/sigma pairs below.
        nn.Module.__init__(self)
        self.in_features = in_features
        self.out_features = out_features
        self.std_init = _check_std_init(type(self).__name__, std_init)
        factory = {"device": device, "dtype": dtype}
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.register_buffer("weight_epsilon", torch.empty(out_features, in_features, **factory))
        if bias:
            self.bias_mu = nn.Parameter(torch.empty(out_features, **factory))
            self.bias_sigma = nn.Parameter(torch.empty(out_features, **factory))
            self.register_buffer("bias_epsilon", torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias_mu", None)
            self.register_parameter("bias_sigma", None)
            self.register_buffer("bias_epsilon", None)
        self.reset_parameters()
        self.reset_noise()

    # nn.Linear's attributes, read from the mean and noise; never assigned.
    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The weights in use: ``mu + sigma * eps`` in train mode, ``mu`` in eval mode."""
        if self.training:
            return self.weight_mu + self.weight_sigma * self.weight_epsilon
        return self.weight_mu

    @property
    def bias(self) -> torch.Tensor | None:  # type: ignore[override]
        """The bias in use (``None`` without a bias), noisy in train mode."""
        if self.bias_mu is None:
            return None
        if self.training:
            return self.bias_mu + self.bias_sigma * self.bias_epsilon
        return self.bias_mu

    def reset_parameters(self) -> None:
        """Draw ``mu`` uniformly in ``+-1/sqrt(in_features)``; set ``sigma`` to its start."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight_mu.uniform_(-bound, bound)
            self.weight_sigma.fill_(self.std_init / math.sqrt(self.in_features))
            if self.bias_mu is not None:
                self.bias_mu.uniform_(-bound, bound)
                self.bias_sigma.fill_(self.std_init / math.sqrt(self.out_features))

    @torch.no_grad()
    def reset_noise(self) -> None:
        """Draw new factorised noise (from torch's global generator)."""
        mu = self.weight_mu
        noise_in = _scaled_noise(self.in_features, mu.device, mu.dtype)
        noise_out = _scaled_noise(self.out_features, mu.device, mu.dtype)
        self.weight_epsilon.copy_(torch.outer(noise_out, noise_in))
        if self.bias_epsilon is not None:
            self.bias_epsilon.copy_(noise_out)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``input @ weight.T + bias`` with the weights in use (see :attr:`weight`)."""
        return nn.functional.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias_mu is not None}, std_init={self.std_init}"
        )


class NoisyLazyLinear(LazyModuleMixin, NoisyLinear):
    """A :class:`NoisyLinear` whose ``in_features`` is read from its first input.

    It becomes a :class:`NoisyLinear` after the first call; call it once on a sample
    before building a loss or an optimizer.

    Args:
        out_features: Output size.
        bias: Learn a (noisy) bias.
        device: Device of the parameters.
        dtype: Dtype of the parameters.
        std_init: Initial noise scale ``sigma_0``.

    Example:
        >>> layer = NoisyLazyLinear(2)
        >>> layer(torch.zeros(5, 7)).shape
        torch.Size([5, 2])
    """

    cls_to_become = NoisyLinear

    def __init__(
        self,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        std_init: float = 0.1,
    ) -> None:
        factory = {"device": device, "dtype": dtype}
        # Sized 0 x 0 by NoisyLinear, then replaced by uninitialized placeholders.
        super().__init__(0, out_features, bias, std_init=std_init, **factory)
        self.weight_mu = UninitializedParameter(**factory)
        self.weight_sigma = UninitializedParameter(**factory)
        self.weight_epsilon = UninitializedBuffer(**factory)
        if bias:
            self.bias_mu = UninitializedParameter(**factory)
            self.bias_sigma = UninitializedParameter(**factory)
            self.bias_epsilon = UninitializedBuffer(**factory)

    def reset_parameters(self) -> None:
        """Initialize the parameters once their size is known (see :class:`NoisyLinear`)."""
        if not self.has_uninitialized_params() and self.in_features != 0:
            super().reset_parameters()

    def reset_noise(self) -> None:
        """Draw new noise once the layer is sized (see :class:`NoisyLinear`)."""
        if not self.has_uninitialized_params() and self.in_features != 0:
            super().reset_noise()

    def initialize_parameters(self, input: torch.Tensor) -> None:  # type: ignore[override]
        """Size the layer from ``input``'s last dim, then initialize it and its noise."""
        if not self.has_uninitialized_params():
            return
        self.in_features = input.shape[-1]
        with torch.no_grad():
            self.weight_mu.materialize((self.out_features, self.in_features))
            self.weight_sigma.materialize((self.out_features, self.in_features))
            self.weight_epsilon.materialize((self.out_features, self.in_features))
            if self.bias_mu is not None:
                self.bias_mu.materialize((self.out_features,))
                self.bias_sigma.materialize((self.out_features,))
                self.bias_epsilon.materialize((self.out_features,))
        self.reset_parameters()
        self.reset_noise()


def reset_noise(module: nn.Module) -> int:
    """Draw new noise in every :class:`NoisyLinear` of ``module`` (itself included).

    Call it after each collected step (the policy) and before each update (the loss's
    networks, target networks included), as NoisyNet-DQN does.

    Args:
        module: Any module, e.g. a ``QValueActor`` or a loss.

    Returns:
        How many layers got new noise (0: ``module`` has no noisy layer).

    Example:
        >>> actor = QValueActor(MLP(4, 2, layer_class=NoisyLinear), spec=Categorical(2))
        >>> reset_noise(actor)
        3
    """
    count = 0
    for sub in module.modules():
        if isinstance(sub, NoisyLinear):
            sub.reset_noise()
            count += 1
    return count
