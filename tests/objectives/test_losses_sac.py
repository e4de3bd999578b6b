"""SAC, discrete SAC and CQL against the papers' formulas (random draws replayed by seed)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from rlblocks.objectives import CQLLoss, DiscreteSACLoss, SACLoss
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules import TanhNormal


def min_q(nets, obs, action):
    return torch.min(*(net.module(obs, action) for net in nets))


def sac_setup(build, cls=SACLoss, **kwargs):
    actor, qvalue = build.gaussian_actor(TanhNormal), build.qvalue()
    loss = cls(actor, qvalue, gamma=0.9, alpha_init=0.5, **kwargs)
    build.perturb(loss.qvalue_networks)  # online critics now differ from their targets
    return actor, loss


def assert_alpha_loss(build, loss, out, ref_alpha, actor):
    (got,) = torch.autograd.grad(out["loss_alpha"], [loss.log_alpha], retain_graph=True)
    (expected,) = torch.autograd.grad(ref_alpha, [loss.log_alpha], retain_graph=True)
    torch.testing.assert_close(got, expected)
    build.assert_no_grad(out["loss_alpha"], actor)
    build.assert_no_grad(out["loss_alpha"], loss.qvalue_networks)


def test_sac_matches_reference(build):
    actor, loss = sac_setup(build)
    td = build.batch()
    torch.manual_seed(7)
    out = loss(td)
    torch.manual_seed(7)
    eps_next, eps = torch.randn(6, 2), torch.randn(6, 2)
    obs, next_obs, action = td["observation"], td["next", "observation"], td["action"]
    online, targets = list(loss.qvalue_networks), list(loss.target_qvalue_networks)
    with torch.no_grad():
        next_action, next_lp = build.squashed_sample(actor, next_obs, eps_next)
        next_value = min_q(targets, next_obs, next_action) - 0.5 * next_lp.unsqueeze(-1)
        target = td["next", "reward"] + 0.9 * (~td["next", "terminated"]).float() * next_value
    ref_q = sum(F.smooth_l1_loss(net.module(obs, action), target) for net in online)
    new_action, log_prob = build.squashed_sample(actor, obs, eps)
    ref_actor = (0.5 * log_prob.unsqueeze(-1) - min_q(online, obs, new_action)).mean()
    ref_alpha = -(loss.log_alpha * (log_prob + -2.0).detach()).mean()
    torch.testing.assert_close(out["loss_qvalue"], ref_q)
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    torch.testing.assert_close(out["loss_alpha"], ref_alpha)
    torch.testing.assert_close(out["entropy"], -log_prob.mean().detach())
    build.assert_same_grads(out["loss_actor"], ref_actor, actor)
    build.assert_no_grad(out["loss_actor"], loss.qvalue_networks)
    build.assert_same_grads(out["loss_qvalue"], ref_q, loss.qvalue_networks)
    build.assert_no_grad(out["loss_qvalue"], actor)
    assert_alpha_loss(build, loss, out, ref_alpha, actor)


def test_sac_fixed_alpha_and_bounds(build):
    actor, qvalue = build.gaussian_actor(TanhNormal), build.qvalue()
    loss = SACLoss(actor, qvalue, alpha_init=0.2, fixed_alpha=True)
    out = loss(build.batch())
    assert float(out["loss_alpha"]) == 0.0 and not out["loss_alpha"].requires_grad
    assert "log_alpha" not in dict(loss.named_parameters())
    bounded = SACLoss(actor, qvalue, alpha_init=1.0, min_alpha=0.01, max_alpha=0.5)
    assert float(bounded.alpha) == pytest.approx(0.5)
    with pytest.raises(ObjectiveConfigError, match="alpha_init"):
        SACLoss(actor, qvalue, alpha_init=0.0)


def test_discrete_sac_matches_reference(build):
    actor, qnet = build.categorical_actor(), build.action_values()
    loss = DiscreteSACLoss(actor, qnet, num_actions=3, gamma=0.9, alpha_init=0.3)
    build.perturb(loss.qvalue_networks)
    index = torch.tensor([0, 1, 2, 2, 1, 0])
    td = build.batch(action=F.one_hot(index, 3))
    out = loss(td)
    obs, next_obs = td["observation"], td["next", "observation"]
    policy_net = actor.module[0].module
    online = [m.module for m in loss.qvalue_networks]
    targets = [m.module for m in loss.target_qvalue_networks]
    with torch.no_grad():
        log_p_next = torch.log_softmax(policy_net(next_obs), -1)
        q_next = torch.min(*(q(next_obs) for q in targets))
        soft = (log_p_next.exp() * (q_next - 0.3 * log_p_next)).sum(-1, keepdim=True)
        target = td["next", "reward"] + 0.9 * (~td["next", "terminated"]).float() * soft
    ref_q = sum(F.smooth_l1_loss(q(obs).gather(-1, index.unsqueeze(-1)), target) for q in online)
    log_p = torch.log_softmax(policy_net(obs), -1)
    p = log_p.exp()
    ref_actor = (p * (0.3 * log_p - torch.min(*(q(obs) for q in online)))).sum(-1).mean()
    entropy = -(p * log_p).sum(-1)
    ref_alpha = -(loss.log_alpha * (0.98 * math.log(3) - entropy).detach()).mean()
    torch.testing.assert_close(out["loss_qvalue"], ref_q)
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    torch.testing.assert_close(out["loss_alpha"], ref_alpha)
    build.assert_same_grads(out["loss_actor"], ref_actor, actor)
    build.assert_no_grad(out["loss_actor"], loss.qvalue_networks)
    build.assert_same_grads(out["loss_qvalue"], ref_q, loss.qvalue_networks)
    build.assert_no_grad(out["loss_qvalue"], actor)
    assert_alpha_loss(build, loss, out, ref_alpha, actor)


@pytest.mark.parametrize("with_lagrange", [False, True])
def test_cql_matches_reference(build, with_lagrange):
    n = 4
    actor, loss = sac_setup(
        build, CQLLoss, num_random=n, min_q_weight=2.0, temperature=0.5, with_lagrange=with_lagrange
    )
    td = build.batch()
    torch.manual_seed(11)
    out = loss(td)
    torch.manual_seed(11)
    eps_next = torch.randn(6, 2)
    uniform = torch.rand(n, 6, 2) * 2 - 1
    eps_cur, eps_following, eps = torch.randn(n, 6, 2), torch.randn(n, 6, 2), torch.randn(6, 2)
    obs, next_obs, action = td["observation"], td["next", "observation"], td["action"]
    online, targets = list(loss.qvalue_networks), list(loss.target_qvalue_networks)
    with torch.no_grad():
        next_action, _ = build.squashed_sample(actor, next_obs, eps_next)
        # deterministic_backup: no entropy term in the target.
        next_value = min_q(targets, next_obs, next_action)
        target = td["next", "reward"] + 0.9 * (~td["next", "terminated"]).float() * next_value
        obs_n, next_obs_n = obs.expand(n, 6, 3), next_obs.expand(n, 6, 3)
        current, current_lp = build.squashed_sample(actor, obs_n, eps_cur)
        following, following_lp = build.squashed_sample(actor, next_obs_n, eps_following)
    ref_q = sum(F.smooth_l1_loss(net.module(obs, action), target) for net in online)
    penalties = []
    for net in online:
        q = net.module
        scores = torch.cat(
            [
                q(obs_n, uniform) - math.log(0.25),  # density of the uniform box [-1, 1]^2
                q(obs_n, current) - current_lp.unsqueeze(-1),
                q(obs_n, following) - following_lp.unsqueeze(-1),
            ]
        )
        lse = 0.5 * torch.logsumexp(scores / 0.5, 0)
        penalties.append(2.0 * (lse.mean() - q(obs, action).mean()))
    if with_lagrange:
        alpha_prime = loss.log_alpha_prime.exp()
        ref_cql = alpha_prime.detach() * sum(penalties)
        torch.testing.assert_close(
            out["loss_alpha_prime"], -0.5 * alpha_prime * sum(p.detach() for p in penalties)
        )
    else:
        ref_cql = sum(penalties)
    new_action, log_prob = build.squashed_sample(actor, obs, eps)
    ref_actor = (0.5 * log_prob.unsqueeze(-1) - min_q(online, obs, new_action)).mean()
    torch.testing.assert_close(out["loss_qvalue"], ref_q)
    torch.testing.assert_close(out["loss_cql"], ref_cql)
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    build.assert_same_grads(out["loss_cql"], ref_cql, loss.qvalue_networks)
    build.assert_no_grad(out["loss_cql"], actor)
    build.assert_no_grad(out["loss_actor"], loss.qvalue_networks)


def test_cql_max_q_backup(build):
    actor, loss = sac_setup(build, CQLLoss, num_random=3, max_q_backup=True)
    td = build.batch()
    torch.manual_seed(2)
    out = loss(td)
    torch.manual_seed(2)
    eps_next = torch.randn(3, 6, 2)
    targets = list(loss.target_qvalue_networks)
    with torch.no_grad():
        next_obs_n = td["next", "observation"].expand(3, 6, 3)
        next_action, _ = build.squashed_sample(actor, next_obs_n, eps_next)
        next_value = min_q(targets, next_obs_n, next_action).amax(0)
        target = td["next", "reward"] + 0.9 * (~td["next", "terminated"]).float() * next_value
    ref_q = sum(
        F.smooth_l1_loss(net.module(td["observation"], td["action"]), target)
        for net in loss.qvalue_networks
    )
    torch.testing.assert_close(out["loss_qvalue"], ref_q)
