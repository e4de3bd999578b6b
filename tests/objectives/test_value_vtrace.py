"""V-trace against the IMPALA paper's definition, evaluated one step at a time."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch._dynamo
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import distributions as D
from torch import nn

from rlblocks.objectives import A2CLoss, ValueEstimators
from rlblocks.objectives.errors import MissingInputError, ObjectiveConfigError
from rlblocks.objectives.modules import ProbabilisticActor
from rlblocks.objectives.value import (
    VTrace,
    generalized_advantage_estimate,
    make_value_estimator,
    td1_return_estimate,
    vtrace_advantage_estimate,
)

N_OBS, N_ACT = 3, 4

# -- the naive reference: the paper's sums, one Python float at a time ------------------


def naive_vtrace(gamma, log_pi, log_mu, value, next_value, reward, done, terminated, rho, c):
    """``v_s = V(x_s) + sum_t gamma^(t-s) (prod_{i<t} c_i) delta_t`` up to the episode end."""
    shape = reward.shape
    rows = [x.reshape(-1, shape[-2]).tolist() for x in (log_pi, log_mu, value, next_value)]
    rows += [x.reshape(-1, shape[-2]).tolist() for x in (reward, done, terminated)]
    targets, advantages = [], []
    for lp, lm, v, nv, r, d, term in zip(*rows, strict=True):
        steps = len(r)
        ratio = [math.exp(a - b) for a, b in zip(lp, lm, strict=True)]
        rho_t = [min(rho, w) for w in ratio]
        c_t = [min(c, w) for w in ratio]
        delta = [rho_t[t] * (r[t] + gamma * (not term[t]) * nv[t] - v[t]) for t in range(steps)]
        vs = []
        for s in range(steps):
            total, weight, t = v[s], 1.0, s
            while True:
                total += weight * delta[t]
                if d[t] or t == steps - 1:
                    break
                weight *= gamma * c_t[t]
                t += 1
            vs.append(total)
        adv = []
        for s in range(steps):
            following = nv[s] if d[s] or s == steps - 1 else vs[s + 1]
            adv.append(rho_t[s] * (r[s] + gamma * (not term[s]) * following - v[s]))
        targets.append(vs)
        advantages.append(adv)
    as_tensor = lambda x: torch.tensor(x, dtype=torch.float64).reshape(shape)  # noqa: E731
    return as_tensor(advantages), as_tensor(targets)


def random_inputs(shape, seed=0, p=0.1):
    """Values, rewards, log-probs (ratios on both sides of 1) and flags of both kinds."""
    g = torch.Generator().manual_seed(seed)
    log_mu = 0.5 * torch.randn(shape, generator=g) - 1.0
    log_pi = log_mu + 0.7 * torch.randn(shape, generator=g)
    value, next_value, reward = (torch.randn(shape, generator=g) for _ in range(3))
    terminated = torch.rand(shape, generator=g) < p
    truncated = torch.rand(shape, generator=g) < p
    return log_pi, log_mu, value, next_value, reward, terminated | truncated, terminated


# -- functional ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "steps", "rho", "c"),
    [
        ((6,), 1, 1.0, 1.0),
        ((6,), 40, 1.0, 1.0),
        ((2, 3), 70, 2.0, 0.7),  # several batch dims, past one scan chunk
        ((2, 3), 70, 0.8, 2.5),  # gamma * c above 1 in places
    ],
)
def test_vtrace_matches_naive_loop(batch, steps, rho, c):
    inputs = random_inputs((*batch, steps, 1), seed=steps)
    *_, done, terminated = inputs
    assert (done.any() and (done & ~terminated).any()) or steps == 1
    adv, target = vtrace_advantage_estimate(0.95, *inputs, rho_thresh=rho, c_thresh=c)
    ref_adv, ref_target = naive_vtrace(0.95, *inputs, rho, c)
    torch.testing.assert_close(target.double(), ref_target, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(adv.double(), ref_adv, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("c", [1.0, 2.5])
def test_vtrace_traces_in_one_graph(c):
    """gamma * c_thresh bounds the trace factors: the scan is chosen without reading them,
    so a compiled update that computes V-trace has no graph break (and no eager fallback)."""
    torch._dynamo.reset()
    inputs = random_inputs((3, 40, 1), seed=3)
    estimate = functools.partial(vtrace_advantage_estimate, 0.95, rho_thresh=1.0, c_thresh=c)
    compiled = torch.compile(estimate, fullgraph=True, backend="eager")(*inputs)
    for got, want in zip(compiled, estimate(*inputs)):
        torch.testing.assert_close(got, want)


def test_vtrace_time_dim():
    inputs = random_inputs((3, 25, 1), seed=1)
    expected = vtrace_advantage_estimate(0.9, *inputs)
    moved = [x.transpose(0, 1) for x in inputs]
    got = vtrace_advantage_estimate(0.9, *moved, time_dim=0)
    for out, ref in zip(got, expected, strict=True):
        torch.testing.assert_close(out.transpose(0, 1), ref)


@pytest.mark.parametrize("thresh", [1.0, 3.0])
def test_on_policy_vtrace_is_the_td1_return(thresh):
    _, log_mu, value, next_value, reward, done, terminated = random_inputs((4, 50, 1), seed=2)
    # The sum of TD errors telescopes into the return when, inside an episode, the value
    # of the next state is the one at the next step (as from one value network).
    next_value[:, :-1] = torch.where(done[:, :-1], next_value[:, :-1], value[:, 1:])
    adv, target = vtrace_advantage_estimate(
        0.97, log_mu, log_mu, value, next_value, reward, done, terminated, thresh, thresh
    )
    td1 = td1_return_estimate(0.97, next_value, reward, done, terminated)
    torch.testing.assert_close(target, td1, atol=1e-5, rtol=1e-5)
    # The advantage bootstraps from the next step's return: the TD(1) return again.
    torch.testing.assert_close(adv, td1 - value, atol=1e-5, rtol=1e-5)


def test_weights_above_both_thresholds_are_clipped():
    _, log_mu, value, next_value, reward, done, terminated = random_inputs((4, 50, 1), seed=3)
    log_pi = log_mu + 3.0  # every ratio is e**3, above both thresholds
    _, target = vtrace_advantage_estimate(
        0.9, log_pi, log_mu, value, next_value, reward, done, terminated, 0.5, 0.8
    )
    # With constant weights, v - V is rho_bar times GAE with lambda = c_bar.
    gae, _ = generalized_advantage_estimate(0.9, 0.8, value, next_value, reward, done, terminated)
    torch.testing.assert_close(target, value + 0.5 * gae, atol=1e-5, rtol=1e-5)
    # Thresholds above every weight clip nothing: any two such give the same result.
    low = log_mu - 0.5 - torch.rand(log_mu.shape)  # ratios below 1
    args = (low, log_mu, value, next_value, reward, done, terminated)
    one = vtrace_advantage_estimate(0.9, *args, 1.0, 1.0)
    more = vtrace_advantage_estimate(0.9, *args, 4.0, 9.0)
    for a, b in zip(one, more, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", ["rho_thresh", "c_thresh"])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_non_positive_thresholds_are_errors(name, bad):
    inputs = random_inputs((2, 5, 1))
    with pytest.raises(ObjectiveConfigError, match=rf"{name} must be > 0.*got {bad}"):
        vtrace_advantage_estimate(0.9, *inputs, **{name: bad})
    with pytest.raises(ObjectiveConfigError, match=rf"VTrace: {name} must be > 0.*got {bad}"):
        VTrace(gamma=0.9, actor_network=actor(), **{name: bad})
    per_step = torch.ones(2, 5, 1)
    per_step[0, 2] = bad
    with pytest.raises(ObjectiveConfigError, match=rf"{name} must be > 0 everywhere"):
        vtrace_advantage_estimate(0.9, *inputs, **{name: per_step})


# -- the estimator module --------------------------------------------------------------


def actor(seed=0):
    torch.manual_seed(seed)
    logits = TensorDictModule(nn.Linear(N_OBS, N_ACT), in_keys=["observation"], out_keys=["logits"])
    return ProbabilisticActor(logits, in_keys=["logits"], distribution_class=D.Categorical)


def critic(seed=1):
    torch.manual_seed(seed)
    return TensorDictModule(nn.Linear(N_OBS, 1), in_keys=["observation"], out_keys=["state_value"])


def trajectories(batch=(3,), steps=20, seed=0):
    """Steps collected by a behaviour policy other than :func:`actor`'s."""
    shape = (*batch, steps)
    _, _, _, _, reward, done, terminated = random_inputs((*shape, 1), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    obs = torch.randn(*shape, N_OBS, generator=g)
    behaviour = D.Categorical(logits=torch.randn(*shape, N_ACT, generator=g))
    action = torch.multinomial(behaviour.probs.reshape(-1, N_ACT), 1, generator=g).view(shape)
    data = {
        "observation": obs,
        "action": action,
        "sample_log_prob": behaviour.log_prob(action),
        ("next", "observation"): torch.randn(*shape, N_OBS, generator=g),
        ("next", "reward"): reward,
        ("next", "done"): done,
        ("next", "terminated"): terminated,
    }
    return TensorDict(data, batch_size=shape)


def test_module_matches_functional_with_the_actors_log_prob():
    td = trajectories(batch=(2, 3))
    pi, v = actor(), critic()
    out = VTrace(gamma=0.9, actor_network=pi, value_network=v, c_thresh=0.9)(td.clone())
    with torch.no_grad():
        log_pi = D.Categorical(logits=pi.module[0](td["observation"])).log_prob(td["action"])
        value, next_value = v.module(td["observation"]), v.module(td["next", "observation"])
    nxt = td["next"]
    adv, target = vtrace_advantage_estimate(
        0.9,
        log_pi.unsqueeze(-1),
        td["sample_log_prob"].unsqueeze(-1),
        value,
        next_value,
        nxt["reward"],
        nxt["done"],
        nxt["terminated"],
        c_thresh=0.9,
    )
    torch.testing.assert_close(out["advantage"], adv)
    torch.testing.assert_close(out["value_target"], target)
    assert "logits" not in out.keys()  # the actor ran on a copy


def test_no_gradient_reaches_the_actor():
    td = trajectories()
    pi, v = actor(), critic()
    out = VTrace(gamma=0.9, actor_network=pi, value_network=v)(td.clone())
    assert not out["advantage"].requires_grad and not out["value_target"].requires_grad
    vtrace = VTrace(gamma=0.9, actor_network=pi, value_network=v, differentiable=True)
    out = vtrace(td.clone())
    (out["advantage"].sum() + out["value_target"].sum()).backward()
    assert all(p.grad is None for p in pi.parameters())
    assert all(p.grad is not None for p in v.parameters())


def test_average_adv_standardizes():
    out = VTrace(gamma=0.9, actor_network=actor(), value_network=critic(), average_adv=True)(
        trajectories()
    )
    assert abs(out["advantage"].mean().item()) < 1e-5
    assert abs(out["advantage"].std().item() - 1) < 1e-4


def test_missing_sample_log_prob_names_the_key_and_the_rename():
    td = trajectories().exclude("sample_log_prob")
    vtrace = VTrace(gamma=0.9, actor_network=actor(), value_network=critic())
    with pytest.raises(MissingInputError) as info:
        vtrace(td.clone())
    message = str(info.value)
    assert "lacks ['sample_log_prob']" in message
    assert "set_keys(sample_log_prob=" in message and "'observation'" in message
    td["old_log_prob"] = trajectories()["sample_log_prob"]
    vtrace.set_keys(sample_log_prob="old_log_prob")(td)
    assert "advantage" in td.keys()


def test_actor_without_get_dist_is_an_error():
    with pytest.raises(ObjectiveConfigError, match="actor_network must be probabilistic.*Linear"):
        VTrace(gamma=0.9, actor_network=nn.Linear(2, 2))


# -- choosing it in a loss -------------------------------------------------------------


def test_losses_choose_vtrace_by_name_and_pass_their_actor():
    assert ValueEstimators.VTrace == "vtrace"
    assert isinstance(make_value_estimator("vtrace", actor_network=actor()), VTrace)
    pi, v = actor(), critic()
    loss = A2CLoss(pi, v, gamma=0.9).make_value_estimator(ValueEstimators.VTrace, rho_thresh=2.0)
    estimator = loss.value_estimator
    assert isinstance(estimator, VTrace) and estimator.actor_network is pi
    assert estimator.rho_thresh == 2.0 and estimator.gamma == 0.9
    td = trajectories()
    td.rename_key_("sample_log_prob", "old_log_prob")
    loss.set_keys(sample_log_prob="old_log_prob")  # reaches the estimator
    out = loss(td)
    expected = VTrace(gamma=0.9, actor_network=pi, value_network=v, rho_thresh=2.0)
    td = trajectories()
    torch.testing.assert_close(
        out["loss_critic"], A2CLoss(pi, v, gamma=0.9)(expected(td))["loss_critic"]
    )
