"""REDQ against the paper's formulas, and the batched critic ensemble it runs on."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rlblocks.objectives import REDQLoss, SoftUpdate
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules import MLP, BatchedEnsemble, TanhNormal, ValueOperator

KEY = "state_action_value"


# -- BatchedEnsemble -------------------------------------------------------------------


def test_batched_ensemble_equals_separate_critics(build):
    qvalue = build.qvalue()
    critics = BatchedEnsemble(qvalue, 3)
    td = build.batch()
    out = critics(td)
    assert out.batch_size == (3, 6) and out[KEY].shape == (3, 6, 1)
    # One stacked tensor per parameter of the critic: what the optimizer trains.
    assert [p.shape for p in critics.parameters()] == [(3, *p.shape) for p in qvalue.parameters()]
    members = [critics.member(i) for i in range(3)]
    for i, member in enumerate(members):
        torch.testing.assert_close(out[KEY][i], member(td.clone())[KEY])
    # Member 0 is the given critic; the others are re-initialized.
    torch.testing.assert_close(out[KEY][0], qvalue(td.clone())[KEY])
    assert not torch.allclose(out[KEY][0], out[KEY][1])
    assert KEY not in td.keys()  # nothing written into the input
    reference = sum(member(td.clone())[KEY].square().sum() for member in members)
    build.assert_ensemble_grads(out[KEY].square().sum(), reference, critics, members)


def test_batched_ensemble_subset_frozen_and_eval(build):
    critics = BatchedEnsemble(build.qvalue(), 4)
    td = build.batch()
    td["action"].requires_grad_(True)
    everyone = critics(td)[KEY]
    subset = critics(td, members=torch.tensor([3, 1]))[KEY]
    torch.testing.assert_close(subset, everyone[[3, 1]])
    frozen = critics(td, frozen=True, training=False)[KEY]
    torch.testing.assert_close(frozen, everyone)
    build.assert_no_grad(frozen.sum(), critics)
    (action_grad,) = torch.autograd.grad(frozen.sum(), [td["action"]])
    assert action_grad.abs().sum() > 0  # gradients still reach the inputs


def test_batched_ensemble_bad_input(build):
    with pytest.raises(ObjectiveConfigError, match="num_copies must be a positive int, got 0"):
        BatchedEnsemble(build.qvalue(), 0)
    with pytest.raises(ObjectiveConfigError, match="TensorDict module with in_keys"):
        BatchedEnsemble(nn.Linear(3, 1), 2)
    lazy = ValueOperator(MLP(out_features=1), in_keys=["observation", "action"])
    with pytest.raises(ObjectiveConfigError, match="lazy"):
        BatchedEnsemble(lazy, 2)


# -- REDQLoss --------------------------------------------------------------------------


def redq_setup(build, **kwargs):
    actor = build.gaussian_actor(TanhNormal)
    kwargs = {"num_qvalue_nets": 4, "sub_sample_len": 2, **kwargs}
    loss = REDQLoss(actor, build.qvalue(), gamma=0.9, alpha_init=0.5, **kwargs)
    build.perturb(loss.qvalue_networks)  # online critics now differ from their targets
    return actor, loss


def test_redq_matches_reference(build):
    actor, loss = redq_setup(build)
    td = build.batch()
    online = [loss.qvalue_networks.member(i) for i in range(4)]
    targets = [loss.target_qvalue_networks.member(i) for i in range(4)]
    torch.manual_seed(7)
    out = loss(td)
    # The draws in the documented order: a' ~ pi(s'), the subset, a ~ pi(s).
    torch.manual_seed(7)
    eps_next = torch.randn(6, 2)
    subset = torch.randperm(4)[:2]
    eps = torch.randn(6, 2)
    obs, next_obs, action = td["observation"], td["next", "observation"], td["action"]
    with torch.no_grad():
        next_action, next_lp = build.squashed_sample(actor, next_obs, eps_next)
        q_next = torch.stack([targets[i].module(next_obs, next_action) for i in subset.tolist()])
        next_value = q_next.amin(0) - 0.5 * next_lp.unsqueeze(-1)
        target = td["next", "reward"] + 0.9 * (~td["next", "terminated"]).float() * next_value
    preds = [net.module(obs, action) for net in online]
    ref_q = sum(F.smooth_l1_loss(p, target) for p in preds)
    new_action, log_prob = build.squashed_sample(actor, obs, eps)
    mean_q = torch.stack([net.module(obs, new_action) for net in online]).mean(0)
    ref_actor = (0.5 * log_prob.unsqueeze(-1) - mean_q).mean()
    ref_alpha = -(loss.log_alpha * (log_prob + -2.0).detach()).mean()
    torch.testing.assert_close(out["loss_qvalue"], ref_q)
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    torch.testing.assert_close(out["loss_alpha"], ref_alpha)
    torch.testing.assert_close(out["entropy"], -log_prob.mean().detach())
    errors = torch.stack([(p - target).abs() for p in preds]).amax(0).squeeze(-1)
    torch.testing.assert_close(td["td_error"], errors.detach())
    # Gradients reach only what they should.
    build.assert_ensemble_grads(out["loss_qvalue"], ref_q, loss.qvalue_networks, online)
    build.assert_no_grad(out["loss_qvalue"], actor)
    build.assert_same_grads(out["loss_actor"], ref_actor, actor)
    build.assert_no_grad(out["loss_actor"], loss.qvalue_networks)
    for term in ("loss_qvalue", "loss_actor"):
        build.assert_no_grad(out[term], nn.ParameterList([loss.log_alpha]))
    build.assert_no_grad(out["loss_alpha"], actor)
    build.assert_no_grad(out["loss_alpha"], loss.qvalue_networks)


def test_redq_full_subset_is_the_min_of_all_targets(build):
    _, loss = redq_setup(build, sub_sample_len=4)
    td = build.batch()
    with torch.no_grad():
        nxt = loss._with_action(td, torch.zeros(6, 2), nested=True)
        targets = loss.target_qvalue_networks(nxt)[KEY]
        for seed in (0, 1):  # whatever the draw: the subset is every critic
            torch.manual_seed(seed)
            torch.testing.assert_close(loss._target_q(nxt), targets.amin(0))


def test_redq_targets_follow_soft_updates(build):
    _, loss = redq_setup(build)
    SoftUpdate(loss, tau=1.0).step()
    for i in range(4):
        online = loss.qvalue_networks.member(i).state_dict()
        target = loss.target_qvalue_networks.member(i).state_dict()
        for name, value in online.items():
            torch.testing.assert_close(target[name], value)


def test_redq_bad_input(build):
    actor, qvalue = build.gaussian_actor(TanhNormal), build.qvalue()
    with pytest.raises(
        ObjectiveConfigError,
        match=r"num_qvalue_nets=1 is smaller than sub_sample_len=2.*must be >= 2",
    ):
        REDQLoss(actor, qvalue, num_qvalue_nets=1, sub_sample_len=2)
    with pytest.raises(ObjectiveConfigError, match="sub_sample_len must be a positive int, got 0"):
        REDQLoss(actor, qvalue, sub_sample_len=0)
    with pytest.raises(ObjectiveConfigError, match="num_qvalue_nets must be a positive int"):
        REDQLoss(actor, qvalue, num_qvalue_nets=0)
