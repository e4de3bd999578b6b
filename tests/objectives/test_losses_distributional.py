"""C51: the categorical projection, DistributionalDQNLoss against a hand computation, the
distributional actor, and n-step targets (steps_to_next_obs) in both DQN losses."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torch.nn import functional as F

from rlblocks.core.specs import Categorical
from rlblocks.objectives import (
    DistributionalDQNLoss,
    DQNLoss,
    MissingInputError,
    ObjectiveConfigError,
    ShapeMismatchError,
    total_loss,
)
from rlblocks.objectives._losses.distributional import categorical_projection
from rlblocks.objectives.modules import (
    DistributionalQValueActor,
    DistributionalQValueModule,
    QValueActor,
)
from rlblocks.objectives.value import TD0Estimator

ACTIONS = torch.tensor([0, 1, 2, 2, 1, 0])


def naive_projection(atoms, probs, support):
    """C51's Algorithm 1, atom by atom (floats, as written in the paper)."""
    z = support.tolist()
    n, v_min, v_max = len(z), z[0], z[-1]
    delta = (v_max - v_min) / (n - 1)
    m = [0.0] * n
    for tz, p in zip(atoms.tolist(), probs.tolist()):
        b = (min(max(tz, v_min), v_max) - v_min) / delta
        low, up = math.floor(b), math.ceil(b)
        if low == up:
            m[low] += p
        else:
            m[low] += p * (up - b)
            m[up] += p * (b - low)
    return torch.tensor(m)


def naive_loss(actor, target_actor, td, gamma, double_dqn):
    """The loss, priorities and targets computed sample by sample."""
    support = actor.support
    online, target = (a.action_value_module.module[0].module for a in (actor, target_actor))
    losses, targets = [], []
    for i in range(td.shape[0]):
        log_p = online(td["observation"][i]).log_softmax(-2)
        next_online = online(td["next", "observation"][i]).softmax(-2)
        next_target = target(td["next", "observation"][i]).softmax(-2)
        chooser = next_online if double_dqn else next_target
        best = int((chooser * support[:, None]).sum(0).argmax())
        terminal = bool(td["next", "terminated"][i])
        steps = int(td.get("steps_to_next_obs", torch.ones(6, 1, dtype=torch.long))[i])
        discount = 0.0 if terminal else gamma**steps
        atoms = td["next", "reward"][i] + discount * support
        m = naive_projection(atoms, next_target[:, best], support)
        losses.append(-(m * log_p[:, int(td["action"][i])]).sum())
        targets.append(float((m * support).sum()))
    return torch.stack(losses), torch.tensor(targets)


def perturb_target(loss):
    """Make the target network differ from the online one."""
    with torch.no_grad():
        loss.target_value_network.action_value_module.module[0].module[0].weight.mul_(-1.5)


# -- the projection ---------------------------------------------------------------------


def test_projection_matches_the_papers_loop_at_edges_and_on_atoms():
    g = torch.Generator().manual_seed(0)
    support = torch.linspace(-2.0, 2.0, 5)
    batch = (4, 3)
    probs = torch.rand(*batch, 5, generator=g).softmax(-1)
    atoms = 3 * torch.randn(*batch, 5, generator=g)  # many beyond the support, clamped
    atoms[0, 0] = support.clone()  # exactly on the atoms (gamma = 1, r = 0)
    atoms[0, 1] = support + 1.0  # shifted by one atom: the top one piles up at v_max
    atoms[0, 2] = torch.full((5,), 0.7)  # a terminal state: every atom at r
    atoms[1, 0] = torch.full((5,), -5.0)  # all below v_min
    atoms[1, 1] = torch.full((5,), 2.0)  # all at v_max
    got = categorical_projection(atoms, probs, support)
    for index in torch.cartesian_prod(torch.arange(4), torch.arange(3)).tolist():
        expected = naive_projection(atoms[tuple(index)], probs[tuple(index)], support)
        torch.testing.assert_close(got[tuple(index)], expected, msg=str(index))
    torch.testing.assert_close(got.sum(-1), probs.sum(-1))  # mass is kept
    torch.testing.assert_close(got[0, 0], probs[0, 0])
    torch.testing.assert_close(got[1, 0], F.one_hot(torch.tensor(0), 5).float())
    torch.testing.assert_close(got[1, 1], F.one_hot(torch.tensor(4), 5).float())
    # r = 0.7 on atoms 1 apart: 0.3 of the mass to z = 0, 0.7 to z = 1.
    torch.testing.assert_close(got[0, 2], torch.tensor([0.0, 0.0, 0.3, 0.7, 0.0]))


