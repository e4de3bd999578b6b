"""Losses over a group of agents: per-agent terms, env-level flags, plain tensors, named losses.

The grouped networks (``grouped`` fixture) apply their single-agent twin's layers to each
agent's row, so a grouped loss can be checked against the single-agent loss on each agent's
batch. Every term of these losses is a mean over samples, and the agents all have the same
number of samples: a grouped term is the mean over agents of the single-agent terms.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from rlblocks.core import make_loss
from rlblocks.core.specs import Bounded
from rlblocks.objectives import (
    A2CLoss,
    ClipPPOLoss,
    DDPGLoss,
    DiscreteSACLoss,
    DQNLoss,
    IDDPGLoss,
    IndependentQLoss,
    IPPOLoss,
    IQLLoss,
    KLPENPPOLoss,
    MADDPGLoss,
    MAPPOLoss,
    MASACLoss,
    ObjectiveConfigError,
    SACLoss,
    ShapeMismatchError,
    TD3Loss,
)
from rlblocks.objectives._losses.multiagent import group_keys
from rlblocks.objectives._plugin import LOSS_NAMES
from rlblocks.objectives.modules import TanhNormal, ValueOperator

N = 3
G = "agents"
OBS, ACT = 3, 2  # as in conftest


def on_policy(td, seed=1, advantage=True):
    """``td`` with what the policy-gradient losses read: collection log-probs and the
    parameters of pi_old per agent and, with ``advantage``, precomputed advantages."""
    g = torch.Generator().manual_seed(seed)
    agents = td[G].batch_size
    td[G, "sample_log_prob"] = torch.randn(*agents, generator=g)
    td[G, "loc"] = torch.randn(*agents, 2, generator=g)
    td[G, "scale"] = torch.rand(*agents, 2, generator=g) + 0.5
    if advantage:
        td[G, "advantage"] = torch.randn(*agents, 1, generator=g)
        td[G, "value_target"] = torch.randn(*agents, 1, generator=g)
    return td


def discrete(grouped, n_agents=N, shape=(6,), one_hot=False):
    index = torch.arange(shape[0] * n_agents).reshape(*shape, n_agents) % 3
    action = torch.nn.functional.one_hot(index, 3) if one_hot else index
    return grouped.batch(shape=shape, n_agents=n_agents, action=action)


def grouped_keys(cls):
    return group_keys(G, cls.default_keys)


def _ppo(grouped, build):
    return MAPPOLoss(grouped.gaussian_actor(), grouped.critic()), ClipPPOLoss(
        build.gaussian_actor(), build.critic()
    )


def _ippo(grouped, build):
    return IPPOLoss(grouped.gaussian_actor(), grouped.critic()), ClipPPOLoss(
        build.gaussian_actor(), build.critic()
    )


def _a2c(grouped, build):
    loss = A2CLoss(grouped.gaussian_actor(), grouped.critic()).set_keys(**grouped_keys(A2CLoss))
    return loss, A2CLoss(build.gaussian_actor(), build.critic())


def _kl_ppo(grouped, build):
    loss = KLPENPPOLoss(grouped.gaussian_actor(), grouped.critic())
    return loss.set_keys(**grouped_keys(KLPENPPOLoss)), KLPENPPOLoss(
        build.gaussian_actor(), build.critic()
    )


def _iddpg(grouped, build):
    return IDDPGLoss(grouped.deterministic_actor(), grouped.qvalue()), DDPGLoss(
        build.deterministic_actor(), build.qvalue()
    )


def _independent_q(grouped, build):
    return IndependentQLoss(grouped.action_values()), DQNLoss(build.action_values())


def _discrete_sac(grouped, build):
    loss = DiscreteSACLoss(grouped.categorical_actor(), grouped.action_values(), num_actions=3)
    return loss.set_keys(**grouped_keys(DiscreteSACLoss)), DiscreteSACLoss(
        build.categorical_actor(), build.action_values(), num_actions=3
    )


# name -> (make the grouped loss and its single-agent twin, a batch of n agents); nothing
# is sampled, so the twin on each agent's batch sees exactly that agent's data.
PER_AGENT = {
    "mappo": (_ppo, lambda g, n: on_policy(g.batch(n_agents=n))),
    "mappo_gae": (_ppo, lambda g, n: on_policy(g.batch(n_agents=n), advantage=False)),
    "ippo": (_ippo, lambda g, n: on_policy(g.batch(n_agents=n))),
    "a2c": (_a2c, lambda g, n: on_policy(g.batch(n_agents=n), advantage=False)),
    "kl_ppo": (_kl_ppo, lambda g, n: on_policy(g.batch(n_agents=n))),
    "iddpg": (_iddpg, lambda g, n: g.batch(n_agents=n)),
    "independent_q": (_independent_q, lambda g, n: discrete(g, n)),
    "discrete_sac": (_discrete_sac, lambda g, n: discrete(g, n, one_hot=True)),
}

# Diagnostics that are not means over samples (ESS is a ratio of means; beta and alpha are
# the loss's state).
NOT_MEANS = {"ESS", "beta", "alpha"}


def run_per_agent(single, batches):
    """The single-agent loss on each agent's batch, each call from the same starting state."""
    state = {k: v.clone() for k, v in single.state_dict().items()}
    outs = []
    for batch in batches:
        single.load_state_dict(state)
        outs.append(single(batch))
    return outs


