"""Decision Transformer: the causal model, its actors, the online policy and the losses."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import distributions as D
from torch.nn import functional as F

from rlblocks.objectives import (
    DecisionTransformerLoss,
    DTLoss,
    OnlineDTLoss,
    SoftUpdate,
    total_loss,
)
from rlblocks.objectives.errors import MissingInputError, ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules import (
    Actor,
    DecisionTransformer,
    DecisionTransformerPolicy,
    DTActor,
    DTConfig,
)

OBS, ACT = 3, 2


def tiny(**settings):
    torch.manual_seed(0)
    base = {"n_embd": 8, "n_inner": 16, "n_layer": 2, "n_head": 2, "context_length": 5}
    return DTActor(OBS, ACT, **{**base, "dropout": 0.0, **settings})


def sequence(batch=(2,), length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(*batch, length, OBS, generator=g),
        torch.rand(*batch, length, ACT, generator=g) * 2 - 1,
        torch.randn(*batch, length, 1, generator=g),
    )


# -- the model ------------------------------------------------------------------------


def test_a_prediction_does_not_see_its_own_action_nor_the_future():
    net = tiny()
    obs, act, rtg = sequence()
    base = net(obs, act, rtg)
    assert base.shape == (2, 5, ACT) and base.abs().max() < 1  # tanh-bounded
    for t in range(4):
        for i in range(3):
            changed = [y.clone() for y in (obs, act, rtg)]
            # a_t and everything of later steps; R_t and s_t only from t + 1 on.
            start = t if i == 1 else t + 1
            changed[i][:, start:] += 10.0
            got = net(*changed)
            torch.testing.assert_close(got[:, : t + 1], base[:, : t + 1])
            assert not torch.allclose(got[:, t + 1 :], base[:, t + 1 :])  # later ones see it


def test_leading_batch_dims_are_flattened_and_restored():
    net = tiny()
    obs, act, rtg = sequence(batch=(2, 3))
    flat = net(obs.reshape(6, 5, OBS), act.reshape(6, 5, ACT), rtg.reshape(6, 5, 1))
    torch.testing.assert_close(net(obs, act, rtg), flat.reshape(2, 3, 5, ACT))
    # No batch dim at all: one sequence.
    torch.testing.assert_close(net(obs[0, 0], act[0, 0], rtg[0, 0]), flat[0])


def test_left_padding_with_an_attention_mask_equals_the_short_sequence():
    net = tiny()
    obs, act, rtg = sequence(length=3)
    short = net(obs, act, rtg)
    pad = [torch.cat([torch.full_like(x[:, :2], 7.0), x], dim=1) for x in (obs, act, rtg)]
    mask = torch.tensor([[False, False, True, True, True]] * 2)
    padded = net(*pad, attention_mask=mask)
    torch.testing.assert_close(padded[:, 2:], short)
    assert torch.isfinite(padded).all()  # padding rows attend to themselves: no NaN
    # A trailing singleton dim is accepted, as ("collector", "mask") may carry one.
    torch.testing.assert_close(net(*pad, attention_mask=mask[..., None]), padded)


def test_timesteps_are_embedded_with_max_ep_len():
    net = tiny(max_ep_len=50)
    obs, act, rtg = sequence()
    steps = torch.arange(5).expand(2, 5)
    early = net(obs, act, rtg, timestep=steps)
    late = net(obs, act, rtg, timestep=(steps + 20)[..., None])  # [*batch, T, 1] too
    assert not torch.allclose(early, late)
    with pytest.raises(
        ObjectiveConfigError,
        match=r"timesteps must be in \[0, max_ep_len=50\), got values in \[10, 50\]",
    ):
        net(obs, act, rtg, timestep=steps * 10 + 10)
    with pytest.raises(ObjectiveConfigError, match="max_ep_len=50 and no timestep"):
        net(obs, act, rtg)
    with pytest.raises(ObjectiveConfigError, match="max_ep_len=None and a timestep"):
        tiny()(obs, act, rtg, timestep=steps)
    with pytest.raises(ObjectiveConfigError, match="timestep must hold integers"):
        net(obs, act, rtg, timestep=steps.float())


def test_bad_inputs_name_the_argument_the_value_and_what_is_allowed():
    net = tiny()
    obs, act, rtg = sequence(length=6)
    with pytest.raises(
        ObjectiveConfigError, match=r"holds 6 steps .*at most context_length=5 are allowed"
    ):
        net(obs, act, rtg)
    obs, act, rtg = sequence()
    with pytest.raises(
        ObjectiveConfigError, match=r"observation has shape \[2, 5, 4\]; expected \[\*batch, T, 3\]"
    ):
        net(torch.zeros(2, 5, 4), act, rtg)
    with pytest.raises(
        ShapeMismatchError,
        match=r"action has shape \[2, 4, 2\].*expected action shaped \[2, 5, 2\]",
    ):
        net(obs, act[:, :4], rtg)
    with pytest.raises(ShapeMismatchError, match=r"return_to_go has shape \[2, 5\].*\[2, 5, 1\]"):
        net(obs, act, rtg[..., 0])
    with pytest.raises(
        ShapeMismatchError, match=r"attention_mask has shape \[2, 4\]; expected \[2, 5\]"
    ):
        net(obs, act, rtg, attention_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ObjectiveConfigError, match="attention_mask must have dtype torch.bool"):
        net(obs, act, rtg, attention_mask=torch.ones(2, 5))


def test_config_settings_and_their_errors():
    config = DTConfig(n_embd=16, n_head=2, n_positions=30)
    assert config.context_length == 10
    model = DecisionTransformer(OBS, ACT, config, n_layer=1, dropout=0.25)
    assert model.context_length == 10 and len(model.blocks) == 1
    assert model.config.attn_pdrop == model.config.resid_pdrop == model.config.embd_pdrop == 0.25
    assert (
        DecisionTransformer(OBS, ACT, {"n_embd": 16, "n_head": 2}, context_length=3).context_length
        == 3
    )
    assert DecisionTransformer.DTConfig is DTConfig  # TorchRL's spelling
    assert DTActor.default_config().n_embd == 512
    with pytest.raises(
        ObjectiveConfigError,
        match=r"unknown transformer setting\(s\) \['n_heads'\]; the settings are \[.*'n_head'",
    ):
        DecisionTransformer(OBS, ACT, n_heads=2)
    with pytest.raises(
        ObjectiveConfigError, match="n_head must divide n_embd, got n_embd=10 and n_head=4"
    ):
        DecisionTransformer(OBS, ACT, n_embd=10, n_head=4)
    with pytest.raises(ObjectiveConfigError, match="context_length must be a positive int, got 0"):
        DecisionTransformer(OBS, ACT, context_length=0)
    with pytest.raises(ObjectiveConfigError, match="context_length .* or n_positions .*not both"):
        DecisionTransformer(OBS, ACT, context_length=4, n_positions=12)
    with pytest.raises(ObjectiveConfigError, match=r"activation must be one of .*got 'swish'"):
        DecisionTransformer(OBS, ACT, activation="swish")
    with pytest.raises(ObjectiveConfigError, match=r"attn_pdrop must be in \[0, 1\), got 1.0"):
        DecisionTransformer(OBS, ACT, attn_pdrop=1.0)
    with pytest.raises(ObjectiveConfigError, match="state_dim must be a positive int, got 0"):
        DecisionTransformer(0, ACT)
    with pytest.raises(ObjectiveConfigError, match="must be a DTConfig, a dict .* got list"):
        DecisionTransformer(OBS, ACT, [16])


# -- DecisionTransformerLoss ------------------------------------------------------------


@pytest.mark.parametrize("loss_function", ["l2", "l1", "smooth_l1"])
def test_loss_is_the_masked_regression_error(build, loss_function):
    actor = build.dt_actor()
    td = build.dt_batch()
    out = DecisionTransformerLoss(actor, loss_function=loss_function)(td)
    assert set(out.keys()) == {"loss_actor"}
    net = actor.module
    pred = net(td["observation"], td["action"], td["return_to_go"])
    fn = {"l2": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}[loss_function]
    error = fn(pred, td["action"], reduction="none")  # [2, 4, 2]
    mask = td["collector", "mask"]
    ref = error[mask].sum() / (mask.sum() * ACT)  # 7 real steps of 2 action dims
    torch.testing.assert_close(out["loss_actor"], ref)
    build.assert_same_grads(out["loss_actor"], ref, actor)
    # Without a mask every step counts.
    unmasked = DecisionTransformerLoss(actor, loss_function=loss_function)(td.exclude("collector"))
    torch.testing.assert_close(unmasked["loss_actor"], error.mean())
    assert torch.equal(td["action"], build.dt_batch()["action"])  # the data is untouched
    assert DTLoss is DecisionTransformerLoss


def test_padded_steps_count_for_nothing(build):
    """Left padding, read by the actor as its attention mask: whatever the padding holds
    (NaN included), the loss and its gradients are those of the real steps."""
    actor = build.dt_actor(mask=True)
    loss = DecisionTransformerLoss(actor)
    td = build.dt_batch()
    td["collector", "mask"] = torch.tensor([[False, True, True, True], [True] * 4])
    base = loss(td.clone())
    junk = td.clone()
    for key in ("observation", "action", "return_to_go"):
        junk[key][0, 0] = float("nan")
    other = loss(junk)
    torch.testing.assert_close(other["loss_actor"], base["loss_actor"])
    build.assert_same_grads(other["loss_actor"], base["loss_actor"], actor)
    # Every step padded: no NaN, zero loss.
    td["collector", "mask"] = torch.zeros(2, 4, dtype=torch.bool)
    assert loss(td)["loss_actor"].item() == 0.0


def test_no_target_networks_and_renamed_keys(build):
    loss = DecisionTransformerLoss(build.dt_actor())
    assert loss.target_pairs() == []
    with pytest.raises(ObjectiveConfigError, match="no target network"):
        SoftUpdate(loss)
    td = build.dt_batch()
    expected = loss(td.clone())["loss_actor"]
    td.rename_key_(("collector", "mask"), "mask")
    loss.set_keys(mask="mask")
    torch.testing.assert_close(loss(td)["loss_actor"], expected)
    assert set(loss.in_keys) == {"action", "observation", "return_to_go"}


def test_the_prediction_can_go_to_its_own_key(build):
    net = build.dt_actor().module
    actor = TensorDictModule(
        net, in_keys=["observation", "action", "return_to_go"], out_keys=["action_pred"]
    )
    td = build.dt_batch()
    expected = DecisionTransformerLoss(build.dt_actor())(td.clone())["loss_actor"]
    loss = DecisionTransformerLoss(actor).set_keys(action_pred="action_pred")
    torch.testing.assert_close(loss(td)["loss_actor"], expected)


def test_loss_errors(build):
    actor = build.dt_actor()
    loss = DecisionTransformerLoss(actor)
    td = build.dt_batch()
    td["collector", "mask"] = torch.ones(2, 4, 3, dtype=torch.bool)
    with pytest.raises(
        ShapeMismatchError,
        match=r"the mask \('collector', 'mask'\) \(True at real steps\) has shape \[2, 4, 3\]; "
        r"expected \[2, 4\] or \[2, 4, 1\].*set_keys\(mask=",
    ):
        loss(td)
    td["collector", "mask"] = torch.ones(2, 4)
    with pytest.raises(ObjectiveConfigError, match="must have dtype torch.bool, got torch.float32"):
        loss(td)
    td = build.dt_batch()
    del td["return_to_go"]
    with pytest.raises(
        MissingInputError, match=r"lacks \['return_to_go'\].*read by the actor network"
    ):
        loss(td)
    with pytest.raises(ObjectiveConfigError, match="loss_function must be one of"):
        DecisionTransformerLoss(actor, loss_function="nll")
    # A slice longer than the context the model was built for.
    with pytest.raises(ObjectiveConfigError, match="holds 6 steps .*context_length=4"):
        loss(build.dt_batch(shape=(2, 6)))


def test_tensor_call_with_the_mask_flattened(build):
    loss = DecisionTransformerLoss(build.dt_actor())
    td = build.dt_batch().exclude("next")
    expected = loss(td.clone())["loss_actor"]
    got = loss(
        observation=td["observation"],
        action=td["action"],
        return_to_go=td["return_to_go"],
        collector_mask=td["collector", "mask"],
    )
    torch.testing.assert_close(got["loss_actor"], expected)


def test_learns_a_small_dataset():
    """Return-conditioned imitation: the action depends on the state and on the return to
    go (two behaviours in one dataset); a tiny DT fits 16 slices within 150 steps, the loss
    dropping over 100-fold."""
    torch.manual_seed(0)
    batch, length = 16, 5
    obs = torch.randn(batch, length, OBS)
    rtg = torch.where(torch.rand(batch, 1, 1) < 0.5, 1.0, -1.0).expand(batch, length, 1)
    action = torch.tanh(torch.cat([obs[..., :1] * rtg, obs[..., 1:2] - rtg], dim=-1))
    data = TensorDict(
        {"observation": obs, "action": action, "return_to_go": rtg}, batch_size=[batch, length]
    )
    actor = Actor(
        DTActor(
            OBS, ACT, n_embd=32, n_inner=64, n_layer=1, n_head=2, context_length=5, dropout=0.0
        ),
        in_keys=["observation", "action", "return_to_go"],
    )
    loss = DecisionTransformerLoss(actor)
    optimizer = torch.optim.Adam(loss.parameters(), lr=1e-2)
    first = loss(data)["loss_actor"].item()
    for _ in range(150):
        optimizer.zero_grad()
        out = loss(data)
        total_loss(out).backward()
        optimizer.step()
    last = loss(data)["loss_actor"].item()
    assert last < first / 100, (first, last)


# -- DecisionTransformerPolicy ------------------------------------------------------------


def test_policy_keeps_a_left_padded_window_and_lowers_the_target(build):
    actor = build.dt_actor(mask=True)
    policy = DecisionTransformerPolicy(actor, target_return=10.0, reward_scale=0.5)
    assert policy.context_length == 4 and policy.action_dim == ACT
    g = torch.Generator().manual_seed(0)
    observations = torch.randn(6, 2, OBS, generator=g)  # 6 steps of 2 envs
    actions = []
    for t in range(6):
        td = policy(TensorDict({"observation": observations[t]}, [2]))
        actions.append(td["action"])
        assert td["action"].shape == (2, ACT)
        policy.observe(torch.full((2, 1), 2.0), torch.tensor([[False], [t == 2]]))
    window = policy._window
    # Env 0 saw 6 steps: the window holds the last 4, targets 10 - 0.5 * 2 * t.
    torch.testing.assert_close(window["observation"][0], observations[2:, 0])
    torch.testing.assert_close(window["return_to_go"][0, :, 0], torch.tensor([8.0, 7.0, 6.0, 5.0]))
    torch.testing.assert_close(window["step_count"][0, :, 0], torch.tensor([2, 3, 4, 5]))
    torch.testing.assert_close(window["action"][0], torch.stack(actions[2:])[:, 0])
    # Env 1's episode ended after step 2: a fresh window, left-padded, full target again.
    assert window["collector", "mask"][1].tolist() == [False, True, True, True]
    torch.testing.assert_close(window["return_to_go"][1, 1:, 0], torch.tensor([10.0, 9.0, 8.0]))
    assert window["observation"][1, 0].abs().sum() == 0
    # The actions are the actor's predictions on that window.
    with torch.no_grad():
        last = actor(window.copy())["action"][:, -1]
    torch.testing.assert_close(actions[-1], last)
    # Env 1's first step after the reset: the same action as a fresh policy on that step.
    fresh = DecisionTransformerPolicy(actor, target_return=10.0)
    torch.testing.assert_close(
        fresh(TensorDict({"observation": observations[3, 1:]}, [1]))["action"][0], actions[3][1]
    )


def test_policy_reset_and_errors(build):
    actor = build.dt_actor()
    policy = DecisionTransformerPolicy(actor, target_return=1.0)
    with pytest.raises(ObjectiveConfigError, match="call the policy on an observation first"):
        policy.observe(torch.zeros(1))
    td = TensorDict({"observation": torch.randn(3, OBS)}, [3])
    first = policy(td.clone())["action"]
    policy(td.clone())
    policy.reset()
    torch.testing.assert_close(policy(td.clone())["action"], first)
    with pytest.raises(
        ShapeMismatchError, match=r"reward has shape \[2\]; expected one per env, \[3, 1\]"
    ):
        policy.observe(torch.zeros(2))
    with pytest.raises(
        ShapeMismatchError, match="done must be a bool tensor with one flag per env"
    ):
        policy.observe(torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(
        ObjectiveConfigError, match="context_length=9 but the actor's transformer holds at most 4"
    ):
        DecisionTransformerPolicy(actor, target_return=1.0, context_length=9)
    plain = TensorDictModule(torch.nn.Identity(), in_keys=["observation"], out_keys=["x"])
    with pytest.raises(ObjectiveConfigError, match="pass context_length=... and action_dim"):
        DecisionTransformerPolicy(plain, target_return=1.0)
    # Renamed keys: the policy reads and writes where the actor does.
    renamed = TensorDictModule(actor.module, in_keys=["obs", "action", "rtg"], out_keys=["action"])
    policy = DecisionTransformerPolicy(renamed, target_return=1.0).set_tensor_keys(
        observation="obs", return_to_go="rtg"
    )
    assert policy.in_keys == ["obs"]
    out = policy(TensorDict({"obs": td["observation"]}, [3]))
    torch.testing.assert_close(out["action"], first)


# -- OnlineDTLoss -----------------------------------------------------------------------


def test_online_dt_loss_matches_reference(build):
    actor = build.dt_actor(online=True)
    loss = OnlineDTLoss(actor, alpha_init=0.5, target_entropy=-1.0)
    td = build.dt_batch()
    out = loss(td)
    loc, scale = actor.module[0].module(td["observation"], td["action"], td["return_to_go"])
    dist = D.Normal(loc, scale)
    mask = td["collector", "mask"]
    log_prob = dist.log_prob(td["action"]).sum(-1)[mask].mean()
    ent = dist.entropy().sum(-1)[mask].mean()
    torch.testing.assert_close(out["loss_log_likelihood"], -log_prob)
    torch.testing.assert_close(out["loss_entropy"], -0.5 * ent)
    torch.testing.assert_close(out["entropy"], ent.detach())
    torch.testing.assert_close(out["alpha"], torch.tensor(0.5))
    ref_alpha = -loss.log_alpha * (-1.0 - ent.detach())
    torch.testing.assert_close(out["loss_alpha"], ref_alpha)
    build.assert_same_grads(out["loss_log_likelihood"], -log_prob, actor)
    build.assert_same_grads(out["loss_entropy"], -0.5 * ent, actor)
    (alpha_grad,) = torch.autograd.grad(out["loss_alpha"], [loss.log_alpha], retain_graph=True)
    torch.testing.assert_close(alpha_grad, -(-1.0 - ent.detach()))
    build.assert_no_grad(out["loss_alpha"], actor)
    # "auto": minus the number of action dims; a fixed alpha is not learned.
    assert OnlineDTLoss(actor).target_entropy is None
    fixed = OnlineDTLoss(actor, fixed_alpha=True)
    fixed(td)
    assert fixed.target_entropy == -ACT and "log_alpha" not in dict(fixed.named_parameters())
    with pytest.raises(ObjectiveConfigError, match="must be probabilistic"):
        OnlineDTLoss(build.dt_actor())
    with pytest.raises(ObjectiveConfigError, match="samples_mc_entropy must be >= 1, got 0"):
        OnlineDTLoss(actor, samples_mc_entropy=0)
