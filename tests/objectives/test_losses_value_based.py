"""DQN, DDPG and TD3 against the papers' formulas on a hand-built batch."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule
from torch.nn import functional as F

from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.specs import Bounded, Categorical, OneHot
from rlblocks.objectives import DDPGLoss, DQNLoss, TD3Loss
from rlblocks.objectives.errors import ShapeMismatchError
from rlblocks.objectives.modules import ProbabilisticActor, QValueActor, TanhDelta


def not_terminated(td):
    return (~td["next", "terminated"]).float()


def q_actor(spec, seed=3):
    torch.manual_seed(seed)
    return QValueActor(torch.nn.Linear(3, 3), spec=spec)


@pytest.mark.parametrize("one_hot", [False, True])
def test_dqn_matches_reference(build, one_hot):
    spec = OneHot(3) if one_hot else Categorical(3)
    actor = q_actor(spec)
    index = torch.tensor([0, 1, 2, 2, 1, 0])
    action = F.one_hot(index, 3).bool() if one_hot else index
    td = build.batch(action=action)
    loss = DQNLoss(actor, gamma=0.9)
    out = loss(td)
    net = actor.module[0].module
    q = net(td["observation"])
    pred = q.gather(-1, index.unsqueeze(-1))
    with torch.no_grad():
        next_q = net(td["next", "observation"]).max(-1, keepdim=True).values
    target = td["next", "reward"] + 0.9 * not_terminated(td) * next_q
    ref = F.mse_loss(pred, target)
    torch.testing.assert_close(out["loss_qvalue"], ref)
    build.assert_same_grads(out["loss_qvalue"], ref, actor)
    # The target network is a frozen copy: no parameters, no gradient.
    assert list(loss.target_value_network.parameters()) == []
    torch.testing.assert_close(td["td_error"], (pred - target).abs().squeeze(-1).detach())


def test_dqn_weights_samples_by_the_importance_weights_of_prioritized_replay(build):
    actor = q_actor(Categorical(3))
    td = build.batch(action=torch.tensor([0, 1, 2, 2, 1, 0]))
    weight = torch.tensor([0.0, 0.5, 1.0, 0.25, 1.0, 0.0])
    plain = DQNLoss(actor, gamma=0.9)(td.clone())
    weighted = DQNLoss(actor, gamma=0.9)(td.clone().set("_weight", weight))
    errors = (plain["pred_value"] - plain["target_value"]) ** 2  # per sample
    torch.testing.assert_close(weighted["loss_qvalue"], (weight * errors).mean())
    torch.testing.assert_close(plain["loss_qvalue"], errors.mean())  # no weights: uniform


def test_double_dqn_selects_with_online_and_values_with_target(build):
    actor = q_actor(Categorical(3))
    td = build.batch(action=torch.tensor([0, 1, 2, 2, 1, 0]))
    loss = DQNLoss(actor, gamma=0.9, double_dqn=True, loss_function="smooth_l1")
    with torch.no_grad():  # make the online network differ from its target copy
        for p in actor.parameters():
            p.add_(torch.randn_like(p))
    out = loss(td)
    online = actor.module[0].module
    target_net = loss.target_value_network.module[0].module
    with torch.no_grad():
        best = online(td["next", "observation"]).argmax(-1, keepdim=True)
        next_q = target_net(td["next", "observation"]).gather(-1, best)
    target = td["next", "reward"] + 0.9 * not_terminated(td) * next_q
    pred = online(td["observation"]).gather(-1, td["action"].unsqueeze(-1))
    torch.testing.assert_close(out["loss_qvalue"], F.smooth_l1_loss(pred, target))


def test_dqn_without_target_network(build):
    actor = q_actor(Categorical(3))
    loss = DQNLoss(actor, delay_value=False)
    assert loss.target_pairs() == []
    out = loss(build.batch(action=torch.zeros(6, dtype=torch.long)))
    assert out["loss_qvalue"].requires_grad


def test_dqn_bad_action_shape(build):
    actor = q_actor(Categorical(3))
    td = build.batch(action=torch.zeros(6, 2, dtype=torch.long))
    with pytest.raises(ShapeMismatchError, match=r"\[6, 2\].*\[6, 3\]"):
        DQNLoss(actor)(td)


def test_ddpg_matches_reference(build):
    actor, qvalue = build.deterministic_actor(), build.qvalue()
    td = build.batch()
    loss = DDPGLoss(actor, qvalue, gamma=0.9)
    out = loss(td)
    mu, q = actor.module, qvalue.module
    obs, next_obs = td["observation"], td["next", "observation"]
    with torch.no_grad():
        next_q = q(next_obs, mu(next_obs))
    target = td["next", "reward"] + 0.9 * not_terminated(td) * next_q
    ref_value = F.mse_loss(q(obs, td["action"]), target)
    ref_actor = -q(obs, mu(obs)).mean()
    torch.testing.assert_close(out["loss_value"], ref_value)
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    build.assert_same_grads(out["loss_actor"], ref_actor, actor)
    build.assert_no_grad(out["loss_actor"], qvalue)
    build.assert_same_grads(out["loss_value"], ref_value, qvalue)
    build.assert_no_grad(out["loss_value"], actor)
    assert [name for name, _ in loss.named_parameters() if "target" in name] == []


def test_td3_matches_reference_without_noise(build):
    actor, qvalue = build.deterministic_actor(), build.qvalue()
    td = build.batch()
    loss = TD3Loss(actor, qvalue, action_spec=build.spec, policy_noise=0.0, gamma=0.9)
    out = loss(td)
    q1, q2 = (m.module for m in loss.qvalue_networks)
    assert q1 is qvalue.module
    assert not torch.equal(q1[0].weight, q2[0].weight)  # the copies are re-initialized
    mu = actor.module
    obs, next_obs = td["observation"], td["next", "observation"]
    with torch.no_grad():
        next_action = mu(next_obs).clamp(-1, 1)
        next_q = torch.min(q1(next_obs, next_action), q2(next_obs, next_action))
    target = td["next", "reward"] + 0.9 * not_terminated(td) * next_q
    ref_q = F.smooth_l1_loss(q1(obs, td["action"]), target) + F.smooth_l1_loss(
        q2(obs, td["action"]), target
    )
    ref_actor = -q1(obs, mu(obs)).mean()
    torch.testing.assert_close(out["loss_qvalue"], ref_q)
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    build.assert_same_grads(out["loss_actor"], ref_actor, actor)
    build.assert_no_grad(out["loss_actor"], loss.qvalue_networks)
    build.assert_same_grads(out["loss_qvalue"], ref_q, loss.qvalue_networks)
    build.assert_no_grad(out["loss_qvalue"], actor)


def test_td3_target_smoothing_noise_is_clipped(build):
    actor, qvalue = build.deterministic_actor(), build.qvalue()
    td = build.batch()
    loss = TD3Loss(actor, qvalue, policy_noise=1.0, noise_clip=0.1, gamma=0.9)
    torch.manual_seed(5)
    out = loss(td)
    torch.manual_seed(5)
    mu = actor.module
    q1, q2 = (m.module for m in loss.qvalue_networks)
    next_obs = td["next", "observation"]
    with torch.no_grad():
        base = mu(next_obs)
        noise = (torch.randn_like(base) * 1.0).clamp(-0.1, 0.1)
        # No spec on the actor and none given: the smoothed action is not clamped.
        next_q = torch.min(q1(next_obs, base + noise), q2(next_obs, base + noise))
    assert (noise.abs() == 0.1).any()  # some draws were clipped
    target = td["next", "reward"] + 0.9 * not_terminated(td) * next_q
    torch.testing.assert_close(out["target_value"], target.squeeze(-1))


@pytest.mark.parametrize("loss_class", [DDPGLoss, TD3Loss])
@pytest.mark.parametrize("exploration", list(ExplorationType))
def test_deterministic_losses_train_a_tanh_delta_actor_under_any_exploration_type(
    build, loss_class, exploration
):
    # The actor the examples build: an MLP then a TanhDelta into the action bounds. Under
    # RANDOM (the default) a sampling call of it must neither add noise nor cut the grad.
    torch.manual_seed(0)
    net = TensorDictModule(torch.nn.Linear(3, 2), in_keys=["observation"], out_keys=["param"])
    spec = Bounded(-2.0, 2.0, shape=(2,))
    actor = ProbabilisticActor(net, in_keys=["param"], distribution_class=TanhDelta, spec=spec)
    qvalue = build.qvalue()
    td = build.batch()
    loss = loss_class(actor, qvalue, gamma=0.9)
    with set_exploration_type(exploration):
        out = loss(td)
    linear, q = net.module, qvalue.module
    obs = td["observation"]
    ref_actor = -q(obs, 2.0 * torch.tanh(linear(obs))).mean()
    torch.testing.assert_close(out["loss_actor"], ref_actor)
    build.assert_same_grads(out["loss_actor"], ref_actor, actor)