# -- the actor --------------------------------------------------------------------------


def test_greedy_action_maximizes_the_expected_return_not_the_mode():
    support = torch.arange(11.0)
    # Action 0: surely 1 (mode 1, mean 1). Action 1: 0 w.p. 0.8, 10 w.p. 0.2 (mean 2).
    probs = torch.zeros(11, 2)
    probs[1, 0], probs[0, 1], probs[10, 1] = 1.0, 0.8, 0.2
    log_p = probs.clamp_min(1e-12).log().expand(4, 11, 2)
    module = DistributionalQValueModule("categorical", support)
    td = module(TensorDict(action_value=log_p, batch_size=[4]))
    assert td["action"].tolist() == [1, 1, 1, 1]
    torch.testing.assert_close(td["chosen_action_value"], torch.full((4, 1), 2.0))
    torch.testing.assert_close(td["action_value"], log_p)
    masked = DistributionalQValueModule(
        "categorical", support, action_mask_key="mask", out_keys=["a", "action_value", "q"]
    )
    mask = torch.tensor([[True, False]]).expand(4, 2)
    td = masked(TensorDict(action_value=log_p, mask=mask, batch_size=[4]))
    assert td["a"].tolist() == [0, 0, 0, 0]
    torch.testing.assert_close(td["q"], torch.ones(4, 1))


def test_actor_log_softmaxes_over_atoms_and_takes_torchrl_arguments(build):
    actor = build.distributional_actor(one_hot=True)
    td = actor(build.batch().exclude("action"))
    assert td["action_value"].shape == (6, 5, 3)
    torch.testing.assert_close(td["action_value"].exp().sum(-2), torch.ones(6, 3))
    q = (td["action_value"].exp() * actor.support[:, None]).sum(-2)
    assert torch.equal(td["action"], F.one_hot(q.argmax(-1), 3).to(td["action"].dtype))
    # TorchRL's positional order (module, support, in_keys, spec); make_log_softmax=False
    # for a network that already outputs log-probabilities.
    net = nn.Sequential(nn.Linear(3, 15), nn.Unflatten(-1, (5, 3)))
    positional = DistributionalQValueActor(
        net, torch.linspace(-1, 1, 5), ["observation"], Categorical(3)
    )
    as_is = DistributionalQValueActor(
        net, torch.linspace(-1, 1, 5), spec=Categorical(3), make_log_softmax=False
    )
    obs = TensorDict(observation=torch.randn(2, 3), batch_size=[2])
    with torch.no_grad():
        logits = net(obs["observation"])
        torch.testing.assert_close(positional(obs.clone())["action_value"], logits.log_softmax(-2))
        torch.testing.assert_close(as_is(obs.clone())["action_value"], logits)


def test_actor_and_module_errors():
    with pytest.raises(ObjectiveConfigError, match="evenly spaced"):
        DistributionalQValueModule("categorical", torch.tensor([0.0, 1.0, 3.0]))
    with pytest.raises(ObjectiveConfigError, match="at least 2 atoms"):
        DistributionalQValueModule("categorical", torch.zeros(1))
    with pytest.raises(ObjectiveConfigError, match="linspace"):
        DistributionalQValueModule("categorical")
    from tensordict.nn import TensorDictModule

    net = TensorDictModule(nn.Linear(3, 6), in_keys=["observation"], out_keys=["logits"])
    with pytest.raises(ObjectiveConfigError, match="action_value_key='action_value'"):
        DistributionalQValueActor(net, torch.linspace(-1, 1, 2), spec=Categorical(3))
    module = DistributionalQValueModule("categorical", torch.linspace(-1, 1, 4))
    with pytest.raises(ShapeMismatchError, match=r"4 atoms.*\[\*batch, 4, n_actions\]"):
        module(TensorDict(action_value=torch.zeros(2, 5, 3), batch_size=[2]))


