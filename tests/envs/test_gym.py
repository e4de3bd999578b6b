"""The gymnasium backend on real gymnasium envs: spaces, flags, vector envs, seeding, extras."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from tensordict import TensorDict

from rlblocks.core import MissingDependencyError, list_env_backends, make_env, step_mdp
from rlblocks.core.specs import Binary, Bounded, Categorical, Unbounded
from rlblocks.envs import (
    GymEnv,
    GymWrapper,
    InvalidActionError,
    SerialEnv,
    UnsupportedEnvOperationError,
    check_env_specs,
)


def replay(env, actions):
    """A policy replaying ``actions`` (time-last TensorDict) one step at a time."""
    steps = iter(range(actions.batch_size[-1]))

    def policy(td):
        t = next(steps)
        for key in env.action_keys:
            td.set(key, actions[key][..., t] if env.batch_size else actions[key][t])
        return td

    return policy


def assert_same_trajectory(a, b):
    assert a.batch_size == b.batch_size
    assert set(a.keys(True, True)) == set(b.keys(True, True))
    for key in a.keys(True, True):
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    ("env_id", "obs_spec", "action_spec"),
    [
        ("CartPole-v1", Bounded, Categorical(2, shape=())),
        ("Pendulum-v1", Bounded, Bounded(-2.0, 2.0, shape=(1,))),
        ("MountainCarContinuous-v0", Bounded, Bounded(-1.0, 1.0, shape=(1,))),
        ("FrozenLake-v1", Categorical, Categorical(16, shape=())),
    ],
)
def test_standard_envs_map_spaces_and_pass_checks(env_id, obs_spec, action_spec):
    with GymEnv(env_id) as env:
        assert isinstance(env.observation_spec["observation"], obs_spec)
        if env_id == "FrozenLake-v1":
            action_spec = Categorical(4, shape=())
        assert env.action_spec == action_spec
        assert env.reward_spec == Unbounded(shape=(1,))
        check_env_specs(env, steps=5, seed=0)


def test_terminated_and_truncated_are_kept_apart():
    env = GymEnv("MountainCarContinuous-v0")
    env.set_seed(0)
    torch.manual_seed(0)
    td = env.rollout(1000)
    assert td.batch_size == (999,)  # TimeLimit of 999 steps
    assert td["next", "truncated"][-1].item() and not td["next", "terminated"][-1].item()
    assert td["next", "done"][-1].item() and not td["next", "done"][:-1].any()
    cartpole = GymEnv("CartPole-v1")
    td = cartpole.rollout(600)
    assert td["next", "terminated"][-1].item() and not td["next", "truncated"].any()


def test_dict_space_env(dict_env_id):
    env = GymEnv(dict_env_id)
    assert set(env.observation_keys) == {"position", "mode", ("sensors", "bumps")}
    assert env.observation_spec["mode"] == Categorical(3, shape=())
    assert env.observation_spec["sensors", "bumps"] == Binary(shape=(4,), dtype=torch.int8)
    assert set(env.action_keys) == {("action", "move"), ("action", "gear")}
    check_env_specs(env, steps=10, seed=1)
    td = env.rollout(20, break_when_any_done=False)
    # Discrete(3, start=1) values 1..3 are shifted to indices 0..2.
    assert td["mode"].min() >= 0 and td["mode"].max() <= 2
    assert td["next", "done"].any()


def test_seeding_is_reproducible():
    def run():
        env = GymEnv("CartPole-v1")
        env.set_seed(123)
        torch.manual_seed(0)
        return env.rollout(300, break_when_any_done=False)

    assert_same_trajectory(run(), run())
    env = GymEnv("CartPole-v1")
    env.set_seed(1)
    first = env.reset()["observation"]
    env.set_seed(2)
    assert not torch.equal(first, env.reset()["observation"])


def test_a_bad_seed_is_refused_and_the_env_keeps_working():
    """Issue 20, item 13: set_seed("abc") used to be stored and re-raised by every reset."""
    env = GymEnv("CartPole-v1")
    env.reset()
    with pytest.raises(ValueError, match=r"GymEnv.set_seed\(\): seed must be an int >= 0.*'abc'"):
        env.set_seed("abc")
    env.reset()
    env.rand_step(env.reset())
    env.set_seed(np.int64(3))  # numpy ints are ints
    reference, _ = gym.make("CartPole-v1").reset(seed=3)
    np.testing.assert_array_equal(env.reset()["observation"].numpy(), reference)


@pytest.mark.parametrize("num_envs", [None, 2])
def test_reset_with_a_seed_is_gymnasiums_seeded_reset(num_envs):
    """Issue 20, item 14: reset(seed=s) raised "got multiple values for keyword 'seed'"."""
    env = GymEnv("CartPole-v1", num_envs=num_envs)
    first = env.reset(seed=3)["observation"]
    env.rand_step(env.reset())
    assert torch.equal(env.reset(seed=3)["observation"], first)
    assert not torch.equal(env.reset(seed=4)["observation"], first)
    # Seeds sub-env i with seed + i, as set_seed does.
    for i in range(num_envs or 1):
        reference, _ = gym.make("CartPole-v1").reset(seed=3 + i)
        row = first[i] if num_envs else first
        np.testing.assert_array_equal(row.numpy(), reference)
    # Other keyword arguments still reach gymnasium's reset.
    assert env.reset(seed=3, options=None)["observation"].shape == first.shape


def test_an_action_on_another_device_names_the_key_and_both_devices():
    """Issue 20, item 12: a Discrete action used to fail with a raw Tensor.item() error."""
    for env, shape, dtype in [
        (GymEnv("CartPole-v1"), (), torch.int64),  # the int fast path of single envs
        (GymEnv("CartPole-v1", num_envs=2), (2,), torch.int64),
        (GymEnv("Pendulum-v1"), (1,), torch.float32),
    ]:
        td = TensorDict(dict(env.reset().items()), batch_size=env.batch_size)
        td["action"] = torch.zeros(shape, dtype=dtype, device="meta")
        for check in (True, False):
            with pytest.raises(InvalidActionError, match="spec is on device cpu, the action on "):
                env.step(td, check=check)
        env.rand_step(env.reset())  # the env is unharmed


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "rlblocks-tests/DictEnv-v0"])
def test_fast_rollout_equals_the_generic_loop(env_id):
    env = GymEnv(env_id)
    env.set_seed(5)
    torch.manual_seed(5)
    fast = env.rollout(60, break_when_any_done=False)
    env.set_seed(5)
    slow = env.rollout(60, replay(env, fast), break_when_any_done=False)
    assert_same_trajectory(fast, slow)
    env.set_seed(6)
    fast = env.rollout(500)
    env.set_seed(6)
    assert_same_trajectory(fast, env.rollout(500, replay(env, fast)))


class _Sampler(torch.nn.Module):
    """A stochastic policy head for tests: logits -> a sampled action and its log-prob."""

    def forward(self, logits):
        dist = torch.distributions.Categorical(logits=logits)
        action = dist.sample()
        return action, dist.log_prob(action)


def stochastic_policy(n_obs=4, n_act=2):
    from tensordict.nn import TensorDictModule, TensorDictSequential

    net = TensorDictModule(torch.nn.Linear(n_obs, n_act), ["observation"], ["logits"])
    head = TensorDictModule(_Sampler(), ["logits"], ["action", "log_prob"])
    return TensorDictSequential(net, head)


@pytest.mark.parametrize(
    "make",
    [
        lambda: GymEnv("CartPole-v1"),
        lambda: GymEnv("CartPole-v1", num_envs=3),  # sub-envs stepped in lockstep
        lambda: GymEnv("CartPole-v1", num_envs=3, vectorization_mode="async"),
        lambda: SerialEnv(3, lambda: GymEnv("CartPole-v1")),
    ],
    ids=["single", "sync-vector", "async-vector", "serial"],
)
@pytest.mark.parametrize("break_when_any_done", [False, True])
def test_policy_rollout_takes_the_numpy_loop_and_matches_the_generic_one(make, break_when_any_done):
    env = make()
    policy = stochastic_policy()
    runs = []
    # A plain callable (no declared in_keys/out_keys) takes the generic TensorDict loop.
    for actor in (policy, lambda td: policy(td)):
        env.set_seed(3)
        torch.manual_seed(3)
        with torch.no_grad():
            runs.append(env.rollout(120, actor, break_when_any_done=break_when_any_done))
    assert_same_trajectory(*runs)
    assert "log_prob" in runs[0].keys() and runs[0]["next", "done"].any()
    # The numpy loop did run: it is the env's own fast path for this policy.
    env.set_seed(3)
    assert env.fast_rollout(5, env.reset(), policy=policy, break_when_any_done=False) is not None
    env.close()


def test_policies_reading_other_entries_take_the_generic_loop():
    from tensordict.nn import TensorDictModule

    env = GymEnv("CartPole-v1")
    reads_more = TensorDictModule(
        lambda obs, hidden: (obs[..., 0] > 0).long(), ["observation", "hidden"], ["action"]
    )
    start = env.reset().set("hidden", torch.zeros(1))
    assert env.fast_rollout(5, start, policy=reads_more, break_when_any_done=False) is None
    plain_callable = lambda td: env.rand_action(td)  # noqa: E731 (no declared keys)
    assert (
        env.fast_rollout(5, env.reset(), policy=plain_callable, break_when_any_done=False) is None
    )
    td = env.rollout(5, reads_more, tensordict=start, auto_reset=False)  # generic loop
    assert td["hidden"].shape == (5, 1)


def _reference_vector_rollout(env_id, seed, actions):
    """Single gym envs seeded seed+i, stepped with ``actions`` [n, T], reset when done."""
    n, steps = actions.shape[:2]
    envs = [gym.make(env_id) for _ in range(n)]
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    roots, nexts, rewards, terms, truncs = [], [], [], [], []
    for t in range(steps):
        roots.append(np.stack(obs))
        step = [e.step(int(actions[i, t])) for i, e in enumerate(envs)]
        nexts.append(np.stack([s[0] for s in step]))
        rewards.append([s[1] for s in step])
        terms.append([s[2] for s in step])
        truncs.append([s[3] for s in step])
        obs = [e.reset()[0] if (s[2] or s[3]) else s[0] for e, s in zip(envs, step)]
    swap = lambda x: np.swapaxes(np.asarray(x), 0, 1)  # noqa: E731
    return swap(roots), swap(nexts), swap(rewards), swap(terms), swap(truncs)


@pytest.mark.parametrize("mode", list(AutoresetMode))
@pytest.mark.parametrize("use_rollout", [True, False])
def test_vector_envs_lose_no_final_observation(mode, use_rollout):
    n, steps, seed = 3, 80, 11
    venv = gym.make_vec(
        "CartPole-v1", n, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}
    )
    env = GymWrapper(venv)
    assert env.batch_size == (n,)
    env.set_seed(seed)
    torch.manual_seed(0)
    if use_rollout:
        td = env.rollout(steps, break_when_any_done=False)
    else:
        actions = torch.randint(0, 2, (n, steps))
        actions = TensorDict({"action": actions}, batch_size=[n, steps])
        td = env.rollout(steps, replay(env, actions), break_when_any_done=False)
    roots, nexts, rewards, terms, truncs = _reference_vector_rollout(
        "CartPole-v1", seed, td["action"].numpy()
    )
    assert terms.any()  # episodes did end
    np.testing.assert_array_equal(td["observation"].numpy(), roots)
    np.testing.assert_array_equal(td["next", "observation"].numpy(), nexts)
    np.testing.assert_array_equal(td["next", "reward"][..., 0].numpy(), rewards)
    np.testing.assert_array_equal(td["next", "terminated"][..., 0].numpy(), terms)
    np.testing.assert_array_equal(td["next", "truncated"][..., 0].numpy(), truncs)
    env.close()


def test_gym_env_vector_rollout_matches_single_envs_and_continues():
    env = GymEnv("CartPole-v1", num_envs=3)
    env.set_seed(11)
    torch.manual_seed(0)
    td = env.rollout(80, break_when_any_done=False)
    roots, nexts, rewards, terms, truncs = _reference_vector_rollout(
        "CartPole-v1", 11, td["action"].numpy()
    )
    assert terms.any()
    np.testing.assert_array_equal(td["observation"].numpy(), roots)
    np.testing.assert_array_equal(td["next", "observation"].numpy(), nexts)
    np.testing.assert_array_equal(td["next", "reward"][..., 0].numpy(), rewards)
    np.testing.assert_array_equal(td["next", "terminated"][..., 0].numpy(), terms)
    np.testing.assert_array_equal(td["next", "truncated"][..., 0].numpy(), truncs)
    # Stop at the first end, then restart only the finished envs.
    td = env.rollout(200)
    last = td[:, -1]
    done = last["next", "done"][:, 0]
    following = env.reset(step_mdp(last).set("_reset", last["next", "done"]))
    assert done.any() and not done.all()
    kept = following["observation"][~done]
    assert torch.equal(kept, last["next", "observation"][~done])
    assert following["observation"][done].abs().max() <= 0.05


def test_vector_env_step_and_maybe_reset(dict_env_id):
    env = GymEnv(dict_env_id, num_envs=2)
    env.set_seed(0)
    td = env.reset()
    finals = 0
    for _ in range(30):
        transition, td = env.step_and_maybe_reset(env.rand_action(td))
        done = transition["next", "done"][:, 0]
        # A finished episode's final position is kept (it left the box or ran 8 steps).
        finals += int(done.sum())
        assert (td["position"][done].abs() <= 0.1).all()
    assert finals > 0
    check_env_specs(env, steps=12, seed=3)


def test_next_step_vector_env_without_reset_mask_refuses_partial_resets():
    venv = gym.make_vec("CartPole-v1", 2, vectorization_mode="vector_entry_point")
    env = GymWrapper(venv)
    td = env.reset()
    td.set("_reset", torch.tensor([[True], [False]]))
    with pytest.raises(UnsupportedEnvOperationError, match="reset_mask"):
        env.reset(td)
    with pytest.raises(UnsupportedEnvOperationError, match="CartPoleVectorEnv"):
        env.rollout(200, break_when_any_done=False)
    assert env.rollout(200)["next", "done"][:, -1].any()  # up to the first end: fine


def test_pixels_from_rgb_array():
    env = GymEnv("CartPole-v1", from_pixels=True)
    assert env.observation_keys == ["pixels"]
    td = env.rollout(3)
    assert td["pixels"].shape == (3, 400, 600, 3) and td["pixels"].dtype == torch.uint8
    assert td["next", "pixels"].float().std() > 0
    both = GymEnv("CartPole-v1", from_pixels=True, pixels_only=False)
    assert set(both.observation_keys) == {"observation", "pixels"}
    check_env_specs(both, steps=2)


def test_pixels_of_a_vector_env_keep_final_frames():
    env = GymEnv("CartPole-v1", num_envs=2, from_pixels=True, pixels_only=False)
    td = env.rollout(12, break_when_any_done=False)
    assert td["next", "pixels"].shape == (2, 12, 400, 600, 3)


def test_pixels_need_rgb_array_render_mode():
    with pytest.raises(Exception, match="render_mode='rgb_array'"):
        GymWrapper(gym.make("CartPole-v1"), from_pixels=True)


def test_info_keys_are_copied(dict_env_id):
    env = GymEnv(dict_env_id, info_keys=["distance"])
    assert env.observation_spec["distance"] == Unbounded(shape=(), dtype=torch.float64)
    td = env.rollout(5)
    pos = td["next", "position"].double()
    torch.testing.assert_close(td["next", "distance"], pos.norm(dim=-1), atol=1e-6, rtol=1e-6)
    vec = GymEnv(dict_env_id, num_envs=2, info_keys={"distance": Unbounded(shape=())})
    td = vec.rollout(3, break_when_any_done=False)
    assert td["next", "distance"].shape == (2, 3)
    assert td["next", "distance"].dtype == torch.float32


def test_frame_skip_repeats_actions():
    env = GymEnv("CartPole-v1", frame_skip=3)
    td = env.rollout(5, break_when_any_done=False)
    rewards = td["next", "reward"][:, 0]
    ended = td["next", "done"][:, 0]
    assert (rewards[~ended] == 3).all() and (rewards <= 3).all()
    with pytest.raises(ValueError, match="frame_skip"):
        GymEnv("CartPole-v1", frame_skip=0)


def test_bad_action_names_key_spec_and_value():
    env = GymEnv("CartPole-v1")
    td = env.reset().set("action", torch.tensor(5))
    with pytest.raises(InvalidActionError, match=r"'action'.*Categorical.*\[0, 2\)"):
        env.step(td)
    td = env.reset().set("action", torch.tensor([1]))
    with pytest.raises(InvalidActionError, match=r"expected shape \[\], got shape \[1\]"):
        env.step(td)
    td = env.reset().set("action", torch.tensor(1, dtype=torch.int32))
    with pytest.raises(InvalidActionError, match="'action'"):
        env.step(td)


class RecordActions(gym.Wrapper):
    """Keeps every action the wrapped env receives."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.actions: list = []

    def step(self, action):
        self.actions.append(action)
        return self.env.step(action)


