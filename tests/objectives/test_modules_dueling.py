"""DuelingMlpDQNet: Q = V + A - mean(A), TorchRL's arguments, distributional and noisy heads."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from rlblocks.core.specs import Categorical
from rlblocks.objectives import DQNLoss, ObjectiveConfigError, total_loss
from rlblocks.objectives.modules import (
    MLP,
    DistributionalQValueActor,
    DuelingMlpDQNet,
    NoisyLinear,
    QValueActor,
)

SMALL = {
    "mlp_kwargs_feature": {"in_features": 3, "num_cells": [8], "out_features": 8},
    "mlp_kwargs_output": {"in_features": 8, "num_cells": 8},
}


def test_q_is_value_plus_centred_advantage():
    torch.manual_seed(0)
    net = DuelingMlpDQNet(4, **SMALL)
    x = torch.randn(6, 3)
    q = net(x)
    hidden = net.features(x)
    value, advantage = net.value(hidden), net.advantage(hidden)
    assert value.shape == (6, 1) and advantage.shape == (6, 4)
    torch.testing.assert_close(q, value + advantage - advantage.mean(-1, keepdim=True))
    # The centring makes V identifiable: it is the mean of Q over actions.
    torch.testing.assert_close(q.mean(-1, keepdim=True), value)
    # Greedy actions are those of the advantage.
    assert torch.equal(q.argmax(-1), advantage.argmax(-1))


def test_torchrl_defaults_lazy_elu_trunk_and_heads():
    net = DuelingMlpDQNet(2)
    assert all(isinstance(part, MLP) for part in (net.features, net.advantage, net.value))
    linears = [m for m in net.features if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [256, 256, 256]
    assert isinstance(net.features[-1], nn.ELU)  # the trunk's last layer is activated
    assert [m.out_features for m in net.advantage if isinstance(m, nn.Linear)] == [512, 2]
    assert [m.out_features for m in net.value if isinstance(m, nn.Linear)] == [512, 1]
    assert net(torch.zeros(1, 5)).shape == (1, 2)  # lazy: sized by the first call
    assert net.out_features == 2 and net.out_features_value == 1


def test_distributional_dueling_heads_centre_over_actions_per_atom():
    torch.manual_seed(0)
    atoms, n = 5, 3
    net = DuelingMlpDQNet((atoms, n), (atoms, 1), **SMALL)
    x = torch.randn(2, 4, 3)  # two batch dims
    out = net(x)
    assert out.shape == (2, 4, atoms, n)
    torch.testing.assert_close(out.mean(-1, keepdim=True), net.value(net.features(x)))
    actor = DistributionalQValueActor(net, torch.linspace(-1, 1, atoms), spec=Categorical(n))
    td = actor(TensorDict(observation=x, batch_size=[2, 4]))
    torch.testing.assert_close(td["action_value"].exp().sum(-2), torch.ones(2, 4, n))


@pytest.mark.parametrize(
    ("out_features", "out_features_value"), [((5, 3), 1), (3, 2), ((5, 3), (4, 1))]
)
def test_value_head_must_line_up_with_the_advantage(out_features, out_features_value):
    with pytest.raises(ObjectiveConfigError, match=r"out_features_value=.*\(n_atoms, 1\)"):
        DuelingMlpDQNet(out_features, out_features_value)


def test_torchrl_bias_last_layer_argument():
    kwargs = {**SMALL["mlp_kwargs_output"], "bias_last_layer": True}
    net = DuelingMlpDQNet(
        2, mlp_kwargs_feature=SMALL["mlp_kwargs_feature"], mlp_kwargs_output=kwargs
    )
    assert net.advantage[-1].bias is not None
    with pytest.raises(ObjectiveConfigError, match="bias_last_layer=False"):
        DuelingMlpDQNet(2, mlp_kwargs_output={"bias_last_layer": False})


def test_noisy_dueling_network_trains_with_dqn():
    torch.manual_seed(0)
    output = {**SMALL["mlp_kwargs_output"], "layer_class": NoisyLinear}
    net = DuelingMlpDQNet(
        2, mlp_kwargs_feature=SMALL["mlp_kwargs_feature"], mlp_kwargs_output=output
    )
    assert sum(isinstance(m, NoisyLinear) for m in net.modules()) == 4
    loss = DQNLoss(QValueActor(net, spec=Categorical(2)))
    out = loss(
        observation=torch.randn(6, 3),
        action=torch.randint(2, (6,)),
        next_observation=torch.randn(6, 3),
        next_reward=torch.randn(6, 1),
        next_done=torch.zeros(6, 1, dtype=torch.bool),
    )
    total_loss(out).backward()
    assert net.advantage[-1].weight_sigma.grad.abs().sum() > 0
    assert net.value[-1].weight_mu.grad.abs().sum() > 0
    assert net.features[0].weight.grad.abs().sum() > 0
