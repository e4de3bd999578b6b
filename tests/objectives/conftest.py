"""Small hand-built networks and batches shared by the objectives tests."""

from __future__ import annotations

import functools

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule, TensorDictSequential
from torch import distributions as D
from torch import nn
from torch.nn import functional as F

from rlblocks.core.specs import Bounded, Categorical, OneHot
from rlblocks.objectives.modules import (
    MLP,
    Actor,
    BatchRenorm1d,
    DistributionalQValueActor,
    DTActor,
    MultiAgentMLP,
    OneHotCategorical,
    OnlineDTActor,
    ProbabilisticActor,
    QMixer,
    QValueModule,
    TanhNormal,
    ValueOperator,
)

OBS, ACT = 3, 2
# A group of discrete agents (QMIX/VDN): agents, actions per agent, global state size.
N_AGENTS, N_ACTIONS, STATE = 2, 3, 4
GROUP = "agents"


class _Discriminator(nn.Module):
    """A probability from a logit, as TorchRL's GAIL discriminator writes it."""

    def __init__(self, in_features):
        super().__init__()
        self.logit = MLP(in_features, 1, num_cells=[8])

    def forward(self, observation, action):
        return torch.sigmoid(self.logit(observation, action))


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
    def qvalue(seed=2, out_features=1, **mlp_kwargs):
        """``Q(s, a)`` = MLP on the concatenation; writes ``state_action_value`` (``out_features``
        values: TQC's quantiles)."""
        torch.manual_seed(seed)
        net = MLP(OBS + ACT, out_features, num_cells=[8], **mlp_kwargs)
        return ValueOperator(net, in_keys=["observation", "action"])

    @staticmethod
    def renorm_qvalue(seed=2, bias=True, **norm_kwargs):
        """CrossQ's critic in small: a ``BatchRenorm1d`` between the hidden layer and its ReLU.

        ``bias=False`` drops the linear layers' biases. The one before the normalization has
        a zero gradient up to rounding (the normalization subtracts it again), which Adam
        scales up to steps of the learning rate's size: runs that round differently (compiled
        and eager) then drift apart.
        """
        return Build.qvalue(
            seed,
            activation_class=nn.ReLU,
            norm_class=BatchRenorm1d,
            norm_kwargs=norm_kwargs,
            layer_class=nn.Linear if bias else functools.partial(nn.Linear, bias=False),
        )

    @staticmethod
    def perturb(module):
        """Move every parameter of ``module`` a little (online critics then differ from
        their targets)."""
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.1 * torch.randn_like(p))

    @staticmethod
    def squashed_sample(actor, obs, eps):
        """``a = tanh(loc + scale * eps)`` and its log-density, by hand (a TanhNormal actor)."""
        loc, scale = actor.module[0].module(obs)
        u = loc + scale * eps
        action = torch.tanh(u)
        log_prob = D.Normal(loc, scale).log_prob(u).sum(-1) - torch.log(1 - action.pow(2)).sum(-1)
        return action, log_prob

    @staticmethod
    def action_values(n=3, seed=2):
        torch.manual_seed(seed)
        return TensorDictModule(
            nn.Linear(OBS, n), in_keys=["observation"], out_keys=["action_value"]
        )

    @staticmethod
    def distributional_actor(n=3, atoms=5, v_max=2.0, seed=2, one_hot=False):
        """C51's ``DistributionalQValueActor``: ``Linear(obs) -> [atoms, n]`` log-softmaxed
        over the atoms, on the support ``linspace(-v_max, v_max, atoms)``."""
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(OBS, atoms * n), nn.Unflatten(-1, (atoms, n)))
        spec = OneHot(n) if one_hot else Categorical(n)
        return DistributionalQValueActor(net, torch.linspace(-v_max, v_max, atoms), spec=spec)

    @staticmethod
    def discriminator(seed=5):
        """GAIL's ``D(s, a) = sigmoid(MLP(observation, action))``, writing ``d_logits``; the
        logit is ``module.logit(obs, act)``."""
        torch.manual_seed(seed)
        return TensorDictModule(
            _Discriminator(OBS + ACT), in_keys=["observation", "action"], out_keys=["d_logits"]
        )

    @staticmethod
    def gail_batch(shape=(6,), seed=0):
        """:meth:`batch` (the expert's pairs at the root) plus as many policy pairs under
        ``collector_observation``/``collector_action``, drawn elsewhere (TorchRL's layout)."""
        g = torch.Generator().manual_seed(seed + 100)
        td = Build.batch(shape, seed=seed)
        td["collector_observation"] = torch.randn(*shape, OBS, generator=g) + 1.0
        td["collector_action"] = torch.rand(*shape, ACT, generator=g) * 1.8 - 0.9
        return td

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
    def agents_qvalue(
        n_agents=N_AGENTS, share_params=False, seed=3, action_mask=False, one_hot=False
    ):
        """Per-agent ``Q(o_i, .)`` under the group, then greedy actions (TorchRL's layout)."""
        torch.manual_seed(seed)
        net = MultiAgentMLP(
            OBS, N_ACTIONS, n_agents, centralized=False, share_params=share_params, num_cells=[8]
        )
        values = TensorDictModule(
            net, in_keys=[(GROUP, "observation")], out_keys=[(GROUP, "action_value")]
        )
        greedy = QValueModule(
            spec=OneHot(N_ACTIONS) if one_hot else Categorical(N_ACTIONS),
            action_value_key=(GROUP, "action_value"),
            out_keys=[(GROUP, "action"), (GROUP, "action_value"), (GROUP, "chosen_action_value")],
            action_mask_key=(GROUP, "action_mask") if action_mask else None,
        )
        return TensorDictSequential(values, greedy)

    @staticmethod
    def qmixer(n_agents=N_AGENTS, seed=4):
        """A small QMIX mixer. QMIX multiplies the state through two hypernetworks, which
        amplifies float rounding: test_compile's compiled update step (whose optimizer step
        rounds a few ulps differently from eager) keeps a margin with a narrow mixer and
        the small states of :meth:`agents_batch`."""
        torch.manual_seed(seed)
        return QMixer(state_shape=(STATE,), mixing_embed_dim=2, n_agents=n_agents)

    @staticmethod
    def agents_batch(shape=(6,), n_agents=N_AGENTS, one_hot=False, seed=0):
        """Grouped transitions: per-agent observations and actions under ``"agents"``, a
        global ``state``, a team reward and env-level flags at the root (one termination, one
        truncation)."""
        g = torch.Generator().manual_seed(seed)
        shape = tuple(shape)
        index = torch.randint(N_ACTIONS, (*shape, n_agents), generator=g)
        action = F.one_hot(index, N_ACTIONS) if one_hot else index
        terminated = torch.zeros(*shape, 1, dtype=torch.bool)
        truncated = torch.zeros(*shape, 1, dtype=torch.bool)
        terminated.view(-1)[1] = True
        truncated.view(-1)[2] = True
        return TensorDict(
            {
                GROUP: {
                    "observation": torch.randn(*shape, n_agents, OBS, generator=g),
                    "action": action,
                },
                "state": 0.3 * torch.randn(*shape, STATE, generator=g),
                "next": {
                    GROUP: {"observation": torch.randn(*shape, n_agents, OBS, generator=g)},
                    "state": 0.3 * torch.randn(*shape, STATE, generator=g),
                    "reward": torch.randn(*shape, 1, generator=g),
                    "done": terminated | truncated,
                    "terminated": terminated,
                    "truncated": truncated,
                },
            },
            batch_size=shape,
        )

    @staticmethod
    def dt_actor(seed=0, mask=False, online=False, **settings):
        """A tiny Decision Transformer actor (no dropout, a context of 4 steps) on a slice's
        keys: ``DTActor`` writing ``action`` or, ``online``, ``OnlineDTActor`` under a
        ``ProbabilisticActor`` (``Normal``). With ``mask`` it also reads
        ``("collector", "mask")`` as its attention mask."""
        torch.manual_seed(seed)
        settings = {"n_embd": 8, "n_inner": 16, "n_layer": 1, "n_head": 2, "context_length": 4,
                    "dropout": 0.0, **settings}  # fmt: skip
        in_keys = {"observation": "observation", "action": "action", "return_to_go": "return_to_go"}
        if mask:
            in_keys["attention_mask"] = ("collector", "mask")
        if online:
            net = TensorDictModule(
                OnlineDTActor(OBS, ACT, **settings), in_keys=in_keys, out_keys=["loc", "scale"]
            )
            return ProbabilisticActor(net, ["loc", "scale"], distribution_class=D.Normal)
        return TensorDictModule(DTActor(OBS, ACT, **settings), in_keys=in_keys, out_keys=["action"])

    @staticmethod
    def dt_batch(shape=(2, 4), seed=0):
        """Slices ``[B, T]`` of :meth:`batch`'s transitions with a ``return_to_go`` and a
        ``("collector", "mask")`` that pads the last step of the first slice."""
        td = Build.batch(shape, seed=seed)
        g = torch.Generator().manual_seed(seed + 200)
        td["return_to_go"] = torch.randn(*shape, 1, generator=g)
        mask = torch.ones(shape, dtype=torch.bool)
        mask[0, -1] = False
        td["collector", "mask"] = mask
        return td

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

    @staticmethod
    def assert_ensemble_grads(term, reference, ensemble, members):
        """``term``'s gradient in member ``i`` of a ``BatchedEnsemble`` equals ``reference``'s
        in the standalone copy ``members[i]`` (and is nonzero somewhere)."""
        names = [name for name, _ in ensemble.stacked.named_parameters()]
        got = Build.grads(term, ensemble.stacked)
        assert any(g is not None and bool(g.abs().sum() > 0) for g in got)
        for i, member in enumerate(members):
            expected = dict(zip(names, Build.grads(reference, member)))
            for name, g in zip(names, got):
                torch.testing.assert_close(g[i], expected[name], msg=f"member {i}: {name}")


