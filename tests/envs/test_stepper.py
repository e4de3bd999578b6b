"""The env backend protocol's fast path: a third-party-style backend offering steppers gets
the numpy loops in rollout, SerialEnv and TransformedEnv (the collectors run the same
``fast_rollout``: tests/collectors/test_sync.py), and they produce exactly what the
TensorDict path produces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from rlblocks.core.specs import Categorical, Composite, Unbounded
from rlblocks.envs import (
    EnvBase,
    EnvError,
    InvalidActionError,
    SerialEnv,
    StepCounter,
    Stepper,
    TransformedEnv,
    repeat_action,
)

TIME_LIMIT = 7


class CounterSim:
    """A simulator with gymnasium's single-env API and no rlblocks in it.

    The observation is ``[count, target]``; actions 0/1/2 move the count by -1/0/+1. The
    episode terminates when the count reaches the target and is truncated after
    ``TIME_LIMIT`` steps.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.count = self.target = self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.count, self.target], dtype=np.float32)

    def reset(self) -> tuple[np.ndarray, dict]:
        self.count, self.target = (int(x) for x in self.rng.integers(0, 5, 2))
        if self.count == self.target:
            self.target = (self.target + 2) % 5
        self.t = 0
        return self._obs(), {}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.count += int(action) - 1
        self.t += 1
        terminated = self.count == self.target
        truncated = self.t >= TIME_LIMIT and not terminated
        return self._obs(), -abs(self.count - self.target) / 5, terminated, truncated, {}


def _specs(env: EnvBase) -> None:
    batch = env.batch_size
    env.observation_spec = Composite(
        {"observation": Unbounded(shape=(*batch, 2))}, shape=batch, device=env.device
    )
    env.action_spec = Categorical(3, shape=batch)
    env.reward_spec = Unbounded(shape=(*batch, 1))