@pytest.mark.parametrize("name", sorted(PER_AGENT))
def test_grouped_terms_are_the_mean_over_agents_of_the_single_agent_terms(grouped, build, name):
    make, batch = PER_AGENT[name]
    loss, single = make(grouped, build)
    td = batch(grouped, N)
    agents = [grouped.agent(td, i) for i in range(N)]
    out = loss(td)
    outs = run_per_agent(single, agents)
    assert set(out.keys()) == set(outs[0].keys())
    losses = 0
    for key, value in out.items():
        per_agent = torch.stack([o[key] for o in outs])
        if key in NOT_MEANS:
            continue
        if key.endswith("_max") or key == "td_error":  # the largest over agents
            torch.testing.assert_close(value, per_agent.amax(0), msg=key)
        elif value.ndim == 0:
            torch.testing.assert_close(value, per_agent.mean(0), msg=key)
        else:  # per sample and agent: [*batch, n_agents]
            torch.testing.assert_close(value, per_agent.movedim(0, -1), msg=key)
        losses += key.startswith("loss_")
    assert losses >= 1
    if "td_error" in agents[0].keys():  # one replay priority per sample, at the root
        expected = torch.stack([a["td_error"] for a in agents], -1).amax(-1)
        torch.testing.assert_close(td["td_error"], expected)


@pytest.mark.parametrize("name", sorted(PER_AGENT))
def test_one_agent_grouped_equals_single_agent_on_the_squeezed_batch(grouped, build, name):
    make, batch = PER_AGENT[name]
    loss, single = make(grouped, build)
    td = batch(grouped, 1)
    out, expected = loss(td.clone()), single(grouped.agent(td, 0))
    assert set(out.keys()) == set(expected.keys())
    for key, value in expected.items():
        torch.testing.assert_close(out[key].reshape(value.shape), value, msg=key)


def flat_agents(td):
    """The single-agent batch of every (sample, agent) pair, sample-major: ``[B * n]``.

    Env-level flags are repeated for each agent. Random draws shaped ``[B, n, ...]`` and
    ``[B * n, ...]`` take the same numbers in the same order, so a sampling loss on the
    grouped batch and its twin on this one see the same noise.
    """
    n = td[G].batch_size[-1]
    out = {}
    for key, value in td.items(include_nested=True, leaves_only=True):
        inner = tuple(k for k in key if k != G) if isinstance(key, tuple) else key
        if isinstance(key, tuple) and G in key:
            out[inner] = value.flatten(0, 1)
        else:
            out[inner] = (
                value.unsqueeze(1).expand(value.shape[0], n, *value.shape[1:]).flatten(0, 1)
            )
    return TensorDict(out, batch_size=[td.batch_size[0] * n])


# name -> (grouped sampling loss, its twin); compared on flat_agents of the batch.
SAMPLING = {
    "masac": lambda g, b: (
        MASACLoss(g.gaussian_actor(TanhNormal), g.qvalue()),
        SACLoss(b.gaussian_actor(TanhNormal), b.qvalue()),
    ),
    "sac_set_keys": lambda g, b: (
        SACLoss(g.gaussian_actor(TanhNormal), g.qvalue()).set_keys(**grouped_keys(SACLoss)),
        SACLoss(b.gaussian_actor(TanhNormal), b.qvalue()),
    ),
    "td3": lambda g, b: (
        TD3Loss(g.deterministic_actor(), g.qvalue()).set_keys(**grouped_keys(TD3Loss)),
        TD3Loss(b.deterministic_actor(), b.qvalue()),
    ),
}


