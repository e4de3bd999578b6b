"""SFTLoss, GRPOLoss (checked by hand on a tiny batch), the group-relative advantage, the
KL-to-reference reward and the loss plugins."""

from __future__ import annotations

import importlib.metadata
import math

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from rlblocks.core import ExplorationType, make_loss, set_exploration_type
from rlblocks.envs import TransformedEnv
from rlblocks.llm import (
    GroupRelativeAdvantage,
    GroupSizeError,
    GRPOLoss,
    KLRewardTransform,
    SFTLoss,
    TextDataset,
    TextEnv,
    TransformersWrapper,
    arithmetic_task,
    encode_sft_batch,
    exact_match_reward,
    group_relative_advantage,
)
from rlblocks.objectives import ClipPPOLoss, MissingInputError, ObjectiveConfigError, total_loss


class TableActor(nn.Module):
    """Scores responses from a table of per-token log-probabilities: a loss checked by hand."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.clone())

    def log_prob(self, prompt, prompt_mask, response, response_mask):
        return torch.where(response_mask, self.table, torch.zeros_like(self.table))


def tiny_batch(old: torch.Tensor, reward: list[float]) -> TensorDict:
    n, width = old.shape
    mask = torch.tensor([[True, True], [True, False], [True, True], [True, True]])
    return TensorDict(
        {
            ("tokens", "prompt"): torch.zeros(n, 3, dtype=torch.int64),
            ("masks", "prompt"): torch.ones(n, 3, dtype=torch.bool),
            ("tokens", "response"): torch.zeros(n, width, dtype=torch.int64),
            ("masks", "response"): mask,
            ("log_probs", "response"): old,
            ("next", "reward"): torch.tensor(reward).unsqueeze(-1),
        },
        batch_size=[n],
    )


def test_grpo_loss_matches_a_hand_computation():
    old = torch.tensor([[-1.0, -2.0], [-1.5, -9.0], [-0.5, -0.7], [-0.2, -0.3]])
    new = old + torch.tensor([[0.1, 0.5], [-0.5, 3.0], [0.0, 0.0], [0.0, 0.0]])
    batch = tiny_batch(old, [1.0, 0.0, 1.0, 1.0])  # groups of 2: (1, 0) and (1, 1)
    actor = TableActor(new)
    out = GRPOLoss(actor, group_size=2, clip_epsilon=0.2)(batch)

    # Group 1: mean 0.5, unbiased std sqrt(0.5): advantages +-0.7071; group 2: both 0.
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    # Row 0 (A > 0): ratios e^0.1 (inside the clip) and e^0.5 (clipped to 1.2).
    row0 = (min(math.exp(0.1) * a, 1.2 * a) + min(math.exp(0.5) * a, 1.2 * a)) / 2
    # Row 1 (A < 0): one real token, ratio e^-0.5 = 0.61: the clipped 0.8 * A is smaller.
    row1 = min(math.exp(-0.5) * -a, 0.8 * -a) / 1
    expected = -(row0 + row1 + 0.0 + 0.0) / 4
    assert out["loss_objective"].item() == pytest.approx(expected, rel=1e-5)
    # Two of the seven real tokens are outside [0.8, 1.2].
    assert out["clip_fraction"].item() == pytest.approx(2 / 7)
    assert out["kl_approx"].item() == pytest.approx(-(0.1 + 0.5 - 0.5) / 7, rel=1e-5)

    total_loss(out).backward()
    grad = actor.table.grad
    # d/dlog_prob of -min(rA, clip(r)A)/2/4: -r*A/8 inside the clip, 0 where it is active;
    # padding gets no gradient.
    assert grad[0, 0].item() == pytest.approx(-math.exp(0.1) * a / 8, rel=1e-5)
    assert grad[0, 1].item() == 0.0 and grad[1, 0].item() == 0.0 and grad[1, 1].item() == 0.0
    assert (grad[2:] == 0).all()


def test_token_reduction_and_the_kl_term_by_hand():
    old = torch.zeros(4, 2)
    batch = tiny_batch(old, [1.0, 0.0, 0.0, 1.0])
    batch.set(("ref_log_probs", "response"), old - 0.3)
    out = GRPOLoss(TableActor(old), group_size=2, kl_to_ref_coeff=0.1, reduction="token")(batch)
    # ratios are all 1: surrogate = A per token; token mean over the 7 real tokens.
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    assert out["loss_objective"].item() == pytest.approx(-(2 * a - a - 2 * a + 2 * a) / 7, rel=1e-5)
    k3 = math.exp(-0.3) + 0.3 - 1  # exp(ref - new) - (ref - new) - 1, the same on every token
    assert out["kl_to_ref"].item() == pytest.approx(k3, rel=1e-5)
    assert out["loss_kl"].item() == pytest.approx(0.1 * k3, rel=1e-5)


def test_group_relative_advantage():
    reward = torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0, 2.0]).unsqueeze(-1)
    adv = group_relative_advantage(reward, 3)
    assert adv.shape == (6, 1)
    assert adv[:3].sum().item() == pytest.approx(0.0, abs=1e-6)
    assert adv[0].item() == pytest.approx((1 - 1 / 3) / (math.sqrt(1 / 3) + 1e-6), rel=1e-5)
    torch.testing.assert_close(
        group_relative_advantage(reward, 3, scale=False)[3:], torch.zeros(3, 1)
    )
    with pytest.raises(GroupSizeError, match="6 rewards do not split into groups of 4"):
        group_relative_advantage(reward, 4)


def test_bad_group_sizes_and_mixed_groups_are_refused():
    actor = TableActor(torch.zeros(4, 2))
    with pytest.raises(
        GroupSizeError, match=r"group_size must be an int >= 2, got 1.*group_size=8"
    ):
        GRPOLoss(actor, group_size=1)
    with pytest.raises(GroupSizeError, match="got 1"):
        GroupRelativeAdvantage(group_size=1)
    batch = tiny_batch(torch.zeros(4, 2), [1.0, 0.0, 1.0, 0.0])
    batch.set("prompt_id", torch.tensor([0, 0, 1, 2]))
    with pytest.raises(GroupSizeError, match=r"rows 2...3 .* prompt ids \[1, 2\]"):
        GroupRelativeAdvantage(group_size=2)(batch)
    assert "advantage" not in batch.keys()  # nothing written on failure


def test_grpo_without_advantage_or_group_size_names_what_is_missing():
    batch = tiny_batch(torch.zeros(4, 2), [1.0, 0.0, 1.0, 0.0])
    with pytest.raises(MissingInputError, match="advantage"):
        GRPOLoss(TableActor(torch.zeros(4, 2)))(batch)
    with pytest.raises(ObjectiveConfigError, match="no reference_network"):
        GRPOLoss(TableActor(torch.zeros(4, 2)), group_size=2, kl_to_ref_coeff=0.1)(batch)
    with pytest.raises(ObjectiveConfigError, match="must score responses"):
        GRPOLoss(nn.Linear(2, 2), group_size=2)
    with pytest.raises(ObjectiveConfigError, match="reduction must be"):
        GRPOLoss(TableActor(torch.zeros(4, 2)), reduction="mean")


def test_grpo_step_favours_the_rewarded_completions(tokenizer, model):
    env = TextEnv(
        arithmetic_task(40, high=9), exact_match_reward, tokenizer, batch_size=32, group_size=8,
        max_prompt_tokens=4, max_new_tokens=3,
    )  # fmt: skip
    policy = TransformersWrapper(model, tokenizer, max_new_tokens=3)
    scorer = TransformersWrapper(model, tokenizer, generate=False, max_new_tokens=3)
    torch.manual_seed(0)
    batch = env.step(policy(env.reset()))
    # A made-up reward that every group can see: 1 for responses starting with "1".
    first = batch["tokens", "response"][:, 0] == tokenizer.encode("1")[0]
    batch.set(("next", "reward"), first.float().unsqueeze(-1))
    batch = GroupRelativeAdvantage(group_size=8)(batch)
    loss = GRPOLoss(scorer)

    def sequence_log_prob():
        with torch.no_grad():
            return scorer(batch.clone())["log_probs", "response"].sum(-1)

    before = sequence_log_prob()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    out = loss(batch)
    optimizer.zero_grad()
    total_loss(out).backward()
    optimizer.step()
    change = sequence_log_prob() - before
    positive, negative = batch["advantage"].squeeze(-1) > 0, batch["advantage"].squeeze(-1) < 0
    assert positive.any() and negative.any()
    assert change[positive].mean() > change[negative].mean()


def test_sft_loss_is_the_masked_next_token_cross_entropy(tokenizer, model):
    data = TextDataset(["1+2=", "10+20="], ["3", "30"])
    batch = encode_sft_batch(tokenizer, data, max_prompt_tokens=6, max_new_tokens=3)
    loss = SFTLoss(TransformersWrapper(model, tokenizer, generate=False, max_new_tokens=3))
    out = loss(batch)
    # By hand: run the model on each unpadded prompt + response and score the response.
    nll, count = 0.0, 0
    for prompt, response in zip(data.prompts, data.answers):
        prompt_ids = tokenizer.encode(prompt)
        target = [*tokenizer.encode(response), tokenizer.eos_token_id]
        ids = torch.tensor([prompt_ids + target])
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
        nll += torch.nn.functional.cross_entropy(
            logits, torch.tensor(target), reduction="sum"
        ).item()
        count += len(target)
    assert out["loss_sft"].item() == pytest.approx(nll / count, rel=1e-5)


def test_sft_teaches_answers_that_greedy_generation_then_gives(tokenizer, model):
    data = TextDataset(["1+2=", "4+4=", "7+5=", "9+9="], ["3", "8", "12", "18"])
    batch = encode_sft_batch(tokenizer, data, max_prompt_tokens=5, max_new_tokens=3)
    loss = SFTLoss(TransformersWrapper(model, tokenizer, generate=False, max_new_tokens=3))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        out = loss(batch)
        optimizer.zero_grad()
        total_loss(out).backward()
        optimizer.step()
    assert out["loss_sft"].item() < 0.05
    env = TextEnv(
        data, exact_match_reward, tokenizer, batch_size=4, max_prompt_tokens=5, max_new_tokens=3,
        shuffle=False,
    )  # fmt: skip
    policy = TransformersWrapper(model, tokenizer, max_new_tokens=3)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert env.step(policy(env.reset()))["next", "reward"].sum().item() == 4


def test_kl_reward_transform_subtracts_the_log_ratio_to_the_reference(tiny_gpt2, tokenizer, model):
    data = arithmetic_task(20, high=9)
    base = TextEnv(
        data, exact_match_reward, tokenizer, batch_size=8, group_size=4, max_prompt_tokens=4,
        max_new_tokens=3, shuffle=False,
    )  # fmt: skip
    policy = TransformersWrapper(model, tokenizer, max_new_tokens=3)
    other = TransformersWrapper(tiny_gpt2(len(tokenizer), seed=1), tokenizer, max_new_tokens=3)
    # The policy as its own reference: no penalty.
    env = TransformedEnv(base, KLRewardTransform(policy, coef=0.5))
    td = env.step(policy(env.reset()))
    torch.testing.assert_close(td["next", "kl_penalty"], torch.zeros(8, 1), atol=2e-5, rtol=0)
    # Another model as the reference: reward - coef * sum_t (log pi - log pi_ref).
    env = TransformedEnv(base, KLRewardTransform(other, coef=0.5))
    td = policy(env.reset())
    td = env.step(td)
    mask = td["masks", "response"]
    with torch.no_grad():
        ref = other.log_prob(
            td["tokens", "prompt"], td["masks", "prompt"], td["tokens", "response"], mask
        )
    penalty = ((td["log_probs", "response"] - ref) * mask).sum(-1, keepdim=True)
    torch.testing.assert_close(td["ref_log_probs", "response"], ref)
    plain = exact_match_reward(None, list(td["text", "response"]), list(td["text", "answer"]))
    torch.testing.assert_close(td["next", "reward"], plain.unsqueeze(-1) - 0.5 * penalty)


def test_the_shaped_reward_trains_with_clip_ppo(tiny_gpt2, tokenizer, model):
    env = TransformedEnv(
        TextEnv(
            arithmetic_task(20, high=9), exact_match_reward, tokenizer, batch_size=8,
            group_size=4, max_prompt_tokens=4, max_new_tokens=3,
        ),
        KLRewardTransform(TransformersWrapper(tiny_gpt2(len(tokenizer), seed=1), tokenizer), 0.1),
    )  # fmt: skip
    policy = TransformersWrapper(model, tokenizer, max_new_tokens=3)
    batch = GroupRelativeAdvantage(group_size=4, scale=False)(env.step(policy(env.reset())))
    scorer = TransformersWrapper(model, tokenizer, generate=False, max_new_tokens=3)
    loss = ClipPPOLoss(scorer, entropy_coef=0.01).set_keys(
        action=("tokens", "response"), sample_log_prob=("log_probs", "response")
    )
    out = loss(batch)
    # Nothing changed since generation: every ratio is 1.
    assert out["kl_approx"].abs().item() < 1e-5
    total_loss(out).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_losses_are_registered_as_plugins(model, tokenizer):
    (entry,) = [
        ep
        for ep in importlib.metadata.entry_points(group="rlblocks")
        if ep.dist is not None and ep.dist.name == "rlblocks-llm"
    ]
    assert (entry.name, entry.value) == ("llm", "rlblocks.llm._plugin")
    assert entry.load().rlblocks_losses() == {"sft": SFTLoss, "grpo": GRPOLoss}
    scorer = TransformersWrapper(model, tokenizer, generate=False)
    loss = make_loss("grpo", actor_network=scorer, group_size=4)
    assert isinstance(loss, GRPOLoss) and loss.group_size == 4
    assert isinstance(make_loss("sft", actor_network=scorer), SFTLoss)