class CounterEnv(EnvBase):
    """The backend: ``_reset``/``_step`` for TensorDicts, ``steppers`` for the fast path."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.sim = CounterSim(seed)
        _specs(self)

    def _reset(self, tensordict, **kwargs):
        obs, _ = self.sim.reset()
        return TensorDict({"observation": torch.from_numpy(obs)}, batch_size=[])

    def _step(self, tensordict):
        obs, reward, terminated, truncated, _ = self.sim.step(tensordict["action"])
        return TensorDict(
            {
                "observation": torch.from_numpy(obs),
                "reward": torch.tensor([reward], dtype=torch.float32),
                "terminated": torch.tensor([terminated]),
                "truncated": torch.tensor([truncated]),
            },
            batch_size=[],
        )

    def _set_seed(self, seed):
        self.sim.rng = np.random.default_rng(seed)

    def steppers(self):
        return [Stepper(self.sim.step, self.sim.reset)]


class AutoResetVector:
    """A vector of ``CounterSim`` that restarts finished episodes inside ``step`` (as
    gymnasium's SAME_STEP vector envs do) and presents manual resets (the Stepper
    contract): ``step`` returns the final observation, the ``reset`` that follows the
    already started episode."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.sims = [CounterSim(seed + i) for i in range(n)]
        self.current = np.zeros((n, 2), np.float32)
        self.restarted = np.zeros(n, bool)

    def reset(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
        for i, sim in enumerate(self.sims):
            if mask is None or (mask[i] and not self.restarted[i]):
                self.current[i] = sim.reset()[0]
        self.restarted[:] = False if mask is None else self.restarted & ~mask
        return self.current.copy(), {}

    def step(self, actions: np.ndarray):
        n = len(self.sims)
        obs = np.empty((n, 2), np.float32)
        rewards = np.empty(n, np.float32)
        terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
        for i, sim in enumerate(self.sims):
            obs[i], rewards[i], terminated[i], truncated[i], _ = sim.step(actions[i])
            self.current[i] = obs[i]
            if terminated[i] or truncated[i]:
                self.current[i] = sim.reset()[0]  # restarted now; obs keeps the final one
                self.restarted[i] = True
        return obs, rewards, terminated, truncated, {}


class VectorCounterEnv(EnvBase):
    """A batched backend whose TensorDict path and stepper share one vector object."""

    def __init__(self, n: int = 3, seed: int = 0) -> None:
        super().__init__(batch_size=[n])
        self.vec = AutoResetVector(n, seed)
        _specs(self)

    def _reset(self, tensordict, **kwargs):
        mask = tensordict.get("_reset", None) if tensordict is not None else None
        obs, _ = self.vec.reset(None if mask is None else mask.reshape(-1).numpy())
        return TensorDict({"observation": torch.from_numpy(obs)}, batch_size=self.batch_size)

    def _step(self, tensordict):
        obs, reward, terminated, truncated, _ = self.vec.step(tensordict["action"].numpy())
        return TensorDict(
            {
                "observation": torch.from_numpy(obs),
                "reward": torch.from_numpy(reward).unsqueeze(-1),
                "terminated": torch.from_numpy(terminated).unsqueeze(-1),
                "truncated": torch.from_numpy(truncated).unsqueeze(-1),
            },
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed):
        for i, sim in enumerate(self.vec.sims):
            sim.rng = np.random.default_rng(seed + i)

    def steppers(self):
        return [Stepper(self.vec.step, self.vec.reset, num_envs=len(self.vec.sims))]


def greedy_policy() -> TensorDictModule:
    """Moves the count towards the target but 4 (a deterministic TensorDictModule)."""

    def act(observation):
        count, target = observation[..., 0], observation[..., 1]
        move = torch.sign(target - count)
        # Never towards target 4: those episodes end by truncation.
        return (torch.where(target == 4, torch.zeros_like(move), move) + 1).long()

    return TensorDictModule(act, ["observation"], ["action"])


def generic(policy):
    """The same policy as a plain callable: no declared keys, so the TensorDict loop runs."""
    return lambda td: policy(td)


def assert_same(a, b):
    assert set(a.keys(True, True)) == set(b.keys(True, True))
    for key in a.keys(True, True):
        assert torch.equal(a[key], b[key]), key


def fast_and_generic(env, steps, **kwargs):
    policy = greedy_policy()
    runs = []
    for actor in (policy, generic(policy)):
        env.set_seed(3)
        runs.append(env.rollout(steps, actor, **kwargs))
    return runs


MAKERS = {
    "single": lambda: CounterEnv(),
    "serial": lambda: SerialEnv(3, [lambda i=i: CounterEnv(i) for i in range(3)]),
    "vector": lambda: VectorCounterEnv(3),
    "serial-of-vectors": lambda: SerialEnv(2, lambda: VectorCounterEnv(2)),
}


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS)
@pytest.mark.parametrize("break_when_any_done", [False, True])
def test_fast_rollout_equals_the_tensordict_path(make, break_when_any_done):
    env = make()
    fast, slow = fast_and_generic(env, 40, break_when_any_done=break_when_any_done)
    assert_same(fast, slow)
    assert fast["next", "done"].any()
    if not break_when_any_done:
        assert fast["next", "terminated"].any() and fast["next", "truncated"].any()
    # The fast loop did run: the env's own fast path takes this policy.
    assert env.fast_rollout(4, env.reset(), policy=greedy_policy()) is not None


def test_serial_env_concatenates_its_sub_envs_steppers():
    env = SerialEnv(2, lambda: VectorCounterEnv(2))
    steppers = env.steppers()
    assert [s.num_envs for s in steppers] == [2, 2]
    assert SerialEnv(2, lambda: CounterEnv()).steppers()[1].num_envs is None


def test_random_actions_take_the_fast_path_and_keep_the_env_rules():
    env = SerialEnv(3, lambda: CounterEnv())
    td = env.rollout(60, break_when_any_done=False)
    assert td.batch_size == (3, 60)
    done = td["next", "done"]
    assert torch.equal(done, td["next", "terminated"] | td["next", "truncated"])
    # An episode that terminated ends on its final observation (count == target); the
    # next root observation is a reset's (count != target), not the final one again.
    ended = td["next", "terminated"][..., 0].nonzero().tolist()
    assert ended
    for row, t in ended:
        final = td["next", "observation"][row, t]
        assert final[0] == final[1]
        if t + 1 < 60:
            first = td["observation"][row, t + 1]
            assert first[0] != first[1]


def test_transformed_env_gets_the_fast_path_with_an_episode_limit():
    env = TransformedEnv(CounterEnv(), StepCounter(3))
    fast, slow = fast_and_generic(env, 30, break_when_any_done=False)
    assert_same(fast, slow)
    assert int(fast["next", "step_count"].max()) == 3
    assert fast["next", "truncated"].any()


