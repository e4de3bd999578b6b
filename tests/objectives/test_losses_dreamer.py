"""Dreamer: the RSSM and world model, the model loss (checked against torch's KL), one-step
prediction after a short training run, lambda-returns by hand, and the actor and value losses
on imagined rollouts."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import distributions as D
from torch import nn

from rlblocks.objectives import (
    DreamerActorLoss,
    DreamerModelLoss,
    DreamerValueLoss,
    MissingInputError,
    ObjectiveConfigError,
    ShapeMismatchError,
    total_loss,
)
from rlblocks.objectives.modules import (
    MLP,
    RSSM,
    NormalParamExtractor,
    ObsDecoder,
    ObsEncoder,
    ProbabilisticActor,
    TanhNormal,
    WorldModel,
)


@pytest.fixture(autouse=True)
def _single_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_rssm_observe_shapes_and_prior_step(dreamer):
    rssm = RSSM(dreamer.act, 32, state_dim=dreamer.state, belief_dim=dreamer.belief, hidden_dim=32)
    state, belief = rssm.initial_state(torch.Size([3]))
    out = rssm.observe(torch.randn(3, 7, 32), torch.randn(3, 7, dreamer.act), state, belief)
    assert out["state"].shape == (3, 7, dreamer.state) and out["belief"].shape == (
        3,
        7,
        dreamer.belief,
    )
    assert (out["prior_std"] >= 0.1).all() and (out["posterior_std"] >= 0.1).all()
    _, _, sample, new_belief = rssm.prior(state, belief, torch.randn(3, dreamer.act))
    assert sample.shape == (3, dreamer.state) and new_belief.shape == (3, dreamer.belief)
    sample.sum().backward()  # reparameterized: gradients reach the prior's layers
    assert rssm.prior_net[0].weight.grad is not None
    with pytest.raises(ObjectiveConfigError, match="state_dim must be an int >= 1"):
        RSSM(dreamer.act, 32, state_dim=0)


def test_observe_equals_the_step_by_step_filter(dreamer):
    # observe() hoists what does not depend on the recurrence out of its loop; the result
    # is the same as the plain filter (the posterior's noise drawn in the same order).
    rssm = RSSM(dreamer.act, 32, state_dim=dreamer.state, belief_dim=dreamer.belief, hidden_dim=32)
    embeddings, actions = torch.randn(3, 7, 32), torch.randn(3, 7, dreamer.act)
    state, belief = rssm.initial_state(torch.Size([3]))
    torch.manual_seed(5)
    out = rssm.observe(embeddings, actions, state, belief)
    torch.manual_seed(5)
    for t in range(7):
        inputs = rssm.input_layer(torch.cat([state, actions[:, t]], -1))
        belief = rssm.cell(inputs, belief)
        mean, _, state = rssm.posterior(belief, embeddings[:, t])
        torch.testing.assert_close(out["posterior_mean"][:, t], mean)
        torch.testing.assert_close(out["state"][:, t], state)
        torch.testing.assert_close(out["belief"][:, t], belief)
        prior = rssm.prior_net(belief).chunk(2, -1)
        torch.testing.assert_close(out["prior_mean"][:, t], prior[0])
        torch.testing.assert_close(
            out["prior_std"][:, t], torch.nn.functional.softplus(prior[1]) + 0.1
        )


def test_pixel_encoder_and_decoder_shapes(dreamer):
    encoder, decoder = (
        ObsEncoder(channels=8),
        ObsDecoder(dreamer.state + dreamer.belief, channels=8),
    )
    pixels = torch.rand(2, 3, 3, 64, 64)
    assert encoder(pixels).shape == (2, 3, encoder.out_features)
    assert decoder(torch.randn(2, 3, dreamer.state + dreamer.belief)).shape == pixels.shape


def test_world_model_writes_every_latent_under_next(dreamer):
    model = dreamer.world_model()
    batch = model(dreamer.oscillator_batch(4, 9, seed=0))
    nxt = batch["next"]
    for key in ("state", "belief", "prior_mean", "posterior_std", "reward_pred"):
        assert nxt[key].shape[:2] == (4, 9), key
    assert nxt["reco_observation"].shape == nxt["observation"].shape
    with pytest.raises(ShapeMismatchError, match="expected a sequence batch"):
        model(dreamer.oscillator_batch(4, 9, seed=0)[:, 0][0])


def test_model_loss_kl_matches_torch_and_free_nats_stop_its_gradient(dreamer):
    model = dreamer.world_model()
    batch = dreamer.oscillator_batch(4, 9, seed=0)
    loss = DreamerModelLoss(model, free_nats=0.0)
    # The same seed: the same posterior samples in the loss and in the check.
    torch.manual_seed(0)
    first = loss(batch)
    torch.manual_seed(0)
    nxt = model(batch.clone())["next"]
    expected = D.kl_divergence(
        D.Normal(nxt["posterior_mean"], nxt["posterior_std"]),
        D.Normal(nxt["prior_mean"], nxt["prior_std"]),
    )
    torch.testing.assert_close(first["kl"], expected.sum(-1).mean())
    # Far above the KL: the floor holds it, and it trains nothing.
    floored = DreamerModelLoss(model, free_nats=1e6)(batch)
    assert floored["loss_kl"].item() == 1e6
    model.zero_grad()
    floored["loss_kl"].backward()
    assert all(p.grad is None or (p.grad == 0).all() for p in model.parameters())


def test_model_loss_terms_by_hand(dreamer):
    model = dreamer.world_model()
    batch = dreamer.oscillator_batch(3, 5, seed=1)
    torch.manual_seed(1)
    out = DreamerModelLoss(model, lambda_reco=2.0, lambda_reward=3.0)(batch)
    torch.manual_seed(1)
    nxt = model(batch.clone())["next"]
    reco = 0.5 * (nxt["reco_observation"] - nxt["observation"]).square().sum(-1).mean()
    reward = 0.5 * (nxt["reward_pred"] - nxt["reward"]).square().mean()
    torch.testing.assert_close(out["loss_reco"], 2.0 * reco)
    torch.testing.assert_close(out["loss_reward"], 3.0 * reward)


def test_model_loss_names_missing_keys_and_bad_shapes(dreamer):
    model = dreamer.world_model()
    batch = dreamer.oscillator_batch(2, 4, seed=0)
    with pytest.raises(MissingInputError, match="reward"):
        DreamerModelLoss(model)(batch.exclude(("next", "reward")))
    with pytest.raises(MissingInputError, match="observation"):
        DreamerModelLoss(model)(batch.exclude(("next", "observation")))
    wrong = WorldModel(
        MLP(dreamer.obs, 32),
        model.rssm,
        MLP(dreamer.state + dreamer.belief, dreamer.obs + 1),
        MLP(dreamer.state + dreamer.belief, 1),
    )
    with pytest.raises(ShapeMismatchError, match=r"shape \[2, 4, 3\].*shape \[2, 4, 2\]"):
        DreamerModelLoss(wrong)(batch)
    with pytest.raises(ObjectiveConfigError, match="free_nats must be >= 0"):
        DreamerModelLoss(model, free_nats=-1.0)


def one_step_error(model: WorldModel, batch: TensorDict) -> float:
    """Mean squared error of the model's one-step predictions of the next observation:
    filter up to t, imagine one step with the action taken, decode; compare with t+1."""
    with torch.no_grad():
        nxt = model(batch.clone())["next"]
        state, belief = nxt["state"][:, :-1], nxt["belief"][:, :-1]
        action = batch["action"][:, 1:]
        prior_mean, _, _, next_belief = model.rssm.prior(state, belief, action)
        predicted = model.decoder(torch.cat([prior_mean, next_belief], -1))
        return (predicted - batch["next", "observation"][:, 1:]).square().mean().item()


def test_one_step_prediction_error_falls_below_a_bound_after_training(dreamer):
    model = dreamer.world_model(seed=0)
    loss = DreamerModelLoss(model, free_nats=1.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = dreamer.oscillator_batch(256, 12, seed=0)
    held_out = dreamer.oscillator_batch(64, 12, seed=1)
    before = one_step_error(model, held_out)
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):
        index = torch.randint(256, (32,), generator=generator)
        optimizer.zero_grad()
        total_loss(loss(train[index])).backward()
        optimizer.step()
    after = one_step_error(model, held_out)
    # The bound: a tenth of the next observation's variance (the error of predicting its
    # mean), i.e. the predictions explain over 90% of it.
    bound = 0.1 * held_out["next", "observation"][:, 1:].var().item()
    assert after < bound < before


def test_lambda_returns_by_hand(dreamer):
    loss = DreamerActorLoss(
        dreamer.actor(), dreamer.value(), dreamer.imagination(dreamer.world_model()), lmbda=0.5
    )
    reward = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 3, 1)
    value = torch.tensor([10.0, 20.0, 30.0]).reshape(1, 3, 1)
    discount = torch.full((1, 3, 1), 0.5)
    # R_2 = 3 + 0.5 * 30 = 18; R_1 = 2 + 0.5 * (0.5 * 20 + 0.5 * 18) = 11.5;
    # R_0 = 1 + 0.5 * (0.5 * 10 + 0.5 * 11.5) = 6.375
    returns = loss._lambda_returns(reward, value, discount)
    assert returns.flatten().tolist() == [6.375, 11.5, 18.0]


def test_actor_loss_trains_the_actor_through_the_dynamics_and_feeds_the_value_loss(dreamer):
    world_model = dreamer.world_model()
    actor, value = (dreamer.actor(), dreamer.value())
    imagination = dreamer.imagination(world_model)
    batch = world_model(dreamer.oscillator_batch(4, 6, seed=0))
    loss = DreamerActorLoss(actor, value, imagination, imagination_horizon=5)
    out = loss(batch)
    assert imagination.calls == 1
    imagined = out["imagined"]
    assert imagined.batch_size == (24, 5)  # 4 x 6 start states, 5 imagined steps
    out["loss_actor"].backward()
    actor_grads = [p.grad for p in actor.parameters() if p.grad is not None]
    assert actor_grads and any(g.abs().sum() > 0 for g in actor_grads)
    # the value network is read with frozen parameters here
    assert all(p.grad is None for p in value.parameters())
    value_out = DreamerValueLoss(value)(imagined)
    value_out["loss_value"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in value.parameters())
    assert not imagined["lambda_target"].requires_grad


def test_actor_loss_refuses_sequences_shorter_than_the_horizon(dreamer):
    world_model = dreamer.world_model()
    actor, value = (dreamer.actor(), dreamer.value())
    loss = DreamerActorLoss(actor, value, dreamer.imagination(world_model), imagination_horizon=15)
    batch = world_model(dreamer.oscillator_batch(4, 6, seed=0))
    with pytest.raises(ShapeMismatchError, match=r"has 6 steps .* imagination_horizon is 15"):
        loss(batch)
    with pytest.raises(MissingInputError, match="state"):
        loss(dreamer.oscillator_batch(4, 16, seed=0))
    with pytest.raises(ObjectiveConfigError, match="imagination_horizon must be >= 1"):
        DreamerActorLoss(actor, value, dreamer.imagination(world_model), imagination_horizon=0)


def test_model_loss_returns_the_posterior_latents_the_actor_loss_starts_from(dreamer):
    world_model = dreamer.world_model()
    batch = dreamer.oscillator_batch(4, 6, seed=0)
    torch.manual_seed(1)
    out = DreamerModelLoss(world_model)(batch)
    torch.manual_seed(1)  # the same posterior noise
    expected = world_model(batch.copy())
    posterior = out["posterior"]
    assert posterior.batch_size == batch.batch_size
    for key in ("state", "belief"):
        torch.testing.assert_close(posterior["next", key], expected["next", key])
        assert not posterior["next", key].requires_grad
    loss = DreamerActorLoss(
        dreamer.actor(), dreamer.value(), dreamer.imagination(world_model), imagination_horizon=5
    )
    assert loss(posterior)["imagined"].batch_size == (24, 5)


def test_actor_reads_the_imagined_states_detached(dreamer):
    # Dreamer's stop-gradient: the returns reach the actor through its actions; its input
    # carries no graph back into the dynamics of the steps before.
    world_model = dreamer.world_model()
    actor = dreamer.actor()
    seen = []
    actor.register_forward_pre_hook(
        lambda module, args: seen.append(args[0]["state"].requires_grad)
    )
    loss = DreamerActorLoss(
        actor, dreamer.value(), dreamer.imagination(world_model), imagination_horizon=5
    )
    out = loss(world_model(dreamer.oscillator_batch(4, 6, seed=0)))
    assert seen == [False] * 5
    assert out["imagined", "state"].shape == (24, 5, dreamer.state)
    out["loss_actor"].backward()  # the actions still carry the gradient into the dynamics
    assert world_model.rssm.prior_net[0].weight.grad.abs().sum() > 0


def _actor_with_get_dist(dreamer, loc_bias=None):
    """A ProbabilisticActor on ``[state, belief]`` (it has ``get_dist``)."""
    torch.manual_seed(0)
    net = MLP(dreamer.state + dreamer.belief, 2 * dreamer.act, num_cells=[32])
    if loc_bias is not None:
        with torch.no_grad():
            net[-1].bias[: dreamer.act] = loc_bias
    features = TensorDictModule(
        lambda s, b: torch.cat([s, b], -1), in_keys=["state", "belief"], out_keys=["features"]
    )
    params = TensorDictModule(
        nn.Sequential(net, NormalParamExtractor()), ["features"], ["loc", "scale"]
    )
    return ProbabilisticActor(
        TensorDictSequential(features, params),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
    ), net[-1]


def test_entropy_bonus_pulls_a_saturated_actor_back_from_its_bound(dreamer):
    # tanh(20) is 1 to float precision: the returns give the actor's mean no gradient, the
    # entropy (the squashed sample's log-density) does, towards the inside of the bounds.
    world_model = dreamer.world_model()
    actor, last_layer = _actor_with_get_dist(dreamer, loc_bias=20.0)
    loss = DreamerActorLoss(
        actor,
        dreamer.value(),
        dreamer.imagination(world_model),
        imagination_horizon=5,
        entropy_coef=1e-3,
    )
    out = loss(world_model(dreamer.oscillator_batch(4, 6, seed=0)))
    assert out["imagined"].batch_size == (24, 5)
    (from_returns,) = torch.autograd.grad(out["loss_actor"], last_layer.bias, retain_graph=True)
    (from_entropy,) = torch.autograd.grad(out["loss_entropy"], last_layer.bias)
    assert from_returns[: dreamer.act].abs().max() < 1e-6
    assert (from_entropy[: dreamer.act] > 0).all()  # a descent step lowers the mean
    assert out["entropy"] < 0  # a near-point mass at the bound: negative differential entropy


def test_entropy_bonus_needs_an_actor_with_get_dist(dreamer):
    world_model = dreamer.world_model()
    imagination = dreamer.imagination(world_model)
    with pytest.raises(ObjectiveConfigError, match="get_dist"):
        DreamerActorLoss(dreamer.actor(), dreamer.value(), imagination, entropy_coef=1e-4)
    with pytest.raises(ObjectiveConfigError, match="entropy_coef must be >= 0"):
        DreamerActorLoss(dreamer.actor(), dreamer.value(), imagination, entropy_coef=-1.0)
    actor, _ = _actor_with_get_dist(dreamer)
    out = DreamerActorLoss(actor, dreamer.value(), imagination, imagination_horizon=5)(
        world_model(dreamer.oscillator_batch(4, 6, seed=0))
    )
    assert "loss_entropy" not in out.keys()  # off by default, as in Dreamer (v1)
