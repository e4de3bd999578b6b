"""TanhNormal and TanhDelta."""

from __future__ import annotations

import pytest
import torch
from torch import distributions as D

from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules import TanhDelta, TanhNormal


def reference(loc, scale, low, high):
    """torch's own change of variables: Normal -> tanh -> affine, one event dim."""
    base = D.Independent(D.Normal(loc, scale), 1)
    transforms = [
        D.TanhTransform(),
        D.AffineTransform((high + low) / 2, (high - low) / 2),
    ]
    return D.TransformedDistribution(base, transforms)


def test_log_prob_matches_change_of_variables():
    torch.manual_seed(0)
    loc, scale = torch.randn(5, 2), torch.rand(5, 2) + 0.2
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    dist = TanhNormal(loc, scale, low=low, high=high)
    action = dist.sample()
    assert dist.batch_shape == (5,) and dist.event_shape == (2,)
    assert ((action >= low) & (action <= high)).all()
    torch.testing.assert_close(
        dist.log_prob(action),
        reference(loc, scale, low, high).log_prob(action),
        atol=1e-4,
        rtol=1e-4,
    )


def test_joint_sample_scores_the_draw_and_is_reparameterized():
    loc = torch.zeros(4, 3, requires_grad=True)
    scale = torch.ones(4, 3)
    dist = TanhNormal(loc, scale, low=-1.0, high=1.0)
    torch.manual_seed(1)
    action, log_prob = dist.rsample_and_log_prob()
    torch.manual_seed(1)
    u = loc + scale * torch.randn(4, 3)
    torch.testing.assert_close(action, torch.tanh(u))
    expected = D.Normal(loc, scale).log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)
    torch.testing.assert_close(log_prob, expected)
    action.sum().backward()
    assert loc.grad is not None and bool(loc.grad.abs().sum() > 0)


def test_saturated_actions_have_finite_log_prob():
    dist = TanhNormal(torch.zeros(3, 1), torch.ones(3, 1))
    log_prob = dist.log_prob(torch.tensor([[1.0], [-1.0], [0.0]]))
    assert torch.isfinite(log_prob).all()
    _, joint = TanhNormal(torch.full((2, 1), 30.0), torch.ones(2, 1)).rsample_and_log_prob()
    assert torch.isfinite(joint).all()


def test_deterministic_sample_mode_and_missing_entropy():
    loc = torch.tensor([[0.5, -3.0]])
    dist = TanhNormal(loc, torch.ones(1, 2), low=0.0, high=4.0, event_dims=1)
    expected = 2.0 + 2.0 * torch.tanh(loc)
    torch.testing.assert_close(dist.deterministic_sample, expected)
    torch.testing.assert_close(dist.mode, expected)
    torch.testing.assert_close(dist.mean, expected)
    with pytest.raises(NotImplementedError):
        dist.entropy()


def test_tanh_loc_and_event_dims():
    loc = torch.full((2, 3), 100.0)
    dist = TanhNormal(loc, torch.ones(2, 3), tanh_loc=True, upscale=5.0)
    assert float(dist.loc.max()) <= 5.0
    scalar = TanhNormal(torch.zeros(4), torch.ones(4), event_dims=0)
    assert scalar.batch_shape == (4,) and scalar.log_prob(torch.zeros(4)).shape == (4,)
    with pytest.raises(ObjectiveConfigError, match="low must be < high"):
        TanhNormal(torch.zeros(2), torch.ones(2), low=1.0, high=1.0)
    with pytest.raises(ObjectiveConfigError, match="event_dims=3"):
        TanhNormal(torch.zeros(2), torch.ones(2), event_dims=3)


def test_tanh_delta():
    param = torch.tensor([[0.0, 10.0]], requires_grad=True)
    dist = TanhDelta(param, low=-2.0, high=2.0)
    value = dist.rsample()
    torch.testing.assert_close(value, 2.0 * torch.tanh(param))
    value.sum().backward()
    assert param.grad is not None
    assert dist.batch_shape == (1,) and dist.event_shape == (2,)
    assert dist.log_prob(value.detach()).item() == float("inf")
    torch.testing.assert_close(dist.deterministic_sample, value)