class Imagination:
    """The ``rollout`` protocol of a model-based env over a WorldModel's imagined step: what
    DreamerActorLoss calls (rlblocks.objectives does not import rlblocks.envs, whose
    ModelBasedEnv the integration tests use)."""

    def __init__(self, world_model):
        self.transition = world_model.transition_module()
        self.calls = 0

    def rollout(self, max_steps, policy, *, auto_reset, tensordict, break_when_any_done):
        assert auto_reset is False and break_when_any_done is False
        self.calls += 1
        steps, td = [], tensordict
        for _ in range(max_steps):
            td = self.transition(policy(td.copy()))
            steps.append(td)
            td = td.get("next").select("state", "belief")
        return torch.stack(steps, 1)


class Dreamer:
    """A small world model (1-dim actions, 2-dim observations), latent actor and value, and
    sequence batches for the Dreamer losses."""

    obs, act, state, belief = 2, 1, 6, 24
    imagination = Imagination

    @staticmethod
    def world_model(seed=0):
        from rlblocks.objectives.modules import RSSM, WorldModel

        torch.manual_seed(seed)
        d = Dreamer
        latent = d.state + d.belief
        rssm = RSSM(d.act, 32, state_dim=d.state, belief_dim=d.belief, hidden_dim=32)
        return WorldModel(
            MLP(d.obs, 32, num_cells=[32]),
            rssm,
            MLP(latent, d.obs, num_cells=[64]),
            MLP(latent, 1, num_cells=[32]),
        )

    @staticmethod
    def _features():
        return TensorDictModule(
            lambda s, b: torch.cat([s, b], -1), in_keys=["state", "belief"], out_keys=["features"]
        )

    @staticmethod
    def actor(seed=0):
        torch.manual_seed(seed)
        latent = Dreamer.state + Dreamer.belief
        actor = ProbabilisticActor(
            TensorDictModule(
                nn.Sequential(MLP(latent, 2 * Dreamer.act, num_cells=[32]), NormalParamExtractor()),
                in_keys=["features"],
                out_keys=["loc", "scale"],
            ),
            in_keys=["loc", "scale"],
            distribution_class=TanhNormal,
        )
        return TensorDictSequential(Dreamer._features(), actor)

    @staticmethod
    def value(seed=0):
        torch.manual_seed(seed)
        latent = Dreamer.state + Dreamer.belief
        net = TensorDictModule(MLP(latent, 1, num_cells=[32]), ["features"], ["state_value"])
        return TensorDictSequential(Dreamer._features(), net)

    @staticmethod
    def oscillator_batch(n, steps, seed):
        """Sequences of a damped, driven oscillator: x' = A x + B a, reward = -x_0^2."""
        generator = torch.Generator().manual_seed(seed)
        a_matrix = torch.tensor([[0.95, 0.2], [-0.2, 0.95]])
        b_matrix = torch.tensor([[0.0], [0.3]])
        x = torch.randn(n, Dreamer.obs, generator=generator)
        obs, nxt, actions = [], [], []
        for _ in range(steps):
            action = torch.rand(n, Dreamer.act, generator=generator) * 2 - 1
            x_next = x @ a_matrix.T + action @ b_matrix.T
            obs.append(x)
            nxt.append(x_next)
            actions.append(action)
            x = x_next
        nxt_obs = torch.stack(nxt, 1)
        return TensorDict(
            {
                "observation": torch.stack(obs, 1),
                "action": torch.stack(actions, 1),
                ("next", "observation"): nxt_obs,
                ("next", "reward"): -nxt_obs[..., :1].square(),
                ("next", "done"): torch.zeros(n, steps, 1, dtype=torch.bool),
                ("next", "terminated"): torch.zeros(n, steps, 1, dtype=torch.bool),
            },
            batch_size=[n, steps],
        )


