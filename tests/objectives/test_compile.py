"""Every loss in a compiled update step (its loss compiled as one graph), against eager.

Same loss values, same gradients, and after a compiled ``make_update_step`` the same
parameters, buffers and priorities. (A separate compile of each bare loss module checked
the same graph a second time and was dropped to keep CI short.) Small linear networks keep
compiling short. Inductor is told to draw random numbers like eager (``fallback_random``)
so that sampled actions agree.

Backends: inductor (C++ code generation: seconds per graph on a CPU) for one loss of each
family, ``ClipPPOLoss`` (on-policy), ``SACLoss`` (stochastic off-policy) and ``DQNLoss``
(value-based); ``aot_eager`` for the others: the same Dynamo graph and AOTAutograd backward,
without code generation, which keeps a cold run of this file near a minute on 2 cores. With
torch 2.13 every loss also compiles to one graph with inductor and matches eager (checked by
hand: set every backend below to "inductor").
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._inductor.config as inductor_config
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torch.nn import functional as F

from rlblocks.core.specs import Categorical
from rlblocks.objectives import (
    A2CLoss,
    BCLoss,
    ClipPPOLoss,
    CQLLoss,
    CrossQLoss,
    DDPGLoss,
    DecisionTransformerLoss,
    DiscreteSACLoss,
    DistributionalDQNLoss,
    DQNLoss,
    DreamerModelLoss,
    DreamerValueLoss,
    GAILLoss,
    IndependentQLoss,
    IQLLoss,
    KLPENPPOLoss,
    MADDPGLoss,
    MAPPOLoss,
    MASACLoss,
    OnlineDTLoss,
    PPOLoss,
    QMixerLoss,
    REDQLoss,
    ReinforceLoss,
    SACLoss,
    TD3BCLoss,
    TD3Loss,
    TQCLoss,
    make_update_step,
)
from rlblocks.objectives.modules import RSSM, QValueActor, TanhNormal, WorldModel

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


def on_policy_batch(build):
    td = build.batch()
    g = torch.Generator().manual_seed(1)
    td["sample_log_prob"] = torch.randn(6, generator=g)
    td["advantage"] = torch.randn(6, 1, generator=g)
    td["value_target"] = torch.randn(6, 1, generator=g)
    # pi_old of KLPENPPOLoss, rebuilt from these.
    td["loc"], td["scale"] = torch.randn(6, 2, generator=g), torch.rand(6, 2, generator=g) + 0.5
    return td


def discrete_batch(build, one_hot=False):
    index = torch.tensor([0, 1, 2, 2, 1, 0])
    return build.batch(action=F.one_hot(index, 3) if one_hot else index)


def prioritized_discrete_batch(build):
    """A prioritized replay sample: importance weights ride along under ``"_weight"``."""
    return discrete_batch(build).set("_weight", torch.linspace(0.25, 1.0, 6))


def grouped_on_policy_batch(build):
    """``[2, 5]`` trajectories of 3 agents without advantages: GAE runs in the graph."""
    td = build.grouped.batch(shape=(2, 5))
    td["agents", "sample_log_prob"] = torch.randn(
        2, 5, 3, generator=torch.Generator().manual_seed(1)
    )
    return td


def grouped_discrete_batch(build):
    return build.grouped.batch(action=torch.arange(18).reshape(6, 3) % 3)


def q_actor():
    torch.manual_seed(3)
    return QValueActor(nn.Linear(3, 3), spec=Categorical(3))


def plain_batch(build):
    return build.batch()


def actor_critic(cls):
    return lambda b: cls(b.gaussian_actor(), b.critic())


def deterministic(cls):
    return lambda b: cls(b.deterministic_actor(), b.qvalue())


def squashed(cls, **kwargs):
    return lambda b: cls(b.gaussian_actor(TanhNormal), b.qvalue(), **kwargs)


def td3bc(build):
    """TD3+BC with ``Q_1`` away from 0: ``lmbd = alpha / mean|Q_1|`` keeps the relative
    rounding of ``Q_1``, which is small only for values that are not."""
    qvalue = build.qvalue()
    with torch.no_grad():
        qvalue.module[-1].bias.add_(2.0)
    return TD3BCLoss(build.deterministic_actor(), qvalue)


NARROW_DT = {"n_embd": 4, "n_inner": 4, "n_head": 1}


def still_dt_batch(build):
    """Slices whose actions are the initial policy's mean (0): the likelihood's gradients,
    which grow as 1 / scale^2, stay moderate."""
    td = build.dt_batch()
    td["action"] = torch.zeros_like(td["action"])
    return td


INDUCTOR, AOT_EAGER = "inductor", "aot_eager"


# loss -> (build the loss, build a batch, backend)
def world_model():
    """A small Dreamer world model on 3-dim observations and 1-dim actions.

    Compiled and eager gradients agree to a few ulps; two Adam steps at lr=0.05 bring the
    posterior's weights within 3e-6 of each other with this seed (1e-5 is float32's
    tolerance; seeds 0-1 land just above it, 2-5 below).
    """
    torch.manual_seed(4)
    rssm = RSSM(1, 8, state_dim=4, belief_dim=8, hidden_dim=8)
    return WorldModel(nn.Linear(3, 8), rssm, nn.Linear(12, 3), nn.Linear(12, 1))


def sequence_batch(build):
    """``[2, 4]`` sequences, as the slice sampler gives them; the filter's loop over the 4
    steps is unrolled into the graph."""
    generator = torch.Generator().manual_seed(0)
    return TensorDict(
        {
            "action": torch.rand(2, 4, 1, generator=generator),
            ("next", "observation"): torch.randn(2, 4, 3, generator=generator),
            ("next", "reward"): torch.randn(2, 4, 1, generator=generator),
        },
        [2, 4],
    )


def imagined_batch(build):
    generator = torch.Generator().manual_seed(0)
    return TensorDict(
        {
            "state": torch.randn(6, 3, 4, generator=generator),
            "belief": torch.randn(6, 3, 8, generator=generator),
            "lambda_target": torch.randn(6, 3, 1, generator=generator),
            "discount_weight": torch.rand(6, 3, 1, generator=generator),
        },
        [6, 3],
    )


def latent_value():
    torch.manual_seed(0)
    return TensorDictModule(
        lambda s, b: torch.cat([s, b], -1), in_keys=["state", "belief"], out_keys=["features"]
    ), TensorDictModule(nn.Linear(12, 1), ["features"], ["state_value"])


CASES = {
    "ClipPPOLoss": (actor_critic(ClipPPOLoss), on_policy_batch, INDUCTOR),
    "PPOLoss": (actor_critic(PPOLoss), on_policy_batch, AOT_EAGER),
    "KLPENPPOLoss": (actor_critic(KLPENPPOLoss), on_policy_batch, AOT_EAGER),
    "A2CLoss": (actor_critic(A2CLoss), on_policy_batch, AOT_EAGER),
    # Without a critic: Monte-Carlo returns from the batch.
    "ReinforceLoss": (lambda b: ReinforceLoss(b.gaussian_actor()), plain_batch, AOT_EAGER),
    "DQNLoss": (lambda b: DQNLoss(q_actor()), discrete_batch, INDUCTOR),
    # C51: the categorical projection (scatter_add) in the graph.
    "DistributionalDQNLoss": (
        lambda b: DistributionalDQNLoss(b.distributional_actor()),
        prioritized_discrete_batch,  # Rainbow's: the weighted mean in the graph too
        AOT_EAGER,
    ),
    "DDPGLoss": (deterministic(DDPGLoss), plain_batch, AOT_EAGER),
    "TD3Loss": (deterministic(TD3Loss), plain_batch, AOT_EAGER),
    "SACLoss": (squashed(SACLoss), plain_batch, INDUCTOR),
    # Critic ensembles as one torch.vmap over stacked parameters: REDQ's random subset,
    # CrossQ's joint pass (its batch renormalization, past a 1-step warm-up, updates running
    # statistics in the graph, then the actor's term reads them: inductor, whose partitioner
    # would recompute those reads after the update), TQC's sorted and truncated quantiles.
    "REDQLoss": (squashed(REDQLoss, num_qvalue_nets=3), plain_batch, AOT_EAGER),
    "CrossQLoss": (
        lambda b: CrossQLoss(
            b.gaussian_actor(TanhNormal), b.renorm_qvalue(bias=False, warmup_steps=1)
        ),
        plain_batch,
        INDUCTOR,
    ),
    "TQCLoss": (
        lambda b: TQCLoss(
            b.gaussian_actor(TanhNormal), b.qvalue(out_features=3), top_quantiles_to_drop_per_net=1
        ),
        plain_batch,
        AOT_EAGER,
    ),
    "CQLLoss": (squashed(CQLLoss, num_random=2), plain_batch, AOT_EAGER),
    "DiscreteSACLoss": (
        lambda b: DiscreteSACLoss(b.categorical_actor(), b.action_values(), num_actions=3),
        lambda b: discrete_batch(b, one_hot=True),
        AOT_EAGER,
    ),
    "IQLLoss": (
        lambda b: IQLLoss(b.gaussian_actor(), b.qvalue(), b.critic()),
        plain_batch,
        AOT_EAGER,
    ),
    "BCLoss": (lambda b: BCLoss(b.gaussian_actor()), plain_batch, AOT_EAGER),
    "TD3BCLoss": (td3bc, plain_batch, AOT_EAGER),
    # Causal transformers over padded slices [2, 4] (DT: the mask read as attention mask).
    # The compiled update step's first Adam step rounds a few ulps differently from eager;
    # at lr=0.05 (2.5x the init scale of the weights) a transformer's second gradient
    # amplifies that into ~1e-3 relative differences of its small entries. The narrow
    # networks and seeds below keep the result within float32 tolerance with a margin (at
    # least 2x, measured); wider ones or other seeds may not be.
    "DecisionTransformerLoss": (
        lambda b: DecisionTransformerLoss(b.dt_actor(seed=2, mask=True, **NARROW_DT)),
        lambda b: b.dt_batch(),
        AOT_EAGER,
    ),
    "OnlineDTLoss": (
        lambda b: OnlineDTLoss(b.dt_actor(online=True, **NARROW_DT)),
        still_dt_batch,
        AOT_EAGER,
    ),
    # With the gradient penalty: D's input gradient (torch.func.vjp) and a random draw.
    "GAILLoss": (
        lambda b: GAILLoss(b.discriminator(), use_grad_penalty=True),
        lambda b: b.gail_batch(),
        AOT_EAGER,
    ),
    # Over a group of 3 agents, env-level flags broadcast over them.
    "MAPPOLoss": (
        lambda b: MAPPOLoss(b.grouped.gaussian_actor(), b.grouped.critic()),
        grouped_on_policy_batch,
        AOT_EAGER,
    ),
    "MADDPGLoss": (
        lambda b: MADDPGLoss(b.grouped.deterministic_actor(), b.grouped.qvalue()),
        lambda b: b.grouped.batch(),
        AOT_EAGER,
    ),
    "MASACLoss": (
        lambda b: MASACLoss(b.grouped.gaussian_actor(TanhNormal), b.grouped.qvalue()),
        lambda b: b.grouped.batch(),
        AOT_EAGER,
    ),
    "IndependentQLoss": (
        lambda b: IndependentQLoss(b.grouped.action_values()),
        grouped_discrete_batch,
        AOT_EAGER,
    ),
    # Dreamer's world model (free nats low enough for the KL to train) and its value. The
    # actor loss rolls out in a ModelBasedEnv, whose loop stays eager: its models compile
    # (benchmarks/dreamer.py), the loss as one graph does not.
    "DreamerModelLoss": (
        lambda b: DreamerModelLoss(world_model(), free_nats=0.01),
        sequence_batch,
        AOT_EAGER,
    ),
    "DreamerValueLoss": (
        lambda b: DreamerValueLoss(TensorDictSequential(*latent_value())),
        imagined_batch,
        AOT_EAGER,
    ),
    # Multi-agent: per-agent Q-networks (MultiAgentMLP) mixed by QMIX's hypernetworks.
    "QMixerLoss": (
        lambda b: QMixerLoss(b.agents_qvalue(), b.qmixer()),
        lambda b: b.agents_batch(),
        AOT_EAGER,
    ),
}


def assert_same_grads(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if e is None:
            assert g is None
        else:
            torch.testing.assert_close(g, e)


def assert_same_terms(got, expected):
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():
        torch.testing.assert_close(got[key], expected[key], msg=key)


@pytest.fixture(autouse=True)
def kl_looked_up(build):
    """dynamo traces kl_divergence's memo, not its first lookup of a pair of distribution
    types (KLPENPPOLoss's docstring): the documented eager call first, on another loss."""
    loss = actor_critic(KLPENPPOLoss)(build)
    loss(on_policy_batch(build))


def two_updates(build, name, compile):
    """Outputs, gradients, batches and state of two update steps from the same start."""
    make_loss, make_batch, _ = CASES[name]
    loss = make_loss(build)
    optimizer = torch.optim.Adam(loss.parameters(), lr=0.05)
    update = make_update_step(loss, optimizer, max_grad_norm=1.0, compile=compile)
    record = []
    for seed in (0, 1):  # the second call reuses the compiled graphs
        batch = make_batch(build)
        torch.manual_seed(seed)
        out = update(batch)
        grads = [None if p.grad is None else p.grad.clone() for p in loss.parameters()]
        state = {k: v.clone() for k, v in loss.state_dict().items()}
        record.append((out, grads, batch, state))
    assert update.compiled == bool(compile)
    return record


@pytest.mark.parametrize("name", CASES)
def test_compiled_update_step_matches_eager(build, name):
    """The update step compiles the loss with ``fullgraph=True`` (one graph: a graph break
    would fall back to eager, and ``update.compiled`` would be False) and then matches eager
    in values, gradients, parameters, buffers and priorities, also when a second call reuses
    the compiled graphs."""
    backend = CASES[name][2]
    # A recompile at the second call (state the loss builds at its first call, read by the
    # graph's guards) would compile each update twice: it raises here, and the step falls
    # back to eager, which two_updates reports.
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = two_updates(build, name, compile={"backend": backend})  # compiled first
    eager = two_updates(build, name, compile=False)
    for (out, grads, batch, state), (e_out, e_grads, e_batch, e_state) in zip(compiled, eager):
        assert not any(v.requires_grad for v in out.values())
        assert "grad_norm" in out.keys()
        assert_same_terms(out, e_out)
        assert_same_grads(grads, e_grads)
        # Priorities written back into the batch (off-policy losses).
        assert set(batch.keys(True)) == set(e_batch.keys(True))
        if "td_error" in e_batch.keys():
            torch.testing.assert_close(batch["td_error"], e_batch["td_error"])
        # Parameters, target networks and buffers (e.g. KLPENPPOLoss's beta).
        assert_same_terms(state, e_state)