@pytest.mark.parametrize("n_agents", [1, N])
@pytest.mark.parametrize("name", sorted(SAMPLING))
def test_sampling_losses_average_over_samples_and_agents(grouped, build, name, n_agents):
    # Means over the [B, n] pairs, as the single-agent loss over the B * n pairs: with the
    # same number of samples per agent, the mean over agents of the per-agent terms.
    loss, single = SAMPLING[name](grouped, build)
    td = grouped.batch(n_agents=n_agents)
    flat = flat_agents(td)
    torch.manual_seed(0)
    out = loss(td)
    torch.manual_seed(0)
    expected = single(flat)
    assert set(out.keys()) == set(expected.keys())
    for key, value in expected.items():
        torch.testing.assert_close(out[key].reshape(value.shape), value, msg=key)
    errors = flat["td_error"].reshape(td.batch_size[0], n_agents).amax(-1)
    torch.testing.assert_close(td["td_error"], errors)


def test_masac_auto_target_entropy_is_per_agent(grouped):
    group_spec = Bounded(-1.0, 1.0, shape=(N, ACT))  # the group's action spec
    actor = grouped.gaussian_actor(TanhNormal)
    assert SACLoss(actor, grouped.qvalue(), action_spec=group_spec).target_entropy == -N * ACT
    loss = MASACLoss(actor, grouped.qvalue(), action_spec=group_spec)
    assert loss.target_entropy is None
    loss(grouped.batch())
    assert loss.target_entropy == -ACT  # one agent's action dims
    fixed = MASACLoss(actor, grouped.qvalue(), target_entropy=-1.5)
    assert fixed.target_entropy == -1.5


class Centralised(nn.Module):
    """Each agent's value from every agent's inputs: ``[*B, n, d] -> [*B, n, 1]``."""

    def __init__(self, per_agent, n_agents=N, seed=5):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(n_agents * per_agent, n_agents)

    def forward(self, *inputs):
        return self.linear(torch.cat(inputs, -1).flatten(-2)).unsqueeze(-1)


def centralised_critic():
    return ValueOperator(
        Centralised(OBS), in_keys=[(G, "observation")], out_keys=[(G, "state_value")]
    )


def centralised_qvalue():
    return ValueOperator(
        Centralised(OBS + ACT),
        in_keys=[(G, "observation"), (G, "action")],
        out_keys=[(G, "state_action_value")],
    )


# make_loss name -> (keyword arguments, grouped batch); the batches carry env-level flags only.
NAMED = {
    "mappo": (
        lambda g: {"actor_network": g.gaussian_actor(), "critic_network": centralised_critic()},
        lambda g: on_policy(g.batch(), advantage=False),
    ),
    "ippo": (
        lambda g: {"actor_network": g.gaussian_actor(), "critic_network": g.critic()},
        lambda g: on_policy(g.batch(), advantage=False),
    ),
    "maddpg": (
        lambda g: {"actor_network": g.deterministic_actor(), "value_network": centralised_qvalue()},
        lambda g: g.batch(),
    ),
    "iddpg": (
        lambda g: {"actor_network": g.deterministic_actor(), "value_network": g.qvalue()},
        lambda g: g.batch(),
    ),
    "masac": (
        lambda g: {"actor_network": g.gaussian_actor(TanhNormal), "qvalue_network": g.qvalue()},
        lambda g: g.batch(),
    ),
    "independent_q": (lambda g: {"value_network": g.action_values()}, discrete),
    "idqn": (lambda g: {"value_network": g.action_values()}, discrete),
}

NAMED_CLASSES = {
    "mappo": MAPPOLoss,
    "ippo": IPPOLoss,
    "maddpg": MADDPGLoss,
    "iddpg": IDDPGLoss,
    "masac": MASACLoss,
    "independent_q": IndependentQLoss,
    "idqn": IndependentQLoss,
}


def run_from(loss, batches, seed=0):
    """``loss`` on each batch (or each call, a function) from the same state and seed."""
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    outs = []
    for batch in batches:
        loss.load_state_dict(state)
        torch.manual_seed(seed)
        outs.append(batch() if callable(batch) else loss(batch))
    return outs


def assert_same_outputs(got, expected, name=""):
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():
        torch.testing.assert_close(got[key], expected[key], msg=f"{name}: {key}")


def test_named_losses_are_registered_and_read_the_group():
    assert set(NAMED) == set(NAMED_CLASSES)
    assert {name: LOSS_NAMES[name] for name in NAMED} == {
        name: cls.__name__ for name, cls in NAMED_CLASSES.items()
    }
    assert LOSS_NAMES["iql"] == IQLLoss.__name__  # Implicit Q-Learning keeps its name


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_loss_keys_are_under_the_group(grouped, name):
    kwargs, _ = NAMED[name]
    loss = make_loss(name, **kwargs(grouped))
    assert type(loss) is NAMED_CLASSES[name] and loss.group == G
    keys = loss.tensor_keys.as_dict()
    for role, key in keys.items():
        if role == "priority":  # one per sample of the replay buffer: at the root
            assert key == "td_error"
        else:
            assert key == (G, type(loss).default_keys[role]), role
    assert {"action", "reward", "done", "terminated"} <= set(keys)
    other = NAMED_CLASSES[name](**kwargs(grouped), group="team")
    assert other.tensor_keys.action == ("team", "action") and other.group == "team"


