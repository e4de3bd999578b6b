"""CrossQ against the paper's formulas, and BatchRenorm1d, the normalization its critics use."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rlblocks.objectives import CrossQLoss, SoftUpdate, make_update_step
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules import MLP, BatchRenorm1d, TanhNormal

# -- BatchRenorm1d ---------------------------------------------------------------------


def test_batch_renorm_warms_up_as_batch_norm():
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0)) * 2 + 1
    norm = BatchRenorm1d(3, momentum=0.1)  # 10k warm-up steps: plain batch norm
    y = norm(x)
    rows = x.reshape(-1, 3)  # every leading dim is a batch dim
    mean, var = rows.mean(0), rows.var(0, unbiased=False)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-5))
    torch.testing.assert_close(norm.running_mean, 0.1 * mean)
    torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * rows.var(0, unbiased=True))
    assert int(norm.num_batches_tracked) == 1


def renorm(**kwargs):
    """Running mean [0, 1], std [2, 0.1]; affine weight 2, bias 1."""
    norm = BatchRenorm1d(2, eps=1e-10, max_r=2.0, max_d=0.5, **kwargs)
    with torch.no_grad():
        norm.running_mean.copy_(torch.tensor([0.0, 1.0]))
        norm.running_var.copy_(torch.tensor([4.0, 0.01]))
        norm.weight.fill_(2.0)
        norm.bias.fill_(1.0)
    return norm


# Minibatch mean [2, 1], std [1, 1]: feature 0 has r = 1 / 2 and d = (2 - 0) / 2 = 1, clipped
# to 0.5; feature 1 has r = 1 / 0.1 = 10, clipped to 2, and d = 0.
X = torch.tensor([[1.0, 0.0], [3.0, 2.0]])


def test_batch_renorm_corrects_towards_running_statistics():
    # (x - mean_B) / std_B * r + d, then * 2 + 1.
    y = renorm(warmup_steps=0)(X)
    expected = torch.tensor([[-0.5 + 0.5, -2.0], [0.5 + 0.5, 2.0]]) * 2 + 1
    torch.testing.assert_close(y, expected)
    # Halfway through a smooth warm-up, r and d apply by half: r = [0.75, 1.5], d = [0.25, 0].
    norm = renorm(warmup_steps=4, smooth=True)
    norm.num_batches_tracked.fill_(2)
    expected = torch.tensor([[-0.75 + 0.25, -1.5], [0.75 + 0.25, 1.5]]) * 2 + 1
    torch.testing.assert_close(norm(X), expected)
    # Eval mode: 2 * (x - [0, 1]) / [2, 0.1] + 1.
    torch.testing.assert_close(renorm().eval()(X), torch.tensor([[2.0, -19.0], [4.0, 21.0]]))


def test_batch_renorm_compiled_gradients_match_eager():
    # The backward must read the running statistics as they were before the in-place update
    # (torch.compile would otherwise recompute r from the updated buffers).
    x = torch.randn(12, 2, generator=torch.Generator().manual_seed(0)).requires_grad_()
    norm = renorm(warmup_steps=0, momentum=0.5)
    start = {k: v.clone() for k, v in norm.state_dict().items()}

    def objective(inputs):
        return (norm(inputs) * torch.arange(24.0).view(12, 2)).sum()

    compiled = torch.compile(objective, fullgraph=True, backend="aot_eager")
    grads = []
    for fn in (compiled, objective):
        norm.load_state_dict(start)
        grads.append(torch.autograd.grad(fn(x), [x])[0])
    torch.testing.assert_close(grads[0], grads[1])


def test_batch_renorm_bad_input():
    with pytest.raises(ObjectiveConfigError, match=r"last dim.*\[4, 2\].*\[\*batch, 3\]"):
        BatchRenorm1d(3)(torch.zeros(4, 2))
    with pytest.raises(ObjectiveConfigError, match="momentum must be in \\(0, 1\\].*got 0"):
        BatchRenorm1d(3, momentum=0)
    with pytest.raises(ObjectiveConfigError, match="num_features must be a positive int"):
        BatchRenorm1d(0)
    with pytest.raises(ObjectiveConfigError, match="warmup_steps must be an int >= 0"):
        BatchRenorm1d(3, warmup_steps=-1)


def test_mlp_puts_the_norm_between_each_hidden_layer_and_its_activation():
    net = MLP(
        5,
        1,
        num_cells=[8, 4],
        activation_class=nn.ReLU,
        norm_class=BatchRenorm1d,
        norm_kwargs={"momentum": 0.05},
    )
    kinds = [type(layer) for layer in net]
    assert kinds == [
        nn.Linear,
        BatchRenorm1d,
        nn.ReLU,
        nn.Linear,
        BatchRenorm1d,
        nn.ReLU,
        nn.Linear,
    ]
    assert [net[1].num_features, net[4].num_features] == [8, 4]
    assert net[1].momentum == net[4].momentum == 0.05
    assert net(torch.randn(7, 5)).shape == (7, 1)


# -- CrossQLoss ------------------------------------------------------------------------


def crossq_setup(build):
    actor = build.gaussian_actor(TanhNormal)
    qvalue = build.renorm_qvalue(warmup_steps=0, momentum=0.1)
    return actor, CrossQLoss(actor, qvalue, gamma=0.9, alpha_init=0.5)


def test_crossq_matches_reference(build):
    actor, loss = crossq_setup(build)
    critics = loss.qvalue_networks
    td = build.batch()
    members = [critics.member(i) for i in range(2)]  # train mode, as the loss's pass
    torch.manual_seed(7)
    out = loss(td)
    torch.manual_seed(7)
    eps_next, eps = torch.randn(6, 2), torch.randn(6, 2)
    obs, next_obs, action = td["observation"], td["next", "observation"], td["action"]
    with torch.no_grad():
        next_action, next_lp = build.squashed_sample(actor, next_obs, eps_next)
    both_obs, both_actions = torch.cat([obs, next_obs]), torch.cat([action, next_action])
    # Separate passes over (s, a) would normalize with other statistics.
    separate = [critics.member(i).module(obs, action) for i in range(2)]
    # One pass over both halves per critic (which also updates its running statistics).
    joint = [net.module(both_obs, both_actions) for net in members]
    preds = [q[:6] for q in joint]
    with torch.no_grad():
        next_value = torch.stack([q[6:] for q in joint]).amin(0) - 0.5 * next_lp.unsqueeze(-1)
        target = td["next", "reward"] + 0.9 * (~td["next", "terminated"]).float() * next_value
    ref_q = sum(F.smooth_l1_loss(p, target) for p in preds)
    # The actor reads the critics in eval mode, with the statistics that pass left.
    for net in members:
        net.eval()
    new_action, log_prob = build.squashed_sample(actor, obs, eps)
    min_q = torch.stack([net.module(obs, new_action) for net in members]).amin(0)
    ref_actor = (0.5 * log_prob.unsqueeze(-1) - min_q).mean()
    torch.testing.assert_close(out["loss_qvalue"], ref_q)
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    torch.testing.assert_close(out["loss_alpha"], -(loss.log_alpha * (log_prob - 2.0)).mean())
    assert not torch.allclose(separate[0], preds[0])
    errors = torch.stack([(p - target).abs() for p in preds]).amax(0).squeeze(-1)
    torch.testing.assert_close(td["td_error"], errors.detach())
    # Batch norm saw both halves: each critic's running mean moved by momentum 0.1 towards
    # the mean of its first layer over the 12 rows of (s, a) and (s', a').
    rows = torch.cat([both_obs, both_actions], -1)
    with torch.no_grad():
        hidden = torch.stack([net.module[0](rows).mean(0) for net in members])
    stats = critics.stacked.module[1]
    torch.testing.assert_close(stats.running_mean, 0.1 * hidden)
    assert stats.num_batches_tracked.tolist() == [1, 1]  # once: the actor's pass is eval
    # Gradients reach only what they should.
    build.assert_ensemble_grads(out["loss_qvalue"], ref_q, critics, members)
    build.assert_no_grad(out["loss_qvalue"], actor)
    build.assert_same_grads(out["loss_actor"], ref_actor, actor)
    build.assert_no_grad(out["loss_actor"], critics)


def test_crossq_has_no_target_networks(build):
    actor, loss = crossq_setup(build)
    assert loss.target_pairs() == []
    assert not any(key.startswith("target_") for key in loss.state_dict())
    with pytest.raises(ObjectiveConfigError, match="no target network"):
        SoftUpdate(loss)
    with pytest.raises(ObjectiveConfigError, match="takes no delay_qvalue.*got delay_qvalue=True"):
        CrossQLoss(actor, build.renorm_qvalue(), delay_qvalue=True)


def test_crossq_delayed_actor_is_a_critic_only_step(build):
    # CrossQ's policy_delay: the training loop minimizes loss_qvalue alone on most steps.
    _, loss = crossq_setup(build)
    optimizer = torch.optim.Adam(loss.parameters(), lr=0.01)
    critic_step = make_update_step(loss, optimizer, terms=("loss_qvalue",))
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    critic_step(build.batch())
    after = loss.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("actor"))
    assert torch.equal(after["log_alpha"], before["log_alpha"])
    assert not torch.equal(
        after["qvalue_networks.stacked.module.0.weight"],
        before["qvalue_networks.stacked.module.0.weight"],
    )
