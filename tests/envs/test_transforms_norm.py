"""ObservationNorm and VecNorm."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.specs import Bounded, Unbounded
from rlblocks.envs import CartPoleEnv, PendulumEnv, SerialEnv, check_env_specs
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms import (
    Compose,
    DoubleToFloat,
    ObservationNorm,
    RenameTransform,
    TransformedEnv,
    VecNorm,
)


# ---------------------------------------------------------------------- ObservationNorm
@pytest.mark.parametrize("standard_normal", [False, True])
def test_observation_norm_values_and_bounds(standard_normal):
    loc, scale = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([2.0, 0.5, 4.0])
    norm = ObservationNorm(loc, scale, standard_normal=standard_normal)
    env = TransformedEnv(PendulumEnv(batch_size=[2]), norm)
    check_env_specs(env)
    td = env.reset()
    state = td["state"]
    raw = torch.stack([state[..., 0].cos(), state[..., 0].sin(), state[..., 1]], -1).float()
    expected = (raw - loc) / scale if standard_normal else raw * scale + loc
    torch.testing.assert_close(td["observation"], expected)
    spec = env.observation_spec["observation"]
    high = torch.tensor([1.0, 1.0, 8.0])
    mapped = (high - loc) / scale if standard_normal else high * scale + loc
    assert isinstance(spec, Bounded)
    torch.testing.assert_close(spec.high[0], mapped)


def test_observation_norm_on_a_plain_tensordict_and_inverse():
    norm = ObservationNorm(1.0, 2.0, in_keys=["x"], in_keys_inv=["u"], standard_normal=True)
    td = TensorDict({"x": torch.tensor([3.0]), "next": {"x": torch.tensor([5.0])}}, [])
    out = norm(td)
    assert out["x"].item() == 1.0 and out["next", "x"].item() == 2.0
    assert norm.inv(TensorDict(u=torch.tensor([1.0]), batch_size=[]))["u"].item() == 3.0


def test_observation_norm_maps_the_action_spec_for_inverse_keys():
    norm = ObservationNorm(0.0, 2.0, in_keys=[], in_keys_inv=["action"], standard_normal=True)
    env = TransformedEnv(PendulumEnv(), norm)
    assert env.action_spec == Bounded(-1.0, 1.0, shape=(1,))
    check_env_specs(env)


def test_init_stats_unbatched():
    torch.manual_seed(0)
    norm = ObservationNorm(standard_normal=True)
    env = TransformedEnv(PendulumEnv(), norm)
    assert env.observation_spec["observation"] == Unbounded(shape=(3,))  # no stats yet
    with pytest.raises(TransformError, match="no statistics yet"):
        env.reset()
    env.set_seed(0)
    torch.manual_seed(0)
    norm.init_stats(num_iter=600)
    assert norm.loc.shape == norm.scale.shape == (3,)
    assert isinstance(env.observation_spec["observation"], Bounded)  # specs refreshed
    # The same seeds replay the collected trajectory: normalized, it is standard.
    env.set_seed(0)
    torch.manual_seed(0)
    obs = env.rollout(600)["observation"]
    torch.testing.assert_close(obs.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(obs.std(0, correction=0), torch.ones(3), atol=1e-4, rtol=0)


def test_init_stats_batched_with_cat_dim_and_affine_form():
    norm = ObservationNorm()
    env = TransformedEnv(CartPoleEnv(batch_size=[4]), norm)
    env.set_seed(1)
    norm.init_stats(num_iter=50, reduce_dim=(0, 1), cat_dim=1, keep_dims=(1,))
    assert norm.loc.shape == (1, 4)
    td = env.base_env.rollout(30, break_when_any_done=False)
    out = norm(td.clone())
    torch.testing.assert_close(out["observation"], td["observation"] * norm.scale + norm.loc)


def test_init_stats_errors():
    with pytest.raises(TransformError, match="inside a TransformedEnv"):
        ObservationNorm().init_stats(10)
    env = TransformedEnv(PendulumEnv(), ObservationNorm(in_keys=["observation", "state"]))
    with pytest.raises(TransformError, match="say which one with key"):
        env.transform[0].init_stats(10)
    with pytest.raises(TransformError, match="give cat_dim"):
        env.transform[0].init_stats(10, reduce_dim=(0, 1), key="state")
    with pytest.raises(TransformError, match="do not fit the collected data"):
        env.transform[0].init_stats(10, reduce_dim=5, key="state")


def test_observation_norm_state_dict_round_trip():
    trained = ObservationNorm(torch.tensor([1.0, 2.0, 3.0]), 0.5)
    fresh = ObservationNorm()
    fresh.load_state_dict(trained.state_dict())
    td = TensorDict(observation=torch.ones(4, 3), batch_size=[4])
    assert torch.equal(fresh(td.clone())["observation"], trained(td.clone())["observation"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loc": 1.0}, "give both loc and scale"),
        ({"loc": 0.0, "scale": 0.0}, "scale must be nonzero"),
        ({"loc": float("inf"), "scale": 1.0}, "loc must be finite"),
    ],
)
def test_observation_norm_argument_errors(kwargs, match):
    with pytest.raises(TransformError, match=match):
        ObservationNorm(**kwargs)


# ---------------------------------------------------------------------- VecNorm
def _seen_observations(td: TensorDict) -> torch.Tensor:
    """Every observation a rollout's transforms saw: resets (initial, partial) and steps."""
    obs, next_obs = td["obs_raw"], td["next", "obs_raw"]
    done = td["next", "done"].squeeze(-1)
    restarted = torch.zeros_like(done)
    restarted[:, 1:] = done[:, :-1]
    return torch.cat([obs[:, 0], next_obs.reshape(-1, obs.shape[-1]), obs[restarted]])