def test_fast_rollout_validates_the_policys_actions_like_step():
    env = CounterEnv()
    bad = TensorDictModule(lambda obs: torch.full((), 7), ["observation"], ["action"])
    with pytest.raises(InvalidActionError, match="'action'") as fast_error:
        env.rollout(3, bad)
    with pytest.raises(InvalidActionError, match="'action'") as step_error:
        env.step(bad(env.reset()))
    assert str(fast_error.value) == str(step_error.value)


class TwoKeysEnv(CounterEnv):
    def __init__(self, write: bool) -> None:
        super().__init__()
        self.observation_spec = Composite(
            {"observation": Unbounded(shape=(2,)), "other": Unbounded(shape=(1,))}, shape=()
        )
        self.write = write

    def _reset(self, tensordict, **kwargs):
        return super()._reset(tensordict).set("other", torch.zeros(1))

    def _step(self, tensordict):
        return super()._step(tensordict).set("other", torch.ones(1))

    def steppers(self):
        def write(obs, buffers, index):
            buffers["observation"][index] = obs
            buffers["other"][index] = 0.0 if self.sim.t == 0 else 1.0

        return [
            Stepper(self.sim.step, self.sim.reset, write_observation=write if self.write else None)
        ]


def test_a_stepper_writes_several_observation_keys_with_write_observation():
    env = TwoKeysEnv(write=True)
    fast, slow = fast_and_generic(env, 20, break_when_any_done=False)
    assert_same(fast, slow)


def test_backend_mistakes_are_named():
    with pytest.raises(EnvError, match="write_observation"):
        TwoKeysEnv(write=False).rollout(3)

    class Miscounted(CounterEnv):
        def steppers(self):
            return [Stepper(self.sim.step, self.sim.reset)] * 2

    with pytest.raises(EnvError, match=r"steppers for 2 envs.*holds 1"):
        Miscounted().rollout(3)
    with pytest.raises(TypeError, match="callables"):
        Stepper("step", lambda: None)
    with pytest.raises(ValueError, match="frame_skip must be a positive int"):
        Stepper(lambda a: None, lambda: None, frame_skip=0)


def test_repeat_action_sums_rewards_and_stops_at_the_episode_end():
    calls = []

    def step(action):
        calls.append(action)
        return len(calls), 1.0, len(calls) == 2, False, {"n": len(calls)}

    assert repeat_action(step, 1) is step
    skipping = repeat_action(step, 3)
    assert skipping("a") == (2, 2.0, True, False, {"n": 2})  # stopped after 2 of 3
    assert calls == ["a", "a"]
    calls.clear()
    step_until_4 = repeat_action(lambda a: (a, 0.5, False, False, None), 4)
    assert step_until_4(9) == (9, 2.0, False, False, None)
    with pytest.raises(ValueError, match="frame_skip must be a positive int"):
        repeat_action(step, 0)


class NoFastPath(CounterEnv):
    def steppers(self):
        return None


@pytest.mark.parametrize(
    "make",
    [lambda: CounterEnv(), lambda: VectorCounterEnv(2), lambda: NoFastPath()],
    ids=["single-stepper", "vector-stepper", "tensordict-only"],
)
def test_parallel_env_workers_step_like_a_serial_env(make):
    """Workers step through the steppers on shared memory (or through TensorDicts without
    them); either way the transitions, automatic restarts and partial resets are those of
    a SerialEnv of the same envs, also under a time limit that resets running episodes."""
    from rlblocks.envs import ParallelEnv

    envs = [
        TransformedEnv(ParallelEnv(2, make), StepCounter(5)),
        TransformedEnv(SerialEnv(2, make), StepCounter(5)),
    ]
    actions = envs[1].action_spec.rand((40,))
    runs = []
    try:
        for env in envs:
            env.set_seed(11)
            td, out = env.reset(), []
            for action in actions:
                transition, td = env.step_and_maybe_reset(td.set("action", action))
                out.append(transition)
            runs.append(torch.stack(out, -1))
    finally:
        envs[0].close()
    assert_same(*runs)
    assert runs[0]["next", "terminated"].any() and runs[0]["next", "truncated"].any()
