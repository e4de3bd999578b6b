"""Action distributions for bounded continuous actions: :class:`TanhNormal`, :class:`TanhDelta`."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from tensordict.nn.distributions import Delta
from torch import Tensor
from torch import distributions as D
from torch.distributions import constraints

from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["TanhNormal", "TanhDelta"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)
_NO_SHAPE = torch.Size()


def _bounds(
    owner: str, low: float | Tensor, high: float | Tensor, like: Tensor, validate: bool
) -> tuple[Tensor, Tensor]:
    """``(center, half_width)`` of ``[low, high]`` on ``like``'s device and dtype."""
    numbers = not isinstance(low, Tensor) and not isinstance(high, Tensor)
    low_t = torch.as_tensor(low, dtype=like.dtype, device=like.device)
    high_t = torch.as_tensor(high, dtype=like.dtype, device=like.device)
    # Tensor bounds are only checked on request: the check would sync on every call.
    if (numbers and low >= high) or (validate and not numbers and bool((low_t >= high_t).any())):
        raise ObjectiveConfigError(f"{owner}: low must be < high, got low={low} and high={high}")
    return (high_t + low_t) / 2, (high_t - low_t) / 2


def _event_split(owner: str, param: Tensor, event_dims: int) -> tuple[torch.Size, torch.Size]:
    if not 0 <= event_dims <= param.ndim:
        raise ObjectiveConfigError(
            f"{owner}: event_dims={event_dims} but the parameters have shape {list(param.shape)}"
        )
    cut = param.ndim - event_dims
    return param.shape[:cut], param.shape[cut:]


