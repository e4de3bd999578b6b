"""GAIL (Ho & Ermon, 2016): the discriminator's loss and the policy's reward, by hand."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from rlblocks.objectives import (
    GAILLoss,
    MissingInputError,
    ObjectiveConfigError,
    ShapeMismatchError,
    total_loss,
)

DATA_KEYS = ("observation", "action", "collector_observation", "collector_action")


def probability(disc, observation, action):
    """``D(s, a)`` from the test discriminator's logit."""
    return torch.sigmoid(disc.module.logit(observation, action))


def test_loss_is_binary_cross_entropy_with_the_expert_labelled_one(build):
    disc, td = build.discriminator(), build.gail_batch()
    out = GAILLoss(disc)(td)
    expert = probability(disc, td["observation"], td["action"])
    policy = probability(disc, td["collector_observation"], td["collector_action"])
    ref = -torch.log(expert).mean() - torch.log(1 - policy).mean()
    assert set(out.keys()) == {"loss_discriminator", "expert_accuracy", "collector_accuracy"}
    torch.testing.assert_close(out["loss_discriminator"], ref)
    build.assert_same_grads(out["loss_discriminator"], ref, disc)
    torch.testing.assert_close(out["expert_accuracy"], (expert > 0.5).float().mean())
    torch.testing.assert_close(out["collector_accuracy"], (policy < 0.5).float().mean())
    assert 0 < out["expert_accuracy"] < 1  # the tiny batch has both kinds of answers
    assert not out["expert_accuracy"].requires_grad
    assert not out["collector_accuracy"].requires_grad
    # Trajectories [2, 3]: the same pairs, the same loss.
    folded = GAILLoss(disc)(td.reshape(2, 3))
    torch.testing.assert_close(folded["loss_discriminator"], ref)


def test_gradient_penalty_matches_hand_computation(build):
    disc, td = build.discriminator(), build.gail_batch()
    loss = GAILLoss(disc, use_grad_penalty=True, gp_lambda=3.0)
    torch.manual_seed(7)
    out = loss(td)
    torch.manual_seed(7)
    eps = torch.rand(6, 1)  # one interpolation weight per sample, shared by (s, a)
    obs = (eps * td["observation"] + (1 - eps) * td["collector_observation"]).requires_grad_()
    act = (eps * td["action"] + (1 - eps) * td["collector_action"]).requires_grad_()
    d = probability(disc, obs, act)
    g_obs, g_act = torch.autograd.grad(d.sum(), (obs, act), create_graph=True)
    norm = torch.cat([g_obs, g_act], -1).norm(dim=-1)
    ref = 3.0 * ((norm - 1) ** 2).mean()
    torch.testing.assert_close(out["loss_gp"], ref)
    build.assert_same_grads(out["loss_gp"], ref, disc)
    without = GAILLoss(disc)(td)["loss_discriminator"]
    torch.testing.assert_close(out["loss_discriminator"], without)
    torch.testing.assert_close(total_loss(out), without + ref)
    # Evaluated without gradient it is the same number, detached.
    torch.manual_seed(7)
    with torch.no_grad():
        evaluated = loss(td)["loss_gp"]
    assert not evaluated.requires_grad
    torch.testing.assert_close(evaluated, ref.detach())


def test_gradients_reach_only_the_discriminator(build):
    disc, td = build.discriminator(), build.gail_batch()
    leaves = {key: td[key].clone().requires_grad_(True) for key in DATA_KEYS}
    td.update(leaves)
    loss = GAILLoss(disc, use_grad_penalty=True)
    assert {id(p) for p in loss.parameters()} == {id(p) for p in disc.parameters()}
    total_loss(loss(td)).backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in disc.parameters())
    assert all(leaf.grad is None for leaf in leaves.values())


def test_tensor_call_matches_tensordict_call_with_the_penalty(build):
    disc, td = build.discriminator(), build.gail_batch()
    loss = GAILLoss(disc, use_grad_penalty=True)
    torch.manual_seed(3)
    from_td = loss(td.clone())
    torch.manual_seed(3)
    from_tensors = loss(**{key: td[key] for key in DATA_KEYS})
    assert set(from_tensors) == set(from_td.keys())
    for key, value in from_tensors.items():
        torch.testing.assert_close(value, from_td[key], msg=key)