def test_discrete_actions_reach_gym_as_numpy_ints_read_on_every_step():
    recorder = RecordActions(gym.make("FrozenLake-v1"))
    env = GymWrapper(recorder)
    td = env.reset()
    td.set("action", torch.tensor(2))
    env.step(td)
    td["action"].fill_(1)  # the same tensor, changed in place: read again, checked or not
    env.step(td, check=False)
    td["action"].fill_(0)
    env.step(td)
    assert recorder.actions == [2, 1, 0]
    assert all(type(a) is np.int64 for a in recorder.actions)


def test_step_outputs_fresh_tensors_every_step():
    env = GymEnv("CartPole-v1")
    first = env.step(env.rand_action(env.reset()))
    second = env.step(env.rand_action(step_mdp(first)))
    outputs = [td["next", key] for td in (first, second) for key in td["next"].keys()]
    assert len(outputs) == 10
    pointers = {tensor.data_ptr() for tensor in outputs}
    assert len(pointers) == len(outputs)  # no entry shares memory with another


def test_unknown_id_keeps_gymnasiums_did_you_mean():
    with pytest.raises(gym.error.Error, match="Did you mean: `CartPole`") as info:
        GymEnv("CartPol-v1")
    assert any("rlblocks GymEnv('CartPol-v1'" in note for note in info.value.__notes__)


