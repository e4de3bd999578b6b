"""TQC against the paper's formulas: the truncated pooled target and the quantile Huber loss."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.objectives import ShapeMismatchError, TQCLoss
from rlblocks.objectives._losses.tqc import quantile_huber_loss
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules import TanhNormal


def huber(x):
    return 0.5 * x * x if abs(x) <= 1 else abs(x) - 0.5


def test_quantile_huber_loss_by_hand():
    # K = 2 quantiles at fractions 1/4 and 3/4: z = [0, 1]; two target atoms y = [0.5, 3].
    # (k, j): delta = y_j - z_k, weight |tau_k - 1{delta < 0}|, huber(delta)
    # (0, 0): 0.5, 1/4, 0.125   (0, 1): 3, 1/4, 2.5   (1, 0): -0.5, 1/4, 0.125
    # (1, 1): 2, 3/4, 1.5  ->  mean = (0.03125 + 0.625 + 0.03125 + 1.125) / 4 = 0.453125
    quantiles = torch.tensor([[[0.0, 1.0]]])  # one critic, one sample
    target = torch.tensor([[0.5, 3.0]])
    torch.testing.assert_close(quantile_huber_loss(quantiles, target), torch.tensor(0.453125))
    # A second, identical critic: the critics' losses are summed.
    two = torch.cat([quantiles, quantiles])
    torch.testing.assert_close(quantile_huber_loss(two, target), torch.tensor(0.90625))
    with pytest.raises(ShapeMismatchError, match="batch shapes must be equal"):
        quantile_huber_loss(torch.zeros(2, 5, 3), torch.zeros(4, 6))


def tqc_setup(build, **kwargs):
    actor = build.gaussian_actor(TanhNormal)
    kwargs = {"num_qvalue_nets": 2, "top_quantiles_to_drop_per_net": 1, **kwargs}
    loss = TQCLoss(actor, build.qvalue(out_features=3), gamma=0.9, alpha_init=0.5, **kwargs)
    build.perturb(loss.qvalue_networks)
    return actor, loss


def test_tqc_matches_reference(build):
    actor, loss = tqc_setup(build)
    assert loss.n_quantiles == 3  # read from the critic's MLP
    td = build.batch()
    online = [loss.qvalue_networks.member(i) for i in range(2)]
    targets = [loss.target_qvalue_networks.member(i) for i in range(2)]
    torch.manual_seed(7)
    out = loss(td)
    torch.manual_seed(7)
    eps_next, eps = torch.randn(6, 2), torch.randn(6, 2)
    obs, next_obs, action = td["observation"], td["next", "observation"], td["action"]
    reward, terminated = td["next", "reward"], td["next", "terminated"]
    with torch.no_grad():
        next_action, next_lp = build.squashed_sample(actor, next_obs, eps_next)
        next_z = [net.module(next_obs, next_action) for net in targets]
    preds = [net.module(obs, action) for net in online]  # [6, 3] each
    ref_q = 0.0
    atoms = []
    for b in range(6):
        # Pool the 2 x 3 target quantiles, sort, drop the d * N = 2 largest: 4 atoms.
        pooled = sorted(float(z[b, k]) for z in next_z for k in range(3))[:4]
        keep = 0.0 if terminated[b] else 0.9
        y = [float(reward[b]) + keep * (a - 0.5 * float(next_lp[b])) for a in pooled]
        atoms.append(y)
        for z in preds:
            for k in range(3):
                tau = (2 * k + 1) / 6
                for y_j in y:
                    delta = y_j - z[b, k]
                    ref_q = ref_q + abs(tau - float(delta < 0)) * huber(delta) / (6 * 3 * 4)
    new_action, log_prob = build.squashed_sample(actor, obs, eps)
    mean_z = torch.stack([net.module(obs, new_action) for net in online]).mean((0, -1))
    ref_actor = (0.5 * log_prob - mean_z).mean()
    torch.testing.assert_close(out["loss_qvalue"], ref_q)
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    torch.testing.assert_close(out["loss_alpha"], -(loss.log_alpha * (log_prob - 2.0)).mean())
    target_means = torch.tensor(atoms).mean(-1, keepdim=True)
    errors = torch.stack([(z.mean(-1, keepdim=True) - target_means).abs() for z in preds])
    torch.testing.assert_close(td["td_error"], errors.amax(0).squeeze(-1).detach())
    build.assert_ensemble_grads(out["loss_qvalue"], ref_q, loss.qvalue_networks, online)
    build.assert_no_grad(out["loss_qvalue"], actor)
    build.assert_same_grads(out["loss_actor"], ref_actor, actor)
    build.assert_no_grad(out["loss_actor"], loss.qvalue_networks)


def test_tqc_atoms_go_through_the_value_estimator_one_by_one(build):
    _, loss = tqc_setup(build)
    loss.make_value_estimator("td_lambda", lmbda=0.5)
    td = build.batch(shape=(2, 5))
    atoms = torch.randn(2, 5, 4)
    got = loss._bootstrap(td, atoms)
    for j in range(4):
        expected = loss.value_estimator.value_estimate(td, next_value=atoms[..., j : j + 1])
        torch.testing.assert_close(got[..., j : j + 1], expected)


def test_tqc_bad_input(build):
    actor, qvalue = build.gaussian_actor(TanhNormal), build.qvalue(out_features=3)
    with pytest.raises(
        ObjectiveConfigError,
        match=r"top_quantiles_to_drop_per_net=3 drops every one of the critic's "
        r"n_quantiles=3 quantiles; it must be in \[0, 2\]",
    ):
        TQCLoss(actor, qvalue, top_quantiles_to_drop_per_net=3)
    with pytest.raises(ObjectiveConfigError, match="must be an int >= 0, got -1"):
        TQCLoss(actor, qvalue, top_quantiles_to_drop_per_net=-1)
    with pytest.raises(ObjectiveConfigError, match="n_quantiles must be a positive int, got 0"):
        TQCLoss(actor, qvalue, n_quantiles=0)
    with pytest.raises(ObjectiveConfigError, match="num_qvalue_nets must be >= 1, got 0"):
        TQCLoss(actor, qvalue, num_qvalue_nets=0)
    with pytest.raises(ObjectiveConfigError, match="quantile Huber loss.*'l2'"):
        TQCLoss(actor, qvalue, loss_function="l2")
    # A declared count the critic does not write: said at the first call.
    with pytest.raises(ShapeMismatchError, match="writes 3 values per sample.*n_quantiles=4"):
        TQCLoss(actor, qvalue, n_quantiles=4, top_quantiles_to_drop_per_net=1)(build.batch())
    # A critic that does not say its size (no out_features): checked against its output.
    torch.manual_seed(0)
    plain = TensorDictModule(
        nn.Sequential(nn.Linear(3, 2)), in_keys=["observation"], out_keys=["state_action_value"]
    )
    loss = TQCLoss(actor, plain, top_quantiles_to_drop_per_net=2)
    assert loss.n_quantiles is None
    with pytest.raises(ObjectiveConfigError, match="n_quantiles=2 quantiles"):
        loss(build.batch())
