"""The collector's policy call: the fast path matches TensorDictModule, others are untouched."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential

from rlblocks.collectors._policy import as_weights, fast_policy_call, place_policy, policy_weights
from rlblocks.core import ModuleOutputError


def data():
    return TensorDict({"observation": torch.randn(3, 4)}, batch_size=[3])


class TwoOutputs(torch.nn.Module):
    def forward(self, observation):
        return observation.sum(-1), observation * 2


@pytest.mark.parametrize(
    "policy",
    [
        TensorDictModule(torch.nn.Linear(4, 2), ["observation"], ["logits"]),
        TensorDictModule(TwoOutputs(), ["observation"], ["action", ("nested", "double")]),
        TensorDictModule(lambda o: {"a": o + 1}, ["observation"], ["a"]),
    ],
)
def test_fast_call_writes_what_the_module_call_writes(policy):
    td = data()
    fast = fast_policy_call(policy)
    assert fast is not policy  # plain modules get the fast path
    assert (fast(td.clone()) == policy(td.clone())).all()


def test_modules_with_hooks_or_keyword_inputs_keep_their_call():
    hooked = TensorDictModule(torch.nn.Linear(4, 2), ["observation"], ["logits"])
    hooked.register_forward_hook(lambda *args: None)
    keyword = TensorDictModule(
        lambda observation: observation, in_keys={"observation": "observation"}, out_keys=["o"]
    )
    for policy in (hooked, keyword, lambda td: td):
        assert fast_policy_call(policy) is policy


def test_missing_input_is_reported_by_the_module():
    policy = TensorDictModule(torch.nn.Linear(4, 2), ["pixels"], ["logits"])
    with pytest.raises(KeyError, match="pixels"):
        fast_policy_call(policy)(data())


def test_wrong_number_of_outputs_names_the_fix():
    policy = TensorDictModule(TwoOutputs(), ["observation"], ["a", "b", "c"])
    with pytest.raises(ModuleOutputError, match="returned 2 outputs but .* 3 out_keys"):
        fast_policy_call(policy)(data())


class Greedy(TensorDictModuleBase):
    """The best action of the values (``QValueModule``'s job)."""

    in_keys, out_keys = ["action_value"], ["action"]

    def forward(self, tensordict):
        return tensordict.set("action", tensordict.get("action_value").argmax(-1))


class EpsilonGreedy(TensorDictModuleBase):
    """A random action with probability 1/2 (``EGreedyModule``'s job)."""

    in_keys, out_keys = ["action"], ["action"]

    def forward(self, tensordict):
        action = tensordict.get("action")
        explore = torch.rand(action.shape) < 0.5
        return tensordict.set("action", torch.where(explore, torch.randint_like(action, 3), action))


def q_policy():
    """A DQN collection policy: a Q-value actor (itself a sequence), then epsilon-greedy."""
    values = TensorDictModule(torch.nn.Linear(4, 3), ["observation"], ["action_value"])
    return TensorDictSequential(TensorDictSequential(values, Greedy()), EpsilonGreedy())


def same_call(policy, fast, td):
    """``fast(td)`` and ``policy(td)`` from the same random state: the same entries."""
    torch.manual_seed(0)
    expected = policy(td.clone())
    torch.manual_seed(0)
    got = fast(td.clone())
    assert set(got.keys(True, True)) == set(expected.keys(True, True))
    assert (got == expected).all()
    return got


def test_a_plain_sequence_runs_its_modules_directly():
    policy = q_policy()
    fast = fast_policy_call(policy)
    assert fast is not policy
    assert fast.in_keys == ["observation"]
    assert set(fast.out_keys) == {"action", "action_value"}
    td = TensorDict({"observation": torch.randn(64, 4)}, batch_size=[64])
    out = same_call(policy, fast, td)
    greedy = out["action_value"].argmax(-1)
    assert 0 < (out["action"] != greedy).sum() < 64  # epsilon-greedy did replace some


class NewTensorDict(TensorDictModuleBase):
    """Returns a new TensorDict instead of writing into its input."""

    in_keys, out_keys = ["observation"], ["double"]

    def forward(self, tensordict):
        return TensorDict({"double": tensordict["observation"] * 2, "dropped": torch.zeros(())}, [])


@pytest.mark.parametrize("inplace", [None, True])
def test_a_module_returning_a_new_tensordict(inplace):
    policy = TensorDictSequential(NewTensorDict(), inplace=inplace)
    same_call(policy, fast_policy_call(policy), data())


def test_sequences_that_change_the_call_keep_it():
    selected = q_policy().select_out_keys("action")
    tolerant = TensorDictSequential(*q_policy().module, partial_tolerant=True)
    copying = TensorDictSequential(*q_policy().module, inplace=False)
    hooked = q_policy()
    hooked.register_forward_pre_hook(lambda *args: None)

    class Overridden(TensorDictSequential):
        def forward(self, tensordict):
            return super().forward(tensordict)

    overridden = Overridden(*q_policy().module)
    for policy in (selected, tolerant, copying, hooked, overridden):
        assert fast_policy_call(policy) is policy


def test_a_hooked_module_inside_a_sequence_keeps_its_hooks():
    policy = q_policy()
    calls = []
    policy.module[1].register_forward_hook(lambda *args: calls.append(1))
    fast = fast_policy_call(policy)
    assert fast is not policy
    same_call(policy, fast, data())
    assert calls == [1, 1]  # once per call


def test_a_failing_module_is_named():
    policy = TensorDictSequential(
        TensorDictModule(torch.nn.Linear(4, 2), ["observation"], ["hidden"]),
        TensorDictModule(torch.nn.Linear(3, 2), ["hidden"], ["logits"]),
    )
    with pytest.raises(RuntimeError) as info:
        fast_policy_call(policy)(data())
    assert "Failed while executing module '1'" in "\n".join(info.value.__notes__)


def test_weights_helpers():
    policy = TensorDictModule(torch.nn.Linear(4, 2), ["observation"], ["logits"])
    weights = policy_weights(policy)
    assert set(weights.keys(True, True)) == {("module", "weight"), ("module", "bias")}
    assert policy_weights(lambda td: td) is None
    nested = as_weights(policy.state_dict())
    assert torch.equal(nested["module", "weight"], policy.module.weight)
    # Already on the wanted device: no copy is made.
    assert place_policy(policy, torch.device("cpu")) == (policy, None)
    assert place_policy(policy, None) == (policy, None)


def test_hooks_and_modules_added_later_are_honoured():
    policy = q_policy()
    fast = fast_policy_call(policy)
    calls = []
    policy.module[0].module[0].register_forward_hook(lambda *args: calls.append("values"))
    policy.module[1].register_forward_hook(lambda *args: calls.append("explore"))
    policy.module.append(TensorDictModule(lambda a: a + 1, ["action"], ["shifted"]))
    out = same_call(policy, fast, data())
    assert calls == ["values", "explore"] * 2
    assert torch.equal(out["shifted"], out["action"] + 1)
