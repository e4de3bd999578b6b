"""PPO (clipped, unclipped, KL-penalty), A2C and REINFORCE against the papers' formulas."""

from __future__ import annotations

import pytest
import torch
from torch import distributions as D
from torch.nn import functional as F

from rlblocks.objectives import (
    A2CLoss,
    ClipPPOLoss,
    KLPENPPOLoss,
    MissingInputError,
    PPOLoss,
    ReinforceLoss,
    ShapeMismatchError,
    total_loss,
)
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.value import generalized_advantage_estimate

OFFSETS = torch.tensor([-0.5, -0.1, 0.0, 0.1, 0.5, 1.0])
ADVANTAGE = torch.tensor([1.0, -1.0, 2.0, -2.0, 0.5, -0.5]).unsqueeze(-1)


def policy(actor, obs):
    """``Normal(loc, scale)`` of the test actor, computed by hand."""
    loc, scale = actor.module[0].module(obs)
    return D.Normal(loc, scale)


def ppo_batch(build, actor):
    """A batch whose old log-probs give ratios exp(-OFFSETS), inside and outside the clip."""
    td = build.batch()
    with torch.no_grad():
        new = policy(actor, td["observation"]).log_prob(td["action"]).sum(-1)
    td["sample_log_prob"] = new + OFFSETS
    td["advantage"] = ADVANTAGE.clone()
    td["value_target"] = torch.linspace(-1, 1, 6).unsqueeze(-1)
    return td


def reference_terms(actor, critic, td, entropy_coef, critic_coef):
    dist = policy(actor, td["observation"])
    ratio = (dist.log_prob(td["action"]).sum(-1) - td["sample_log_prob"]).exp().unsqueeze(-1)
    entropy = dist.entropy().sum(-1).mean()
    value = critic.module(td["observation"])
    return {
        "ratio": ratio,
        "loss_entropy": -entropy_coef * entropy,
        "loss_critic": critic_coef * F.smooth_l1_loss(value, td["value_target"]),
    }


def test_clip_ppo_matches_reference(build):
    actor, critic = build.gaussian_actor(), build.critic()
    td = ppo_batch(build, actor)
    loss = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_coef=0.01, critic_coef=0.5)
    out = loss(td)
    ref = reference_terms(actor, critic, td, 0.01, 0.5)
    r, adv = ref["ratio"], ADVANTAGE
    ref_objective = -torch.min(r * adv, r.clamp(0.8, 1.2) * adv).mean()
    torch.testing.assert_close(out["loss_objective"], ref_objective)
    torch.testing.assert_close(out["loss_entropy"], ref["loss_entropy"])
    torch.testing.assert_close(out["loss_critic"], ref["loss_critic"])
    expected_clip = ((torch.exp(-OFFSETS) - 1).abs() > 0.2).float().mean()
    torch.testing.assert_close(out["clip_fraction"], expected_clip)
    torch.testing.assert_close(out["kl_approx"], OFFSETS.mean())
    torch.testing.assert_close(out["ESS"], r.sum() ** 2 / (r.numel() * (r**2).sum()))
    # The actor terms train the actor only; the critic term the critic only.
    build.assert_same_grads(out["loss_objective"], ref_objective, actor)
    build.assert_same_grads(out["loss_entropy"], ref["loss_entropy"], actor)
    build.assert_no_grad(out["loss_objective"] + out["loss_entropy"], critic)
    build.assert_same_grads(out["loss_critic"], ref["loss_critic"], critic)
    build.assert_no_grad(out["loss_critic"], actor)
    assert not out["clip_fraction"].requires_grad and not out["ESS"].requires_grad


@pytest.mark.parametrize("cls", [PPOLoss, ClipPPOLoss, KLPENPPOLoss])
def test_diagnostics_off_leaves_the_terms_and_can_switch_between_calls(build, cls):
    actor, critic = build.gaussian_actor(), build.critic()
    td = ppo_batch(build, actor)
    with torch.no_grad():  # pi_old's parameters, which KLPENPPOLoss reads
        td["loc"], td["scale"] = actor.module[0].module(td["observation"])
    full = cls(actor, critic)(td.clone())
    loss = cls(actor, critic, diagnostics=False)
    lean = loss(td.clone())
    extra = {"kl_approx", "ESS"} | ({"clip_fraction"} if cls is ClipPPOLoss else set())
    assert set(full.keys()) - set(lean.keys()) == extra
    for key in lean.keys():
        torch.testing.assert_close(lean[key], full[key])
    loss.diagnostics = True
    assert extra <= set(loss(td.clone()).keys())


