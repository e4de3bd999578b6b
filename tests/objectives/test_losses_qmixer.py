"""QMixerLoss (QMIX and VDN) against the formula on a hand-built grouped batch."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torch.nn import functional as F

from rlblocks.core import make_loss
from rlblocks.core.specs import OneHot
from rlblocks.objectives import HardUpdate, QMixerLoss, SoftUpdate, total_loss
from rlblocks.objectives.errors import (
    MissingInputError,
    ObjectiveConfigError,
    ShapeMismatchError,
)
from rlblocks.objectives.modules import VDNMixer

GAMMA = 0.9


def local_net(qvalue):
    """The plain MultiAgentMLP inside the grouped Q-network (or its target copy)."""
    return qvalue.module[0].module


def perturb(*modules):
    """Make online networks differ from their target copies."""
    torch.manual_seed(11)
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                p.add_(0.3 * torch.randn_like(p))


def reference(td, q_net, mix, target_q_net, target_mix, gamma=GAMMA, mask=None):
    """``(Q_tot, target)`` written out from QMIX's definition, sample by sample."""
    preds, targets = [], []
    n_actions = q_net(td["agents", "observation"]).shape[-1]
    action = td["agents", "action"]
    if action.shape[-1:] == (n_actions,) and action.ndim == 3:  # one-hot
        action = action.argmax(-1)
    for b in range(td.shape[0]):
        q = q_net(td["agents", "observation"][b])  # [n_agents, n_actions]
        chosen = torch.stack([q[i, action[b, i]] for i in range(q.shape[0])]).view(-1, 1)
        preds.append(mix(chosen.unsqueeze(0), td["state"][b].unsqueeze(0)).view(1))
        with torch.no_grad():
            next_q = target_q_net(td["next", "agents", "observation"][b])
            if mask is not None:
                next_q = next_q.masked_fill(~mask[b], float("-inf"))
            best = next_q.max(-1, keepdim=True).values  # [n_agents, 1]
            next_tot = target_mix(best.unsqueeze(0), td["next", "state"][b].unsqueeze(0))
            alive = 1.0 - td["next", "terminated"][b].float()
            targets.append(td["next", "reward"][b] + gamma * alive * next_tot.view(1))
    return torch.stack(preds), torch.stack(targets)


@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("mixer_kind", ["qmix", "vdn"])
def test_matches_hand_computation(build, one_hot, mixer_kind):
    qvalue = build.agents_qvalue(one_hot=one_hot)
    mixer = build.qmixer() if mixer_kind == "qmix" else VDNMixer(n_agents=2)
    td = build.agents_batch(one_hot=one_hot)
    loss = QMixerLoss(qvalue, mixer, gamma=GAMMA)
    perturb(qvalue, mixer)
    out = loss(td)

    def mix_of(module):
        if mixer_kind == "vdn":
            return lambda q, s: q.sum(-2)
        return module.mix

    pred, target = reference(
        td,
        local_net(qvalue),
        mix_of(mixer),
        local_net(loss.target_local_value_network),
        mix_of(loss.target_mixer_network),
    )
    ref = F.mse_loss(pred, target)
    torch.testing.assert_close(out["loss_qvalue"], ref)
    torch.testing.assert_close(out["pred_value"], pred.squeeze(-1).detach())
    torch.testing.assert_close(out["target_value"], target.squeeze(-1))
    torch.testing.assert_close(td["td_error"], (pred - target).abs().squeeze(-1).detach())
    build.assert_same_grads(out["loss_qvalue"], ref, qvalue)
    if mixer_kind == "qmix":
        build.assert_same_grads(out["loss_qvalue"], ref, mixer)
    # The terminated sample (index 1) does not bootstrap; the truncated one (2) does.
    torch.testing.assert_close(out["target_value"][1], td["next", "reward"][1, 0])
    assert not torch.allclose(out["target_value"][2], td["next", "reward"][2, 0])


