"""Policies and critics: keys, specs, exploration types, shared trunks."""

from __future__ import annotations

import pickle
from copy import deepcopy

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    NormalParamExtractor,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import nn

from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.specs import Bounded, Categorical, OneHot
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules import (
    MLP,
    Actor,
    ActorValueOperator,
    MultiAgentMLP,
    ProbabilisticActor,
    QValueActor,
    QValueModule,
    TanhDelta,
    TanhNormal,
    ValueOperator,
)


def observations(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDict(observation=torch.randn(n, 3, generator=g), batch_size=[n])


def test_actor_keys_and_safe_projection():
    actor = Actor(nn.Linear(3, 2), spec=Bounded(-0.1, 0.1, shape=(2,)), safe=True)
    assert actor.in_keys == ["observation"] and actor.out_keys == ["action"]
    with torch.no_grad():
        actor.module.bias.fill_(5.0)
    action = actor(observations())["action"]
    assert torch.equal(action, torch.full((5, 2), 0.1))
    unsafe = Actor(actor.module, spec=actor.spec)
    assert (unsafe(observations())["action"] > 0.1).any()
    assert actor(observation=torch.zeros(2, 3)).shape == (2, 2)  # plain-tensor call
    with pytest.raises(ObjectiveConfigError, match="needs a spec"):
        Actor(nn.Linear(3, 2), safe=True)


def tanh_actor(spec=None, **kwargs):
    torch.manual_seed(0)
    net = TensorDictModule(
        nn.Sequential(nn.Linear(3, 4), NormalParamExtractor()), ["observation"], ["loc", "scale"]
    )
    return ProbabilisticActor(
        net, ["loc", "scale"], spec=spec, distribution_class=TanhNormal, **kwargs
    )


def test_probabilistic_actor_takes_bounds_from_spec_and_logs_probability():
    spec = Bounded(torch.tensor([0.0, -5.0]), torch.tensor([1.0, 5.0]))
    actor = tanh_actor(spec, return_log_prob=True)
    td = actor(observations(200))
    action = td["action"]
    assert spec.is_in(action)
    assert (action[:, 1].abs() > 1.0).any()  # the [-5, 5] bound was used, not [-1, 1]
    dist = actor.get_dist(observations(200))
    torch.testing.assert_close(td["sample_log_prob"], dist.log_prob(action), atol=1e-4, rtol=1e-4)
    assert td["sample_log_prob"].shape == (200,)


def test_probabilistic_actor_respects_exploration_type():
    actor = tanh_actor()
    first, second = actor(observations())["action"], actor(observations())["action"]
    assert not torch.equal(first, second)  # RANDOM is the default: samples
    expected = torch.tanh(actor.module[0](observations())["loc"])
    for kind in (ExplorationType.DETERMINISTIC, ExplorationType.MODE, ExplorationType.MEAN):
        with set_exploration_type(kind):
            torch.testing.assert_close(actor(observations())["action"], expected)
    with set_exploration_type(ExplorationType.RANDOM):
        assert not torch.equal(actor(observations())["action"], expected)


def gaussian_actor(**kwargs):
    net = TensorDictModule(
        nn.Sequential(nn.Linear(3, 4), NormalParamExtractor()), ["observation"], ["loc", "scale"]
    )
    return ProbabilisticActor(net, ["loc", "scale"], spec=Bounded(-1.0, 1.0, shape=(2,)), **kwargs)


@pytest.mark.parametrize(
    "exploration", [e for e in ExplorationType if e is not ExplorationType.MEDIAN]
)  # neither distribution here has a median
@pytest.mark.parametrize("return_log_prob", [False, True])
def test_the_direct_call_equals_the_sequence(exploration, return_log_prob):
    """A plain call runs the stages in turn, skipping tensordict's sequence machinery: it
    must write exactly what ProbabilisticTensorDictSequential.forward writes."""
    actor = gaussian_actor(return_log_prob=return_log_prob)
    categorical = ProbabilisticActor(
        TensorDictModule(nn.Linear(3, 4), ["observation"], ["logits"]),
        ["logits"],
        distribution_class=torch.distributions.Categorical,
        spec=Categorical(4),
        return_log_prob=return_log_prob,
    )
    # A categorical has no mean action (torch gives NaN, cast to garbage ints).
    has_mean = exploration is not ExplorationType.MEAN
    for policy in (actor, categorical) if has_mean else (actor,):
        assert policy._direct_stages() is not None
        with set_exploration_type(exploration):
            torch.manual_seed(3)
            direct = policy(observations())
            torch.manual_seed(3)
            generic = ProbabilisticTensorDictSequential.forward(policy, observations())
        assert set(direct.keys(True, True)) == set(generic.keys(True, True))
        for key in generic.keys(True, True):
            torch.testing.assert_close(direct[key], generic[key], rtol=0, atol=0)


def test_the_direct_get_dist_equals_the_sequence():
    """Losses call get_dist once per update; the direct path must build the distribution
    tensordict's get_dist builds, and write the same parameters into the input."""
    actor = gaussian_actor()
    direct_td, generic_td = observations(), observations()
    direct = actor.get_dist(direct_td)
    generic = ProbabilisticTensorDictSequential.get_dist(actor, generic_td)
    assert type(direct) is type(generic)
    torch.testing.assert_close(direct.loc, generic.loc, rtol=0, atol=0)
    torch.testing.assert_close(direct.scale, generic.scale, rtol=0, atol=0)
    assert set(direct_td.keys()) == set(generic_td.keys()) == {"observation", "loc", "scale"}


def test_hooks_registered_on_a_stage_after_the_first_call_run():
    actor = gaussian_actor()
    actor(observations())  # the direct calls are built
    calls = []
    actor.module[0].register_forward_hook(lambda *args: calls.append(1))
    actor(observations())
    actor.get_dist(observations())
    assert calls == [1, 1]


def test_a_copy_calls_its_own_stages_and_pickles():
    actor = gaussian_actor()
    actor(observations())  # the direct calls are built
    copy = pickle.loads(pickle.dumps(actor))
    deep = deepcopy(actor)
    for other in (copy, deep):
        with torch.no_grad():
            for p in other.parameters():
                p.zero_()
        loc = other.get_dist(observations()).loc
        assert torch.equal(loc, torch.zeros_like(loc))  # the copy's zeroed weights
    assert not torch.equal(actor.get_dist(observations()).loc, loc)


def test_get_dist_runs_the_stages_under_the_samplers_default_interaction_type():
    from tensordict.nn import interaction_type

    seen = []

    class Reads(nn.Module):
        def forward(self, obs):
            seen.append(interaction_type())
            return obs[..., :2], obs[..., :2].abs() + 0.1

    net = TensorDictModule(Reads(), ["observation"], ["loc", "scale"])
    actor = ProbabilisticActor(
        net,
        ["loc", "scale"],
        distribution_class=TanhNormal,
        default_interaction_type=ExplorationType.DETERMINISTIC,
    )
    actor.get_dist(observations())
    ProbabilisticTensorDictSequential.get_dist(actor, observations())
    with set_exploration_type(ExplorationType.RANDOM):
        actor.get_dist(observations())
    assert seen == [ExplorationType.DETERMINISTIC] * 2 + [ExplorationType.RANDOM]


class _WritesAction(nn.Module):
    def forward(self, obs):
        return obs[..., :2], obs[..., :2].abs() + 0.1, torch.zeros(obs.shape[0], 2)


def test_an_earlier_stage_writing_the_action_keeps_the_sequence_path():
    """The sequence keeps an action an earlier stage wrote instead of sampling one."""
    net = TensorDictModule(_WritesAction(), ["observation"], ["loc", "scale", "action"])
    actor = ProbabilisticActor(net, ["loc", "scale"], distribution_class=TanhNormal)
    assert actor._direct_stages() is None
    assert torch.equal(actor(observations())["action"], torch.zeros(5, 2))


def test_probabilistic_actor_validates_distribution_arguments_only_on_request():
    torch.manual_seed(0)
    net = TensorDictModule(nn.Linear(3, 2), ["observation"], ["logits"])
    nan_params = TensorDict(logits=torch.full((4, 2), float("nan")), batch_size=[4])

    def actor(**kwargs):
        return ProbabilisticActor(
            net, ["logits"], distribution_class=torch.distributions.Categorical, **kwargs
        )

    assert not actor().build_dist_from_params(nan_params)._validate_args  # off by default
    with pytest.raises(ValueError, match="logits"):
        actor(validate_args=True).build_dist_from_params(nan_params)
    # An explicit distribution keyword wins over the flag.
    explicit = actor(validate_args=True, distribution_kwargs={"validate_args": False})
    assert not explicit.build_dist_from_params(nan_params)._validate_args
    # Distributions that take no validate_args are built as before.
    delta = ProbabilisticActor(
        TensorDictModule(nn.Linear(3, 2), ["observation"], ["param"]),
        ["param"],
        distribution_class=TanhDelta,
        validate_args=True,
    )
    assert delta(observations())["action"].shape == (5, 2)


def test_probabilistic_actor_safe_projection():
    spec = Bounded(-0.5, 0.5, shape=(2,))
    torch.manual_seed(0)
    net = TensorDictModule(
        nn.Sequential(nn.Linear(3, 4), NormalParamExtractor()), ["observation"], ["loc", "scale"]
    )
    actor = ProbabilisticActor(
        net, ["loc", "scale"], spec=spec, safe=True, distribution_class=torch.distributions.Normal
    )
    assert spec.is_in(actor(observations(100))["action"])


def test_value_operator_default_keys():
    assert ValueOperator(nn.Linear(3, 1)).out_keys == ["state_value"]
    q = ValueOperator(MLP(5, 1, num_cells=[4]), in_keys=["observation", "action"])
    assert q.out_keys == ["state_action_value"]
    td = observations()
    td["action"] = torch.zeros(5, 2)
    assert q(td)["state_action_value"].shape == (5, 1)


def _critic_and_reference():
    torch.manual_seed(0)
    critic = ValueOperator(MLP(3, 1, num_cells=[4]))
    return critic, TensorDictModule(critic.module, ["observation"], ["state_value"])


def test_value_operator_call_equals_tensordict_modules():
    critic, reference = _critic_and_reference()
    td = observations()
    out = critic(td)
    assert out is td  # written in place, as TensorDictModule does
    assert torch.equal(out["state_value"], reference(observations())["state_value"])
    # Keyword tensors in, tensors out: tensordict's dispatch still serves.
    assert torch.equal(critic(observation=td["observation"]), td["state_value"])


def test_value_operator_runs_hooks_and_honours_skip_existing():
    from tensordict.nn import set_skip_existing

    critic, _ = _critic_and_reference()
    calls = []
    critic.register_forward_hook(lambda module, args, out: calls.append(out))
    td = observations()
    critic(td)
    assert len(calls) == 1
    td["state_value"] = torch.full((5, 1), 7.0)
    with set_skip_existing(True):
        critic(td)
    assert (td["state_value"] == 7.0).all()  # skipped: the value was there


def test_value_operator_missing_input_names_it():
    critic, _ = _critic_and_reference()
    with pytest.raises(KeyError, match="observation"):
        critic(TensorDict(pixels=torch.zeros(5, 3), batch_size=[5]))


def test_safe_module_direct_forward_still_projects():
    actor = Actor(nn.Linear(3, 2), spec=Bounded(-1.0, 1.0, shape=(2,)), safe=True)
    td = TensorDict(observation=100 * torch.ones(5, 3), batch_size=[5])
    assert actor(td)["action"].abs().max() <= 1.0


def test_qvalue_module_categorical_one_hot_and_mask():
    values = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    td = TensorDict(action_value=values.clone(), batch_size=[2])
    QValueModule(spec=Categorical(3))(td)
    assert td["action"].tolist() == [1, 2]
    assert td["chosen_action_value"].tolist() == [[3.0], [5.0]]
    td = QValueModule(spec=OneHot(3))(TensorDict(action_value=values.clone(), batch_size=[2]))
    assert td["action"].dtype == torch.bool
    assert td["action"].int().tolist() == [[0, 1, 0], [0, 0, 1]]
    mask = torch.tensor([[True, False, True], [True, True, False]])
    td = TensorDict(action_value=values.clone(), mask=mask, batch_size=[2])
    QValueModule(spec=Categorical(3), action_mask_key="mask")(td)
    assert td["action"].tolist() == [2, 0]
    assert td["chosen_action_value"].tolist() == [[2.0], [0.0]]
    shaped = QValueModule(spec=Categorical(3, shape=(1,)))
    assert shaped(TensorDict(action_value=values, batch_size=[2]))["action"].shape == (2, 1)
    with pytest.raises(ObjectiveConfigError, match="OneHot or Categorical"):
        QValueModule()


def test_qvalue_actor():
    torch.manual_seed(0)
    actor = QValueActor(nn.Linear(3, 4), spec=Categorical(4))
    td = actor(observations())
    assert td["action"].shape == (5,)
    torch.testing.assert_close(td["action"], td["action_value"].argmax(-1))
    assert actor.action_space == "categorical"


def test_actor_value_operator_shares_the_trunk():
    torch.manual_seed(0)
    trunk = TensorDictModule(nn.Linear(3, 8), ["observation"], ["hidden"])
    head = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(nn.Linear(8, 4), NormalParamExtractor()), ["hidden"], ["loc", "scale"]
        ),
        ["loc", "scale"],
        return_log_prob=True,
    )
    value_head = ValueOperator(nn.Linear(8, 1), in_keys=["hidden"])
    model = ActorValueOperator(trunk, head, value_head)
    td = model(observations())
    assert {"hidden", "action", "sample_log_prob", "state_value"} <= set(td.keys())
    policy, critic = model.get_policy_operator(), model.get_value_operator()
    dist = policy.get_dist(observations())
    assert isinstance(dist, TanhNormal)
    value = critic(observations())["state_value"]
    value.sum().backward()
    assert trunk.module.weight.grad is not None
    policy_params = {id(p) for p in policy.parameters()}
    assert id(trunk.module.weight) in policy_params
    assert model.get_policy_head() is head and model.get_value_head() is value_head


def test_qvalue_actor_over_a_group_writes_one_greedy_action_per_agent():
    actor = QValueActor(
        MultiAgentMLP(4, 5, 3, centralized=False, share_params=True),
        in_keys=[("agents", "observation")],
        action_value_key=("agents", "action_value"),
        spec=Categorical(5, shape=(3,)),
        action_mask_key=("agents", "action_mask"),
    )
    mask = torch.rand(8, 3, 5) > 0.3
    mask[..., 0] = True  # at least one legal action per agent
    td = TensorDict(
        {"agents": TensorDict({"observation": torch.randn(8, 3, 4), "action_mask": mask}, [8, 3])},
        [8],
    )
    out = actor(td)
    action = out["agents", "action"]
    assert action.shape == (8, 3)
    assert "action" not in out.keys()  # next to the group's values, not at the root
    values = out["agents", "action_value"].masked_fill(~mask, float("-inf"))
    assert torch.equal(action, values.argmax(-1))
    assert mask.gather(-1, action.unsqueeze(-1)).all()
    assert torch.equal(out["agents", "chosen_action_value"][..., 0], values.max(-1).values)
