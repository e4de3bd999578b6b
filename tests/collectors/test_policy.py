"""The collector's policy call: the fast path matches TensorDictModule, others are untouched."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from rlblocks.collectors import CollectorConfigError
from rlblocks.collectors._policy import as_weights, fast_policy_call, place_policy, policy_weights


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
    with pytest.raises(CollectorConfigError, match="returned 2 outputs but .* 3 out_keys"):
        fast_policy_call(policy)(data())


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
