"""NoopResetEnv, FireResetEnv, FrameSkipTransform, EndOfLifeTransform, SignTransform,
InitTracker and TensorDictPrimer."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.specs import Binary, Bounded, Composite, Unbounded
from rlblocks.envs import GymEnv, PendulumEnv, SerialEnv, check_env_specs
from rlblocks.envs.errors import TransformError, UnsupportedEnvOperationError
from rlblocks.envs.transforms import (
    Compose,
    EndOfLifeTransform,
    FireResetEnv,
    FrameSkipTransform,
    InitTracker,
    NoopResetEnv,
    SignTransform,
    StepCounter,
    TensorDictPrimer,
    TransformedEnv,
)


def _recording(counting_env_cls):
    class Recording(counting_env_cls):
        """Also records every action it receives."""

        def _step(self, tensordict):
            self.actions = [*getattr(self, "actions", []), tensordict["action"].clone()]
            return super()._step(tensordict)

    return Recording


# ---------------------------------------------------------------------- NoopResetEnv
def test_noop_reset_takes_the_noops(counting_env_cls):
    base = _recording(counting_env_cls)(limit=100)
    env = TransformedEnv(base, NoopResetEnv(4, random=False, noop_action=0.25))
    td = env.reset()
    assert td["observation"].item() == 4
    assert not td["done"].any()
    assert [a.item() for a in base.actions] == [0.25] * 4
    check_env_specs(env)


def test_random_noops_are_between_one_and_noops(counting_env_cls):
    env = TransformedEnv(counting_env_cls(limit=100), NoopResetEnv(3))
    torch.manual_seed(0)
    counts = {env.reset()["observation"].item() for _ in range(40)}
    assert counts == {1, 2, 3}


def test_an_episode_ending_during_the_noops_is_reset(counting_env_cls):
    env = TransformedEnv(counting_env_cls(limit=2), NoopResetEnv(5, random=False))
    td = env.reset()
    # 1, 2 (done: reset to 0), 1, 2 (done: reset to 0), 1.
    assert td["observation"].item() == 1 and not td["done"].any()


def test_noops_in_a_batched_env(counting_env_cls):
    env = TransformedEnv(counting_env_cls(batch_size=[3], limit=100), NoopResetEnv(2, False))
    td = env.reset()
    assert td["observation"].flatten().tolist() == [2, 2, 2]
    td.set("_reset", torch.ones(3, 1, dtype=torch.bool))
    assert env.reset(td)["observation"].flatten().tolist() == [2, 2, 2]  # a full reset
    td.set("_reset", torch.tensor([[True], [False], [False]]))
    with pytest.raises(UnsupportedEnvOperationError, match="inside each sub-env"):
        env.reset(td)


def test_noop_reset_with_random_actions_keeps_earlier_transforms():
    env = TransformedEnv(PendulumEnv(), Compose(StepCounter(), NoopResetEnv(3, random=False)))
    assert env.reset()["step_count"].item() == 3
    check_env_specs(env)


def test_noop_reset_errors(counting_env_cls):
    with pytest.raises(TransformError, match="noops must be a positive int"):
        NoopResetEnv(0)
    env = TransformedEnv(counting_env_cls(), NoopResetEnv(2, noop_action=0.0))
    env.base_env.full_action_spec = Composite(
        a=Bounded(-1.0, 1.0, shape=(1,)), b=Bounded(-1.0, 1.0, shape=(1,))
    )
    env.invalidate_specs()
    with pytest.raises(TransformError, match="noop_action is one action"):
        env.reset()


# ---------------------------------------------------------------------- FrameSkipTransform
def test_frame_skip_repeats_the_action_and_sums_rewards(counting_env_cls):
    base = _recording(counting_env_cls)(limit=100)
    env = TransformedEnv(base, FrameSkipTransform(3))
    td = env.step(env.reset().set("action", torch.tensor([0.5])))
    assert td["next", "observation"].item() == 3
    assert td["next", "reward"].item() == 1.5
    assert [a.item() for a in base.actions] == [0.5] * 3
    check_env_specs(env)


def test_frame_skip_behind_another_transform_steps_through_it(counting_env_cls):
    skip = FrameSkipTransform(3)
    env = TransformedEnv(counting_env_cls(limit=100), Compose(StepCounter(), skip))
    td = env.reset()
    for step in range(1, 4):
        td = env.step(td.set("action", torch.tensor([0.5])))
        # Every frame went through the StepCounter before the skip (its parent).
        assert td["next", "observation"].item() == td["next", "step_count"].item() == 3 * step
        td = env.step_mdp(td)
    assert skip.parent is skip.parent  # the parent view is built once
    check_env_specs(env)


def test_frame_skip_stops_at_the_end_of_an_episode(counting_env_cls):
    env = TransformedEnv(counting_env_cls(limit=4), FrameSkipTransform(3))
    td = env.reset().set("action", torch.tensor([1.0]))
    td = env.step_mdp(env.step(td)).set("action", torch.tensor([1.0]))
    td = env.step(td)
    assert td["next", "observation"].item() == 4 and td["next", "done"].item()
    assert td["next", "reward"].item() == 1.0  # one frame only


def test_frame_skip_in_a_batched_env_stops_when_any_element_is_done(counting_env_cls):
    env = TransformedEnv(counting_env_cls(batch_size=[2], limit=3), FrameSkipTransform(3))
    td = env.step_mdp(env.step(env.reset().set("action", torch.ones(2, 1))))
    assert td["observation"].flatten().tolist() == [3, 3]
    td.set("_reset", torch.tensor([[True], [False]]))
    td = env.reset(td)
    td = env.step(td.set("action", torch.ones(2, 1)))
    # Element 1 ends after one frame, so element 0 takes one frame too.
    assert td["next", "observation"].flatten().tolist() == [1, 4]
    assert td["next", "reward"].flatten().tolist() == [1.0, 1.0]


def test_frame_skip_carries_the_simulator_state():
    env = TransformedEnv(PendulumEnv(batch_size=[2]), FrameSkipTransform(4))
    base = PendulumEnv(batch_size=[2])
    td = env.reset()
    action = torch.tensor([[1.0], [-2.0]])
    out = env.step(td.clone().set("action", action))
    manual, reward = td.clone(), torch.zeros(2, 1)
    for _ in range(4):
        step = base.step(manual.set("action", action))
        reward = reward + step["next", "reward"]
        manual = base.step_mdp(step)
    torch.testing.assert_close(out["next", "state"], manual["state"])
    torch.testing.assert_close(out["next", "reward"], reward)


# ---------------------------------------------------------------------- InitTracker
def test_init_tracker_in_a_batched_env(counting_env_cls):
    env = TransformedEnv(counting_env_cls(batch_size=[2], limit=2), InitTracker())
    check_env_specs(env)
    assert env.observation_spec["is_init"] == Binary(shape=(2, 1), dtype=torch.bool)
    td = env.rollout(5, break_when_any_done=False)
    assert td["is_init"][0].flatten().tolist() == [True, False, True, False, True]
    assert not td["next", "is_init"].any()
    td = env.step_mdp(env.rand_step(env.reset()))
    td.set("_reset", torch.tensor([[False], [True]]))
    assert env.reset(td)["is_init"].flatten().tolist() == [False, True]


def test_init_tracker_on_a_plain_trajectory_and_fast_rollout():
    env = TransformedEnv(GymEnv("CartPole-v1"), Compose(StepCounter(7), InitTracker()))
    td = env.rollout(20, break_when_any_done=False)
    starts = td["step_count"].squeeze(-1) == 0
    assert torch.equal(td["is_init"].squeeze(-1), starts)
    plain = InitTracker()(td.exclude("is_init", ("next", "is_init")))
    assert torch.equal(plain["is_init"], td["is_init"])
    assert not plain["next", "is_init"].any()


# ---------------------------------------------------------------------- TensorDictPrimer
def test_primer_adds_zero_filled_entries_to_specs_and_resets():
    primer = TensorDictPrimer(hidden=Unbounded(shape=(2, 3)), mask=Binary(shape=(4,)))
    env = TransformedEnv(PendulumEnv(batch_size=[5]), primer)
    check_env_specs(env)
    assert env.observation_spec["hidden"] == Unbounded(shape=(5, 2, 3))
    assert env.state_spec["hidden"] == Unbounded(shape=(5, 2, 3))
    td = env.reset()
    assert td["hidden"].shape == (5, 2, 3) and not td["hidden"].any()
    assert td["mask"].dtype == torch.bool


def test_primer_carries_what_the_policy_writes_and_partial_resets():
    env = TransformedEnv(PendulumEnv(batch_size=[2]), TensorDictPrimer(h=Unbounded(shape=(1,))))

    def policy(td):
        td.set(("next", "h"), td["h"] + 1)
        return env.rand_action(td)

    td = env.rollout(4, policy=policy)
    assert td["h"][0].flatten().tolist() == [0, 1, 2, 3]
    assert td["next", "h"][0].flatten().tolist() == [1, 2, 3, 4]
    last = env.step_mdp(td[:, -1])
    last.set("_reset", torch.tensor([[True], [False]]))
    assert env.reset(last)["h"].flatten().tolist() == [0.0, 4.0]


def test_primer_random_default_values_and_given_batch_dims():
    bounded = Bounded(2.0, 3.0, shape=(3, 4))
    env = TransformedEnv(PendulumEnv(batch_size=[3]), TensorDictPrimer({"x": bounded}, random=True))
    x = env.reset()["x"]
    assert x.shape == (3, 4) and x.min() >= 2.0 and x.max() <= 3.0  # (3, 4) starts with [3]
    env = TransformedEnv(
        PendulumEnv(batch_size=[3]),
        TensorDictPrimer({"x": Unbounded(shape=(3,))}, default_value={"x": 7.0}, expand_specs=True),
    )
    assert env.reset()["x"].shape == (3, 3) and env.reset()["x"].eq(7.0).all()
    with_batch = TensorDictPrimer(y=Unbounded(shape=(2, 5)), expand_specs=False)
    env = TransformedEnv(PendulumEnv(batch_size=[2]), with_batch)
    assert env.reset()["y"].shape == (2, 5)
    check_env_specs(env)


def test_primer_from_an_unbatched_composite_always_gets_the_batch_dims():
    # An RNN's primer_specs(): [num_layers, hidden] leaves in a Composite of shape []; with
    # one env and one layer, [1, 8] must not pass for "already batched".
    specs = Composite(h=Unbounded(shape=(1, 8)), c=Unbounded(shape=(1, 8)))
    env = TransformedEnv(PendulumEnv(batch_size=[1]), TensorDictPrimer(specs))
    td = env.reset()
    assert td["h"].shape == td["c"].shape == (1, 1, 8)
    check_env_specs(env)


def test_primer_on_a_plain_tensordict():
    primer = TensorDictPrimer(Composite(h=Unbounded(shape=(4,))))
    td = TensorDict({"obs": torch.ones(6, 2), "next": {"obs": torch.ones(6, 2)}}, batch_size=[6])
    out = primer(td)
    assert out["h"].shape == out["next", "h"].shape == (6, 4)
    kept = primer(TensorDict(h=torch.ones(6, 4), batch_size=[6]))
    assert kept["h"].eq(1).all()


def test_primer_errors():
    with pytest.raises(TransformError, match="give at least one primer"):
        TensorDictPrimer()
    with pytest.raises(TransformError, match="must be a leaf spec"):
        TensorDictPrimer(h=(1, 64))
    env = TransformedEnv(
        PendulumEnv(batch_size=[2]), TensorDictPrimer(y=Unbounded(shape=(5,)), expand_specs=False)
    )
    with pytest.raises(TransformError, match="does not start with the env's batch size"):
        env.reset()
    with pytest.raises(TransformError, match="has not seen an env's batch size"):
        TensorDictPrimer(y=Unbounded(shape=(5,)), expand_specs=False)(TensorDict(batch_size=[2]))


def test_noops_per_sub_env_of_a_serial_env_allow_partial_resets(counting_env_cls):
    def make(limit):
        return TransformedEnv(counting_env_cls(limit=limit), NoopResetEnv(1, random=False))

    env = SerialEnv(2, make, [{"limit": 3}, {"limit": 4}])
    td = env.rollout(6, break_when_any_done=False)
    # Every episode starts after one no-op: observation 1, never 0.
    assert td["observation"][0].flatten().tolist() == [1, 2, 1, 2, 1, 2]
    assert td["observation"][1].flatten().tolist() == [1, 2, 3, 1, 2, 3]
    env.close()


# ---------------------------------------------------------------------- Atari-style transforms
def test_frame_skip_max_pools_the_last_two_frames(counting_env_cls):
    class CountingDown(counting_env_cls):
        def _step(self, tensordict):
            return (
                super()
                ._step(tensordict)
                .apply(lambda x: x, batch_size=self.batch_size)
                .set("observation", -self.count.clone())
            )

    env = TransformedEnv(CountingDown(limit=100), FrameSkipTransform(3, max_pool="observation"))
    td = env.step(env.reset().set("action", torch.tensor([0.5])))
    assert td["next", "observation"].item() == -2  # frames -1, -2, -3: max of the last two
    assert td["next", "reward"].item() == 1.5
    check_env_specs(env)


def test_frame_skip_max_pool_needs_an_observation(counting_env_cls):
    env = TransformedEnv(counting_env_cls(), FrameSkipTransform(2, max_pool="pixels"))
    with pytest.raises(TransformError, match=r"max_pool entries \['pixels'\] are not obs"):
        env.observation_spec  # noqa: B018


def _gym_frames(env_id, seed, noops, actions, frames):
    """A hand-written frame skip with max-pooling over a raw gymnasium env (after ``noops``
    single steps of action 0)."""
    import gymnasium as gym

    raw = gym.make(env_id)
    obs, _ = raw.reset(seed=seed)
    for _ in range(noops):
        obs, *_ = raw.step([0.0])
    out = []
    for action in actions:
        total, last = 0.0, [obs]
        for _ in range(frames):
            obs, reward, terminated, truncated, _ = raw.step(action)
            total, last = total + reward, [last[-1], obs]
            if terminated or truncated:
                break
        out.append((torch.as_tensor(last[0]).maximum(torch.as_tensor(last[1])), total))
    return out


@pytest.mark.parametrize("noops", [0, 2])
def test_frame_skip_on_gymnasium_matches_a_hand_written_loop(noops):
    # GymWrapper takes the repeated frames with bare gymnasium steps (also behind a
    # NoopResetEnv, which leaves steps alone): the same as a hand-written loop.
    skip = FrameSkipTransform(4, max_pool="observation")
    noop = NoopResetEnv(noops, random=False, noop_action=[0.0]) if noops else None
    env = TransformedEnv(GymEnv("Pendulum-v1"), Compose(noop, skip) if noop else skip)
    actions = [[0.5], [-1.0], [2.0]]
    env.set_seed(3)
    td = env.reset()
    for action, (obs, reward) in zip(actions, _gym_frames("Pendulum-v1", 3, noops, actions, 4)):
        td = env.step(td.set("action", torch.tensor(action)))
        torch.testing.assert_close(td["next", "observation"], obs.to(torch.float32))
        assert td["next", "reward"].item() == pytest.approx(reward, rel=1e-5)
        td = env.step_mdp(td)


def test_fire_reset_takes_its_actions_after_every_reset(counting_env_cls):
    base = _recording(counting_env_cls)(limit=100)
    env = TransformedEnv(base, FireResetEnv((0.5, -0.5)))
    assert env.reset()["observation"].item() == 2
    assert [a.item() for a in base.actions] == [0.5, -0.5]
    check_env_specs(env)
    with pytest.raises(TransformError, match=r"non-empty sequence of actions, e.g. \(1, 2\)"):
        FireResetEnv(())


def _with_lives(counting_env_cls, lives_every):
    class WithLives(counting_env_cls):
        """Loses a life every ``lives_every`` frames, from 3 lives."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.full_observation_spec["lives"] = Unbounded(
                shape=self.batch_size, dtype=torch.int64
            )

        def _lives(self):
            return 3 - self.count.reshape(self.batch_size) // lives_every

        def _reset(self, tensordict, **kwargs):
            return super()._reset(tensordict, **kwargs).set("lives", self._lives())

        def _step(self, tensordict):
            return super()._step(tensordict).set("lives", self._lives())

    return WithLives