def test_a_saturated_discriminator_gives_finite_loss_reward_and_gradients(build):
    disc, td = build.discriminator(), build.gail_batch()
    with torch.no_grad():
        disc.module.logit[-1].weight.mul_(1e4)  # D rounds to exactly 0 or 1
    expert, policy = (
        probability(disc, td[o], td[a])
        for o, a in (("observation", "action"), ("collector_observation", "collector_action"))
    )
    assert bool(((expert == 1) | (expert == 0)).all()) and bool((policy == 1).any())
    out = GAILLoss(disc, use_grad_penalty=True)(td)
    assert all(bool(v.isfinite()) for v in out.values())
    grads = build.grads(total_loss(out), disc)
    assert all(bool(g.isfinite().all()) for g in grads)
    data = GAILLoss(disc).reward(td.clone())
    reward = data["next", "reward"]
    assert bool(reward.isfinite().all()) and float(reward.max()) == pytest.approx(18.42, abs=0.01)


def test_reward_is_minus_log_one_minus_d_written_in_place(build):
    disc, data = build.discriminator(), build.batch(shape=(2, 3))
    loss = GAILLoss(disc)
    out = loss.reward(data)
    assert out is data
    d = probability(disc, data["observation"], data["action"])
    reward = data["next", "reward"]
    assert reward.shape == (2, 3, 1) and not reward.requires_grad
    torch.testing.assert_close(reward, -torch.log(1 - d))
    assert "d_logits" not in data.keys()  # the discriminator ran on a selection
    # Written elsewhere on request, the env's reward kept.
    data = build.batch()
    env_reward = data["next", "reward"].clone()
    loss.set_keys(reward="gail_reward").reward(data)
    assert torch.equal(data["next", "reward"], env_reward)
    torch.testing.assert_close(
        data["next", "gail_reward"],
        -torch.log(1 - probability(disc, data["observation"], data["action"])),
    )


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "role"),
    [("observation", "expert_observation"), ("collector_action", "collector_action")],
)
def test_missing_data_names_the_key_and_the_role(build, key, role):
    td = build.gail_batch()
    del td[key]
    with pytest.raises(MissingInputError) as info:
        GAILLoss(build.discriminator())(td)
    message = str(info.value)
    assert f"lacks ['{key}']" in message and f"set_keys({role}=" in message
    assert "'collector_observation'" in message  # what it needs


def test_expert_and_policy_batches_of_different_sizes_are_refused(build):
    td = build.gail_batch()
    tensors = {key: td[key] for key in DATA_KEYS}
    tensors["collector_observation"] = tensors["collector_observation"][:4]
    tensors["collector_action"] = tensors["collector_action"][:4]
    loss = GAILLoss(build.discriminator())
    pattern = (
        r"expert observations 'observation' have shape \[6, 3\] but the policy's "
        r"'collector_observation' have shape \[4, 3\].*as many expert as policy pairs"
    )
    with pytest.raises(ShapeMismatchError, match=pattern):
        loss(**tensors)
    with pytest.raises(ShapeMismatchError, match=pattern):
        loss(TensorDict(tensors, batch_size=[]))
    tensors = {key: td[key] for key in DATA_KEYS} | {"collector_action": td["action"][:, :1]}
    with pytest.raises(ShapeMismatchError, match=r"actions 'action' have shape \[6, 2\]"):
        loss(**tensors)


@pytest.mark.parametrize("gp_lambda", [-1.0, float("nan"), float("inf"), "10"])
def test_gp_lambda_must_be_a_finite_non_negative_number(build, gp_lambda):
    with pytest.raises(ObjectiveConfigError, match=r"gp_lambda must be a finite number >= 0"):
        GAILLoss(build.discriminator(), use_grad_penalty=True, gp_lambda=gp_lambda)
    assert GAILLoss(build.discriminator(), gp_lambda=0).gp_lambda == 0.0