@pytest.mark.parametrize("group", ["", "next", 3, ("a", "b")])
def test_named_loss_rejects_a_bad_group(grouped, group):
    with pytest.raises(ObjectiveConfigError, match="group must be the name of a group"):
        MAPPOLoss(grouped.gaussian_actor(), grouped.critic(), group=group)


def test_group_keys():
    keys = group_keys("team", {"action": "action", "value": ("x", "state_value"), "priority": "p"})
    assert keys == {"action": ("team", "action"), "value": ("team", "state_value")}


@pytest.mark.parametrize("name", sorted(NAMED))
def test_env_level_flags_equal_the_same_flags_expanded_into_the_group(grouped, name):
    kwargs, batch = NAMED[name]
    loss = make_loss(name, **kwargs(grouped))
    td = batch(grouped)
    expanded = td.clone()
    nxt = expanded["next"]
    for flag in ("done", "terminated"):
        nxt[G, flag] = nxt[flag].unsqueeze(-2).expand(*td.batch_size, N, 1).clone()
        nxt[flag] = torch.zeros_like(nxt[flag])  # the group's own flags win
    flipped = td.clone()
    for flag in ("done", "terminated"):
        flipped["next", flag] = ~td["next", flag]
    from_root, from_group, other = run_from(loss, [td.clone(), expanded, flipped])
    assert_same_outputs(from_root, from_group, name)
    # The flags are read: other flags give other terms.
    assert any(not torch.equal(from_root[k], other[k]) for k in from_root.keys())


@pytest.mark.parametrize("name", ["iddpg", "independent_q", "ippo"])
def test_per_agent_flags_end_each_agents_episode_separately(grouped, build, name):
    kwargs, batch = NAMED[name]
    loss = make_loss(name, **kwargs(grouped))
    td = batch(grouped)
    terminated = torch.zeros(*td.batch_size, N, 1, dtype=torch.bool)
    terminated[0, 0], terminated[3, 1], terminated[4, 2] = True, True, True
    truncated = torch.zeros_like(terminated)
    truncated[2, 1] = True
    td["next", G, "terminated"] = terminated
    td["next", G, "done"] = terminated | truncated
    single = {
        "iddpg": lambda: DDPGLoss(build.deterministic_actor(), build.qvalue()),
        "independent_q": lambda: DQNLoss(build.action_values()),
        "ippo": lambda: ClipPPOLoss(build.gaussian_actor(), build.critic()),
    }[name]()
    agents = [grouped.agent(td, i) for i in range(N)]
    assert bool(agents[1]["next", "done"][2]) and not bool(agents[0]["next", "done"][2])
    out = loss(td)
    outs = run_per_agent(single, agents)
    for key in [k for k in out.keys() if k.startswith("loss_")]:
        torch.testing.assert_close(out[key], torch.stack([o[key] for o in outs]).mean(), msg=key)


@pytest.mark.parametrize("name", sorted(NAMED))
def test_plain_tensor_call_matches_tensordict_call(grouped, build, name):
    kwargs, batch = NAMED[name]
    loss = make_loss(name, **kwargs(grouped))
    td = batch(grouped)
    tensors = build.tensors(td.clone())
    assert {"agents_observation", "agents_action", "next_agents_reward"} <= set(tensors)
    # Without the env-level flags, the batch shape is read from the group's ([B, n, 1]).
    env_level = ("next_done", "next_terminated", "next_truncated")
    group_flags = {k: v for k, v in tensors.items() if k not in env_level}
    for flag in ("done", "terminated"):
        group_flags[f"next_agents_{flag}"] = tensors[f"next_{flag}"].unsqueeze(-2).expand(6, N, 1)
    from_td, from_tensors, from_group_flags = run_from(
        loss, [td, lambda: loss(**tensors), lambda: loss(**group_flags)]
    )
    for got in (from_tensors, from_group_flags):
        assert isinstance(got, dict) and not isinstance(got, TensorDict)
        assert set(got) == set(from_td.keys())
        for key, value in got.items():
            torch.testing.assert_close(value, from_td[key], msg=f"{name}: {key}")
    assert any(k.startswith("loss_") for k in from_tensors)