def test_vecnorm_exact_statistics_with_partial_resets():
    # The raw observation is kept next to the normalized one.
    env = TransformedEnv(
        CartPoleEnv(batch_size=[6]),
        Compose(
            RenameTransform(["observation"], ["obs_raw"], create_copy=True),
            VecNorm(in_keys=["obs_raw"], out_keys=["observation"], decay=None),
        ),
    )
    env.set_seed(0)
    td = env.rollout(60, break_when_any_done=False)
    assert td["next", "done"].any()  # partial resets happened
    stats = env.transform[1]
    seen = _seen_observations(td)
    assert stats.count_0.item() == seen.shape[0]
    torch.testing.assert_close(stats.loc_0, seen.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.var_0, seen.var(0, correction=0), rtol=1e-3, atol=1e-6)
    last = td["next", "obs_raw"][:, -1]
    expected = (last - stats.loc_0) / stats.var_0.clamp_min(1e-4).sqrt()
    torch.testing.assert_close(td["next", "observation"][:, -1], expected, rtol=1e-4, atol=1e-4)


def test_vecnorm_decay_weights_old_updates(counting_env_cls):
    decay = 0.5
    norm = VecNorm(decay=decay)
    env = TransformedEnv(counting_env_cls(limit=100), norm)
    env.rollout(4)  # observations 0 (reset), 1, 2, 3, 4: one update each
    values = torch.arange(5.0)
    weights = decay ** torch.arange(4.0, -1.0, -1.0)
    mean = (weights * values).sum() / weights.sum()
    var = (weights * (values - mean) ** 2).sum() / weights.sum()
    torch.testing.assert_close(norm.loc_0, mean.reshape(1))
    torch.testing.assert_close(norm.var_0, var.reshape(1))
    torch.testing.assert_close(norm.count_0, weights.sum())
    assert env.observation_spec["observation"] == Unbounded(shape=(1,))
    assert env.reset()["observation"].dtype == torch.float32


def test_vecnorm_partial_reset_counts_only_reset_elements(counting_env_cls):
    norm = VecNorm(decay=None)
    env = TransformedEnv(counting_env_cls(batch_size=[4], limit=100), norm)
    td = env.step_mdp(env.rand_step(env.reset()))
    assert norm.count_0.item() == 8
    td.set("_reset", torch.tensor([[True], [False], [False], [True]]))
    env.reset(td)
    assert norm.count_0.item() == 10


def test_vecnorm_frozen_modes_and_plain_tensordicts(counting_env_cls):
    norm = VecNorm(decay=None)
    env = TransformedEnv(counting_env_cls(batch_size=[2]), norm)
    env.rollout(3)
    count = norm.count_0.clone()
    sample = TensorDict(observation=torch.full((5, 1), 2), batch_size=[5])
    out = norm(sample.clone())["observation"]
    torch.testing.assert_close(out, (2 - norm.loc_0) * norm.var_0.rsqrt().expand(5, 1))
    assert torch.equal(norm.count_0, count)  # plain use does not update
    frozen = norm.frozen_copy()
    assert frozen.frozen and not norm.frozen
    norm.freeze()
    env.rollout(3)
    assert torch.equal(norm.count_0, count)
    norm.unfreeze()
    env.rollout(3)
    assert norm.count_0 > count
    assert frozen.count_0 == count  # the copy is independent