def test_gradients_reach_both_networks_and_targets_are_not_trained(build):
    qvalue, mixer = build.agents_qvalue(), build.qmixer()
    loss = QMixerLoss(qvalue, mixer)
    assert list(loss.target_local_value_network.parameters()) == []
    assert list(loss.target_mixer_network.parameters()) == []
    out = loss(build.agents_batch())
    total_loss(out).backward()
    for module in (qvalue, mixer):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads)
        assert any(bool(g.abs().sum() > 0) for g in grads)
    targets = {k: v.clone() for k, v in loss.state_dict().items() if k.startswith("target_")}
    online = {k: v.clone() for k, v in loss.state_dict().items() if not k.startswith("target_")}
    torch.optim.SGD(loss.parameters(), lr=0.1).step()
    after = loss.state_dict()
    for key, value in targets.items():
        torch.testing.assert_close(after[key], value)
    assert any(not torch.equal(after[k], v) for k, v in online.items())
    # The updaters move both targets.
    SoftUpdate(loss, tau=1.0).step()
    for name, param in qvalue.named_parameters():
        torch.testing.assert_close(
            dict(loss.target_local_value_network.named_buffers())[name], param.detach()
        )
    for name, param in mixer.named_parameters():
        torch.testing.assert_close(
            dict(loss.target_mixer_network.named_buffers())[name], param.detach()
        )


def test_without_target_networks_bootstraps_from_the_online_ones(build):
    qvalue, mixer = build.agents_qvalue(), build.qmixer()
    loss = QMixerLoss(qvalue, mixer, delay_value=False, gamma=GAMMA)
    assert loss.target_pairs() == []
    with pytest.raises(ObjectiveConfigError, match="no target network"):
        HardUpdate(loss)
    td = build.agents_batch()
    out = loss(td)
    _, target = reference(td, local_net(qvalue), mixer.mix, local_net(qvalue), mixer.mix)
    torch.testing.assert_close(out["target_value"], target.squeeze(-1))


def test_tensor_call_matches_tensordict_call(build):
    loss = QMixerLoss(build.agents_qvalue(), build.qmixer())
    td = build.agents_batch()
    tensors = build.tensors(td.clone())
    assert "agents_observation" in tensors and "next_agents_observation" in tensors
    from_td = loss(td)
    from_tensors = loss(**tensors)
    assert isinstance(from_tensors, dict)
    assert set(from_tensors) == set(from_td.keys())
    for key, value in from_tensors.items():
        torch.testing.assert_close(value, from_td[key], msg=key)
    total_loss(from_tensors).backward()


def test_make_loss_builds_it(build):
    loss = make_loss("qmixer", local_value_network=build.agents_qvalue(), mixer_network=VDNMixer(2))
    assert type(loss) is QMixerLoss


def test_set_keys_renames_group_and_team_keys(build):
    qvalue, mixer = build.agents_qvalue(), build.qmixer()
    td = build.agents_batch()
    expected = QMixerLoss(qvalue, mixer)(td.clone())["loss_qvalue"]
    renamed = td.clone()
    renamed.rename_key_(("agents", "action"), ("agents", "act"))
    renamed.rename_key_(("next", "reward"), ("next", "team_reward"))
    loss = QMixerLoss(qvalue, mixer).set_keys(action=("agents", "act"), reward="team_reward")
    torch.testing.assert_close(loss(renamed)["loss_qvalue"], expected)
    assert ("agents", "act") in loss.in_keys and ("next", "team_reward") in loss.in_keys


def test_next_action_mask_limits_the_max(build):
    qvalue = build.agents_qvalue(action_mask=True)
    mixer = build.qmixer()
    td = build.agents_batch()
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(6, 2, 3, generator=g) > 0.5
    mask[..., 0] = True  # at least one allowed action per agent
    td["agents", "action_mask"] = torch.ones(6, 2, 3, dtype=torch.bool)
    td["next", "agents", "action_mask"] = mask
    loss = QMixerLoss(qvalue, mixer, delay_value=False, gamma=GAMMA)
    out = loss(td)
    _, target = reference(td, local_net(qvalue), mixer.mix, local_net(qvalue), mixer.mix, mask=mask)
    _, unmasked = reference(td, local_net(qvalue), mixer.mix, local_net(qvalue), mixer.mix)
    torch.testing.assert_close(out["target_value"], target.squeeze(-1))
    assert not torch.allclose(target, unmasked)
    assert ("next", "agents", "action_mask") in loss.in_keys