def test_zero_entropy_weight_keeps_the_diagnostic_but_builds_no_graph(build):
    actor, critic = build.gaussian_actor(), build.critic()
    td = ppo_batch(build, actor)
    out = ClipPPOLoss(actor, critic, entropy_coef=0.0)(td)
    entropy = policy(actor, td["observation"]).entropy().sum(-1).mean()
    torch.testing.assert_close(out["entropy"], entropy.detach())
    assert out["loss_entropy"].item() == 0.0 and not out["loss_entropy"].requires_grad
    total_loss(out).backward()  # the other terms still train both networks
    assert all(p.grad is not None for p in [*actor.parameters(), *critic.parameters()])


def test_required_keys_follow_the_input_and_set_keys(build):
    actor, critic = build.gaussian_actor(), build.critic()
    loss = ClipPPOLoss(actor, critic)
    loss(ppo_batch(build, actor))  # advantage given: no transitions needed
    with pytest.raises(MissingInputError, match=r"\('next', 'reward'\)"):
        loss(ppo_batch(build, actor).exclude("advantage", ("next", "reward")))
    loss(trajectories(build, actor))  # no advantage: computed from the transitions
    renamed = ppo_batch(build, actor)
    renamed.rename_key_("action", "act")
    with pytest.raises(MissingInputError, match="'action'"):
        loss(renamed)
    loss.set_keys(action="act")
    assert "loss_objective" in loss(renamed).keys()


def test_unclipped_ppo_matches_reference(build):
    actor, critic = build.gaussian_actor(), build.critic()
    td = ppo_batch(build, actor)
    out = PPOLoss(actor, critic, entropy_bonus=False, loss_critic_type="l2")(td)
    ref = reference_terms(actor, critic, td, 0.0, 1.0)
    ref_objective = -(ref["ratio"] * ADVANTAGE).mean()
    torch.testing.assert_close(out["loss_objective"], ref_objective)
    value = critic.module(td["observation"])
    torch.testing.assert_close(out["loss_critic"], F.mse_loss(value, td["value_target"]))
    assert "loss_entropy" not in out.keys()
    build.assert_same_grads(out["loss_objective"], ref_objective, actor)


def test_kl_penalty_ppo_matches_reference_and_adapts_beta(build):
    actor, critic = build.gaussian_actor(), build.critic()
    td = ppo_batch(build, actor)
    # pi_old: stored parameters from collection, slightly off the current ones.
    with torch.no_grad():
        loc, scale = actor.module[0].module(td["observation"])
    td["loc"], td["scale"] = loc + 0.3, scale * 1.2
    loss = KLPENPPOLoss(actor, critic, dtarg=0.01, beta=0.5, entropy_bonus=False)
    out = loss(td)
    ref = reference_terms(actor, critic, td, 0.0, 1.0)
    old = D.Normal(td["loc"], td["scale"])
    kl = D.kl_divergence(old, policy(actor, td["observation"])).sum(-1).mean()
    ref_objective = -(ref["ratio"] * ADVANTAGE).mean() + 0.5 * kl
    torch.testing.assert_close(out["loss_objective"], ref_objective)
    torch.testing.assert_close(out["kl"], kl.detach())
    build.assert_same_grads(out["loss_objective"], ref_objective, actor)
    assert float(out["beta"]) == 0.5 and float(loss.beta) == 1.0  # kl > 1.5 * dtarg: doubled
    td["loc"], td["scale"] = loc, scale
    loss(td)
    assert float(loss.beta) == 0.5  # kl = 0 < dtarg / 1.5: halved


def test_a2c_matches_reference(build):
    actor, critic = build.gaussian_actor(), build.critic()
    td = ppo_batch(build, actor)
    out = A2CLoss(actor, critic, entropy_coef=0.02, critic_coef=0.5)(td)
    dist = policy(actor, td["observation"])
    log_prob = dist.log_prob(td["action"]).sum(-1, keepdim=True)
    ref_objective = -(log_prob * ADVANTAGE).mean()
    torch.testing.assert_close(out["loss_objective"], ref_objective)
    torch.testing.assert_close(out["loss_entropy"], -0.02 * dist.entropy().sum(-1).mean())
    build.assert_same_grads(out["loss_objective"], ref_objective, actor)
    build.assert_no_grad(out["loss_objective"], critic)
    build.assert_no_grad(out["loss_critic"], actor)


def trajectories(build, actor, steps=7):
    td = build.batch(shape=(2, steps))
    with torch.no_grad():
        td["sample_log_prob"] = (
            policy(actor, td["observation"]).log_prob(td["action"]).sum(-1) - 0.1
        )
    return td


