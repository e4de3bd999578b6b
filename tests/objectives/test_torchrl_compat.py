"""Code written for TorchRL, with only its imports changed, runs on rlblocks.objectives.

Each test makes its calls the way TorchRL's documentation and users write them; where
rlblocks deliberately differs, the test checks that the error says what to write instead.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import nn

from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.specs import Bounded, Categorical, Composite, OneHot, Unbounded
from rlblocks.objectives import (
    A2CLoss,
    CrossQLoss,
    DDPGLoss,
    DistributionalDQNLoss,
    DQNLoss,
    DTLoss,
    GAILLoss,
    REDQLoss,
    TD3BCLoss,
    TD3Loss,
    TQCLoss,
    ValueEstimators,
    total_loss,
)
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules import (
    MLP,
    Actor,
    ActorCriticOperator,
    BatchRenorm1d,
    ConvNet,
    DecisionTransformer,
    DistributionalQValueActor,
    DTActor,
    DuelingMlpDQNet,
    NoisyLazyLinear,
    NoisyLinear,
    ProbabilisticActor,
    QValueActor,
    SafeModule,
    SquashDims,
    TanhDelta,
    TanhNormal,
    ValueOperator,
)
from rlblocks.objectives.value import GAE, TD0Estimator, TDLambdaEstimator, VTrace
from rlblocks.objectives.value.functional import (
    generalized_advantage_estimate,
    td_lambda_return_estimate,
    vec_generalized_advantage_estimate,
    vec_td_lambda_return_estimate,
    vtrace_advantage_estimate,
)

N_OBS, N_ACT = 3, 4

# -- ("next", "terminated") falls back to ("next", "done") ------------------------------


def ddpg_modules():
    torch.manual_seed(0)
    spec = Bounded(-torch.ones(N_ACT), torch.ones(N_ACT), (N_ACT,))
    actor = Actor(spec=spec, module=nn.Linear(N_OBS, N_ACT))

    class ValueClass(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(N_OBS + N_ACT, 1)

        def forward(self, obs, act):
            return self.linear(torch.cat([obs, act], -1))

    value = ValueOperator(module=ValueClass(), in_keys=["observation", "action"])
    return spec, actor, value


def test_ddpg_tensor_call_without_terminated_runs_as_in_torchrl():
    spec, actor, value = ddpg_modules()
    loss = DDPGLoss(actor, value)
    out = loss(
        observation=torch.randn(N_OBS),
        action=spec.rand(),
        next_done=torch.zeros(1, dtype=torch.bool),
        next_observation=torch.randn(N_OBS),
        next_reward=torch.randn(1),
    )
    out["loss_actor"].backward()
    assert actor.module.weight.grad is not None


def test_ddpg_batch_without_terminated_equals_terminated_set_to_done():
    spec, actor, value = ddpg_modules()
    g = torch.Generator().manual_seed(1)
    batch = [8]
    done = torch.zeros(*batch, 1, dtype=torch.bool)
    done[2] = done[5] = True
    data = TensorDict(
        {
            "observation": torch.randn(*batch, N_OBS, generator=g),
            "action": spec.rand(batch),
            ("next", "done"): done,
            ("next", "reward"): torch.randn(*batch, 1, generator=g),
            ("next", "observation"): torch.randn(*batch, N_OBS, generator=g),
        },
        batch,
    )
    loss = DDPGLoss(actor, value)
    without = loss(data.clone())
    with_terminated = data.clone()
    with_terminated["next", "terminated"] = done.clone()
    expected = loss(with_terminated)
    for key in expected.keys():
        torch.testing.assert_close(without[key], expected[key], msg=key)
    # terminated is read when present: flagging a step as truncated changes the target.
    truncated = with_terminated.clone()
    truncated["next", "terminated"][2] = False
    assert not torch.equal(loss(truncated)["target_value"], expected["target_value"])


@pytest.mark.parametrize("estimator", [TD0Estimator, TDLambdaEstimator, GAE])
def test_value_estimators_fall_back_to_done(estimator):
    g = torch.Generator().manual_seed(2)
    done = torch.rand(2, 10, 1, generator=g) < 0.3
    data = TensorDict(
        {
            "state_value": torch.randn(2, 10, 1, generator=g),
            ("next", "state_value"): torch.randn(2, 10, 1, generator=g),
            ("next", "reward"): torch.randn(2, 10, 1, generator=g),
            ("next", "done"): done,
        },
        [2, 10],
    )
    explicit = data.clone()
    explicit["next", "terminated"] = done.clone()
    got = estimator(gamma=0.9)(data.clone())
    expected = estimator(gamma=0.9)(explicit)
    torch.testing.assert_close(got["value_target"], expected["value_target"])
    torch.testing.assert_close(got["advantage"], expected["advantage"])


# -- DDPG / TD3 outputs ---------------------------------------------------------------


def test_ddpg_output_keys_and_shapes_match_torchrl(build):
    actor, qvalue = build.deterministic_actor(), build.qvalue()
    data = build.batch()
    out = DDPGLoss(actor, qvalue)(data)
    assert set(out.keys()) == {
        "loss_actor",
        "loss_value",
        "pred_value",
        "target_value",
        "pred_value_max",
        "target_value_max",
        "td_error",
    }
    for key in ("loss_actor", "loss_value", "pred_value_max", "target_value_max"):
        assert out[key].shape == (), key
    for key in ("pred_value", "target_value", "td_error"):
        assert out[key].shape == (6,), key
        assert not out[key].requires_grad, key
    with torch.no_grad():
        pred = qvalue.module(data["observation"], data["action"]).squeeze(-1)
    torch.testing.assert_close(out["pred_value"], pred)
    torch.testing.assert_close(out["pred_value_max"], pred.max())
    torch.testing.assert_close(out["target_value_max"], out["target_value"].max())
    torch.testing.assert_close(out["td_error"], (pred - out["target_value"]).abs())
    torch.testing.assert_close(data["td_error"], out["td_error"])


def test_td3_output_keys_and_shapes_match_torchrl(build):
    actor, qvalue = build.deterministic_actor(), build.qvalue()
    data = build.batch()
    loss = TD3Loss(actor, qvalue, num_qvalue_nets=2)
    out = loss(data)
    assert set(out.keys()) == {
        "loss_actor",
        "loss_qvalue",
        "state_action_value_actor",
        "pred_value",
        "target_value",
        "next_state_value",
    }
    assert out["loss_actor"].shape == out["loss_qvalue"].shape == ()
    assert out["pred_value"].shape == (2, 6)
    # Only the critic the actor is trained through (no extra forward pass per update).
    assert out["state_action_value_actor"].shape == (1, 6)
    assert out["target_value"].shape == out["next_state_value"].shape == (6,)
    obs, act = data["observation"], data["action"]
    with torch.no_grad():
        mu = actor.module(obs)
        nets = [m.module for m in loss.qvalue_networks]
        pred = torch.stack([net(obs, act) for net in nets]).squeeze(-1)
        on_policy = torch.stack([net(obs, mu) for net in nets]).squeeze(-1)
    torch.testing.assert_close(out["pred_value"], pred)
    torch.testing.assert_close(out["state_action_value_actor"], on_policy[:1])
    errors = (pred - out["target_value"]).abs().amax(0)
    torch.testing.assert_close(data["td_error"], errors)


def test_dqn_diagnostics_are_per_sample(build):
    torch.manual_seed(3)
    actor = QValueActor(nn.Linear(build.obs, 3), spec=Categorical(3))
    data = build.batch(action=torch.tensor([0, 1, 2, 2, 1, 0]))
    out = DQNLoss(actor)(data)
    assert out["loss_qvalue"].shape == ()
    assert out["pred_value"].shape == out["target_value"].shape == (6,)
    with torch.no_grad():
        q = actor.module[0].module(data["observation"])
    torch.testing.assert_close(out["pred_value"], q.gather(-1, data["action"][:, None])[:, 0])


# -- GAIL -----------------------------------------------------------------------------


def test_gail_keys_and_the_torchrl_example_recipe(build):
    # TorchRL's sota-implementations/gail: expert pairs at the root, the collected batch's
    # pairs added under the collector keys, then the discriminator's reward for PPO.
    discriminator = build.discriminator()
    discriminator_loss = GAILLoss(discriminator, use_grad_penalty=True, gp_lambda=10)
    assert discriminator_loss.tensor_keys.as_dict() == {
        "expert_observation": "observation",
        "expert_action": "action",
        "collector_observation": "collector_observation",
        "collector_action": "collector_action",
        "discriminator_pred": "d_logits",
        "reward": "reward",
    }
    data = build.batch(shape=(8,))
    expert_data = build.batch(shape=(4,), seed=1)
    expert_data.set(
        discriminator_loss.tensor_keys.collector_action, data["action"][: expert_data.batch_size[0]]
    )
    expert_data.set(
        discriminator_loss.tensor_keys.collector_observation,
        data["observation"][: expert_data.batch_size[0]],
    )
    d_loss = discriminator_loss(expert_data)
    # TorchRL's "loss" (BCE + penalty) is total_loss(d_loss); its "gp_loss" is loss_gp.
    assert "loss" not in d_loss.keys() and {"loss_discriminator", "loss_gp"} <= set(d_loss.keys())
    total_loss(d_loss).backward()
    assert all(p.grad is not None for p in discriminator.parameters())
    with torch.no_grad():
        d_rewards = -torch.log(1 - discriminator(data.clone())["d_logits"] + 1e-8)
    discriminator_loss.reward(data)
    torch.testing.assert_close(data["next", "reward"], d_rewards)


# -- TD3+BC ---------------------------------------------------------------------------


def torchrl_batch(spec, batch):
    """The batch of TorchRL's loss docstring examples (no episode ends)."""
    return TensorDict(
        {
            "observation": torch.randn(*batch, N_OBS),
            "action": spec.rand(batch),
            ("next", "done"): torch.zeros(*batch, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(*batch, 1, dtype=torch.bool),
            ("next", "reward"): torch.randn(*batch, 1),
            ("next", "observation"): torch.randn(*batch, N_OBS),
        },
        batch,
    )


def test_td3bc_docstring_example_outputs_torchrl_entries():
    spec, actor, qvalue = ddpg_modules()  # TorchRL's TD3BCLoss example builds the same
    loss = TD3BCLoss(actor, qvalue, action_spec=actor.spec)
    batch = [2]
    data = torchrl_batch(spec, batch)
    out = loss(data)
    assert set(out.keys()) == {
        "bc_loss",
        "lmbd",
        "loss_actor",
        "loss_qvalue",
        "next_state_value",
        "pred_value",
        "state_action_value_actor",
        "target_value",
    }
    assert out["pred_value"].shape == (2, 2)
    assert out["next_state_value"].shape == out["target_value"].shape == (2,)
    # As TD3Loss's: the critic the actor is trained through, [1, *batch].
    assert out["state_action_value_actor"].shape == (1, 2)
    # The tensor call of the example (a dict here, not a tuple).
    tensors = loss(
        observation=torch.randn(*batch, N_OBS),
        action=spec.rand(batch),
        next_done=torch.zeros(*batch, 1, dtype=torch.bool),
        next_terminated=torch.zeros(*batch, 1, dtype=torch.bool),
        next_reward=torch.randn(*batch, 1),
        next_observation=torch.randn(*batch, N_OBS),
    )
    tensors["loss_actor"].backward()
    assert actor.module.weight.grad is not None
    # bounds= is TorchRL's alternative to action_spec; both at once is refused.
    TD3BCLoss(actor, qvalue, bounds=(-1.0, 1.0))
    with pytest.raises(ObjectiveConfigError, match="give action_spec or bounds, not both"):
        TD3BCLoss(actor, qvalue, action_spec=spec, bounds=(-1.0, 1.0))


# -- Decision Transformer ---------------------------------------------------------------


def test_decision_transformer_docstring_example():
    config = DecisionTransformer.default_config()
    config.n_embd = 16
    config.n_inner = 32
    config.n_layer = 1
    model = DecisionTransformer(state_dim=4, action_dim=2, config=config)
    assert model.context_length == config.n_positions // 3  # 3 tokens per step
    batch_size, length = [3, 32], 10
    output = model(
        torch.randn(*batch_size, length, 4),
        torch.randn(*batch_size, length, 2),
        torch.randn(*batch_size, length, 1),
    )
    assert output.shape == (3, 32, 10, 16)


def test_dt_actor_in_torchrl_recipe_with_tanh_delta():
    # TorchRL's DT recipe: DTActor -> "param", squashed by a TanhDelta. TorchRL's DTActor is
    # unsquashed; rlblocks' squashes by default, hence tanh=False here.
    config = DTActor.default_config()
    config.n_embd, config.n_inner, config.n_layer, config.n_positions = 16, 32, 1, 30
    dtactor = DTActor(state_dim=4, action_dim=2, transformer_config=config, tanh=False)
    actor_module = TensorDictModule(
        dtactor, in_keys=["observation", "action", "return_to_go"], out_keys=["param"]
    )
    actor = ProbabilisticActor(
        in_keys=["param"],
        out_keys=["action"],
        module=actor_module,
        distribution_class=TanhDelta,
        distribution_kwargs={"low": -2.0, "high": 2.0},
    )
    data = TensorDict(
        {
            "observation": torch.randn(5, 10, 4),
            "action": torch.rand(5, 10, 2) * 4 - 2,
            "return_to_go": torch.randn(5, 10, 1),
        },
        [5, 10],
    )
    loss_module = DTLoss(actor).eval()  # no dropout: compared with a second call below
    loss_vals = loss_module(data)
    # TorchRL's "loss" is "loss_actor" here (rlblocks names every term loss_<name>).
    with pytest.raises(KeyError, match="loss_actor"):
        loss_vals["loss"]
    total_loss(loss_vals).backward()
    with torch.no_grad():
        param = dtactor(data["observation"], data["action"], data["return_to_go"])
    expected = ((2.0 * torch.tanh(param) - data["action"]) ** 2).mean()
    torch.testing.assert_close(loss_vals["loss_actor"], expected)
    assert dtactor.action_layer.weight.grad is not None


# -- SafeModule -----------------------------------------------------------------------


def test_safe_module_projects_into_its_spec():
    torch.manual_seed(0)
    spec = Bounded(-0.1, 0.1, shape=(N_ACT,))
    module = nn.Linear(N_OBS, N_ACT)
    safe = SafeModule(
        module=module, in_keys=["observation"], out_keys=["action"], spec=spec, safe=True
    )
    unsafe = SafeModule(module=module, in_keys=["observation"], out_keys=["action"], spec=spec)
    td = TensorDict({"observation": 100 * torch.randn(5, N_OBS)}, [5])
    assert (unsafe(td.clone())["action"].abs() > 0.1).any()
    action = safe(td.clone())["action"]
    assert spec.is_in(action)
    torch.testing.assert_close(action, unsafe(td.clone())["action"].clamp(-0.1, 0.1))
    assert safe.spec is spec and isinstance(Actor(module), SafeModule)


def test_safe_module_composite_spec_projects_only_the_keys_it_names():
    class Split(nn.Module):
        def forward(self, x):
            return x, x

    spec = Composite(action=Bounded(-1.0, 1.0, shape=(2,)))
    module = SafeModule(Split(), ["observation"], ["action", "raw"], spec=spec, safe=True)
    td = module(TensorDict({"observation": torch.full((3, 2), 5.0)}, [3]))
    assert torch.equal(td["action"], torch.ones(3, 2))
    assert torch.equal(td["raw"], torch.full((3, 2), 5.0))


def test_safe_module_takes_spec_and_safe_positionally():
    spec = Unbounded(shape=(2,))
    module = SafeModule(nn.Identity(), ["observation"], ["action"], spec, True)
    assert module.safe and module.spec is spec
    x = torch.randn(4, 2) * 1e3
    torch.testing.assert_close(module(TensorDict({"observation": x}, [4]))["action"], x)


def test_safe_module_safe_without_spec_says_what_to_pass():
    with pytest.raises(ObjectiveConfigError, match=r"SafeModule: safe=True needs a spec.*spec="):
        SafeModule(nn.Linear(2, 2), in_keys=["observation"], out_keys=["action"], safe=True)


# -- ActorCriticOperator --------------------------------------------------------------


def actor_critic_operator():
    torch.manual_seed(0)
    module_hidden = torch.nn.Linear(4, 4)
    td_module_hidden = SafeModule(
        module=module_hidden, in_keys=["observation"], out_keys=["hidden"]
    )
    module_action = TensorDictModule(
        nn.Sequential(torch.nn.Linear(4, 8), NormalParamExtractor()),
        in_keys=["hidden"],
        out_keys=["loc", "scale"],
    )
    td_module_action = ProbabilisticActor(
        module=module_action,
        in_keys=["loc", "scale"],
        out_keys=["action"],
        distribution_class=TanhNormal,
        return_log_prob=True,
    )
    module_value = MLP(in_features=8, num_cells=[], out_features=1)
    td_module_value = ValueOperator(
        module=module_value,
        in_keys=["hidden", "action"],
        out_keys=["state_action_value"],
    )
    td_module = ActorCriticOperator(td_module_hidden, td_module_action, td_module_value)
    return td_module, module_hidden


def test_actor_critic_operator_shares_the_trunk_and_matches_the_full_call():
    td_module, trunk = actor_critic_operator()
    td = TensorDict({"observation": torch.randn(3, 4)}, [3])
    policy = td_module.get_policy_operator()
    critic = td_module.get_critic_operator()
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        full = td_module(td.clone())
        acted = policy(td.clone())
        valued = critic(td.clone())
    assert {"hidden", "loc", "scale", "action", "state_action_value"} <= set(full.keys())
    for key in ("hidden", "loc", "scale", "action"):
        torch.testing.assert_close(acted[key], full[key], msg=key)
    torch.testing.assert_close(valued["state_action_value"], full["state_action_value"])
    assert "state_action_value" not in acted.keys()
    # One trunk: the same parameter objects, and gradients from both heads reach them.
    for operator in (policy, critic):
        assert any(p is trunk.weight for p in operator.parameters())
    valued["state_action_value"].sum().backward()
    from_critic = trunk.weight.grad.clone()
    assert from_critic.abs().sum() > 0
    acted["action"].sum().backward()
    assert not torch.equal(trunk.weight.grad, from_critic)


def test_actor_critic_operator_value_operator_points_to_the_critic():
    td_module, _ = actor_critic_operator()
    with pytest.raises(ObjectiveConfigError, match=r"get_critic_operator\(\)"):
        td_module.get_value_operator()
    trunk, policy_head = td_module.module[0], td_module.module[1]
    state_value_head = ValueOperator(MLP(in_features=4, out_features=1), in_keys=["hidden"])
    with pytest.raises(ObjectiveConfigError, match="state_action_value.*ActorValueOperator"):
        ActorCriticOperator(trunk, policy_head, state_value_head)


# -- SquashDims and ConvNet -----------------------------------------------------------


def test_squash_dims_flattens_trailing_dims():
    x = torch.randn(1, 2, 3, 4)
    assert SquashDims()(x).shape == (1, 24)
    torch.testing.assert_close(SquashDims(ndims_in=2)(x), x.reshape(1, 2, 12))
    with pytest.raises(ObjectiveConfigError, match="ndims_in"):
        SquashDims(ndims_in=0)
    with pytest.raises(ObjectiveConfigError, match=r"last 3 dims.*\[4, 4\]"):
        SquashDims()(torch.zeros(4, 4))


def test_convnet_torchrl_arguments():
    cnet = ConvNet(in_features=3, depth=1, num_cells=[32])
    convs = [m for m in cnet.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and isinstance(list(cnet.modules())[-1], SquashDims)
    assert cnet(torch.zeros(2, 3, 8, 8)).shape == (2, 32 * 6 * 6)

    cnet = ConvNet(in_features=3, depth=4, num_cells=32)
    assert [m.out_channels for m in cnet.modules() if isinstance(m, nn.Conv2d)] == [32] * 4

    cnet = ConvNet(in_features=3, num_cells=[32, 33, 34, 35], kernel_sizes=[3, 4, 5, (2, 3)])
    convs = [m for m in cnet.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (4, 4), (5, 5), (2, 3)]

    # depth from a per-layer list when num_cells is an int
    cnet = ConvNet(in_features=3, num_cells=8, kernel_sizes=[3, 3])
    assert len([m for m in cnet.modules() if isinstance(m, nn.Conv2d)]) == 2


def test_convnet_bias_last_layer_and_aggregator():
    cnet = ConvNet(in_features=3, num_cells=[4, 5], bias_last_layer=False)
    first, last = (m for m in cnet.modules() if isinstance(m, nn.Conv2d))
    assert first.bias is not None and last.bias is None
    maps = ConvNet(in_features=3, num_cells=[4, 5], aggregator_class=None)
    assert maps(torch.zeros(2, 7, 3, 9, 9)).shape == (2, 7, 5, 5, 5)
    pooled = ConvNet(
        in_features=3,
        num_cells=[4],
        aggregator_class=nn.AdaptiveAvgPool2d,
        aggregator_kwargs={"output_size": 1},
        activation_class=nn.LeakyReLU,
        activation_kwargs={"negative_slope": 0.5},
    )
    assert pooled(torch.zeros(6, 3, 9, 9)).shape == (6, 4, 1, 1)
    assert next(m for m in pooled.modules() if isinstance(m, nn.LeakyReLU)).negative_slope == 0.5


def test_convnet_depth_errors():
    with pytest.raises(
        ObjectiveConfigError, match=r"ConvNet: depth must be .*got 0; pass e.g. depth=1"
    ):
        ConvNet(in_features=3, depth=0, num_cells=32)
    with pytest.raises(ObjectiveConfigError, match="depth=2 disagrees"):
        ConvNet(in_features=3, depth=2, num_cells=[32, 32, 32])
    with pytest.raises(ObjectiveConfigError, match="strides has 3 entries but there are 2"):
        ConvNet(in_features=3, num_cells=[4, 4], strides=[1, 1, 1])


# -- vec_td_lambda_return_estimate ----------------------------------------------------


def naive_td_lambda(gamma, lmbda, next_state_value, reward, done, terminated):
    """One step at a time, time at dim -2; gamma and lmbda per step ([*B, T, F])."""
    next_state_value = next_state_value * (~terminated)
    returns = torch.empty_like(reward)
    g = next_state_value[..., -1, :]
    for t in reversed(range(reward.shape[-2])):
        d = done[..., t, :].to(reward.dtype)
        nv = next_state_value[..., t, :]
        g = g * (1 - d) + nv * d
        lm = lmbda[..., t, :]
        g = returns[..., t, :] = reward[..., t, :] + gamma[..., t, :] * ((1 - lm) * nv + lm * g)
    return returns


def trajectories(seed=0, shape=(3, 40, 2)):
    g = torch.Generator().manual_seed(seed)
    reward = torch.randn(shape, generator=g, dtype=torch.float64)
    next_value = torch.randn(shape, generator=g, dtype=torch.float64)
    terminated = torch.rand(shape, generator=g) < 0.1
    truncated = torch.rand(shape, generator=g) < 0.1
    return reward, next_value, terminated | truncated, terminated


@pytest.mark.parametrize("per_step", [False, True])
def test_vec_td_lambda_return_estimate_matches_a_naive_loop(per_step):
    reward, next_value, done, terminated = trajectories()
    if per_step:
        g = torch.Generator().manual_seed(7)
        gamma = 0.8 + 0.2 * torch.rand(reward.shape, generator=g, dtype=torch.float64)
        lmbda = torch.rand(reward.shape, generator=g, dtype=torch.float64)
    else:
        gamma, lmbda = 0.95, 0.7
    full = torch.ones_like(reward)
    expected = naive_td_lambda(gamma * full, lmbda * full, next_value, reward, done, terminated)
    got = vec_td_lambda_return_estimate(gamma, lmbda, next_value, reward, done, terminated)
    torch.testing.assert_close(got, expected)
    # the same call with time first
    moved = [x.transpose(0, 1) for x in (next_value, reward, done, terminated)]
    if per_step:
        gamma, lmbda = gamma.transpose(0, 1), lmbda.transpose(0, 1)
    got_t = vec_td_lambda_return_estimate(gamma, lmbda, *moved, time_dim=0)
    torch.testing.assert_close(got_t.transpose(0, 1), expected)


def test_vec_td_lambda_return_estimate_terminated_defaults_to_done():
    reward, next_value, done, _ = trajectories(seed=1)
    expected = naive_td_lambda(
        0.9 * torch.ones_like(reward), 0.5 * torch.ones_like(reward), next_value, reward, done, done
    )
    torch.testing.assert_close(
        vec_td_lambda_return_estimate(0.9, 0.5, next_value, reward, done), expected
    )
    torch.testing.assert_close(
        vec_td_lambda_return_estimate(0.9, 0.5, next_value, reward, done, rolling_gamma=False),
        expected,
    )
    torch.testing.assert_close(
        td_lambda_return_estimate(0.9, 0.5, next_value, reward, done, None, True), expected
    )


def test_vec_td_lambda_rolling_gamma_false_with_per_step_gamma_is_refused():
    reward, next_value, done, terminated = trajectories(seed=2)
    gamma = torch.full_like(reward, 0.9)
    with pytest.raises(ObjectiveConfigError, match="rolling_gamma=False.*rolling_gamma=None"):
        vec_td_lambda_return_estimate(
            gamma, 0.5, next_value, reward, done, terminated, rolling_gamma=False
        )


def test_vec_generalized_advantage_estimate_is_the_gae():
    reward, next_value, done, terminated = trajectories(seed=3)
    value = torch.randn_like(reward)
    args = (0.99, 0.95, value, next_value, reward, done)
    for flags in (terminated, None):
        got = vec_generalized_advantage_estimate(*args, flags)
        expected = generalized_advantage_estimate(*args, done if flags is None else flags)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)


def test_vtrace_as_in_torchrl():
    # TorchRL's VTrace example: a TanhNormal actor, a ValueOperator, and trajectories that
    # carry the collecting policy's "sample_log_prob" (here without ("next", "terminated")).
    actor, _, _ = sac_family_modules()
    value_net = ValueOperator(nn.Linear(N_OBS, 1), in_keys=["observation"])
    g = torch.Generator().manual_seed(4)
    shape = [2, 10]
    data = TensorDict(
        {
            "observation": torch.randn(*shape, N_OBS, generator=g),
            "action": torch.rand(*shape, N_ACT, generator=g) * 1.8 - 0.9,
            "sample_log_prob": torch.randn(*shape, generator=g),
            ("next", "observation"): torch.randn(*shape, N_OBS, generator=g),
            ("next", "reward"): torch.randn(*shape, 1, generator=g),
            ("next", "done"): torch.rand(*shape, 1, generator=g) < 0.2,
        },
        shape,
    )
    estimator = VTrace(gamma=0.98, actor_network=actor, value_network=value_net)
    out = estimator(data.clone())
    assert out["advantage"].shape == out["value_target"].shape == torch.Size([*shape, 1])
    explicit = data.clone()
    explicit["next", "terminated"] = data["next", "done"].clone()
    torch.testing.assert_close(estimator(explicit)["value_target"], out["value_target"])
    # The functional form, with TorchRL's positional order and terminated left out.
    args = [torch.randn(*shape, 1, generator=g) for _ in range(5)]
    done = data["next", "done"]
    for a, b in zip(
        vtrace_advantage_estimate(0.98, *args, done),
        vtrace_advantage_estimate(0.98, *args, done, done),
    ):
        torch.testing.assert_close(a, b)
    # TorchRL's losses take it by enum and run their own actor through it.
    loss = A2CLoss(actor, value_net)
    loss.make_value_estimator(ValueEstimators.VTrace, gamma=0.98)
    assert loss.value_estimator.actor_network is actor
    total_loss(loss(data.clone())).backward()


# -- Rainbow parts: noisy layers, dueling heads, C51 ----------------------------------


def test_noisy_linear_torchrl_arguments_and_attributes():
    torch.manual_seed(0)
    layer = NoisyLinear(4, 3, True, None, torch.float64, 0.5)  # TorchRL's positional order
    assert layer.weight.dtype == torch.float64 and layer.weight.shape == (3, 4)
    assert set(dict(layer.named_parameters())) == {
        "weight_mu", "weight_sigma", "bias_mu", "bias_sigma"
    }  # fmt: skip
    before = layer.weight.detach().clone()
    layer.reset_noise()
    assert not torch.equal(layer.weight.detach(), before)
    lazy = NoisyLazyLinear(3, std_init=0.5)
    assert lazy(torch.zeros(2, 6)).shape == (2, 3)


def test_dueling_mlp_dqnet_torchrl_example_and_its_distributional_use():
    torch.manual_seed(0)
    assert DuelingMlpDQNet(out_features=2)(torch.zeros(1, 5)).shape == (1, 2)
    # TorchRL's docstring asks for out_features=(3, 2) with a scalar value head, which adds
    # [B, 1] to [B, 3, 2] and only runs for B = 1 or 3: rlblocks says what to pass instead.
    with pytest.raises(ObjectiveConfigError, match=r"\(n_atoms, 1\) for \(n_atoms, n_actions\)"):
        DuelingMlpDQNet(out_features=(3, 2))
    net = DuelingMlpDQNet(out_features=(3, 2), out_features_value=(3, 1))
    assert net(torch.zeros(4, 5)).shape == (4, 3, 2)


def test_distributional_qvalue_actor_torchrl_docstring_recipe():
    torch.manual_seed(0)
    td = TensorDict({"observation": torch.randn(5, 4)}, [5])
    nbins = 3
    module = MLP(out_features=(nbins, 4), depth=2)
    module = TensorDictSequential(
        TensorDictModule(module, ["observation"], ["action_value"]),
        TensorDictModule(lambda x: x.log_softmax(-2), ["action_value"], ["action_value"]),
    )
    actor = DistributionalQValueActor(module=module, spec=OneHot(4), support=torch.arange(nbins))
    td = actor(td)
    assert td["action"].shape == (5, 4) and td["action_value"].shape == (5, 3, 4)
    expected = (td["action_value"].exp() * torch.arange(3.0)[:, None]).sum(-2).argmax(-1)
    assert torch.equal(td["action"].long().argmax(-1), expected)
    # TorchRL's loss call; the term is "loss_qvalue" (TorchRL: "loss"), total_loss sums it.
    loss = DistributionalDQNLoss(actor, gamma=0.9)
    data = td.select("observation", "action").update(
        {
            ("next", "observation"): torch.randn(5, 4),
            ("next", "reward"): torch.randn(5, 1),
            ("next", "done"): torch.zeros(5, 1, dtype=torch.bool),
        }
    )
    out = loss(data)
    assert "loss_qvalue" in out.keys() and "loss" not in out.keys()
    total_loss(out).backward()
    assert data["td_error"].shape == (5,)


# -- REDQ, CrossQ, TQC ----------------------------------------------------------------


def sac_family_modules():
    """The actor and critic of TorchRL's REDQLoss/CrossQLoss docstrings, and a batch."""
    spec, _, qvalue = ddpg_modules()
    net = nn.Sequential(nn.Linear(N_OBS, 2 * N_ACT), NormalParamExtractor())
    module = SafeModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    actor = ProbabilisticActor(
        module=module, in_keys=["loc", "scale"], spec=spec, distribution_class=TanhNormal
    )
    batch = [2]
    data = torchrl_batch(spec, batch)
    return actor, qvalue, data


@pytest.mark.parametrize("cls", [REDQLoss, CrossQLoss])
def test_redq_and_crossq_docstring_examples(build, cls):
    actor, qvalue, data = sac_family_modules()
    loss = cls(actor, qvalue)
    out = loss(data)
    assert {"loss_actor", "loss_qvalue", "loss_alpha", "alpha", "entropy"} <= set(out.keys())
    # The tensor call of the examples (a dict here, not a tuple).
    tensors = loss(**build.tensors(data))
    tensors["loss_actor"].backward()
    assert actor.module[0].module[0].weight.grad is not None
    # TorchRL's REDQ clamps the temperature to [0.1, 10] by default.
    if cls is REDQLoss:
        assert loss.qvalue_networks.num_copies == 10 and loss.sub_sample_len == 2
        assert float(REDQLoss(actor, qvalue, alpha_init=100.0).alpha) == pytest.approx(10.0)


def test_crossq_recipe_critic_mlp_with_batch_renorm():
    # TorchRL's sota-implementations/crossq critic: an MLP with norm_class and its
    # norm_kwargs (num_features included), initialized by one call in eval mode.
    actor, _, data = sac_family_modules()
    hidden = [16, 16]
    net = MLP(
        num_cells=hidden,
        out_features=1,
        activation_class=nn.ReLU,
        norm_class=BatchRenorm1d,
        norm_kwargs={"momentum": 0.01, "num_features": hidden[-1], "warmup_steps": 100},
    )
    qvalue = ValueOperator(in_keys=["action", "observation"], module=net)
    qvalue.eval()
    qvalue(data.clone())
    qvalue.train()
    loss = CrossQLoss(actor, qvalue, num_qvalue_nets=2, loss_function="l2", alpha_init=1.0)
    loss.make_value_estimator(gamma=0.99)
    total_loss(loss(data)).backward()
    assert loss.qvalue_networks.stacked.module[1].num_batches_tracked.tolist() == [1, 1]


def test_tqc_docstring_example():
    actor, _, data = sac_family_modules()
    n_quantiles = 8
    critic = ValueOperator(
        MLP(in_features=N_OBS + N_ACT, out_features=n_quantiles, num_cells=[]),
        in_keys=["observation", "action"],
    )
    loss = TQCLoss(actor, critic, num_qvalue_nets=2)
    loss.make_value_estimator(gamma=0.99)
    assert loss.n_quantiles == 8 and loss.top_quantiles_to_drop_per_net == 2
    output = loss(data)
    assert output.get("loss_qvalue").shape == torch.Size([])