def test_discriminator_keys_must_match_the_loss_keys(build):
    td = build.gail_batch()
    disc = build.discriminator()
    reads_obs = TensorDictModule(disc.module, in_keys=["obs", "action"], out_keys=["d_logits"])
    loss = GAILLoss(reads_obs)
    with pytest.raises(ObjectiveConfigError, match=r"reads \['obs'\].*set_keys\(expert_observ"):
        loss(td)
    renamed = td.clone()
    renamed.rename_key_("observation", "obs")
    expected = GAILLoss(disc)(td)["loss_discriminator"]
    torch.testing.assert_close(
        loss.set_keys(expert_observation="obs")(renamed)["loss_discriminator"], expected
    )
    writes_prob = TensorDictModule(disc.module, in_keys=["observation", "action"], out_keys=["p"])
    loss = GAILLoss(writes_prob)
    with pytest.raises(ObjectiveConfigError, match=r"writes \['p'\].*'d_logits'"):
        loss(td)
    loss.set_keys(discriminator_pred="p")
    torch.testing.assert_close(loss(td)["loss_discriminator"], expected)


def test_discriminator_output_must_be_one_probability_per_sample(build):
    td = build.gail_batch()
    squeezed = TensorDictModule(
        lambda o, a: torch.sigmoid(o.sum(-1) + a.sum(-1)),
        in_keys=["observation", "action"],
        out_keys=["d_logits"],
    )
    with pytest.raises(ShapeMismatchError, match=r"shape \[12\].*\[\*batch, 1\]"):
        GAILLoss(squeezed)(td)
    with pytest.raises(ShapeMismatchError, match=r"shape \[6\] for a batch of shape \[6\]"):
        GAILLoss(squeezed).reward(build.batch())


def test_gradient_penalty_needs_floating_point_inputs(build):
    td = build.gail_batch()
    td["action"] = torch.zeros(6, 2, dtype=torch.long)
    td["collector_action"] = torch.ones(6, 2, dtype=torch.long)
    disc = TensorDictModule(
        lambda o, a: torch.sigmoid(o.sum(-1, keepdim=True) + a.sum(-1, keepdim=True)),
        in_keys=["observation", "action"],
        out_keys=["d_logits"],
    )
    GAILLoss(disc)(td)  # without the penalty, any dtype the discriminator takes
    with pytest.raises(ObjectiveConfigError, match=r"'action' has dtype torch.int64.*one-hot"):
        GAILLoss(disc, use_grad_penalty=True)(td)


def test_reward_refuses_a_logit_and_missing_keys(build):
    logit = TensorDictModule(
        build.discriminator().module.logit, in_keys=["observation", "action"], out_keys=["d_logits"]
    )
    with pytest.raises(ObjectiveConfigError, match=r"values in \[.*\].*nn.Sigmoid\(\)"):
        GAILLoss(logit).reward(build.batch())
    data = build.batch().exclude("action")
    with pytest.raises(MissingInputError, match=r"lacks \['action'\].*discriminator network"):
        GAILLoss(build.discriminator()).reward(data)


# -- learning -------------------------------------------------------------------------


def gaussian_pairs(n, shift, g):
    """Pairs ``(s, a)`` of standard normals, every coordinate shifted by ``shift``."""
    return torch.randn(n, 3, generator=g) + shift, torch.randn(n, 2, generator=g) + shift


@pytest.mark.parametrize("use_grad_penalty", [False, True])
def test_discriminator_separates_two_gaussians_and_rewards_the_expert(build, use_grad_penalty):
    # Means 2 apart in each of 5 dims: the best classifier is right 98.7% of the time.
    torch.manual_seed(0)
    disc = build.discriminator(seed=0)
    loss = GAILLoss(disc, use_grad_penalty=use_grad_penalty, gp_lambda=1.0)
    optimizer = torch.optim.Adam(disc.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)

    def batch(n):
        obs, act = gaussian_pairs(n, 1.0, g)
        policy_obs, policy_act = gaussian_pairs(n, -1.0, g)
        return TensorDict(
            {
                "observation": obs,
                "action": act,
                "collector_observation": policy_obs,
                "collector_action": policy_act,
            },
            [n],
        )

    for _ in range(300):
        optimizer.zero_grad()
        total_loss(loss(batch(64))).backward()
        optimizer.step()
    with torch.no_grad():
        out = loss(batch(2000))
    accuracy = (out["expert_accuracy"] + out["collector_accuracy"]) / 2
    assert accuracy > 0.95, accuracy
    test = batch(2000)
    expert = loss.reward(test.select("observation", "action"))["next", "reward"]
    policy_pairs = TensorDict(
        {"observation": test["collector_observation"], "action": test["collector_action"]}, [2000]
    )
    policy = loss.reward(policy_pairs)["next", "reward"]
    assert expert.mean() > policy.mean() + 1.0, (expert.mean(), policy.mean())