def test_vecnorm_state_dict_round_trip(counting_env_cls):
    trained = TransformedEnv(counting_env_cls(batch_size=[3]), VecNorm(decay=0.9))
    trained.rollout(5)
    fresh_norm = VecNorm(decay=0.9, frozen=True)
    fresh_norm.load_state_dict(trained.transform[0].state_dict())
    evaluation = TransformedEnv(counting_env_cls(batch_size=[3]), fresh_norm)
    assert torch.equal(fresh_norm.loc_0, trained.transform[0].loc_0)
    other = TransformedEnv(counting_env_cls(batch_size=[3]), VecNorm(decay=0.9))
    other.load_state_dict(trained.state_dict())
    assert torch.equal(other.transform[0].var_0, trained.transform[0].var_0)
    td = evaluation.reset()
    expected = (0 - fresh_norm.loc_0) * fresh_norm.var_0.clamp_min(1e-4).rsqrt()
    torch.testing.assert_close(td["observation"], expected.expand(3, 1))


def test_vecnorm_shared_memory_updates_in_place():
    norm = VecNorm(shapes=[(3,)], decay=None).share_memory()
    pointer = norm.loc_0.data_ptr()
    env = TransformedEnv(PendulumEnv(batch_size=[2]), norm)
    check_env_specs(env)
    assert norm.loc_0.is_shared() and norm.loc_0.data_ptr() == pointer
    assert norm.count_0.item() > 0


def test_vecnorm_errors(counting_env_cls):
    with pytest.raises(TransformError, match=r"decay must be in \(0, 1\]"):
        VecNorm(decay=0.0)
    with pytest.raises(TransformError, match="eps must be a positive number"):
        VecNorm(eps=0)
    with pytest.raises(TransformError, match="one shape per in_key"):
        VecNorm(shapes=[(1,), (2,)])
    with pytest.raises(TransformError, match="no statistics for 'observation' yet"):
        VecNorm()(TensorDict(observation=torch.zeros(2, 1), batch_size=[2]))
    env = TransformedEnv(counting_env_cls(), VecNorm(shapes=[(4,)]))
    with pytest.raises(TransformError, match=r"feature shape \[1\].*statistics have shape \[4\]"):
        env.reset()


def test_vecnorm_over_a_serial_env_with_partial_resets(counting_env_cls):
    norm = VecNorm(decay=None)
    env = TransformedEnv(SerialEnv(2, counting_env_cls, [{"limit": 2}, {"limit": 3}]), norm)
    td = env.rollout(6, break_when_any_done=False)
    partial_resets = int(td["next", "done"][:, :-1].sum())
    assert norm.count_0.item() == 2 + 2 * 6 + partial_resets
    env.close()


def test_normalized_state_survives_a_partial_reset():
    # "state" is normalized for the policy and mapped back for the env at every step.
    norm = ObservationNorm(1.0, 2.0, in_keys=["state"], in_keys_inv=["state"])
    env = TransformedEnv(PendulumEnv(batch_size=[2]), norm)
    check_env_specs(env)
    current = env.step_mdp(env.rand_step(env.reset()))
    current.set("_reset", torch.tensor([[False], [True]]))
    out = env.reset(current)
    assert torch.equal(out["state"][0], current["state"][0])
    assert not torch.equal(out["state"][1], current["state"][1])


def test_partial_reset_keeps_a_lossy_round_trip_bit_for_bit():
    # In float32, (x - 0.3) / 0.7 * 0.7 + 0.3 is not always x: without care, the elements
    # a partial reset leaves alone would drift by a rounding error at every reset.
    torch.manual_seed(0)
    cast = DoubleToFloat(in_keys=["state"], in_keys_inv=["state"])
    norm = ObservationNorm(0.3, 0.7, in_keys=["state"], in_keys_inv=["state"])
    env = TransformedEnv(PendulumEnv(batch_size=[256]), Compose(cast, norm))
    current = env.step_mdp(env.rand_step(env.reset()))
    mask = torch.zeros(256, 1, dtype=torch.bool)
    mask[0] = True
    out = env.reset(current.set("_reset", mask))
    assert out["state"].dtype == torch.float32
    assert torch.equal(out["state"][1:], current["state"][1:])
    assert not torch.equal(out["state"][0], current["state"][0])