def test_missing_gymnasium_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'rlblocks-envs\[gymnasium\]'"):
        GymEnv("CartPole-v1")
    with pytest.raises(ImportError, match="gymnasium"):
        make_env("gymnasium:CartPole-v1")


def test_make_env_uses_the_registered_backend():
    assert "gymnasium" in list_env_backends()
    env = make_env("gymnasium:CartPole-v1", num_envs=2)
    assert isinstance(env, GymEnv) and env.batch_size == (2,)
    env.close()


def test_wrapper_rejects_non_gym_objects():
    with pytest.raises(TypeError, match="gymnasium.Env"):
        GymWrapper(object())


def test_serial_env_of_gym_envs_matches_a_sync_vector_env():
    n, steps, seed = 3, 60, 4
    env = SerialEnv(n, lambda: GymEnv("CartPole-v1"))
    env.set_seed(seed)
    torch.manual_seed(1)
    td = env.rollout(steps, break_when_any_done=False)
    roots, nexts, _, terms, _ = _reference_vector_rollout("CartPole-v1", seed, td["action"].numpy())
    assert terms.any()
    np.testing.assert_array_equal(td["observation"].numpy(), roots)
    np.testing.assert_array_equal(td["next", "observation"].numpy(), nexts)
    np.testing.assert_array_equal(td["next", "terminated"][..., 0].numpy(), terms)
    env.set_seed(seed)
    slow = env.rollout(steps, replay(env, td), break_when_any_done=False)
    assert_same_trajectory(td, slow)
    env.close()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "dict"])