def test_missing_advantage_is_computed_with_gae_from_the_critic(build):
    actor, critic = build.gaussian_actor(), build.critic()
    td = trajectories(build, actor)
    loss = ClipPPOLoss(actor, critic, gamma=0.9, lmbda=0.8)
    out = loss(td)
    with torch.no_grad():
        value = critic.module(td["observation"])
        next_value = critic.module(td["next", "observation"])
    nxt = td["next"]
    adv, target = generalized_advantage_estimate(
        0.9, 0.8, value, next_value, nxt["reward"], nxt["done"], nxt["terminated"]
    )
    torch.testing.assert_close(td["advantage"], adv)
    torch.testing.assert_close(td["value_target"], target)
    ratio = torch.exp(torch.tensor(0.1))
    expected = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
    torch.testing.assert_close(out["loss_objective"], expected)
    loss.make_value_estimator("td0")
    td2 = trajectories(build, actor)
    loss(td2)
    td0 = nxt["reward"] + 0.9 * (~nxt["terminated"]).float() * next_value
    torch.testing.assert_close(td2["value_target"], td0)


def test_normalize_advantage_and_clip_value(build):
    actor, critic = build.gaussian_actor(), build.critic()
    td = ppo_batch(build, actor)
    td["state_value"] = torch.zeros(6, 1)
    loss = A2CLoss(actor, critic, normalize_advantage=True, clip_value=0.05, entropy_bonus=False)
    out = loss(td)
    log_prob = policy(actor, td["observation"]).log_prob(td["action"]).sum(-1, keepdim=True)
    adv = (ADVANTAGE - ADVANTAGE.mean()) / ADVANTAGE.std()
    torch.testing.assert_close(out["loss_objective"], -(log_prob * adv).mean())
    value = critic.module(td["observation"])
    clipped = value.clamp(-0.05, 0.05)
    target = td["value_target"]
    expected = torch.max(
        F.smooth_l1_loss(value, target, reduction="none"),
        F.smooth_l1_loss(clipped, target, reduction="none"),
    ).mean()
    torch.testing.assert_close(out["loss_critic"], expected)


def test_reinforce_without_critic_uses_monte_carlo_returns(build):
    actor = build.gaussian_actor()
    td = build.batch(shape=(2, 5))
    out = ReinforceLoss(actor, gamma=0.5)(td)
    reward, done = td["next", "reward"], td["next", "done"]
    returns = torch.zeros_like(reward)
    running = torch.zeros(2, 1)
    for t in reversed(range(5)):
        running = reward[:, t] + 0.5 * (~done[:, t]).float() * running
        returns[:, t] = running
    log_prob = policy(actor, td["observation"]).log_prob(td["action"]).sum(-1, keepdim=True)
    ref = -(log_prob * returns).mean()
    torch.testing.assert_close(out["loss_actor"], ref)
    build.assert_same_grads(out["loss_actor"], ref, actor)
    assert set(out.keys()) == {"loss_actor"}


def test_reinforce_with_baseline(build):
    actor, critic = build.gaussian_actor(), build.critic()
    td = ppo_batch(build, actor)
    out = ReinforceLoss(actor, critic)(td)
    log_prob = policy(actor, td["observation"]).log_prob(td["action"]).sum(-1, keepdim=True)
    torch.testing.assert_close(out["loss_actor"], -(log_prob * ADVANTAGE).mean())
    value = critic.module(td["observation"])
    torch.testing.assert_close(out["loss_value"], F.smooth_l1_loss(value, td["value_target"]))
    build.assert_no_grad(out["loss_actor"], critic)


def test_sum_and_backward(build):
    actor, critic = build.gaussian_actor(), build.critic()
    out = ClipPPOLoss(actor, critic)(ppo_batch(build, actor))
    total = total_loss(out)
    expected = out["loss_objective"] + out["loss_entropy"] + out["loss_critic"]
    torch.testing.assert_close(total, expected)
    total.backward()
    assert all(p.grad is not None for p in [*actor.parameters(), *critic.parameters()])


def test_log_prob_and_advantage_shapes_must_agree(build):
    actor, critic = build.gaussian_actor(), build.critic()
    td = ppo_batch(build, actor)
    td["advantage"] = torch.zeros(6, 2)
    with pytest.raises(ShapeMismatchError, match=r"\[6, 2\]"):
        ClipPPOLoss(actor, critic)(td)
    td = ppo_batch(build, actor)
    td["value_target"] = torch.zeros(6, 1, 1)
    with pytest.raises(ShapeMismatchError, match=r"\[6, 1, 1\]"):
        ClipPPOLoss(actor, critic)(td)


def test_bad_arguments(build):
    with pytest.raises(ObjectiveConfigError, match="probabilistic"):
        ClipPPOLoss(build.deterministic_actor(), build.critic())
    with pytest.raises(ObjectiveConfigError, match="clip_epsilon"):
        ClipPPOLoss(build.gaussian_actor(), clip_epsilon=0.0)
    with pytest.raises(ObjectiveConfigError, match="loss_function|loss_critic_type|one of"):
        A2CLoss(build.gaussian_actor(), build.critic(), loss_critic_type="huber")