# -- the loss ---------------------------------------------------------------------------


@pytest.mark.parametrize("double_dqn", [True, False])
def test_loss_matches_a_hand_computation(build, double_dqn):
    actor = build.distributional_actor()
    loss = DistributionalDQNLoss(actor, gamma=0.9, double_dqn=double_dqn)
    perturb_target(loss)
    td = build.batch(action=ACTIONS)
    out = loss(td)
    target_actor = loss.target_value_network
    losses, targets = naive_loss(actor, target_actor, td, 0.9, double_dqn)
    torch.testing.assert_close(out["loss_qvalue"], losses.mean())
    torch.testing.assert_close(td["td_error"], losses.detach())
    torch.testing.assert_close(out["target_value"], targets)
    with torch.no_grad():
        log_p = actor(td.clone())["action_value"]
        pred = (log_p.exp() * actor.support[:, None]).sum(-2).gather(-1, ACTIONS[:, None])
    torch.testing.assert_close(out["pred_value"], pred.squeeze(-1))
    # The gradient is that of the hand computation.
    build.assert_same_grads(out["loss_qvalue"], losses.mean(), actor)
    assert not list(loss.target_value_network.parameters())  # frozen: buffers only


def test_importance_weights_weight_each_samples_cross_entropy(build):
    actor = build.distributional_actor()
    loss = DistributionalDQNLoss(actor, gamma=0.9)
    td = build.batch(action=ACTIONS)
    weight = torch.linspace(0.0, 1.0, td.shape[0])
    out = loss(td.clone().set("_weight", weight))
    losses, _ = naive_loss(actor, loss.target_value_network, td, 0.9, False)
    torch.testing.assert_close(out["loss_qvalue"], (weight * losses).mean())


def test_double_dqn_chooses_the_next_action_with_the_online_network(build):
    actor = build.distributional_actor()
    td = build.batch(action=ACTIONS)
    single = DistributionalDQNLoss(actor, double_dqn=False)
    double = DistributionalDQNLoss(actor, double_dqn=True)
    for loss in (single, double):
        perturb_target(loss)
    online = actor(td["next"].clone())["action"]
    target = single.target_value_network(td["next"].clone())["action"]
    assert not torch.equal(online, target)  # they disagree: the option matters
    assert not torch.equal(single(td.clone())["target_value"], double(td.clone())["target_value"])
    # Without a target network, both choices are the online network's.
    a = DistributionalDQNLoss(actor, delay_value=False, double_dqn=False)(td.clone())
    b = DistributionalDQNLoss(actor, delay_value=False, double_dqn=True)(td.clone())
    torch.testing.assert_close(a["loss_qvalue"], b["loss_qvalue"])


def test_tensor_call_one_hot_actions_and_batch_dims_agree(build):
    actor = build.distributional_actor()
    loss = DistributionalDQNLoss(actor)
    td = build.batch(action=ACTIONS)
    got = loss(**build.tensors(td.clone()))
    expected = loss(td)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, msg=key)
    one_hot = DistributionalDQNLoss(build.distributional_actor(one_hot=True))
    by_one_hot = one_hot(build.batch(action=F.one_hot(ACTIONS, 3)))
    torch.testing.assert_close(by_one_hot["loss_qvalue"], expected["loss_qvalue"])
    grid = td.clone().reshape(2, 3)
    out = loss(grid)
    torch.testing.assert_close(out["loss_qvalue"], expected["loss_qvalue"])
    torch.testing.assert_close(grid["td_error"].reshape(-1), td["td_error"])


def test_loss_errors(build):
    with pytest.raises(ObjectiveConfigError, match="no 'support'"):
        DistributionalDQNLoss(QValueActor(nn.Linear(3, 3), spec=Categorical(3)))
    loss = DistributionalDQNLoss(build.distributional_actor())
    td = build.batch(action=ACTIONS)
    with pytest.raises(MissingInputError, match=r"lacks \['action'\]"):
        loss(td.exclude("action"))
    bad = td.clone()
    bad["next", "reward"] = bad["next", "reward"].squeeze(-1)
    with pytest.raises(ShapeMismatchError, match=r"\[6\], expected \[6, 1\]"):
        loss(bad)
    with pytest.raises(ShapeMismatchError, match="one-hot action"):
        loss(td.clone().set("action", torch.zeros(6, 2, dtype=torch.long)))
    assert loss.make_value_estimator("td0", gamma=0.5) is loss and loss.gamma == 0.5
    with pytest.raises(ObjectiveConfigError, match="'td0' and gamma only"):
        loss.make_value_estimator("td_lambda")
    with pytest.raises(ObjectiveConfigError, match=r"\['lmbda'\]"):
        loss.make_value_estimator(lmbda=0.5)


