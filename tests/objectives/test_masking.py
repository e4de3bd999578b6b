"""Action masking in the objectives: masked distributions, masked PPO and masked DQN targets.

Illegal actions get probability exactly zero, are never sampled or chosen, and the losses
only ever learn about legal ones.
"""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torch.nn import functional as F

from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.specs import Categorical
from rlblocks.objectives import ClipPPOLoss, DQNLoss
from rlblocks.objectives.errors import ShapeMismatchError
from rlblocks.objectives.modules import (
    MaskedCategorical,
    MaskedOneHotCategorical,
    ProbabilisticActor,
    QValueActor,
)

MASK = torch.tensor([[True, False, True, True], [False, False, True, False]])
MASK4 = MASK.repeat(2, 1)  # for the 4-transition batches (Build.batch needs >= 3)


def renormalized(logits, mask):
    """The reference: softmax over the allowed actions only, written by hand."""
    exp = logits.exp() * mask
    return exp / exp.sum(-1, keepdim=True)


def test_masked_categorical_is_the_softmax_over_allowed_actions():
    logits = torch.randn(2, 4, requires_grad=True)
    dist = MaskedCategorical(logits=logits, mask=MASK)
    ref = renormalized(logits, MASK)
    torch.testing.assert_close(dist.probs, ref)
    assert (dist.probs[~MASK] == 0).all()  # exactly zero, not small
    samples = dist.sample((5000,))
    assert MASK.gather(-1, samples.T).all()
    assert dist.mode.tolist() == [int(ref[0].argmax()), 2]
    legal = torch.tensor([3, 2])
    torch.testing.assert_close(dist.log_prob(legal), ref.gather(-1, legal[:, None]).log()[:, 0])
    assert dist.log_prob(torch.tensor([1, 0])).isneginf().all()
    entropy = -(ref * ref.clamp_min(1e-30).log()).sum(-1)
    torch.testing.assert_close(dist.entropy(), entropy)
    dist.entropy().sum().backward()
    assert logits.grad.isfinite().all() and (logits.grad[~MASK] == 0).all()
    # From probabilities: renormalized among the allowed ones too.
    from_probs = MaskedCategorical(probs=torch.full((2, 4), 0.25), mask=MASK)
    torch.testing.assert_close(from_probs.probs, MASK.float() / MASK.sum(-1, keepdim=True))


def test_masked_one_hot_samples_only_allowed_rows():
    dist = MaskedOneHotCategorical(logits=torch.randn(2, 4), mask=MASK)
    samples = dist.sample((2000,)).bool()
    assert not (samples & ~MASK).any() and (samples.sum(-1) == 1).all()
    assert dist.log_prob(F.one_hot(torch.tensor([1, 0]), 4).float()).isneginf().all()


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.tensor([[True] * 4, [False] * 4]), r"allows no action at batch index \[1\]"),
        (torch.ones(3, 4, dtype=torch.bool), r"mask has shape \[3, 4\], the logits \[2, 4\]"),
        (torch.ones(2, 4), r"must be a bool tensor of shape \[2, 4\].*float32"),
    ],
)
def test_bad_masks_are_named(mask, message):
    for cls in (MaskedCategorical, MaskedOneHotCategorical):
        with pytest.raises(ShapeMismatchError, match=cls.__name__ + ": .*" + message):
            cls(logits=torch.zeros(2, 4), mask=mask)


def test_logits_or_probs_exactly_one():
    with pytest.raises(ShapeMismatchError, match="exactly one of logits and probs, got both"):
        MaskedCategorical(logits=torch.zeros(4), probs=torch.full((4,), 0.25), mask=MASK[0])
    with pytest.raises(ShapeMismatchError, match="got neither"):
        MaskedOneHotCategorical(mask=MASK[0])


def masked_actor(seed=0):
    torch.manual_seed(seed)
    net = TensorDictModule(nn.Linear(3, 4), in_keys=["observation"], out_keys=["logits"])
    return ProbabilisticActor(
        net,
        in_keys={"logits": "logits", "mask": "action_mask"},
        distribution_class=MaskedCategorical,
        return_log_prob=True,
    )


def test_a_probabilistic_actor_reads_the_mask_and_acts_legally(build):
    actor = masked_actor()
    td = build.batch(shape=(4,))
    td["action_mask"] = MASK4
    for kind in (ExplorationType.RANDOM, ExplorationType.DETERMINISTIC):
        with set_exploration_type(kind):
            for _ in range(50):
                action = actor(td.clone())["action"]
                assert MASK4.gather(-1, action[:, None]).all()


def test_masked_ppo_learns_only_about_legal_actions(build):
    actor = masked_actor()
    td = build.batch(shape=(4,))
    td["action_mask"] = MASK4
    with torch.no_grad():
        td = actor(td)
    td["advantage"] = torch.ones(4, 1)
    td["value_target"] = torch.zeros(4, 1)
    critic = TensorDictModule(nn.Linear(3, 1), in_keys=["observation"], out_keys=["state_value"])
    loss = ClipPPOLoss(actor, critic, entropy_coef=0.01)
    out = loss(td)
    total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
    assert total.isfinite()
    total.backward()
    weight = actor.module[0].module.weight.grad  # rows: one per action's logit
    assert weight.isfinite().all()
    # Action 1 is illegal in both states: its logit gets no gradient at all.
    assert (weight[1] == 0).all() and (weight[2] != 0).any()


def q_actor(seed=3):
    torch.manual_seed(seed)
    return QValueActor(nn.Linear(3, 4), spec=Categorical(4), action_mask_key="action_mask")


@pytest.mark.parametrize("double_dqn", [False, True])
def test_dqn_targets_take_the_best_legal_next_action(build, double_dqn):
    actor = q_actor()
    td = build.batch(shape=(4,), action=torch.tensor([0, 2, 3, 2]))
    td["action_mask"] = MASK4
    td["next", "action_mask"] = MASK4.flip(0)
    loss = DQNLoss(actor, gamma=0.9, double_dqn=double_dqn)
    with torch.no_grad():
        for p in actor.parameters():  # the online network differs from its target copy
            p.add_(torch.randn_like(p))
    out = loss(td)
    online = actor.module[0].module
    target_net = loss.target_value_network.module[0].module
    with torch.no_grad():
        chooser = online if double_dqn else target_net
        scores = chooser(td["next", "observation"]).masked_fill(~MASK4.flip(0), float("-inf"))
        next_q = target_net(td["next", "observation"]).gather(-1, scores.argmax(-1, keepdim=True))
    not_terminated = (~td["next", "terminated"]).float()
    target = td["next", "reward"] + 0.9 * not_terminated * next_q
    pred = online(td["observation"]).gather(-1, td["action"][:, None])
    torch.testing.assert_close(out["loss_qvalue"], F.mse_loss(pred, target))


def test_a_terminal_state_with_no_legal_action_gives_a_finite_target(build):
    actor = q_actor()
    td = build.batch(shape=(6,), action=torch.zeros(6, dtype=torch.long))  # row 1 terminated
    td["action_mask"] = torch.ones(6, 4, dtype=torch.bool)
    next_mask = torch.ones(6, 4, dtype=torch.bool)
    next_mask[1] = False  # game over: nothing is legal
    td["next", "action_mask"] = next_mask
    out = DQNLoss(actor, gamma=0.9)(td)
    assert out["loss_qvalue"].isfinite()
    torch.testing.assert_close(out["target_value"][1], td["next", "reward"][1, 0])
