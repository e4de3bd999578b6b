"""TD3+BC against the paper's formulas (Fujimoto & Gu, 2021)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rlblocks.core.specs import Bounded
from rlblocks.objectives import SoftUpdate, TD3BCLoss, TD3Loss
from rlblocks.objectives.errors import MissingInputError, ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules import ValueOperator


def perturbed(loss):
    """Move the online critics away from their targets, so that the two differ."""
    with torch.no_grad():
        for p in loss.qvalue_networks.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return loss


def test_td3bc_matches_reference(build):
    actor = build.deterministic_actor()
    loss = perturbed(TD3BCLoss(actor, build.qvalue(), bounds=(-1.0, 1.0), alpha=2.5, gamma=0.9))
    td = build.batch()
    torch.manual_seed(0)
    out = loss(td)
    obs, action, nxt = td["observation"], td["action"], td["next"]
    online = [m.module for m in loss.qvalue_networks]
    targets = [m.module for m in loss.target_qvalue_networks]
    # The critics: TD3's target, with the smoothing noise the loss drew first.
    torch.manual_seed(0)
    with torch.no_grad():
        mu_next = loss.target_actor_network.module(nxt["observation"])
        noise = (torch.randn_like(mu_next) * 0.2).clamp(-0.5, 0.5)
        next_action = (mu_next + noise).clamp(-1.0, 1.0)
        next_q = torch.min(*(q(nxt["observation"], next_action) for q in targets))
        y = nxt["reward"] + 0.9 * (~nxt["terminated"]).float() * next_q
    ref_q = sum(F.smooth_l1_loss(q(obs, action), y) for q in online)
    # The actor: -lambda * Q_1(s, pi(s)) + (pi(s) - a)^2, lambda = alpha / mean|Q_1| detached.
    pi = actor.module(obs)
    q1 = online[0](obs, pi)
    lmbd = 2.5 / q1.abs().mean().detach()
    bc = ((pi - action) ** 2).mean()
    ref_actor = -lmbd * q1.mean() + bc
    torch.testing.assert_close(out["loss_qvalue"], ref_q)
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    torch.testing.assert_close(out["lmbd"], lmbd)
    torch.testing.assert_close(out["bc_loss"], bc.detach())
    torch.testing.assert_close(out["state_action_value_actor"], q1.detach().squeeze(-1)[None])
    torch.testing.assert_close(out["next_state_value"], next_q.squeeze(-1))
    assert not out["bc_loss"].requires_grad and not out["lmbd"].requires_grad
    # Gradients: the actor term trains only the actor (lambda a constant), the critic term
    # only the critics.
    build.assert_same_grads(out["loss_actor"], ref_actor, actor)
    build.assert_no_grad(out["loss_actor"], loss.qvalue_networks)
    build.assert_same_grads(out["loss_qvalue"], ref_q, loss.qvalue_networks)
    build.assert_no_grad(out["loss_qvalue"], actor)


def test_alpha_weighs_the_q_term_and_bc_pulls_to_the_data(build):
    td = build.batch()
    terms = {}
    for alpha in (1.0, 4.0):
        loss = TD3BCLoss(build.deterministic_actor(), build.qvalue(), alpha=alpha)
        torch.manual_seed(0)
        out = loss(td.clone())
        terms[alpha] = out["loss_actor"] - out["bc_loss"]  # -lambda * mean(Q)
    torch.testing.assert_close(terms[4.0], 4.0 * terms[1.0])
    # With the policy's actions as data, the BC term vanishes.
    loss = TD3BCLoss(build.deterministic_actor(), build.qvalue())
    with torch.no_grad():
        td["action"] = loss.actor_network.module(td["observation"])
    assert loss(td)["bc_loss"].item() == 0.0


def test_td3bc_critic_is_td3s(build):
    td = build.batch()
    outs = []
    for cls in (TD3Loss, TD3BCLoss):
        torch.manual_seed(1)  # the same re-initialized critic copies
        loss = cls(build.deterministic_actor(), build.qvalue())
        torch.manual_seed(0)  # the same smoothing noise
        outs.append(loss(td.clone()))
    td3, td3bc = outs
    for key in ("loss_qvalue", "pred_value", "target_value", "next_state_value"):
        torch.testing.assert_close(td3bc[key], td3[key], msg=key)
    assert set(td3bc.keys()) == set(td3.keys()) | {"bc_loss", "lmbd"}


def test_target_networks_and_soft_update(build):
    loss = TD3BCLoss(build.deterministic_actor(), build.qvalue(), num_qvalue_nets=2)
    trainable = {name for name, _ in loss.named_parameters()}
    assert not any(name.startswith("target_") for name in trainable)
    assert len(loss.target_pairs()) == 2  # actor and critics
    online = loss.actor_network.module[0].weight
    target = loss.target_actor_network.module[0].weight
    start = target.clone()
    with torch.no_grad():
        online.add_(1.0)
    SoftUpdate(loss, tau=0.5).step()
    torch.testing.assert_close(target, start + 0.5)
    without = TD3BCLoss(
        build.deterministic_actor(), build.qvalue(), delay_actor=False, delay_qvalue=False
    )
    assert without.target_pairs() == []
    with pytest.raises(ObjectiveConfigError, match="no target network"):
        SoftUpdate(without)


def test_bounds_and_action_spec_clamp_alike(build):
    td = build.batch()
    outs = []
    for kwargs in ({"bounds": (-0.1, 0.1)}, {"action_spec": Bounded(-0.1, 0.1, shape=(2,))}):
        torch.manual_seed(1)
        loss = TD3BCLoss(build.deterministic_actor(), build.qvalue(), policy_noise=1.0, **kwargs)
        torch.manual_seed(0)
        outs.append(loss(td.clone()))
    for key in outs[1].keys():
        torch.testing.assert_close(outs[0][key], outs[1][key], msg=key)
    torch.manual_seed(1)
    unbounded = TD3BCLoss(build.deterministic_actor(), build.qvalue(), policy_noise=1.0)
    torch.manual_seed(0)
    assert not torch.equal(unbounded(td.clone())["target_value"], outs[0]["target_value"])


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan")])
def test_alpha_must_be_positive(build, alpha):
    with pytest.raises(ObjectiveConfigError, match=rf"TD3BCLoss: alpha must be > 0.*got {alpha}"):
        TD3BCLoss(build.deterministic_actor(), build.qvalue(), alpha=alpha)


def test_bad_arguments_and_inputs(build):
    actor, qvalue = build.deterministic_actor(), build.qvalue()
    spec = Bounded(-1.0, 1.0, shape=(2,))
    with pytest.raises(ObjectiveConfigError, match="TD3BCLoss: give action_spec or bounds"):
        TD3BCLoss(actor, qvalue, action_spec=spec, bounds=(-1.0, 1.0))
    with pytest.raises(ObjectiveConfigError, match=r"bounds must be a \(low, high\) pair.*1.0"):
        TD3BCLoss(actor, qvalue, bounds=1.0)
    with pytest.raises(ObjectiveConfigError, match="low <= high"):
        TD3BCLoss(actor, qvalue, bounds=(1.0, -1.0))
    with pytest.raises(ObjectiveConfigError, match="TD3BCLoss: policy_noise"):
        TD3BCLoss(actor, qvalue, policy_noise=-0.1)
    with pytest.raises(ObjectiveConfigError, match="TD3BCLoss: loss_function"):
        TD3BCLoss(actor, qvalue, loss_function="huber")
    loss = TD3BCLoss(actor, qvalue)
    td = build.batch()
    del td["next", "reward"]
    with pytest.raises(MissingInputError, match=r"lacks \[\('next', 'reward'\)\]"):
        loss(td)
    # A critic that takes actions of any size, so that the BC term is the one to object.
    summed = ValueOperator(SumOfAction(), in_keys=["observation", "action"])
    td = build.batch()
    td["action"] = td["action"][:, :1]  # the data's action has 1 dim, pi(s) has 2
    with pytest.raises(
        ShapeMismatchError, match=r"TD3BCLoss: pi\(s\) has shape \[6, 2\].*\[6, 1\]"
    ):
        TD3BCLoss(actor, summed)(td)


class SumOfAction(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, observation, action):
        return self.linear(observation) + action.sum(-1, keepdim=True)
