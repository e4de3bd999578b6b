"""Epsilon-greedy, additive Gaussian and Ornstein-Uhlenbeck exploration."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.specs import Bounded, Categorical, OneHot
from rlblocks.objectives.errors import ObjectiveConfigError
from rlblocks.objectives.modules import (
    AdditiveGaussianModule,
    EGreedyModule,
    OrnsteinUhlenbeckProcessModule,
)


def actions(action):
    return TensorDict(action=action, batch_size=action.shape[:1])


def test_egreedy_replaces_actions_only_when_exploring():
    spec = Categorical(5)
    module = EGreedyModule(spec, eps_init=1.0, eps_end=0.0, annealing_num_steps=10)
    greedy = torch.zeros(1000, dtype=torch.long)
    explored = module(actions(greedy.clone()))["action"]
    assert spec.is_in(explored) and (explored != 0).float().mean() > 0.6
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert torch.equal(module(actions(greedy.clone()))["action"], greedy)
    module.step(10)
    assert module.eps == 0.0
    assert torch.equal(module(actions(greedy.clone()))["action"], greedy)


def test_egreedy_anneals_linearly_and_saves_eps():
    module = EGreedyModule(Categorical(2), eps_init=1.0, eps_end=0.1, annealing_num_steps=100)
    module.step(50)
    assert module.eps == pytest.approx(0.55)
    module.step(1000)
    assert module.eps == pytest.approx(0.1)
    fresh = EGreedyModule(Categorical(2), eps_init=1.0, eps_end=0.1, annealing_num_steps=100)
    fresh.load_state_dict(module.state_dict())
    assert fresh.eps == pytest.approx(0.1)
    with pytest.raises(ObjectiveConfigError, match="eps_init"):
        EGreedyModule(Categorical(2), eps_init=2.0)


def test_egreedy_one_hot_and_mask():
    spec = OneHot(4)
    module = EGreedyModule(spec, eps_init=1.0, eps_end=1.0, action_mask_key="mask")
    greedy = torch.nn.functional.one_hot(torch.zeros(500, dtype=torch.long), 4).bool()
    mask = torch.tensor([False, True, False, True]).expand(500, 4)
    td = TensorDict(action=greedy, mask=mask, batch_size=[500])
    out = module(td)["action"]
    assert spec.is_in(out)
    chosen = out.int().argmax(-1)
    assert set(chosen.tolist()) == {1, 3}


def test_additive_gaussian_noise_projection_and_annealing():
    spec = Bounded(-1.0, 1.0, shape=(2,))
    module = AdditiveGaussianModule(spec, sigma_init=0.5, sigma_end=0.1, annealing_num_steps=4)
    base = torch.zeros(4000, 2)
    noisy = module(actions(base.clone()))["action"]
    assert spec.is_in(noisy)
    assert abs(noisy.std().item() - 0.5) < 0.05
    with set_exploration_type(ExplorationType.MODE):
        assert torch.equal(module(actions(base.clone()))["action"], base)
    module.step(4)
    assert module.sigma == pytest.approx(0.1)
    wide = AdditiveGaussianModule(spec, sigma_init=10.0, sigma_end=10.0)
    assert spec.is_in(wide(actions(base.clone()))["action"])


def test_ornstein_uhlenbeck_follows_its_recursion_and_resets():
    spec = Bounded(-10.0, 10.0, shape=(1,))
    module = OrnsteinUhlenbeckProcessModule(spec, theta=0.5, sigma=0.3, dt=0.1, mu=1.0)
    td = TensorDict(action=torch.zeros(3, 1), batch_size=[3])
    torch.manual_seed(0)
    module(td)
    module(td.update({"action": torch.zeros(3, 1)}))
    torch.manual_seed(0)
    x = torch.zeros(3, 1)
    for _ in range(2):
        x = x + 0.5 * (1.0 - x) * 0.1 + 0.3 * math.sqrt(0.1) * torch.randn(3, 1)
    torch.testing.assert_close(td["_ou_prev_noise"], x)
    torch.testing.assert_close(td["action"], x)  # eps = 1 at the start
    assert td["_ou_steps"].tolist() == [[2], [2], [2]]
    td.update({"action": torch.zeros(3, 1), "is_init": torch.tensor([[True], [False], [False]])})
    module(td)
    assert td["_ou_steps"].tolist() == [[1], [3], [3]]
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        before = td["_ou_prev_noise"].clone()
        module(td.update({"action": torch.zeros(3, 1)}))
        assert torch.equal(td["action"], torch.zeros(3, 1))
        assert torch.equal(td["_ou_prev_noise"], before)


def test_exploration_needs_a_spec():
    with pytest.raises(ObjectiveConfigError, match="action spec"):
        AdditiveGaussianModule(None)
    with pytest.raises(ObjectiveConfigError, match="annealing_num_steps"):
        AdditiveGaussianModule(Bounded(-1.0, 1.0, shape=(1,)), annealing_num_steps=0)
