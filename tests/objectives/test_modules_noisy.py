"""NoisyLinear (factorised Gaussian noise), NoisyLazyLinear and reset_noise."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rlblocks.core.specs import Categorical
from rlblocks.objectives import DQNLoss, ObjectiveConfigError, total_loss
from rlblocks.objectives.modules import (
    MLP,
    NoisyLazyLinear,
    NoisyLinear,
    QValueActor,
    reset_noise,
)


def test_new_noise_changes_the_output_in_train_mode_and_keeps_it_until_reset():
    torch.manual_seed(0)
    layer = NoisyLinear(4, 3)
    x = torch.randn(5, 4)
    first = layer(x)
    torch.testing.assert_close(layer(x), first)  # the noise stays until reset
    layer.reset_noise()
    second = layer(x)
    assert not torch.allclose(first, second)
    expected = x @ (layer.weight_mu + layer.weight_sigma * layer.weight_epsilon).T
    torch.testing.assert_close(
        second, expected + layer.bias_mu + layer.bias_sigma * layer.bias_epsilon
    )


def test_eval_mode_uses_the_mean_weights_whatever_the_noise():
    torch.manual_seed(0)
    layer = NoisyLinear(4, 3).eval()
    x = torch.randn(5, 4)
    first = layer(x)
    layer.reset_noise()
    torch.testing.assert_close(layer(x), first)
    torch.testing.assert_close(first, x @ layer.weight_mu.T + layer.bias_mu)
    assert layer.weight is layer.weight_mu and layer.bias is layer.bias_mu
    layer.train()
    assert not torch.allclose(layer(x), first)


def test_initialization_follows_torchrl():
    torch.manual_seed(0)
    layer = NoisyLinear(400, 100, std_init=0.5)
    bound = 1 / math.sqrt(400)
    mu, bias_mu = layer.weight_mu.detach(), layer.bias_mu.detach()
    assert float(mu.abs().max()) <= bound and float(bias_mu.abs().max()) <= bound
    assert float(mu.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform
    assert torch.all(layer.weight_sigma == 0.5 / math.sqrt(400))
    assert torch.all(layer.bias_sigma == 0.5 / math.sqrt(100))


def test_noise_is_factorised_with_the_papers_statistics():
    torch.manual_seed(0)
    n_in, n_out = 3000, 2000
    layer = NoisyLinear(n_in, n_out)
    eps_w, eps_b = layer.weight_epsilon, layer.bias_epsilon
    # Rank one: eps_w[i, j] = f(e_i) f(e_j), with the bias noise f(e_i) as the column.
    eps_in = eps_w[0] / eps_b[0]
    torch.testing.assert_close(eps_w, torch.outer(eps_b, eps_in))
    # f(e) = sign(e) sqrt(|e|): mean 0, E[f^2] = E|e| = sqrt(2 / pi), symmetric.
    for noise in (eps_b, eps_in):
        assert abs(float(noise.mean())) < 0.05
        assert float((noise**2).mean()) == pytest.approx(math.sqrt(2 / math.pi), rel=0.05)
        assert float((noise > 0).float().mean()) == pytest.approx(0.5, abs=0.05)
    # Each weight's noise: mean 0, E[eps^2] = 2 / pi.
    assert abs(float(eps_w.mean())) < 0.01
    assert float((eps_w**2).mean()) == pytest.approx(2 / math.pi, rel=0.05)


def test_gradients_reach_mu_and_sigma():
    torch.manual_seed(0)
    layer = NoisyLinear(4, 3)
    x = torch.randn(5, 4)
    layer(x).pow(2).sum().backward()
    assert layer.weight_mu.grad.abs().sum() > 0 and layer.weight_sigma.grad.abs().sum() > 0
    # d/d sigma = eps * d/d mu, entry by entry (w = mu + sigma * eps).
    torch.testing.assert_close(layer.weight_sigma.grad, layer.weight_mu.grad * layer.weight_epsilon)
    torch.testing.assert_close(layer.bias_sigma.grad, layer.bias_mu.grad * layer.bias_epsilon)
    assert not layer.weight_epsilon.requires_grad
    # The mean network (eval) does not depend on sigma.
    layer.zero_grad()
    layer.eval()(x).sum().backward()
    assert layer.weight_sigma.grad is None or bool((layer.weight_sigma.grad == 0).all())


def test_without_bias():
    layer = NoisyLinear(4, 3, bias=False)
    assert layer.bias is None and layer.bias_epsilon is None
    assert {name for name, _ in layer.named_parameters()} == {"weight_mu", "weight_sigma"}
    assert layer(torch.randn(2, 4)).shape == (2, 3)


def test_state_dict_holds_the_noise_and_round_trips():
    torch.manual_seed(0)
    layer = NoisyLinear(4, 3)
    state = layer.state_dict()
    assert set(state) == {
        "weight_mu", "weight_sigma", "weight_epsilon", "bias_mu", "bias_sigma", "bias_epsilon"
    }  # fmt: skip
    copy = NoisyLinear(4, 3)
    copy.load_state_dict(state)
    x = torch.randn(2, 4)
    torch.testing.assert_close(copy(x), layer(x))


def test_bad_std_init_names_the_argument():
    with pytest.raises(ObjectiveConfigError, match=r"std_init must be .*got -0\.1"):
        NoisyLinear(4, 3, std_init=-0.1)


def test_lazy_layer_sizes_itself_and_becomes_a_noisy_linear():
    torch.manual_seed(0)
    layer = NoisyLazyLinear(3)
    out = layer(torch.randn(5, 7))
    assert out.shape == (5, 3)
    assert type(layer) is NoisyLinear and layer.in_features == 7
    assert layer.weight_mu.shape == layer.weight_epsilon.shape == (3, 7)
    assert float(layer.weight_epsilon.abs().sum()) > 0  # noise drawn at initialization
    assert torch.all(layer.weight_sigma == 0.1 / math.sqrt(7))


def test_reset_noise_reaches_every_noisy_layer_of_a_loss():
    torch.manual_seed(0)
    actor = QValueActor(MLP(3, 2, num_cells=[8], layer_class=NoisyLinear), spec=Categorical(2))
    loss = DQNLoss(actor)  # online and target network: 2 noisy layers each
    layers = [m for m in loss.modules() if isinstance(m, NoisyLinear)]
    before = [m.weight_epsilon.clone() for m in layers]
    assert reset_noise(loss) == 4
    assert all(not torch.equal(b, m.weight_epsilon) for b, m in zip(before, layers))
    assert reset_noise(nn.Linear(2, 2)) == 0
    # The target copy keeps noisy weights (its parameters are buffers) and trains nothing.
    batch = {
        "observation": torch.randn(6, 3),
        "action": torch.randint(2, (6,)),
        "next_observation": torch.randn(6, 3),
        "next_reward": torch.randn(6, 1),
        "next_done": torch.zeros(6, 1, dtype=torch.bool),
    }
    total_loss(loss(**batch)).backward()
    assert actor.module[0].module[0].weight_sigma.grad is not None
