"""What every loss shares: plugin names, plain-tensor calls, key errors, targets, estimators."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torch.nn import functional as F

from rlblocks.core import make_loss
from rlblocks.core.specs import Categorical
from rlblocks.objectives import (
    A2CLoss,
    BCLoss,
    ClipPPOLoss,
    CQLLoss,
    CrossQLoss,
    DDPGLoss,
    DecisionTransformerLoss,
    DiscreteSACLoss,
    DistributionalDQNLoss,
    DQNLoss,
    DreamerActorLoss,
    DreamerModelLoss,
    DreamerValueLoss,
    GAILLoss,
    HardUpdate,
    IDDPGLoss,
    IndependentQLoss,
    IPPOLoss,
    IQLLoss,
    KLPENPPOLoss,
    MADDPGLoss,
    MAPPOLoss,
    MASACLoss,
    MissingInputError,
    ObjectiveConfigError,
    OnlineDTLoss,
    PPOLoss,
    QMixerLoss,
    REDQLoss,
    ReinforceLoss,
    SACLoss,
    ShapeMismatchError,
    SoftUpdate,
    TD3BCLoss,
    TD3Loss,
    TQCLoss,
    total_loss,
)
from rlblocks.objectives._checks import fmt_key
from rlblocks.objectives._plugin import LOSS_NAMES
from rlblocks.objectives.modules import MLP, QValueActor, TanhNormal, ValueOperator
from rlblocks.objectives.value import GAE, TD0Estimator, TDLambdaEstimator


def on_policy_batch(build):
    td = build.batch()
    td["sample_log_prob"] = torch.randn(6)
    td["advantage"] = torch.randn(6, 1)
    td["value_target"] = torch.randn(6, 1)
    td["loc"], td["scale"] = torch.zeros(6, 2), torch.ones(6, 2)
    return td


def discrete_batch(build, one_hot=False):
    index = torch.tensor([0, 1, 2, 2, 1, 0])
    return build.batch(action=F.one_hot(index, 3) if one_hot else index)


def q_actor(build):
    torch.manual_seed(3)
    return QValueActor(nn.Linear(build.obs, 3), spec=Categorical(3))


def actor_critic(b):
    return {"actor_network": b.gaussian_actor(), "critic_network": b.critic()}


def deterministic_with_q(b, q_name):
    return {"actor_network": b.deterministic_actor(), q_name: b.qvalue()}


def squashed_with_q(b):
    return {"actor_network": b.gaussian_actor(TanhNormal), "qvalue_network": b.qvalue()}


def discrete_sac(b):
    return {
        "actor_network": b.categorical_actor(),
        "qvalue_network": b.action_values(),
        "num_actions": 3,
    }


def iql(b):
    return {
        "actor_network": b.gaussian_actor(),
        "qvalue_network": b.qvalue(),
        "value_network": b.critic(),
    }


def plain_batch(b):
    return b.batch()


# Over a group of 3 agents (keys under "agents"), env-level flags at the root only.
def grouped_actor_critic(b):
    return {"actor_network": b.grouped.gaussian_actor(), "critic_network": b.grouped.critic()}


def grouped_deterministic_with_q(b, q_name):
    return {"actor_network": b.grouped.deterministic_actor(), q_name: b.grouped.qvalue()}


def grouped_squashed_with_q(b):
    return {
        "actor_network": b.grouped.gaussian_actor(TanhNormal),
        "qvalue_network": b.grouped.qvalue(),
    }


def grouped_batch(b):
    return b.grouped.batch()


def grouped_on_policy_batch(b):
    td = b.grouped.batch()  # no advantage: GAE reads the flags
    td["agents", "sample_log_prob"] = torch.randn(6, 3)
    return td


def grouped_discrete(b):
    return b.grouped.batch(action=torch.arange(18).reshape(6, 3) % 3)


# Dreamer: the world model on sequences; the actor on the latents the model inferred
# (imagining through a stand-in for ModelBasedEnv); the value on the imagined states.
def dreamer_sequences(b):
    return b.dreamer.oscillator_batch(3, 4, seed=0)


def dreamer_actor(b):
    world_model = b.dreamer.world_model()
    return {
        "actor_network": b.dreamer.actor(),
        "value_network": b.dreamer.value(),
        "model_based_env": b.dreamer.imagination(world_model),
        "imagination_horizon": 3,
    }


def dreamer_latents(b):
    with torch.no_grad():
        return b.dreamer.world_model()(dreamer_sequences(b))


def dreamer_imagined(b):
    loss = make_loss("dreamer_actor", **dreamer_actor(b))
    return loss(dreamer_latents(b))["imagined"]


# name -> (keyword arguments of make_loss, batch)
CASES = {
    "dreamer_model": (lambda b: {"world_model": b.dreamer.world_model()}, dreamer_sequences),
    "dreamer_actor": (dreamer_actor, dreamer_latents),
    "dreamer_value": (lambda b: {"value_network": b.dreamer.value()}, dreamer_imagined),
    "ppo": (actor_critic, on_policy_batch),
    "clip_ppo": (actor_critic, on_policy_batch),
    "unclipped_ppo": (actor_critic, on_policy_batch),
    "kl_ppo": (actor_critic, on_policy_batch),
    "a2c": (actor_critic, on_policy_batch),
    "reinforce": (actor_critic, on_policy_batch),
    "dqn": (lambda b: {"value_network": q_actor(b)}, discrete_batch),
    "c51": (lambda b: {"value_network": b.distributional_actor()}, discrete_batch),
    "distributional_dqn": (lambda b: {"value_network": b.distributional_actor()}, discrete_batch),
    "ddpg": (lambda b: deterministic_with_q(b, "value_network"), plain_batch),
    "td3": (lambda b: deterministic_with_q(b, "qvalue_network"), plain_batch),
    "sac": (squashed_with_q, plain_batch),
    "cql": (squashed_with_q, plain_batch),
    "discrete_sac": (discrete_sac, lambda b: discrete_batch(b, one_hot=True)),
    # Batched critic ensembles: REDQ's, CrossQ's batch-renormalized, TQC's quantile critics.
    "redq": (lambda b: {**squashed_with_q(b), "num_qvalue_nets": 3}, plain_batch),
    "crossq": (lambda b: {**squashed_with_q(b), "qvalue_network": b.renorm_qvalue()}, plain_batch),
    "tqc": (
        lambda b: {
            **squashed_with_q(b),
            "qvalue_network": b.qvalue(out_features=3),
            "top_quantiles_to_drop_per_net": 1,
        },
        plain_batch,
    ),
    "iql": (iql, plain_batch),
    "bc": (lambda b: {"actor_network": b.gaussian_actor()}, plain_batch),
    "td3bc": (lambda b: deterministic_with_q(b, "qvalue_network"), plain_batch),
    "td3_bc": (lambda b: deterministic_with_q(b, "qvalue_network"), plain_batch),
    # Slices [2, 4] of transitions with a return-to-go and a padding mask.
    "dt": (lambda b: {"actor_network": b.dt_actor()}, lambda b: b.dt_batch()),
    "decision_transformer": (lambda b: {"actor_network": b.dt_actor()}, lambda b: b.dt_batch()),
    "online_dt": (lambda b: {"actor_network": b.dt_actor(online=True)}, lambda b: b.dt_batch()),
    # The expert's pairs at the root, the policy's under collector_* (TorchRL's layout).
    "gail": (lambda b: {"discriminator_network": b.discriminator()}, lambda b: b.gail_batch()),
    "mappo": (grouped_actor_critic, grouped_on_policy_batch),
    "ippo": (grouped_actor_critic, grouped_on_policy_batch),
    "maddpg": (lambda b: grouped_deterministic_with_q(b, "value_network"), grouped_batch),
    "iddpg": (lambda b: grouped_deterministic_with_q(b, "value_network"), grouped_batch),
    "masac": (grouped_squashed_with_q, grouped_batch),
    "independent_q": (lambda b: {"value_network": b.grouped.action_values()}, grouped_discrete),
    "idqn": (lambda b: {"value_network": b.grouped.action_values()}, grouped_discrete),
    # QMIX: per-agent Q-networks, a team reward, a global state.
    "qmixer": (
        lambda b: {"local_value_network": b.agents_qvalue(), "mixer_network": b.qmixer()},
        lambda b: b.agents_batch(),
    ),
}

EXPECTED_CLASSES = {
    "dreamer_model": DreamerModelLoss,
    "dreamer_actor": DreamerActorLoss,
    "dreamer_value": DreamerValueLoss,
    "ppo": ClipPPOLoss,
    "clip_ppo": ClipPPOLoss,
    "unclipped_ppo": PPOLoss,
    "kl_ppo": KLPENPPOLoss,
    "a2c": A2CLoss,
    "reinforce": ReinforceLoss,
    "dqn": DQNLoss,
    "c51": DistributionalDQNLoss,
    "distributional_dqn": DistributionalDQNLoss,
    "ddpg": DDPGLoss,
    "td3": TD3Loss,
    "sac": SACLoss,
    "cql": CQLLoss,
    "discrete_sac": DiscreteSACLoss,
    "redq": REDQLoss,
    "crossq": CrossQLoss,
    "tqc": TQCLoss,
    "iql": IQLLoss,
    "bc": BCLoss,
    "td3bc": TD3BCLoss,
    "td3_bc": TD3BCLoss,
    "dt": DecisionTransformerLoss,
    "decision_transformer": DecisionTransformerLoss,
    "online_dt": OnlineDTLoss,
    "gail": GAILLoss,
    "mappo": MAPPOLoss,
    "ippo": IPPOLoss,
    "maddpg": MADDPGLoss,
    "iddpg": IDDPGLoss,
    "masac": MASACLoss,
    "independent_q": IndependentQLoss,
    "idqn": IndependentQLoss,
    "qmixer": QMixerLoss,
}

# The losses that read no done flags (behavior cloning, GAIL, sequence models).
FLAGLESS = ("bc", "gail", "dt", "decision_transformer", "online_dt")
# Model-based losses read no transition flags and no action of the batch (the model loss's
# action is its world model's input; imagination makes the actor's): the two tests on
# those do not apply to them (test_losses_dreamer.py covers their missing keys).
MODEL_BASED = {"dreamer_model", "dreamer_actor", "dreamer_value"}
# The role of the action a loss reads, where it is not "action".
ACTION_ROLES = {"gail": "expert_action"}


def test_cases_cover_every_registered_loss():
    assert set(LOSS_NAMES) == set(CASES) == set(EXPECTED_CLASSES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_plain_tensor_call_matches_tensordict_call(build, name):
    kwargs, batch = CASES[name]
    loss = make_loss(name, **kwargs(build))
    assert type(loss) is EXPECTED_CLASSES[name]
    td = batch(build)
    tensors = build.tensors(td.clone())
    # Some losses keep state across calls (KLPENPPOLoss adapts beta): replay from the start.
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    torch.manual_seed(0)
    from_td = loss(td)
    loss.load_state_dict(state)
    torch.manual_seed(0)
    from_tensors = loss(**tensors)
    assert isinstance(from_tensors, dict) and not isinstance(from_tensors, TensorDict)
    assert set(from_tensors) == set(from_td.keys())
    for key, value in from_tensors.items():
        torch.testing.assert_close(value, from_td[key], msg=f"{name}: {key}")
    assert any(k.startswith("loss_") for k in from_tensors)
    total_loss(from_tensors).backward()


@pytest.mark.parametrize("name", sorted(set(CASES) - MODEL_BASED))
def test_batch_without_terminated_reads_done_in_its_place(build, name):
    # TorchRL's convention: no ("next", "terminated") means terminated == done.
    kwargs, batch = CASES[name]
    loss = make_loss(name, **kwargs(build))
    td = batch(build).exclude("advantage", "value_target")  # have the estimator read flags
    as_done = td.clone()
    as_done["next", "terminated"] = td["next", "done"].clone()
    without = td.clone().exclude(("next", "terminated"))
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    results = []
    for data in (as_done, without, td):
        loss.load_state_dict(state)
        torch.manual_seed(0)
        results.append(loss(data.clone()))
    expected, got, original = results
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():
        torch.testing.assert_close(got[key], expected[key], msg=f"{name}: {key}")
    if name not in FLAGLESS:  # the others read the flags: a truncation changes terms
        assert any(not torch.equal(original[k], expected[k]) for k in expected.keys())


@pytest.mark.parametrize("name", sorted(set(CASES) - MODEL_BASED))
def test_missing_key_error_names_need_missing_and_fix(build, name):
    kwargs, batch = CASES[name]
    loss = make_loss(name, **kwargs(build))
    td = batch(build)
    role = ACTION_ROLES.get(name, "action")
    key = getattr(loss.tensor_keys, role)  # ("agents", "action") for a group's loss
    del td[key]
    with pytest.raises(MissingInputError) as info:
        loss(td)
    message = str(info.value)
    assert f"lacks [{fmt_key(key)}]" in message
    assert "needs the keys [" in message and f"set_keys({role}=" in message
    assert key in loss.in_keys


def test_missing_network_key_names_the_network(build):
    loss = SACLoss(build.gaussian_actor(TanhNormal), build.qvalue())
    td = build.batch()
    del td["next", "observation"]
    with pytest.raises(MissingInputError, match=r"\('next', 'observation'\).*actor network"):
        loss(td)


def test_set_keys_renames_data_and_estimator_keys(build):
    actor, qvalue = build.deterministic_actor(), build.qvalue()
    td = build.batch()
    expected = DDPGLoss(actor, qvalue)(td.clone())["loss_value"]
    renamed = td.clone()
    renamed.rename_key_(("next", "reward"), ("next", "rew"))
    renamed.rename_key_(("next", "terminated"), ("next", "term"))
    loss = DDPGLoss(actor, qvalue).set_keys(reward="rew", terminated="term", priority="prio")
    torch.testing.assert_close(loss(renamed)["loss_value"], expected)
    assert loss.value_estimator.tensor_keys.reward == "rew"
    assert "prio" in renamed.keys() and "td_error" not in renamed.keys()
    with pytest.raises(ObjectiveConfigError, match="unknown role"):
        loss.set_keys(rewardd="x")
    # Renaming after the estimator exists reaches it too.
    loss.set_keys(reward="r2")
    assert loss.value_estimator.tensor_keys.reward == "r2"


def test_value_shape_mismatch_is_an_error_not_a_broadcast(build):
    td = build.batch()
    td["next", "reward"] = td["next", "reward"].squeeze(-1)  # [6] instead of [6, 1]
    with pytest.raises(ShapeMismatchError, match=r"\[6\].*\[6, 1\]|\[6, 1\].*\[6\]"):
        SACLoss(build.gaussian_actor(TanhNormal), build.qvalue())(td)
    with pytest.raises(ShapeMismatchError, match=r"\[6\]"):
        DQNLoss(q_actor(build))(discrete_batch(build).update({"next": td["next"]}))


def test_call_errors(build):
    loss = BCLoss(build.gaussian_actor())
    with pytest.raises(ObjectiveConfigError, match="not both"):
        loss(build.batch(), action=torch.zeros(6, 2))
    with pytest.raises(ObjectiveConfigError, match="TensorDict or keyword"):
        loss(torch.zeros(3))
    with pytest.raises(MissingInputError, match="keyword arguments"):
        loss()
    tensors = build.tensors(build.batch()) | {"observation": torch.zeros(5, 3)}
    with pytest.raises(ShapeMismatchError, match="batch shape"):
        DDPGLoss(build.deterministic_actor(), build.qvalue())(**tensors)
    with pytest.raises(ObjectiveConfigError, match="no 'loss_"):
        total_loss({"alpha": torch.ones(())})


def test_target_networks_are_frozen_copies_saved_with_the_loss(build):
    actor, qvalue = build.deterministic_actor(), build.qvalue()
    loss = TD3Loss(actor, qvalue)
    trainable = {name for name, _ in loss.named_parameters()}
    assert trainable and not any(name.startswith("target_") for name in trainable)
    state = loss.state_dict()
    assert any(k.startswith("target_actor_network.") for k in state)
    assert any(k.startswith("target_qvalue_networks.") for k in state)
    copy = TD3Loss(build.deterministic_actor(seed=9), build.qvalue(seed=9))
    copy.load_state_dict(state)
    torch.testing.assert_close(copy.target_actor_network.module[0].weight, actor.module[0].weight)


def test_state_dict_round_trips_after_the_estimator_exists(build):
    loss = A2CLoss(build.gaussian_actor(), build.critic())
    loss(build.batch(shape=(2, 4)))  # builds the GAE estimator on the critic
    fresh = A2CLoss(build.gaussian_actor(seed=5), build.critic(seed=5))
    fresh.load_state_dict(loss.state_dict())  # strict: no duplicate critic entries
    torch.testing.assert_close(
        fresh.critic_network.module.weight, loss.critic_network.module.weight
    )


def test_soft_and_hard_updates(build):
    qvalue = build.qvalue()
    loss = SACLoss(build.gaussian_actor(TanhNormal), qvalue, num_qvalue_nets=1)
    online = loss.qvalue_networks[0].module[0].weight
    target = loss.target_qvalue_networks[0].module[0].weight
    start = target.clone()
    with torch.no_grad():
        online.add_(1.0)
    SoftUpdate(loss, tau=0.25).step()
    torch.testing.assert_close(target, start + 0.25)
    hard = HardUpdate(loss, period=3)
    hard.step()
    hard.step()
    torch.testing.assert_close(target, start + 0.25)
    hard.step()
    torch.testing.assert_close(target, online)
    with pytest.raises(ObjectiveConfigError, match="no target network"):
        SoftUpdate(DQNLoss(q_actor(build), delay_value=False))
    with pytest.raises(ObjectiveConfigError, match="tau"):
        SoftUpdate(loss, tau=0.0)


def test_lazy_networks_must_be_initialized_first(build):
    qvalue = ValueOperator(MLP(out_features=1), in_keys=["observation", "action"])
    with pytest.raises(ObjectiveConfigError, match="lazy"):
        SACLoss(build.gaussian_actor(TanhNormal), qvalue)
    qvalue(build.batch())
    SACLoss(build.gaussian_actor(TanhNormal), qvalue)


def test_make_value_estimator(build):
    actor, critic = build.gaussian_actor(), build.critic()
    loss = A2CLoss(actor, critic, gamma=0.9, lmbda=0.8)
    assert isinstance(loss.value_estimator, GAE)
    assert loss.value_estimator.gamma == 0.9 and loss.value_estimator.lmbda == 0.8
    assert loss.value_estimator.value_network is critic
    loss.make_value_estimator("td_lambda", lmbda=0.5)
    assert isinstance(loss.value_estimator, TDLambdaEstimator)
    assert loss.value_estimator.lmbda == 0.5
    assert isinstance(DQNLoss(q_actor(build)).value_estimator, TD0Estimator)
    with pytest.raises(ObjectiveConfigError, match="'td_lambda'"):
        loss.make_value_estimator("lambda")


def test_off_policy_loss_with_td_lambda_over_trajectories(build):
    actor = q_actor(build)
    td = build.batch(shape=(2, 5), action=torch.zeros(2, 5, dtype=torch.long))
    loss = DQNLoss(actor, gamma=0.9).make_value_estimator("td_lambda", lmbda=0.5)
    out = loss(td)
    net = actor.module[0].module
    with torch.no_grad():
        next_q = net(td["next", "observation"]).max(-1, keepdim=True).values
    from rlblocks.objectives.value import td_lambda_return_estimate

    nxt = td["next"]
    target = td_lambda_return_estimate(
        0.9, 0.5, next_q, nxt["reward"], nxt["done"], nxt["terminated"]
    )
    pred = net(td["observation"])[..., :1]
    torch.testing.assert_close(out["loss_qvalue"], F.mse_loss(pred, target))


def test_frozen_call_blocks_parameter_grads_and_restores_requires_grad_after_errors():
    from tensordict.nn import TensorDictModule

    from rlblocks.objectives._losses.base import frozen_call

    net = nn.Linear(3, 1)
    net.bias.requires_grad_(False)  # already frozen by the user: stays frozen
    critic = TensorDictModule(net, in_keys=["x"], out_keys=["y"])
    x = torch.randn(4, 3, requires_grad=True)
    frozen_call(critic, TensorDict(x=x, batch_size=[4]))["y"].sum().backward()
    assert x.grad is not None and net.weight.grad is None
    assert net.weight.requires_grad and not net.bias.requires_grad
    with pytest.raises(RuntimeError):  # wrong input width: the call fails midway
        frozen_call(critic, TensorDict(x=torch.randn(4, 2), batch_size=[4]))
    assert net.weight.requires_grad and not net.bias.requires_grad


def test_frozen_call_inside_an_outer_functional_call_blocks_the_swapped_in_parameters():
    # Parameters computed from others (meta-learning, torch.func) are not leaves: their
    # requires_grad flag cannot be turned off, so the call detaches them instead.
    from tensordict.nn import TensorDictModule

    from rlblocks.objectives._losses.base import frozen_call

    class Reader(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.critic = TensorDictModule(nn.Linear(3, 1), in_keys=["x"], out_keys=["y"])

        def forward(self, td):
            return frozen_call(self.critic, td)["y"]

    reader = Reader()
    base = {name: p for name, p in reader.named_parameters()}
    swapped = {name: p * 2.0 for name, p in base.items()}  # computed: not leaves
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.func.functional_call(reader, swapped, (TensorDict(x=x, batch_size=[4]),))
    y.sum().backward()
    assert x.grad is not None
    assert all(p.grad is None for p in base.values())
    weight = swapped["critic.module.weight"]
    torch.testing.assert_close(x.grad, weight.detach().expand(4, 3))


@pytest.mark.parametrize(
    ("kind", "reference"),
    [("l1", F.l1_loss), ("l2", F.mse_loss), ("smooth_l1", F.smooth_l1_loss)],
)
def test_distances_equal_torch_functions_in_values_and_gradients(kind, reference):
    from rlblocks.objectives._losses.base import distance_loss

    torch.manual_seed(0)
    pred, target = torch.randn(64, 3, requires_grad=True), torch.randn(64, 3, requires_grad=True)
    got = distance_loss("test", pred, target, kind)
    expected = reference(pred, target, reduction="none")
    assert torch.equal(got, expected)
    got_grads = torch.autograd.grad(got.mean() * 0.3, (pred, target))
    expected_grads = torch.autograd.grad(expected.mean() * 0.3, (pred, target))
    for a, b in zip(got_grads, expected_grads, strict=True):
        assert torch.equal(a, b)