Build.dreamer = Dreamer


@pytest.fixture
def build():
    return Build


@pytest.fixture
def dreamer():
    return Dreamer


class Grouped:
    """Networks and batches over a group of agents (TorchRL's layout) for the multi-agent
    losses, built from plain layers over the last dim.

    Each network is its :class:`Build` twin (same layers, same seed, so the same weights)
    with the group's keys: applied to every agent's row, it computes what the twin computes
    on that agent's single-agent batch (:meth:`agent`).
    """

    group = "agents"

    @staticmethod
    def gaussian_actor(distribution=D.Normal, seed=0, group="agents", **kwargs):
        torch.manual_seed(seed)
        net = TensorDictModule(
            nn.Sequential(nn.Linear(OBS, 2 * ACT), NormalParamExtractor()),
            in_keys=[(group, "observation")],
            out_keys=[(group, "loc"), (group, "scale")],
        )
        if distribution is TanhNormal:
            kwargs.setdefault("spec", Build.spec)
        return ProbabilisticActor(
            net,
            {"loc": (group, "loc"), "scale": (group, "scale")},
            [(group, "action")],
            distribution_class=distribution,
            return_log_prob=True,
            log_prob_key=(group, "sample_log_prob"),
            **kwargs,
        )

    @staticmethod
    def categorical_actor(n=3, seed=0, group="agents"):
        torch.manual_seed(seed)
        net = TensorDictModule(
            nn.Linear(OBS, n), in_keys=[(group, "observation")], out_keys=[(group, "logits")]
        )
        return ProbabilisticActor(
            net,
            {"logits": (group, "logits")},
            [(group, "action")],
            distribution_class=OneHotCategorical,
            return_log_prob=True,
            log_prob_key=(group, "sample_log_prob"),
        )

    @staticmethod
    def deterministic_actor(seed=0, group="agents"):
        torch.manual_seed(seed)
        return Actor(
            nn.Sequential(nn.Linear(OBS, ACT), nn.Tanh()),
            in_keys=[(group, "observation")],
            out_keys=[(group, "action")],
        )

    @staticmethod
    def critic(seed=1, group="agents"):
        torch.manual_seed(seed)
        return ValueOperator(
            nn.Linear(OBS, 1),
            in_keys=[(group, "observation")],
            out_keys=[(group, "state_value")],
        )

    @staticmethod
    def qvalue(seed=2, group="agents"):
        torch.manual_seed(seed)
        return ValueOperator(
            MLP(OBS + ACT, 1, num_cells=[8]),
            in_keys=[(group, "observation"), (group, "action")],
            out_keys=[(group, "state_action_value")],
        )

    @staticmethod
    def action_values(n=3, seed=2, group="agents"):
        torch.manual_seed(seed)
        return TensorDictModule(
            nn.Linear(OBS, n), in_keys=[(group, "observation")], out_keys=[(group, "action_value")]
        )

    @staticmethod
    def batch(shape=(6,), n_agents=3, action=None, seed=0, group="agents"):
        """Grouped transitions: per-agent observations, actions and rewards under ``group``,
        env-level flags at the root (a termination and a truncation, as in Build.batch)."""
        g = torch.Generator().manual_seed(seed)
        shape = tuple(shape)
        agents = (*shape, n_agents)
        if action is None:
            action = torch.rand(*agents, ACT, generator=g) * 1.8 - 0.9
        terminated = torch.zeros(*shape, 1, dtype=torch.bool)
        truncated = torch.zeros(*shape, 1, dtype=torch.bool)
        terminated.view(-1)[1] = True
        truncated.view(-1)[2] = True
        return TensorDict(
            {
                group: TensorDict(
                    {"observation": torch.randn(*agents, OBS, generator=g), "action": action},
                    batch_size=agents,
                ),
                "next": {
                    group: TensorDict(
                        {
                            "observation": torch.randn(*agents, OBS, generator=g),
                            "reward": torch.randn(*agents, 1, generator=g),
                        },
                        batch_size=agents,
                    ),
                    "done": terminated | truncated,
                    "terminated": terminated,
                    "truncated": truncated,
                },
            },
            batch_size=shape,
        )

    @staticmethod
    def agent(td, i, group="agents"):
        """Agent ``i``'s single-agent batch: its rows of the group's entries at the root
        (its own flags, if the group has some, in place of the env-level ones)."""
        out = td.exclude(group, ("next", group))
        for prefix in ((), ("next",)):
            sub = td.get((*prefix, group), None)
            if sub is None:
                continue
            for key, value in sub.items(include_nested=True, leaves_only=True):
                key = key if isinstance(key, tuple) else (key,)
                out.set((*prefix, *key), value.select(td.batch_dims, i))
        return out


# Reachable from the build fixture too, for tables of cases built from it (test_compile).
Build.grouped = Grouped


@pytest.fixture
def grouped():
    return Grouped
