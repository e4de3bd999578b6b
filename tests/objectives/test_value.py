"""Value estimators against naive reverse loops, and the estimator modules."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.core import MissingKeyError
from rlblocks.objectives.errors import MissingInputError, ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.value import (
    GAE,
    TD0Estimator,
    TD1Estimator,
    TDLambdaEstimator,
    ValueEstimators,
    discounted_scan,
    generalized_advantage_estimate,
    make_value_estimator,
    td0_advantage_estimate,
    td0_return_estimate,
    td1_return_estimate,
    td_lambda_return_estimate,
)

# -- naive references: one Python step at a time, float64 ------------------------------


def naive_gae(gamma, lmbda, value, next_value, reward, done, terminated):
    value, next_value, reward = value.double(), next_value.double(), reward.double()
    gamma = torch.as_tensor(gamma, dtype=torch.float64).expand_as(reward)
    advantage = torch.zeros_like(reward)
    running = torch.zeros_like(reward[:, 0])
    for t in reversed(range(reward.shape[1])):
        not_term = (~terminated[:, t]).double()
        not_done = (~done[:, t]).double()
        delta = reward[:, t] + gamma[:, t] * not_term * next_value[:, t] - value[:, t]
        running = delta + gamma[:, t] * lmbda * not_done * running
        advantage[:, t] = running
    return advantage, advantage + value


def naive_td_lambda(gamma, lmbda, next_value, reward, done, terminated):
    next_value, reward = next_value.double(), reward.double()
    steps = reward.shape[1]
    ret = torch.zeros_like(reward)
    for t in reversed(range(steps)):
        not_term = (~terminated[:, t]).double()
        if t == steps - 1:
            bootstrap = next_value[:, t]
        else:
            mixed = (1 - lmbda) * next_value[:, t] + lmbda * ret[:, t + 1]
            bootstrap = torch.where(done[:, t], next_value[:, t], mixed)
        ret[:, t] = reward[:, t] + gamma * not_term * bootstrap
    return ret


def random_batch(batch=4, steps=50, features=1, dtype=torch.float32, p=0.08, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, steps, features)
    reward = torch.randn(shape, generator=g).to(dtype)
    value = torch.randn(shape, generator=g).to(dtype)
    next_value = torch.randn(shape, generator=g).to(dtype)
    terminated = torch.rand(shape, generator=g) < p
    truncated = torch.rand(shape, generator=g) < p
    return reward, value, next_value, terminated | truncated, terminated


# -- functional ------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 31, 32, 33, 100, 1000, 1100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gae_matches_naive_loop(steps, dtype):
    reward, value, next_value, done, terminated = random_batch(steps=steps, dtype=dtype)
    adv, target = generalized_advantage_estimate(
        0.99, 0.95, value, next_value, reward, done, terminated
    )
    ref_adv, ref_target = naive_gae(0.99, 0.95, value, next_value, reward, done, terminated)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert adv.dtype == dtype and adv.shape == reward.shape
    torch.testing.assert_close(adv.double(), ref_adv, atol=tol, rtol=tol)
    torch.testing.assert_close(target.double(), ref_target, atol=tol, rtol=tol)


@pytest.mark.parametrize("steps", [1, 5, 33, 300])
@pytest.mark.parametrize("lmbda", [0.0, 0.5, 0.95, 1.0])
def test_td_lambda_matches_naive_loop(steps, lmbda):
    reward, _, next_value, done, terminated = random_batch(steps=steps, dtype=torch.float64)
    ret = td_lambda_return_estimate(0.9, lmbda, next_value, reward, done, terminated)
    ref = naive_td_lambda(0.9, lmbda, next_value, reward, done, terminated)
    torch.testing.assert_close(ret, ref, atol=1e-12, rtol=1e-12)


def test_td1_is_the_discounted_return_bootstrapped_after_truncation():
    reward = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]]).unsqueeze(-1)
    next_value = torch.tensor([[10.0, 20.0, 30.0, 40.0, 50.0]]).unsqueeze(-1)
    # step 1 is truncated, step 3 terminated, step 4 is the end of the batch.
    truncated = torch.tensor([[False, True, False, False, False]]).unsqueeze(-1)
    terminated = torch.tensor([[False, False, False, True, False]]).unsqueeze(-1)
    g = 0.5
    ret = td1_return_estimate(g, next_value, reward, truncated | terminated, terminated)
    expected = [
        1 + g * (2 + g * 20),  # bootstraps V(s_2) = 20 after the truncation
        2 + g * 20,
        3 + g * 4,  # the termination cuts the bootstrap
        4.0,
        5 + g * 50,  # end of the batch: bootstrap
    ]
    torch.testing.assert_close(ret.flatten(), torch.tensor(expected))


def test_td0_and_advantage():
    reward, value, next_value, _, terminated = random_batch(steps=7)
    target = td0_return_estimate(0.9, next_value, reward, terminated)
    torch.testing.assert_close(target, reward + 0.9 * (~terminated).float() * next_value)
    adv = td0_advantage_estimate(0.9, value, next_value, reward, terminated)
    torch.testing.assert_close(adv, target - value)


def test_gae_with_lambda_zero_is_td0_and_targets_agree_with_td_lambda():
    reward, value, _, done, terminated = random_batch(steps=40, dtype=torch.float64)
    # next_value consistent with value inside episodes.
    next_value = torch.cat([value[:, 1:], torch.randn_like(value[:, :1])], 1)
    adv0, _ = generalized_advantage_estimate(0.9, 0.0, value, next_value, reward, done, terminated)
    torch.testing.assert_close(
        adv0, td0_advantage_estimate(0.9, value, next_value, reward, terminated)
    )
    # Where no episode ends, the GAE target equals the TD(lambda) return.
    no_done = torch.zeros_like(done)
    _, target_nd = generalized_advantage_estimate(
        0.9, 0.7, value, next_value, reward, no_done, no_done
    )
    ret_nd = td_lambda_return_estimate(0.9, 0.7, next_value, reward, no_done, no_done)
    torch.testing.assert_close(target_nd, ret_nd)


def test_episodes_in_one_row_are_independent():
    """Two episodes side by side give what each gives alone."""
    r1, v1, n1, _, _ = random_batch(batch=1, steps=13, dtype=torch.float64, seed=1)
    r2, v2, n2, _, _ = random_batch(batch=1, steps=20, dtype=torch.float64, seed=2)
    for first_ends_by in ("terminated", "truncated"):
        d1 = torch.zeros(1, 13, 1, dtype=torch.bool)
        d1[:, -1] = True
        t1 = d1 if first_ends_by == "terminated" else torch.zeros_like(d1)
        d2 = torch.zeros(1, 20, 1, dtype=torch.bool)
        cat = [torch.cat(x, 1) for x in ((r1, r2), (v1, v2), (n1, n2), (d1, d2), (t1, d2))]
        adv, _ = generalized_advantage_estimate(0.99, 0.9, cat[1], cat[2], cat[0], cat[3], cat[4])
        alone1, _ = generalized_advantage_estimate(0.99, 0.9, v1, n1, r1, d1, t1)
        alone2, _ = generalized_advantage_estimate(0.99, 0.9, v2, n2, r2, d2, d2)
        torch.testing.assert_close(adv, torch.cat([alone1, alone2], 1))


def test_tensor_gamma_and_extra_dims_and_time_dim():
    reward, value, next_value, done, terminated = random_batch(batch=6, steps=70, features=2)
    gamma = torch.rand_like(reward) * 0.5 + 0.5
    adv, _ = generalized_advantage_estimate(gamma, 0.9, value, next_value, reward, done, terminated)
    for f in range(2):
        sl = (slice(None), slice(None), slice(f, f + 1))
        ref, _ = naive_gae(
            gamma[sl], 0.9, value[sl], next_value[sl], reward[sl], done[sl], terminated[sl]
        )
        torch.testing.assert_close(adv[sl].double(), ref, atol=1e-5, rtol=1e-5)
    # Same data laid out [T, batch, 1] with time_dim=0, and with two batch dims.
    tr = [x.transpose(0, 1) for x in (value, next_value, reward, done, terminated)]
    adv_t, _ = generalized_advantage_estimate(0.99, 0.9, *tr, time_dim=0)
    adv_b, _ = generalized_advantage_estimate(
        0.99, 0.9, value, next_value, reward, done, terminated
    )
    torch.testing.assert_close(adv_t.transpose(0, 1), adv_b)
    four_d = [x.reshape(2, 3, 70, 2) for x in (value, next_value, reward, done, terminated)]
    adv_4, _ = generalized_advantage_estimate(0.99, 0.9, *four_d)
    torch.testing.assert_close(adv_4.reshape(6, 70, 2), adv_b)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.integers(1, 80),
    gamma=st.floats(0.0, 1.0),
    lmbda=st.floats(0.0, 1.0),
    p=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_gae_and_td_lambda_property(steps, gamma, lmbda, p, seed):
    reward, value, next_value, done, terminated = random_batch(
        batch=3, steps=steps, dtype=torch.float64, p=p, seed=seed
    )
    adv, _ = generalized_advantage_estimate(
        gamma, lmbda, value, next_value, reward, done, terminated
    )
    ref, _ = naive_gae(gamma, lmbda, value, next_value, reward, done, terminated)
    torch.testing.assert_close(adv, ref, atol=1e-9, rtol=1e-9)
    ret = td_lambda_return_estimate(gamma, lmbda, next_value, reward, done, terminated)
    ref = naive_td_lambda(gamma, lmbda, next_value, reward, done, terminated)
    torch.testing.assert_close(ret, ref, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("coef", [0.0, 1e-20, 1e-6, 0.3, 0.99, 1.0])
def test_discounted_scan_extreme_coefficients(coef):
    g = torch.Generator().manual_seed(3)
    b = torch.randn(2, 5000, generator=g, dtype=torch.float64)
    cut = torch.rand(2, 5000, generator=g) < 0.001
    out = discounted_scan(b, coef, cut)
    ref = torch.zeros_like(b)
    running = torch.zeros(2, dtype=torch.float64)
    for t in reversed(range(5000)):
        running = b[:, t] + coef * (~cut[:, t]).double() * running
        ref[:, t] = running
    torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-9)
    out_t = discounted_scan(b, torch.full_like(b, coef), cut)
    torch.testing.assert_close(out_t, ref, atol=1e-9, rtol=1e-9)


def test_shape_mismatch_is_an_error_not_a_broadcast():
    reward = torch.zeros(8)
    value = torch.zeros(8, 1)
    with pytest.raises(ShapeMismatchError, match=r"\[8\].*\[8, 1\]|\[8, 1\].*\[8\]"):
        td0_return_estimate(0.9, value, reward, torch.zeros(8, 1, dtype=torch.bool))
    with pytest.raises(ShapeMismatchError, match="shape"):
        generalized_advantage_estimate(
            0.9, 0.9, value, value, reward, torch.zeros(8, 1, dtype=torch.bool)
        )
    with pytest.raises(ShapeMismatchError, match="time_dim=3"):
        td1_return_estimate(0.9, value, value, value.bool(), time_dim=3)


def test_invalid_coefficients():
    x = torch.zeros(2, 3, 1)
    with pytest.raises(ObjectiveConfigError, match="gamma must be in"):
        td0_return_estimate(1.5, x, x, x.bool())
    with pytest.raises(ObjectiveConfigError, match="lmbda must be in"):
        td_lambda_return_estimate(0.9, -0.1, x, x, x.bool())


# -- estimator modules -----------------------------------------------------------------


def trajectories(batch=3, steps=20, seed=0):
    reward, _, _, done, terminated = random_batch(batch=batch, steps=steps, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    obs = torch.randn(batch, steps, 3, generator=g)
    next_obs = torch.randn(batch, steps, 3, generator=g)
    return TensorDict(
        {
            "observation": obs,
            "next": {
                "observation": next_obs,
                "reward": reward,
                "done": done,
                "terminated": terminated,
            },
        },
        batch_size=[batch, steps],
    )


def critic():
    torch.manual_seed(0)
    return TensorDictModule(nn.Linear(3, 1), in_keys=["observation"], out_keys=["state_value"])


def test_gae_module_matches_functional():
    td = trajectories()
    value_net = critic()
    GAE(gamma=0.97, lmbda=0.9, value_network=value_net)(td)
    with torch.no_grad():
        v = value_net.module(td["observation"])
        nv = value_net.module(td["next", "observation"])
    adv, target = generalized_advantage_estimate(
        0.97, 0.9, v, nv, td["next", "reward"], td["next", "done"], td["next", "terminated"]
    )
    torch.testing.assert_close(td["advantage"], adv)
    torch.testing.assert_close(td["value_target"], target)
    assert not td["advantage"].requires_grad


def test_gae_average_and_differentiable():
    td = trajectories()
    GAE(gamma=0.9, lmbda=0.9, value_network=critic(), average_gae=True)(td)
    assert abs(td["advantage"].mean().item()) < 1e-5
    assert abs(td["advantage"].std().item() - 1) < 1e-4
    td = trajectories()
    GAE(gamma=0.9, lmbda=0.9, value_network=critic(), differentiable=True)(td)
    assert td["value_target"].requires_grad


@pytest.mark.parametrize(
    ("estimator", "reference"),
    [
        (TD0Estimator(gamma=0.9), lambda nv, r, d, t: td0_return_estimate(0.9, nv, r, t)),
        (TD1Estimator(gamma=0.9), lambda nv, r, d, t: td1_return_estimate(0.9, nv, r, d, t)),
        (
            TDLambdaEstimator(gamma=0.9, lmbda=0.5),
            lambda nv, r, d, t: td_lambda_return_estimate(0.9, 0.5, nv, r, d, t),
        ),
    ],
)
def test_return_estimators_read_values_without_network(estimator, reference):
    td = trajectories()
    td["state_value"] = torch.randn(3, 20, 1)
    td["next", "state_value"] = torch.randn(3, 20, 1)
    nxt = td["next"]
    expected = reference(nxt["state_value"], nxt["reward"], nxt["done"], nxt["terminated"])
    estimator(td)
    torch.testing.assert_close(td["value_target"], expected)
    torch.testing.assert_close(td["advantage"], expected - td["state_value"])
    override = torch.zeros(3, 20, 1)
    torch.testing.assert_close(
        estimator.value_estimate(td, next_value=override),
        reference(override, nxt["reward"], nxt["done"], nxt["terminated"]),
    )


def test_time_dim_from_names_and_argument():
    td = trajectories()
    td["state_value"] = torch.randn(3, 20, 1)
    td["next", "state_value"] = torch.randn(3, 20, 1)
    expected = GAE(gamma=0.9, lmbda=0.8)(td.clone())["advantage"]
    swapped = td.clone().transpose(0, 1).contiguous()
    out = GAE(gamma=0.9, lmbda=0.8, time_dim=0)(swapped.clone())["advantage"]
    torch.testing.assert_close(out.transpose(0, 1), expected)
    swapped.refine_names("time", None)
    out = GAE(gamma=0.9, lmbda=0.8)(swapped)["advantage"]
    torch.testing.assert_close(out.transpose(0, 1), expected)


def test_set_keys_and_missing_key_message():
    td = trajectories()
    td.rename_key_(("next", "reward"), ("next", "rew"))
    gae = GAE(gamma=0.9, lmbda=0.9, value_network=critic())
    with pytest.raises(MissingInputError) as info:
        gae(td)
    message = str(info.value)
    assert "('next', 'reward')" in message and "set_keys(reward=" in message
    assert isinstance(info.value, MissingKeyError) and isinstance(info.value, KeyError)
    gae.set_keys(reward="rew", advantage="adv")
    gae(td)
    assert "adv" in td.keys()
    with pytest.raises(ObjectiveConfigError, match="unknown role"):
        gae.set_keys(rewards="x")


def test_estimator_shape_mismatch():
    td = trajectories()
    td["next", "reward"] = td["next", "reward"].squeeze(-1)
    with pytest.raises(ShapeMismatchError, match=r"\[3, 20\]"):
        GAE(gamma=0.9, lmbda=0.9, value_network=critic())(td)


def test_make_value_estimator():
    assert isinstance(make_value_estimator("gae", gamma=0.9, lmbda=0.9), GAE)
    assert isinstance(make_value_estimator(ValueEstimators.TD0), TD0Estimator)
    with pytest.raises(ObjectiveConfigError, match="'td_lambda'"):
        make_value_estimator("tdlambda")
    with pytest.raises(ObjectiveConfigError, match="gamma"):
        TD0Estimator(gamma=2.0)


# -- grouped (multi-agent) trajectories -----------------------------------------------


def grouped_trajectories(batch=2, steps=40, n_agents=3, seed=0, agent_flags=False):
    """``[batch, steps]`` trajectories of a group: per-agent rewards and values
    ``[batch, steps, n_agents, 1]`` under ``"agents"``, env-level flags ``[batch, steps, 1]``
    at the root and, with ``agent_flags``, each agent's own flags in the group."""
    g = torch.Generator().manual_seed(seed)
    agents = (batch, steps, n_agents)
    terminated = torch.rand(batch, steps, 1, generator=g) < 0.08
    truncated = torch.rand(batch, steps, 1, generator=g) < 0.08
    group = {
        "state_value": torch.randn(*agents, 1, generator=g),
        "observation": torch.randn(*agents, 3, generator=g),
    }
    nxt = {
        "reward": torch.randn(*agents, 1, generator=g),
        "state_value": torch.randn(*agents, 1, generator=g),
        "observation": torch.randn(*agents, 3, generator=g),
    }
    if agent_flags:
        own = torch.rand(*agents, 1, generator=g) < 0.1
        nxt["terminated"] = own | terminated.unsqueeze(-2)
        nxt["done"] = nxt["terminated"] | (torch.rand(*agents, 1, generator=g) < 0.1)
    return TensorDict(
        {
            "agents": TensorDict(group, batch_size=agents),
            "next": {
                "agents": TensorDict(nxt, batch_size=agents),
                "done": terminated | truncated,
                "terminated": terminated,
            },
        },
        batch_size=[batch, steps],
    )


