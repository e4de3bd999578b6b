"""Small hand-built networks and batches shared by the objectives tests."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import distributions as D
from torch import nn

from rlblocks.core.specs import Bounded
from rlblocks.objectives.modules import (
    MLP,
    Actor,
    OneHotCategorical,
    ProbabilisticActor,
    TanhNormal,
    ValueOperator,
)

OBS, ACT = 3, 2


class Build:
    """Factories; every network is seeded so that tests are reproducible."""

    obs = OBS
    act = ACT
    spec = Bounded(-1.0, 1.0, shape=(ACT,))

    @staticmethod
    def gaussian_actor(distribution=D.Normal, seed=0, **kwargs):
        """``loc, scale = split(Linear(obs))``; a plain Normal gives per-dim log-probs."""
        torch.manual_seed(seed)
        net = TensorDictModule(
            nn.Sequential(nn.Linear(OBS, 2 * ACT), NormalParamExtractor()),
            in_keys=["observation"],
            out_keys=["loc", "scale"],
        )
        if distribution is TanhNormal:
            kwargs.setdefault("spec", Build.spec)
        return ProbabilisticActor(
            net, ["loc", "scale"], distribution_class=distribution, return_log_prob=True, **kwargs
        )

    @staticmethod
    def categorical_actor(n=3, seed=0):
        torch.manual_seed(seed)
        net = TensorDictModule(nn.Linear(OBS, n), in_keys=["observation"], out_keys=["logits"])
        return ProbabilisticActor(
            net, ["logits"], distribution_class=OneHotCategorical, return_log_prob=True
        )

    @staticmethod
    def deterministic_actor(seed=0):
        torch.manual_seed(seed)
        return Actor(nn.Sequential(nn.Linear(OBS, ACT), nn.Tanh()))

    @staticmethod
    def critic(seed=1):
        torch.manual_seed(seed)
        return ValueOperator(nn.Linear(OBS, 1))

    @staticmethod
    def qvalue(seed=2):
        """``Q(s, a)`` = MLP on the concatenation; writes ``state_action_value``."""
        torch.manual_seed(seed)
        return ValueOperator(MLP(OBS + ACT, 1, num_cells=[8]), in_keys=["observation", "action"])

    @staticmethod
    def action_values(n=3, seed=2):
        torch.manual_seed(seed)
        return TensorDictModule(
            nn.Linear(OBS, n), in_keys=["observation"], out_keys=["action_value"]
        )

    @staticmethod
    def batch(shape=(6,), action=None, seed=0):
        """Transitions with a termination and a truncation."""
        g = torch.Generator().manual_seed(seed)
        shape = tuple(shape)
        if action is None:
            action = torch.rand(*shape, ACT, generator=g) * 1.8 - 0.9
        terminated = torch.zeros(*shape, 1, dtype=torch.bool)
        truncated = torch.zeros(*shape, 1, dtype=torch.bool)
        terminated.view(-1)[1] = True
        truncated.view(-1)[2] = True
        return TensorDict(
            {
                "observation": torch.randn(*shape, OBS, generator=g),
                "action": action,
                "next": {
                    "observation": torch.randn(*shape, OBS, generator=g),
                    "reward": torch.randn(*shape, 1, generator=g),
                    "done": terminated | truncated,
                    "terminated": terminated,
                    "truncated": truncated,
                },
            },
            batch_size=shape,
        )

    @staticmethod
    def tensors(td):
        """The plain-tensor keyword arguments of ``td`` (``next_reward=...``)."""
        return {
            "_".join(k) if isinstance(k, tuple) else k: v
            for k, v in td.items(include_nested=True, leaves_only=True)
        }

    @staticmethod
    def grads(term, module):
        """Gradients of ``term`` w.r.t. ``module``'s parameters (``None``: no path)."""
        params = [p for p in module.parameters() if p.requires_grad]
        return torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)

    @staticmethod
    def assert_no_grad(term, module):
        assert all(g is None for g in Build.grads(term, module)), "unexpected gradient"

    @staticmethod
    def assert_same_grads(term, reference, module):
        """``term`` and ``reference`` have the same (nonzero) gradients in ``module``."""
        got, expected = Build.grads(term, module), Build.grads(reference, module)
        assert any(e is not None and bool(e.abs().sum() > 0) for e in expected)
        for g, e in zip(got, expected):
            if e is None:
                assert g is None or bool((g == 0).all())
            else:
                torch.testing.assert_close(g, e)


@pytest.fixture
def build():
    return Build