class TanhNormal(D.Distribution):
    """A normal distribution squashed by ``tanh`` and rescaled to ``[low, high]``.

    ``y = center + half_width * tanh(u)`` with ``u ~ Normal(loc, scale)``. The last
    ``event_dims`` dims form one event: ``log_prob`` sums over them. Sampling with
    ``rsample_and_log_prob`` scores the pre-squash draw, which stays accurate where ``tanh``
    saturates; ``log_prob`` of a given action clamps it just inside the bounds first.
    ``deterministic_sample``, ``mode`` and ``mean`` are the squashed location (the exact mode
    and mean have no closed form); there is no closed-form entropy either (losses estimate
    it from samples).

    Args:
        loc: Location of ``u``.
        scale: Standard deviation of ``u`` (positive).
        low: Lower bound(s) of the action.
        high: Upper bound(s) of the action.
        event_dims: Trailing dims that form one event.
        tanh_loc: Squash ``loc`` to ``upscale * tanh(loc / upscale)`` first, which keeps
            the mean of ``u`` in a range where gradients do not vanish.
        upscale: See ``tanh_loc``.
        validate_args: Check the parameters (off by default: it costs a sync per call).

    Example:
        >>> dist = TanhNormal(torch.zeros(4, 2), torch.ones(4, 2), low=-2.0, high=2.0)
        >>> action, log_prob = dist.rsample_and_log_prob()
        >>> action.shape, log_prob.shape
        (torch.Size([4, 2]), torch.Size([4]))
    """

    arg_constraints: ClassVar = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    def __init__(
        self,
        loc: Tensor,
        scale: Tensor,
        low: float | Tensor = -1.0,
        high: float | Tensor = 1.0,
        event_dims: int = 1,
        tanh_loc: bool = False,
        upscale: float = 5.0,
        validate_args: bool = False,
    ) -> None:
        if tanh_loc:
            loc = upscale * torch.tanh(loc / upscale)
        self.loc, self.scale = loc, scale
        self.low, self.high = low, high
        self._center, self._half = _bounds("TanhNormal", low, high, loc, validate_args)
        self._event_dims = event_dims
        batch_shape, event_shape = _event_split("TanhNormal", loc, event_dims)
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        """The box ``[low, high]``."""
        return constraints.independent(
            constraints.interval(self._center - self._half, self._center + self._half),
            self._event_dims,
        )

    def _squash(self, u: Tensor) -> Tensor:
        return self._center + self._half * torch.tanh(u)

    def _log_prob_pre(self, u: Tensor) -> Tensor:
        z = (u - self.loc) / self.scale
        normal = -0.5 * z * z - self.scale.log() - _HALF_LOG_2PI
        # log(1 - tanh(u)^2), written to stay finite for large |u|.
        log_det = 2.0 * (_LOG_2 - u - torch.nn.functional.softplus(-2.0 * u))
        lp = normal - log_det - self._half.log()
        return lp.sum(tuple(range(-self._event_dims, 0))) if self._event_dims else lp

    def _draw(self, sample_shape: torch.Size | tuple[int, ...]) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self.scale * eps

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = _NO_SHAPE) -> Tensor:
        """Draw reparameterized samples (differentiable in ``loc`` and ``scale``)."""
        return self._squash(self._draw(sample_shape))

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = _NO_SHAPE) -> Tensor:
        """Draw samples without gradient."""
        with torch.no_grad():
            return self.rsample(sample_shape)

    def rsample_and_log_prob(
        self, sample_shape: torch.Size | tuple[int, ...] = _NO_SHAPE
    ) -> tuple[Tensor, Tensor]:
        """Draw a reparameterized sample and its log-probability, from the same draw."""
        u = self._draw(sample_shape)
        return self._squash(u), self._log_prob_pre(u)

    def sample_and_log_prob(
        self, sample_shape: torch.Size | tuple[int, ...] = _NO_SHAPE
    ) -> tuple[Tensor, Tensor]:
        """Like :meth:`rsample_and_log_prob` without gradient."""
        with torch.no_grad():
            return self.rsample_and_log_prob(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density of actions in ``[low, high]`` (clamped just inside the bounds)."""
        y = (value - self._center) / self._half
        limit = 1.0 - torch.finfo(y.dtype).eps
        return self._log_prob_pre(torch.atanh(y.clamp(-limit, limit)))

    @property
    def deterministic_sample(self) -> Tensor:
        """``center + half_width * tanh(loc)``, the action taken in deterministic mode."""
        return self._squash(self.loc)

    @property
    def mode(self) -> Tensor:
        """The squashed location (the exact mode of a squashed normal has no closed form)."""
        return self.deterministic_sample

    @property
    def mean(self) -> Tensor:
        """The squashed location, standing in for the mean, which has no closed form.

        ``ExplorationType.MEAN`` thus acts deterministically, like ``DETERMINISTIC``.
        """
        return self.deterministic_sample


class TanhDelta(Delta):
    """A deterministic action ``center + half_width * tanh(param)`` in ``[low, high]``.

    The policy of DDPG/TD3-style actors as a distribution: ``rsample`` returns the
    (differentiable) action, ``log_prob`` is ``+inf`` there and ``-inf`` elsewhere.

    Args:
        param: The pre-squash action.
        low: Lower bound(s).
        high: Upper bound(s).
        event_dims: Trailing dims that form one event.

    Example:
        >>> TanhDelta(torch.zeros(3, 2), low=0.0, high=4.0).rsample()
        tensor([[2., 2.], [2., 2.], [2., 2.]])
    """

    # Sampling returns the action itself: differentiable, so sampling callers keep the grad.
    has_rsample: ClassVar[bool] = True

    def __init__(
        self,
        param: Tensor,
        low: float | Tensor = -1.0,
        high: float | Tensor = 1.0,
        event_dims: int = 1,
    ) -> None:
        center, half = _bounds("TanhDelta", low, high, param, False)
        self.low, self.high = low, high
        batch_shape, event_shape = _event_split("TanhDelta", param, event_dims)
        super().__init__(
            center + half * torch.tanh(param), batch_shape=batch_shape, event_shape=event_shape
        )
