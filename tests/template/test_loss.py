"""TDValueLoss: the TD(0) target, key checks, and learning the chain walk's true values."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from rlblocks.objectives import MissingInputError, ObjectiveConfigError, total_loss
from rlblocks.objectives.modules import ValueOperator
from rlblocks.template import ChainWalkEnv, TDValueLoss


class Table(torch.nn.Module):
    """V(s) = table[s] for integer states."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.nn.Parameter(torch.tensor(values))

    def forward(self, state):
        return self.values[state.squeeze(-1)].unsqueeze(-1)


def transition_batch():
    return TensorDict(
        {
            "state": torch.tensor([[0], [1]]),
            "next": {
                "state": torch.tensor([[1], [2]]),
                "reward": torch.tensor([[1.0], [0.0]]),
                "done": torch.tensor([[False], [True]]),
                "terminated": torch.tensor([[False], [True]]),
            },
        },
        batch_size=[2],
    )


def test_loss_is_the_squared_td_error_and_terminal_states_are_not_bootstrapped():
    net = TensorDictModule(Table([0.5, 2.0, 10.0]), in_keys=["state"], out_keys=["state_value"])
    out = TDValueLoss(net, gamma=0.5)(transition_batch())
    # targets: 1 + 0.5 * 2.0 = 2.0 (error 1.5); 0 (terminated: no 10.0) (error 2.0)
    assert torch.isclose(out["loss_value"], torch.tensor((1.5**2 + 2.0**2) / 2))
    assert torch.isclose(out["td_error"], torch.tensor(1.75))


def test_gradients_reach_only_the_online_value():
    table = Table([0.5, 2.0, 10.0])
    net = TensorDictModule(table, in_keys=["state"], out_keys=["state_value"])
    total_loss(TDValueLoss(net, gamma=0.5)(transition_batch())).backward()
    # V(0) and V(1) are predictions; V(2) appears only as a (masked) target
    assert table.values.grad[0] != 0 and table.values.grad[1] != 0
    assert table.values.grad[2] == 0


def test_keys_are_renamed_by_role():
    net = TensorDictModule(Table([0.0, 1.0, 2.0]), in_keys=["state"], out_keys=["v"])
    batch = transition_batch()
    batch["next"].rename_key_("reward", "rew")
    loss = TDValueLoss(net, gamma=1.0).set_keys(value="v", reward="rew")
    assert torch.isfinite(loss(batch)["loss_value"])


def test_a_missing_key_is_named():
    net = TensorDictModule(Table([0.0, 1.0, 2.0]), in_keys=["state"], out_keys=["state_value"])
    batch = transition_batch().exclude(("next", "terminated"))
    with pytest.raises(MissingInputError, match="terminated"):
        TDValueLoss(net)(batch)


def test_gamma_is_validated():
    with pytest.raises(ObjectiveConfigError, match=r"gamma must be in \[0, 1\]"):
        TDValueLoss(ValueOperator(torch.nn.Linear(3, 1)), gamma=1.5)


def test_td_learning_finds_the_random_walk_values():
    # Sutton & Barto's random walk: under a uniformly random policy and gamma = 1, inner
    # state i of a 7-state chain has value i / 6.
    torch.manual_seed(0)
    env = ChainWalkEnv(length=7, batch_size=[64])
    env.set_seed(0)
    data = env.rollout(100, break_when_any_done=False).reshape(-1)
    value = ValueOperator(torch.nn.Linear(7, 1, bias=False))
    loss = TDValueLoss(value, gamma=1.0)
    optim = torch.optim.Adam(value.parameters(), lr=0.05)
    for _ in range(300):
        total_loss(loss(data)).backward()
        optim.step()
        optim.zero_grad()
    learned = value.module.weight.detach()[0, 1:6]
    assert torch.allclose(learned, torch.arange(1, 6) / 6, atol=0.05), learned


def test_the_plain_tensor_call_gives_the_same_terms():
    net = TensorDictModule(Table([0.5, 2.0, 10.0]), in_keys=["state"], out_keys=["state_value"])
    loss = TDValueLoss(net, gamma=0.5)
    batch = transition_batch()
    out = loss(
        state=batch["state"],
        next_state=batch["next", "state"],
        next_reward=batch["next", "reward"],
        next_terminated=batch["next", "terminated"],
    )
    assert isinstance(out, dict)
    assert torch.isclose(out["loss_value"], loss(batch)["loss_value"])
