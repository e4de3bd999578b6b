"""Batch renormalization (Ioffe, 2017): :class:`BatchRenorm1d`, CrossQ's critic normalization.

Batch normalization trains on minibatch statistics and acts on running ones; when the data
drifts (a replay buffer filling with a changing policy's transitions), the two disagree and
the network sees inputs at test time it was never trained on. Batch renormalization
corrects each minibatch towards the running statistics by clipped factors ``r`` and ``d``,
so that training and acting normalize alike.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlblocks.core.utils import check_int
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["BatchRenorm1d"]


class BatchRenorm1d(nn.Module):
    """Batch renormalization over the last dim; every leading dim is a batch dim.

    In training mode, with ``mu_B``/``sigma_B`` the minibatch mean and standard deviation
    (over every leading dim) and ``mu``/``sigma`` the running ones:

    - ``r = clip(sigma_B / sigma, 1 / max_r, max_r)`` and
      ``d = clip((mu_B - mu) / sigma, -max_d, max_d)``, both without gradient;
    - ``y = weight * ((x - mu_B) / sigma_B * r + d) + bias``;
    - ``mu`` and ``sigma ** 2`` move towards ``mu_B`` and the unbiased minibatch variance by
      ``momentum``, and ``num_batches_tracked`` counts the call.

    For the first ``warmup_steps`` training calls ``r = 1`` and ``d = 0`` (plain batch
    normalization while the running statistics settle); with ``smooth`` the factors fade in
    linearly over that span instead. In eval mode ``y = weight * (x - mu) / sigma + bias``.

    The arguments are TorchRL's; unlike TorchRL's (which normalizes dim 1, as
    ``nn.BatchNorm1d`` does), the features are the last dim, like :class:`MLP`'s.

    Args:
        num_features: Size of the last dim.
        momentum: Weight of the minibatch in the running statistics' update.
        eps: Added to the variances.
        max_r: Bound of the scale correction ``r`` (``>= 1``).
        max_d: Bound of the shift correction ``d`` (``>= 0``).
        warmup_steps: Training calls before the corrections apply (0: from the first).
        smooth: Fade the corrections in over ``warmup_steps`` instead of switching.

    Raises:
        ObjectiveConfigError: A count is not a positive int, ``momentum`` is not in
            ``(0, 1]``, or a bound is out of range.

    Example:
        >>> norm = BatchRenorm1d(64, warmup_steps=10_000)
        >>> norm(torch.randn(256, 64)).shape
        torch.Size([256, 64])
        >>> critic = MLP(5, 1, num_cells=[512, 512], norm_class=BatchRenorm1d)  # CrossQ
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.01,
        eps: float = 1e-5,
        max_r: float = 3.0,
        max_d: float = 5.0,
        warmup_steps: int = 10_000,
        smooth: bool = False,
    ) -> None:
        super().__init__()
        owner = "BatchRenorm1d"
        self.num_features = check_int(
            num_features, "num_features", owner, error=ObjectiveConfigError
        )
        if not 0.0 < momentum <= 1.0:
            raise ObjectiveConfigError(
                f"{owner}: momentum must be in (0, 1] (the minibatch's weight in the running "
                f"statistics; CrossQ uses 0.01), got {momentum!r}"
            )
        if not (eps > 0 and max_r >= 1.0 and max_d >= 0.0):
            raise ObjectiveConfigError(
                f"{owner}: needs eps > 0, max_r >= 1 and max_d >= 0, got eps={eps!r}, "
                f"max_r={max_r!r}, max_d={max_d!r}"
            )
        self.momentum = float(momentum)
        self.eps = float(eps)
        self.max_r = float(max_r)
        self.max_d = float(max_d)
        self.warmup_steps = check_int(
            warmup_steps, "warmup_steps", owner, minimum=0, error=ObjectiveConfigError
        )
        self.smooth = bool(smooth)
        self.weight = nn.Parameter(torch.ones(self.num_features))
        self.bias = nn.Parameter(torch.zeros(self.num_features))
        self.register_buffer("running_mean", torch.zeros(self.num_features))
        self.register_buffer("running_var", torch.ones(self.num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_parameters(self) -> None:
        """Reset the affine parameters and the running statistics."""
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def _correction_weight(self, dtype: torch.dtype) -> Tensor:
        """How much of ``r`` and ``d`` applies: 0 during warm-up, then 1 (or a ramp)."""
        steps = self.num_batches_tracked
        if self.warmup_steps == 0:
            return torch.ones_like(steps, dtype=dtype)
        if self.smooth:
            return (steps.to(dtype) / self.warmup_steps).clamp(max=1.0)
        return (steps >= self.warmup_steps).to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x`` (``[*batch, num_features]``) and apply the affine map."""
        if x.ndim < 1 or x.shape[-1] != self.num_features:
            raise ObjectiveConfigError(
                f"BatchRenorm1d({self.num_features}) normalizes the last dim, got an input of "
                f"shape {list(x.shape)}; pass [*batch, {self.num_features}]"
            )
        # A copy of the statistics as they are now. torch.compile may recompute in the
        # backward what it derives from a buffer, reading the buffer after a later in-place
        # update (the one below, or a training call's before an eval call in the same graph):
        # silently wrong gradients (pytorch/pytorch#197039). It never recomputes a stack, so
        # the backward reads this copy.
        weight = self._correction_weight(x.dtype).expand(self.num_features)
        snapshot = torch.stack([self.running_mean, self.running_var, weight])
        running_mean, running_var, weight = snapshot.unbind(0)
        running_std = (running_var + self.eps).sqrt()
        if not self.training:
            return self.weight * (x - running_mean) / running_std + self.bias
        dims = tuple(range(x.ndim - 1))
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        std = (var + self.eps).sqrt()
        r = (std.detach() / running_std).clamp(1.0 / self.max_r, self.max_r)
        d = ((mean.detach() - running_mean) / running_std).clamp(-self.max_d, self.max_d)
        r = 1.0 + (r - 1.0) * weight
        d = d * weight
        y = (x - mean) / std * r + d
        count = x.numel() // self.num_features
        with torch.no_grad():
            # add_ (not lerp_): vmap has a batching rule for it (BatchedEnsemble's critics).
            unbiased = var.detach() * (count / max(count - 1, 1))
            self.running_mean.add_(self.momentum * (mean.detach() - self.running_mean))
            self.running_var.add_(self.momentum * (unbiased - self.running_var))
            self.num_batches_tracked.add_(1)
        return self.weight * y + self.bias

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, "
            f"max_r={self.max_r}, max_d={self.max_d}, warmup_steps={self.warmup_steps}, "
            f"smooth={self.smooth}"
        )
