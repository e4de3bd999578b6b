"""IQL and behavior cloning against the papers' formulas."""

from __future__ import annotations

import pytest
import torch
from torch import distributions as D
from torch.nn import functional as F

from rlblocks.objectives import BCLoss, IQLLoss
from rlblocks.objectives.errors import ObjectiveConfigError


def test_iql_matches_reference(build):
    actor, qvalue, value = build.gaussian_actor(), build.qvalue(), build.critic()
    loss = IQLLoss(actor, qvalue, value, expectile=0.7, temperature=3.0, gamma=0.9)
    with torch.no_grad():
        for p in loss.qvalue_networks.parameters():
            p.add_(0.1 * torch.randn_like(p))
    td = build.batch()
    out = loss(td)
    obs, action = td["observation"], td["action"]
    online = [m.module for m in loss.qvalue_networks]
    targets = [m.module for m in loss.target_qvalue_networks]
    with torch.no_grad():
        q_target = torch.min(*(q(obs, action) for q in targets))
        next_v = value.module(td["next", "observation"])
        target = td["next", "reward"] + 0.9 * (~td["next", "terminated"]).float() * next_v
    v = value.module(obs)
    u = q_target - v
    ref_value = ((0.7 - (u < 0).float()).abs() * u.pow(2)).mean()
    ref_q = sum(F.smooth_l1_loss(q(obs, action), target) for q in online)
    loc, scale = actor.module[0].module(obs)
    log_prob = D.Normal(loc, scale).log_prob(action).sum(-1, keepdim=True)
    weights = torch.exp(3.0 * u.detach()).clamp(max=100)
    ref_actor = -(weights * log_prob).mean()
    torch.testing.assert_close(out["loss_value"], ref_value)
    torch.testing.assert_close(out["loss_qvalue"], ref_q)
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    build.assert_same_grads(out["loss_value"], ref_value, value)
    build.assert_no_grad(out["loss_value"], loss.qvalue_networks)
    build.assert_same_grads(out["loss_qvalue"], ref_q, loss.qvalue_networks)
    build.assert_no_grad(out["loss_qvalue"], value)  # V(s') is a fixed target
    build.assert_same_grads(out["loss_actor"], ref_actor, actor)
    build.assert_no_grad(out["loss_actor"], value)
    build.assert_no_grad(out["loss_actor"], loss.qvalue_networks)
    with pytest.raises(ObjectiveConfigError, match="expectile"):
        IQLLoss(actor, qvalue, value, expectile=1.0)


def test_bc_probabilistic_is_negative_log_likelihood(build):
    actor = build.gaussian_actor()
    td = build.batch()
    out = BCLoss(actor)(td)
    loc, scale = actor.module[0].module(td["observation"])
    ref = -D.Normal(loc, scale).log_prob(td["action"]).sum(-1).mean()
    torch.testing.assert_close(out["loss_bc"], ref)
    build.assert_same_grads(out["loss_bc"], ref, actor)


@pytest.mark.parametrize("loss_function", ["l2", "l1", "smooth_l1"])
def test_bc_deterministic_is_regression(build, loss_function):
    actor = build.deterministic_actor()
    td = build.batch()
    out = BCLoss(actor, loss_function=loss_function)(td)
    pred = actor.module(td["observation"])
    fn = {"l2": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}[loss_function]
    ref = fn(pred, td["action"])
    torch.testing.assert_close(out["loss_bc"], ref)
    build.assert_same_grads(out["loss_bc"], ref, actor)
    assert torch.equal(td["action"], build.batch()["action"])  # the data was not overwritten
    with pytest.raises(ObjectiveConfigError, match="nll"):
        BCLoss(actor, loss_function="nll")
