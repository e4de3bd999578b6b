"""MLP and ConvNet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules import MLP, ConvNet


def test_mlp_layers_and_lazy_input():
    net = MLP(out_features=2, num_cells=[16, 8], activation_class=nn.ReLU)
    assert isinstance(net[0], nn.LazyLinear)
    assert net(torch.randn(5, 7, 3)).shape == (5, 7, 2)
    linear = [m for m in net if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linear] == [16, 8, 2]
    assert sum(isinstance(m, nn.ReLU) for m in net) == 2


def test_mlp_depth_default_and_options():
    net = MLP(4, 3)
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [32, 32, 32, 3]
    net = MLP(4, 3, num_cells=10, depth=1, activate_last_layer=True)
    assert isinstance(net[-1], nn.Tanh)
    shaped = MLP(4, (2, 3), num_cells=[5])
    assert shaped(torch.zeros(6, 4)).shape == (6, 2, 3)
    linear = MLP(4, 1, depth=0)
    assert len(linear) == 1


def test_mlp_concatenates_several_inputs():
    torch.manual_seed(0)
    net = MLP(5, 1, num_cells=[4])
    obs, act = torch.randn(3, 3), torch.randn(3, 2)
    torch.testing.assert_close(net(obs, act), net(torch.cat([obs, act], -1)))


def test_mlp_bad_arguments():
    with pytest.raises(ObjectiveConfigError, match="out_features"):
        MLP(3)
    with pytest.raises(ObjectiveConfigError, match="depth=2 disagrees"):
        MLP(3, 1, num_cells=[4], depth=2)


def test_convnet_shapes_with_batch_dims():
    net = ConvNet(num_cells=[4, 8], kernel_sizes=[3, 3], strides=[2, 1], paddings=1)
    out = net(torch.zeros(2, 5, 3, 16, 16))
    # 16x16 -> 8x8 (stride 2, pad 1) -> 8x8: 8 channels * 64
    assert out.shape == (2, 5, 8 * 8 * 8)
    assert net(torch.zeros(3, 16, 16)).shape == (8 * 8 * 8,)
    fixed = ConvNet(3, num_cells=[2])
    assert isinstance(fixed.layers[0], nn.Conv2d) and fixed.layers[0].in_channels == 3


def test_convnet_bad_input():
    with pytest.raises(ObjectiveConfigError, match=r"\[\*batch, C, H, W\]"):
        ConvNet(num_cells=[2])(torch.zeros(4, 4))
    with pytest.raises(ObjectiveConfigError, match="kernel_sizes has 1 entries but there are 2"):
        ConvNet(num_cells=[2, 2], kernel_sizes=[3])