def test_an_update_moves_the_prediction_towards_the_target(build):
    actor = build.distributional_actor()
    loss = DistributionalDQNLoss(actor, gamma=0.5)
    optim = torch.optim.Adam(actor.parameters(), lr=0.05)
    td = build.batch(action=ACTIONS)
    first = loss(td.clone())["loss_qvalue"].item()
    for _ in range(30):
        optim.zero_grad()
        total_loss(loss(td.clone())).backward()
        optim.step()
    assert loss(td.clone())["loss_qvalue"].item() < first


# -- n-step targets: steps_to_next_obs --------------------------------------------------


def n_step_batch(build, layout=(6, 1)):
    td = build.batch(action=ACTIONS)
    td["steps_to_next_obs"] = torch.tensor([1, 2, 3, 3, 2, 1]).reshape(layout)
    return td


@pytest.mark.parametrize("layout", [(6, 1), (6,)])  # rlblocks' and TorchRL's layouts
def test_distributional_targets_discount_by_gamma_to_the_steps(build, layout):
    actor = build.distributional_actor()
    loss = DistributionalDQNLoss(actor, gamma=0.9)
    td = n_step_batch(build, layout)
    out = loss(td)
    losses, targets = naive_loss(actor, loss.target_value_network, td, 0.9, True)
    torch.testing.assert_close(out["loss_qvalue"], losses.mean())
    torch.testing.assert_close(out["target_value"], targets)
    plain = loss(td.exclude("steps_to_next_obs"))
    assert not torch.allclose(plain["target_value"], out["target_value"])


@pytest.mark.parametrize("layout", [(6, 1), (6,)])
def test_dqn_targets_discount_by_gamma_to_the_steps(build, layout):
    torch.manual_seed(3)
    net = nn.Linear(3, 3)
    loss = DQNLoss(QValueActor(net, spec=Categorical(3)), gamma=0.9)
    td = n_step_batch(build, layout)
    out = loss(td.clone())
    steps = torch.tensor([1, 2, 3, 3, 2, 1]).unsqueeze(-1)
    with torch.no_grad():
        next_q = net(td["next", "observation"]).max(-1, keepdim=True).values
    alive = (~td["next", "terminated"]).float()
    expected = td["next", "reward"] + 0.9**steps * alive * next_q
    torch.testing.assert_close(out["target_value"], expected.squeeze(-1))
    one_step = td["next", "reward"] + 0.9 * alive * next_q  # without the key: as before
    got = loss(td.exclude("steps_to_next_obs"))["target_value"]
    torch.testing.assert_close(got, one_step.squeeze(-1))
    # Renaming the key reaches the value estimator.
    renamed = td.clone()
    renamed.rename_key_("steps_to_next_obs", "k")
    loss.set_keys(steps_to_next_obs="k")
    assert loss.value_estimator.tensor_keys.steps_to_next_obs == "k"
    torch.testing.assert_close(loss(renamed)["target_value"], out["target_value"])


def test_td0_estimator_reads_the_steps():
    g = torch.Generator().manual_seed(0)
    td = TensorDict(
        {
            "steps_to_next_obs": torch.tensor([[1], [3]]),
            ("next", "reward"): torch.randn(2, 1, generator=g),
            ("next", "done"): torch.zeros(2, 1, dtype=torch.bool),
            ("next", "state_value"): torch.randn(2, 1, generator=g),
        },
        [2],
    )
    target = TD0Estimator(gamma=0.5).value_estimate(td)
    discount = torch.tensor([[0.5], [0.125]])
    torch.testing.assert_close(target, td["next", "reward"] + discount * td["next", "state_value"])
