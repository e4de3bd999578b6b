"""ClipPPOLoss and SACLoss under torch.compile (one graph, same values and gradients as eager).

Small linear networks keep the compile short. Inductor is told to draw random numbers
like eager (``fallback_random``) so that SAC's sampled actions agree.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._inductor.config as inductor_config

from rlblocks.objectives import ClipPPOLoss, SACLoss, total_loss
from rlblocks.objectives.modules import TanhNormal

# Inductor's own import trips torch's deprecation of torch.jit (not our code).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)


@pytest.fixture(autouse=True)
def eager_random():
    torch._dynamo.reset()
    with inductor_config.patch(fallback_random=True):
        yield
    torch._dynamo.reset()


def run(loss, td, seed):
    torch.manual_seed(seed)
    out = loss(td.clone())
    params = list(loss.parameters())
    grads = torch.autograd.grad(total_loss(out), params, allow_unused=True)
    return {k: v.detach() for k, v in out.items()}, grads


def assert_compiled_matches_eager(loss, td):
    eager_out, eager_grads = run(loss, td, seed=0)
    compiled = torch.compile(loss, fullgraph=True)
    for seed in (0, 0):  # the second call reuses the compiled graph
        out, grads = run(compiled, td, seed)
        assert set(out.keys()) == set(eager_out.keys())
        for key in eager_out.keys():
            torch.testing.assert_close(out[key], eager_out[key], msg=key)
        for got, expected in zip(grads, eager_grads):
            if expected is None:
                assert got is None
            else:
                torch.testing.assert_close(got, expected)


def test_clip_ppo_compiles(build):
    actor, critic = build.gaussian_actor(), build.critic()
    td = build.batch()
    td["sample_log_prob"] = torch.randn(6)
    td["advantage"] = torch.randn(6, 1)
    td["value_target"] = torch.randn(6, 1)
    assert_compiled_matches_eager(ClipPPOLoss(actor, critic), td)


def test_sac_compiles(build):
    loss = SACLoss(build.gaussian_actor(TanhNormal), build.qvalue())
    assert_compiled_matches_eager(loss, build.batch())