def test_maddpg_with_a_centralised_critic_matches_reference(grouped):
    actor, critic = grouped.deterministic_actor(), centralised_qvalue()
    loss = MADDPGLoss(actor, critic, gamma=0.9)
    td = grouped.batch()
    out = loss(td.clone())
    q, mu = critic.module, actor.module
    obs, action = td[G, "observation"], td[G, "action"]
    nxt = td["next"]
    with torch.no_grad():
        next_obs = nxt[G, "observation"]
        next_q = q(next_obs, mu(next_obs))  # every agent's next action, from the policy
        alive = (~nxt["terminated"]).float().unsqueeze(-2)  # env-level, over the agents
        target = nxt[G, "reward"] + 0.9 * alive * next_q
    pred = q(obs, action)
    torch.testing.assert_close(out["loss_value"], torch.nn.functional.mse_loss(pred, target))
    torch.testing.assert_close(out["loss_actor"], -q(obs, mu(obs)).mean())
    assert out["pred_value"].shape == (6, N)


def test_mappo_gae_with_a_centralised_critic_matches_reference(grouped):
    from rlblocks.objectives.value import generalized_advantage_estimate

    critic = centralised_critic()
    loss = MAPPOLoss(grouped.gaussian_actor(), critic, gamma=0.9, lmbda=0.8)
    td = on_policy(grouped.batch(shape=(2, 5)), advantage=False)
    loss(td)
    nxt = td["next"]
    with torch.no_grad():
        value = critic.module(td[G, "observation"])
        next_value = critic.module(nxt[G, "observation"])
    flags = [nxt[f].unsqueeze(-2).expand(2, 5, N, 1) for f in ("done", "terminated")]
    advantage, target = generalized_advantage_estimate(
        0.9, 0.8, value, next_value, nxt[G, "reward"], *flags, time_dim=1
    )
    torch.testing.assert_close(td[G, "advantage"], advantage)
    torch.testing.assert_close(td[G, "value_target"], target)
    assert "advantage" not in td.keys()


def loose(td):
    """``td`` with the group's entries batched like the root only (as in a plain-tensor call),
    so that a wrong number of agents can be set."""
    for key in (G, ("next", G)):
        td[key].batch_size = td.batch_size
    return td


def test_wrong_agent_dims_name_the_keys_and_shapes(grouped, build):
    ippo = IPPOLoss(grouped.gaussian_actor(), grouped.critic())
    td = loose(on_policy(grouped.batch(), advantage=False))
    td["next", G, "done"] = torch.zeros(6, 4, 1, dtype=torch.bool)  # 4 agents, not 3
    with pytest.raises(ShapeMismatchError) as info:
        ippo(td)
    message = str(info.value)
    assert "('next', 'agents', 'done') has shape [6, 4, 1]" in message
    assert "('next', 'agents', 'reward') has shape [6, 3, 1]" in message
    # The same from plain tensors.
    tensors = build.tensors(on_policy(grouped.batch(), advantage=False))
    tensors["next_agents_done"] = torch.zeros(6, 4, 1, dtype=torch.bool)
    with pytest.raises(ShapeMismatchError, match=r"'done'\) has shape \[6, 4, 1\]"):
        ippo(**tensors)

    td = on_policy(grouped.batch(), advantage=False)
    td["next", "done"] = torch.zeros(6, 2, dtype=torch.bool)  # not [6, 1]
    with pytest.raises(ShapeMismatchError, match=r"\('next', 'done'\) has shape \[6, 2\]"):
        ippo(td)

    td = loose(on_policy(grouped.batch()))
    td[G, "sample_log_prob"] = torch.zeros(6, 2)  # 2 agents
    with pytest.raises(ShapeMismatchError, match=r"'sample_log_prob'\) has shape \[6, 2\]"):
        ippo(td)

    td = loose(on_policy(grouped.batch(), advantage=False))
    td["next", G, "observation"] = td["next", G, "observation"][:, :2]
    with pytest.raises(ShapeMismatchError) as info:
        ippo(td)  # the critic's next values are for 2 agents, the rewards for 3
    message = str(info.value)
    assert "('next', 'agents', 'state_value') has shape [6, 2, 1]" in message
    assert "('next', 'agents', 'reward') has shape [6, 3, 1]" in message

    td = loose(discrete(grouped))
    td["next", G, "reward"] = torch.zeros(6, 4, 1)
    with pytest.raises(ShapeMismatchError, match=r"\[6, 4, 1\]"):
        IndependentQLoss(grouped.action_values())(td)