def test_agent_dim_mismatch_names_both_keys(build):
    loss = QMixerLoss(build.agents_qvalue(), build.qmixer())
    td = build.agents_batch()
    td["agents", "action"] = torch.zeros(6, 3, dtype=torch.long)  # 3 agents' actions, 2 agents
    with pytest.raises(
        ShapeMismatchError,
        match=r"\('agents', 'action'\) has shape \[6, 3\].*\('agents', 'action_value'\).*"
        r"\[6, 2, 3\]",
    ):
        loss(td)


def test_declared_action_space_is_checked(build):
    loss = QMixerLoss(build.agents_qvalue(), build.qmixer(), action_space=OneHot(3))
    assert loss.action_space == "one_hot"
    with pytest.raises(ShapeMismatchError, match=r"expected the action shaped \[6, 2, 3\]"):
        loss(build.agents_batch(one_hot=False))
    # Read from the local network when not given.
    qvalue = build.agents_qvalue()
    assert QMixerLoss(qvalue, build.qmixer()).action_space == "categorical"
    with pytest.raises(ObjectiveConfigError, match="action_space"):
        QMixerLoss(qvalue, build.qmixer(), action_space="binary")


def test_without_a_greedy_head_actions_are_told_apart_by_shape(build):
    # A bare network writing the action values: index and one-hot actions give the same loss.
    values = build.agents_qvalue().module[0]
    loss = QMixerLoss(values, build.qmixer())
    assert loss.action_space is None
    by_index = loss(build.agents_batch())["loss_qvalue"]
    by_one_hot = loss(build.agents_batch(one_hot=True))["loss_qvalue"]
    torch.testing.assert_close(by_index, by_one_hot)


def test_per_agent_reward_is_an_error_with_the_fix(build):
    loss = QMixerLoss(build.agents_qvalue(), build.qmixer())
    td = build.agents_batch()
    td["next", "reward"] = torch.randn(6, 2, 1)
    with pytest.raises(ShapeMismatchError, match=r"\[6, 2, 1\].*team reward.*sum\(-2\)"):
        loss(td)


def test_mixer_for_another_number_of_agents(build):
    loss = QMixerLoss(build.agents_qvalue(), build.qmixer(n_agents=3))
    with pytest.raises(ShapeMismatchError, match=r"n_agents=3.*got \[6, 2, 1\]"):
        loss(build.agents_batch())


def test_missing_state_names_the_mixer(build):
    loss = QMixerLoss(build.agents_qvalue(), build.qmixer())
    td = build.agents_batch()
    del td["next", "state"]
    with pytest.raises(MissingInputError, match=r"\('next', 'state'\).*mixer network"):
        loss(td)


def test_network_and_key_config_errors(build):
    qvalue = build.agents_qvalue()
    with pytest.raises(ObjectiveConfigError, match="mixer network must be a TensorDict module"):
        QMixerLoss(qvalue, nn.Linear(2, 1))
    with pytest.raises(ObjectiveConfigError, match="local value network must be"):
        QMixerLoss(nn.Linear(3, 3), VDNMixer(2))
    elsewhere = TensorDictModule(
        VDNMixer(2), in_keys=[("agents", "q")], out_keys=["chosen_action_value"]
    )
    loss = QMixerLoss(qvalue, elsewhere)
    with pytest.raises(ObjectiveConfigError, match=r"set_keys\(local_value="):
        loss(build.agents_batch())
    loss.set_keys(local_value=("agents", "q"))
    assert loss(build.agents_batch())["loss_qvalue"].requires_grad
    with pytest.raises(ObjectiveConfigError, match="loss_function"):
        QMixerLoss(qvalue, VDNMixer(2), loss_function="huber")