def agent_trajectories(td, i):
    """Agent ``i``'s single-agent trajectories (its own flags, if the group has some)."""
    out = td.exclude("agents", ("next", "agents"))
    for prefix in ((), ("next",)):
        for key, value in td[(*prefix, "agents")].items():
            out[(*prefix, key)] = value[:, :, i]
    return out


GROUP_KEYS = {
    "reward": ("agents", "reward"),
    "done": ("agents", "done"),
    "terminated": ("agents", "terminated"),
    "value": ("agents", "state_value"),
    "advantage": ("agents", "advantage"),
    "value_target": ("agents", "value_target"),
}

ESTIMATORS = {
    "td0": lambda: TD0Estimator(gamma=0.9),
    "td1": lambda: TD1Estimator(gamma=0.9),
    "td_lambda": lambda: TDLambdaEstimator(gamma=0.9, lmbda=0.7),
    "gae": lambda: GAE(gamma=0.9, lmbda=0.7),
}


@pytest.mark.parametrize("agent_flags", [False, True])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_grouped_estimator_equals_the_estimator_applied_per_agent(name, agent_flags):
    td = grouped_trajectories(agent_flags=agent_flags)
    ESTIMATORS[name]().set_keys(**GROUP_KEYS)(td)
    assert td["agents", "advantage"].shape == (2, 40, 3, 1)
    for i in range(3):
        single = ESTIMATORS[name]()(agent_trajectories(td, i))
        torch.testing.assert_close(td["agents", "advantage"][:, :, i], single["advantage"])
        torch.testing.assert_close(td["agents", "value_target"][:, :, i], single["value_target"])


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_env_level_flags_are_broadcast_over_the_agents(name):
    td = grouped_trajectories()
    expanded = td.clone()
    for flag in ("done", "terminated"):
        expanded["next", "agents", flag] = td["next", flag].unsqueeze(-2).expand(2, 40, 3, 1)
        expanded["next", flag] = torch.zeros_like(td["next", flag])  # the group's win
    estimator = ESTIMATORS[name]().set_keys(**GROUP_KEYS)
    estimator(td)
    estimator(expanded)
    torch.testing.assert_close(td["agents", "value_target"], expanded["agents", "value_target"])
    # Flags read at the root with no terminated: done stands in, as for a single agent.
    without = td.clone().exclude(("next", "terminated"))
    estimator(without)
    as_done = td.clone()
    as_done["next", "terminated"] = td["next", "done"]
    estimator(as_done)
    torch.testing.assert_close(without["agents", "value_target"], as_done["agents", "value_target"])