def test_same_step_partial_reset_matches_the_generic_reset(env_id, dict_env_id):
    """The SAME_STEP shortcut of step_and_maybe_reset returns what reset(_reset=done) does."""
    from rlblocks.envs import EnvBase

    env_id = dict_env_id if env_id == "dict" else env_id
    fast, slow = GymEnv(env_id, num_envs=3), GymEnv(env_id, num_envs=3)
    fast.set_seed(0)
    slow.set_seed(0)
    td_fast, td_slow = fast.reset(), slow.reset()
    torch.manual_seed(0)
    resets = 0
    for t in range(60):
        action = fast.rand_action(TensorDict(batch_size=[3]))
        for td in (td_fast, td_slow):
            td.update(action.clone())
            td.set("carried", torch.full((3, 1), t))  # e.g. a policy's extra output
        tr_fast, td_fast = fast.step_and_maybe_reset(td_fast)
        tr_slow = slow.step(td_slow)
        td_slow = EnvBase.maybe_reset(slow, slow.step_mdp(tr_slow))  # the generic path
        resets += int(tr_fast["next", "done"].any())
        assert_same_trajectory(tr_fast, tr_slow)
        assert_same_trajectory(td_fast, td_slow)
        assert td_fast["done"].data_ptr() != td_fast["terminated"].data_ptr()
    assert resets > 0