def test_end_of_life_flags_a_lost_life_and_the_end_of_the_game(counting_env_cls):
    env = TransformedEnv(
        _with_lives(counting_env_cls, lives_every=2)(limit=5), Compose(EndOfLifeTransform())
    )
    trajectory = env.rollout(5)
    assert trajectory["next", "end-of-life"].flatten().tolist() == [False, True, False, True, True]
    assert not trajectory["next", "done"][:4].any()  # the env is not reset at a lost life
    assert env.reset()["end-of-life"].flatten().tolist() == [False]
    check_env_specs(env)


def test_end_of_life_needs_a_lives_counter(counting_env_cls):
    env = TransformedEnv(counting_env_cls(), EndOfLifeTransform())
    with pytest.raises(TransformError, match="info_keys=\\['lives'\\]"):
        env.observation_spec  # noqa: B018
    with pytest.raises(TransformError, match="drop eol_attribute"):  # TorchRL's argument
        EndOfLifeTransform(eol_attribute="unwrapped.ale.lives")


def test_sign_transform_keeps_only_the_sign_of_the_reward(counting_env_cls):
    env = TransformedEnv(counting_env_cls(limit=100), SignTransform())
    rewards = [
        env.step(env.reset().set("action", torch.tensor([a])))["next", "reward"].item()
        for a in (0.3, 0.0, -0.7)
    ]
    assert rewards == [1.0, 0.0, -1.0]
    assert env.reward_spec.low.item() == -1.0 and env.reward_spec.high.item() == 1.0