def test_grouped_value_estimate_with_a_network_and_named_shape_errors():
    td = grouped_trajectories()
    value_net = TensorDictModule(
        nn.Linear(3, 1), in_keys=[("agents", "observation")], out_keys=[("agents", "state_value")]
    )
    gae = GAE(gamma=0.9, lmbda=0.9, value_network=value_net).set_keys(**GROUP_KEYS)
    gae(td)
    with torch.no_grad():
        v = value_net.module(td["agents", "observation"])
        nv = value_net.module(td["next", "agents", "observation"])
    flags = [td["next", f].unsqueeze(-2).expand(2, 40, 3, 1) for f in ("done", "terminated")]
    adv, _ = generalized_advantage_estimate(
        0.9, 0.9, v, nv, td["next", "agents", "reward"], *flags, time_dim=1
    )
    torch.testing.assert_close(td["agents", "advantage"], adv)
    # Another number of agents in the flags: both keys and shapes in the message.
    bad = grouped_trajectories()
    bad["next", "agents"].batch_size = [2, 40]
    bad["next", "agents", "done"] = torch.zeros(2, 40, 4, 1, dtype=torch.bool)
    with pytest.raises(ShapeMismatchError) as info:
        gae(bad)
    message = str(info.value)
    assert "('next', 'agents', 'done') has shape [2, 40, 4, 1]" in message
    assert "('next', 'agents', 'reward') has shape [2, 40, 3, 1]" in message
