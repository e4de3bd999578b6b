"""SyncDataCollector: batches, trajectory ids, options, state and errors."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule

from rlblocks.collectors import (
    CollectorClosedError,
    CollectorConfigError,
    CollectorError,
    SyncDataCollector,
)
from rlblocks.core import ExplorationType, exploration_type
from rlblocks.envs import (
    CartPoleEnv,
    Compose,
    GymEnv,
    InvalidActionError,
    ParallelEnv,
    PendulumEnv,
    RewardSum,
    SerialEnv,
    StepCounter,
    TransformedEnv,
)

TRAJ = ("collector", "traj_ids")


def test_batches_have_the_env_batch_then_time(kit):
    collector = SyncDataCollector(
        lambda: kit.WalkEnv(batch_size=[4]), frames_per_batch=40, total_frames=100
    )
    batches = list(collector)
    collector.shutdown()
    # 100 frames round up to 3 batches of 40.
    assert [b.batch_size for b in batches] == [torch.Size([4, 10])] * 3
    assert collector.frames == 120 and collector.batches == 3 and collector.finished
    batch = batches[0]
    assert set(batch.keys(True, True)) >= {
        "observation",
        "action",
        "done",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        TRAJ,
    }
    # Root observation of step t+1 is the next observation of step t, unless it was reset.
    same = batch["observation"][:, 1:] == batch["next", "observation"][:, :-1]
    assert (same | batch["next", "done"][:, :-1]).all()


def test_unbatched_env_gives_time_only_batches():
    with SyncDataCollector(PendulumEnv(), frames_per_batch=16, total_frames=32) as collector:
        shapes = [b.batch_size for b in collector]
    assert shapes == [torch.Size([16])] * 2


def test_traj_ids_follow_done_flags_and_are_never_reused(kit):
    collector = SyncDataCollector(
        lambda: kit.WalkEnv(batch_size=[3]), frames_per_batch=30, total_frames=300
    )
    batches = list(collector)
    collector.shutdown()
    ids = torch.cat([b[TRAJ].reshape(-1) for b in batches])
    done = torch.cat([b["next", "done"].reshape(-1) for b in batches])
    assert done.any()  # the walk ends episodes: the property below is not vacuous
    # Collect (env, time) sequences and check the rule.
    per_env = [torch.cat([b[TRAJ][e] for b in batches]) for e in range(3)]
    per_env_done = [torch.cat([b["next", "done"][e, :, 0] for b in batches]) for e in range(3)]
    seen: set[int] = set()
    for env_ids, env_done in zip(per_env, per_env_done):
        changes = env_ids[1:] != env_ids[:-1]
        assert torch.equal(changes, env_done[:-1])
        seen_here = set(env_ids.unique().tolist())
        assert not seen_here & seen  # no id shared between envs
        seen |= seen_here
    assert len(seen) == len(ids.unique())


def test_random_actions_without_policy_are_in_the_spec():
    env = CartPoleEnv(batch_size=[2])
    with SyncDataCollector(env, frames_per_batch=200, total_frames=200) as collector:
        (batch,) = list(collector)
    assert batch.batch_size == (2, 100)
    assert env.action_spec.expand(100, 2).is_in(batch["action"].T)
    assert set(batch["action"].unique().tolist()) == {0, 1}


def test_policy_actions_are_recorded_with_extra_outputs(kit):
    policy = kit.make_policy()
    with SyncDataCollector(
        lambda: kit.WalkEnv(batch_size=[2]),
        policy,
        frames_per_batch=20,
        total_frames=20,
        exploration_type=ExplorationType.DETERMINISTIC,
    ) as collector:
        (batch,) = list(collector)
    expected = policy.module.net(batch["observation"]).argmax(-1)
    assert torch.equal(batch["action"], expected)
    assert batch["logits"].shape == (2, 10, 2)


class _HookedModule(TensorDictModule):
    """A TensorDictModule subclass: the collector must call it as it is."""


def test_fast_policy_path_gives_the_same_data_as_the_module_call(kit):
    plain = kit.make_policy(seed=3)
    hooked = _HookedModule(plain.module, ["observation"], ["action", "logits"])
    batches = []
    for policy in (plain, hooked):
        torch.manual_seed(0)
        with SyncDataCollector(
            lambda: kit.WalkEnv(batch_size=[2], seed=1), policy, frames_per_batch=40
        ) as collector:
            batches.append(collector.next())
    assert (batches[0] == batches[1]).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: GymEnv("CartPole-v1"),
        lambda: GymEnv("CartPole-v1", num_envs=3),
        lambda: GymEnv("CartPole-v1", num_envs=1),  # every done row is all rows
        # Transforms carrying per-episode state across batches: applied per batch at once.
        lambda: TransformedEnv(GymEnv("CartPole-v1", num_envs=3), RewardSum()),
        lambda: TransformedEnv(GymEnv("CartPole-v1"), Compose(StepCounter(), RewardSum())),
    ],
    ids=["single", "vector", "vector-of-one", "vector+RewardSum", "single+StepCounter+RewardSum"],
)
def test_gym_env_fast_loop_gives_the_batches_of_the_step_loop(make):
    # A TensorDictModule over gym envs runs in the env's numpy loop from the second batch
    # on; a plain callable (no declared keys) always takes the step loop. Same data.
    net = torch.nn.Linear(4, 2)
    module = TensorDictModule(lambda obs: net(obs).argmax(-1), ["observation"], ["action"])

    def plain(td):
        return module(td)

    batches, fast_batches = [], []
    for policy in (module, plain):
        env = make()
        env.set_seed(7)
        numpy_loop = env.fast_rollout

        def spy(*args, _loop=numpy_loop, **kwargs):
            out = _loop(*args, **kwargs)
            fast_batches.append(out is not None)
            return out

        env.fast_rollout = spy
        with SyncDataCollector(env, policy, frames_per_batch=60, total_frames=300) as collector:
            batches.append(torch.cat(list(collector), -1))
        env.close()
    assert fast_batches == [True] * 4 + [False] * 4  # module: batches 2-5; plain: never
    fast, slow = batches
    assert set(fast.keys(True, True)) == set(slow.keys(True, True))
    for key in fast.keys(True, True):
        assert torch.equal(fast[key], slow[key]), key
    assert fast["next", "done"].sum() >= 2  # episodes ended, and continued across batches


@pytest.mark.parametrize("frames_per_batch", [1, 7, 8])
def test_short_batches_take_the_step_loop(frames_per_batch):
    # The numpy loop's setup per batch costs more than it saves over fewer than
    # MIN_NUMPY_LOOP_STEPS steps; the data are the same either way (test above).
    from rlblocks.collectors._sync import MIN_NUMPY_LOOP_STEPS

    net = torch.nn.Linear(4, 2)
    module = TensorDictModule(lambda obs: net(obs).argmax(-1), ["observation"], ["action"])
    env = GymEnv("CartPole-v1")
    calls = []
    numpy_loop = env.fast_rollout

    def spy(*args, **kwargs):
        out = numpy_loop(*args, **kwargs)
        calls.append(out is not None)
        return out

    env.fast_rollout = spy
    total = 4 * frames_per_batch
    with SyncDataCollector(env, module, frames_per_batch=frames_per_batch, total_frames=total) as c:
        frames = sum(batch.numel() for batch in c)
    env.close()
    assert frames == total
    assert calls == ([True] * 3 if frames_per_batch >= MIN_NUMPY_LOOP_STEPS else [])


def test_exploration_type_is_set_while_collecting(kit):
    seen = []

    def policy(td):
        seen.append(exploration_type())
        return td.set("action", torch.zeros(td.batch_size, dtype=torch.int64))

    for wanted in (ExplorationType.RANDOM, ExplorationType.DETERMINISTIC):
        with SyncDataCollector(
            kit.WalkEnv(), policy, frames_per_batch=2, exploration_type=wanted
        ) as collector:
            collector.next()
        assert seen[-2:] == [wanted, wanted]


def test_init_random_frames_replace_the_policy_actions(kit):
    def policy(td):
        td.set("action", torch.ones(td.batch_size, dtype=torch.int64))
        return td.set("policy_ran", torch.ones(td.batch_size))

    with SyncDataCollector(
        kit.WalkEnv(batch_size=[2]), policy, frames_per_batch=20, init_random_frames=30
    ) as collector:
        first, second, third = collector.next(), collector.next(), collector.next()
    # 30 random frames round up to two batches; they keep the policy's other outputs.
    assert (first["action"] == 0).any() and (second["action"] == 0).any()
    assert (third["action"] == 1).all()
    assert all(b["policy_ran"].all() for b in (first, second, third))


def test_reset_at_each_iter_starts_new_trajectories(kit):
    with SyncDataCollector(
        kit.WalkEnv(batch_size=[2]), frames_per_batch=4, reset_at_each_iter=True
    ) as collector:
        a, b = collector.next(), collector.next()
    assert not set(a[TRAJ].unique().tolist()) & set(b[TRAJ].unique().tolist())


def test_max_frames_per_traj_truncates_long_episodes():
    with SyncDataCollector(
        PendulumEnv(batch_size=[2]), frames_per_batch=40, max_frames_per_traj=7
    ) as collector:
        batch = collector.next()
    assert batch["next", "step_count"].max() == 7
    assert batch["next", "truncated"].sum() == 2 * (20 // 7)
    lengths = torch.unique(batch[TRAJ], return_counts=True)[1]
    assert lengths.max() <= 7


@pytest.mark.parametrize("limit", [None, -1])
def test_max_frames_per_traj_none_or_minus_one_means_no_limit(limit):
    # -1 is TorchRL's spelling: SyncDataCollector(env, policy, ..., max_frames_per_traj=-1)
    with SyncDataCollector(
        PendulumEnv(batch_size=[2]), frames_per_batch=40, max_frames_per_traj=limit
    ) as collector:
        batch = collector.next()
    assert collector.max_frames_per_traj is None
    assert "step_count" not in batch.keys() and not batch["next", "truncated"].any()


def test_split_trajs_pads_each_trajectory_into_a_row(kit):
    with SyncDataCollector(
        kit.WalkEnv(batch_size=[3]), frames_per_batch=60, split_trajs=True
    ) as collector:
        batch = collector.next()
    mask = batch["collector", "mask"]
    assert mask.sum() == 60
    assert batch.batch_size[0] == len(batch[TRAJ][mask].unique())
    # Real frames come first in each row and share the row's id.
    assert torch.equal(mask, mask.cumprod(-1).bool())
    ids = batch[TRAJ]
    assert ((ids == ids[:, :1]) | ~mask).all()
    # A row ends with done, except where the batch ran out.
    lengths = mask.sum(-1)
    last_done = batch["next", "done"][torch.arange(len(lengths)), lengths - 1, 0]
    assert last_done.sum() >= 1


def test_postproc_runs_on_every_batch(kit):
    def postproc(batch):
        return batch.set("seen", torch.ones(batch.batch_size))

    with SyncDataCollector(
        kit.WalkEnv(), frames_per_batch=5, total_frames=10, postproc=postproc
    ) as collector:
        assert all(b["seen"].all() for b in collector)


@pytest.mark.parametrize("split", [False, True])
def test_replay_buffer_receives_frames_instead_of_the_loop(kit, split):
    buffer = kit.ListBuffer()
    with SyncDataCollector(
        kit.WalkEnv(batch_size=[2]),
        frames_per_batch=20,
        total_frames=40,
        replay_buffer=buffer,
        split_trajs=split,
    ) as collector:
        yielded = list(collector)
    assert yielded == [None, None]
    if split:
        assert sum(int(item["collector", "mask"].sum()) for item in buffer.items) == 40
    else:
        assert len(buffer) == 40 and buffer.items[0].batch_size == ()


def test_state_dict_resumes_the_same_episodes(kit):
    policy = kit.make_policy()

    def make():
        return SyncDataCollector(kit.WalkEnv(batch_size=[2], seed=5), policy, frames_per_batch=20)

    torch.manual_seed(1)
    first = make()
    first.next()
    state = first.state_dict()
    rng = torch.get_rng_state()
    expected = [first.next(), first.next()]
    second = make()
    second.load_state_dict(state)
    torch.set_rng_state(rng)
    got = [second.next(), second.next()]
    assert second.frames == first.frames == 60
    for a, b in zip(expected, got):
        assert (a == b).all()


def test_state_of_an_env_that_cannot_save_starts_new_episodes():
    collector = SyncDataCollector(lambda: GymEnv("CartPole-v1", num_envs=2), frames_per_batch=10)
    collector.next()
    state = collector.state_dict()
    assert state["carry"] is None
    other = SyncDataCollector(lambda: GymEnv("CartPole-v1", num_envs=2), frames_per_batch=10)
    other.load_state_dict(state)
    batch = other.next()
    assert other.frames == 20
    # Numbering continues: new episodes get ids after those of the saved run.
    assert batch[TRAJ].min() >= 2
    collector.shutdown()
    other.shutdown()


def test_set_seed_makes_collection_reproducible(kit):
    runs = []
    for _ in range(2):
        with SyncDataCollector(kit.WalkEnv(batch_size=[2]), frames_per_batch=20) as collector:
            assert collector.set_seed(7) == 9
            torch.manual_seed(0)
            runs.append(collector.next())
    assert (runs[0] == runs[1]).all()


def test_update_policy_weights_with_explicit_weights(kit):
    policy = kit.make_policy()
    collector = SyncDataCollector(kit.WalkEnv(), policy, frames_per_batch=4)
    zeros = TensorDict.from_module(policy).data.clone().zero_()
    collector.update_policy_weights_(zeros)
    assert all((p == 0).all() for p in policy.parameters())
    state = {k: torch.ones_like(v) for k, v in policy.state_dict().items()}
    collector.update_policy_weights_(state)
    assert all((p == 1).all() for p in policy.parameters())
    collector.update_policy_weights_()  # the collector runs the policy itself: a no-op
    collector.shutdown()


def test_storing_device_is_honoured(kit):
    device = torch.device("cpu")
    with SyncDataCollector(
        kit.WalkEnv(), kit.make_policy(), frames_per_batch=4, device=device,
        storing_device=device,
    ) as collector:  # fmt: skip
        assert collector.next().device == device


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"device": ["cpu"]}, r"device must be a torch.device, a str .* got \['cpu'\]"),
        ({"storing_device": "gpu0"}, "storing_device must be a torch.device"),
    ],
)
def test_bad_devices_are_rejected_with_the_fix(kit, kwargs, match):
    env = kit.WalkEnv()
    with pytest.raises(CollectorConfigError, match=match):
        SyncDataCollector(env, frames_per_batch=2, **kwargs)
    assert not env.is_closed  # the caller's env is left alone


@pytest.mark.skipif(torch.cuda.is_available(), reason="the behaviour without a GPU")
def test_a_device_this_machine_lacks_is_rejected(kit):
    with pytest.raises(CollectorConfigError, match="device='cuda' is not available"):
        SyncDataCollector(lambda: kit.WalkEnv(), frames_per_batch=2, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_without_an_index_is_the_current_gpu(kit):
    with SyncDataCollector(
        kit.WalkEnv(device="cuda:0"), kit.make_policy(), frames_per_batch=4, device="cuda"
    ) as collector:
        assert collector.device == torch.device("cuda:0") == collector.env.device
        assert collector.next().device == torch.device("cuda:0")


class _ReusingEnv(CartPoleEnv):
    """Writes every step's observation into the same tensor (a preallocated buffer)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.out = None

    def _step(self, tensordict):
        td = super()._step(tensordict)
        if self.out is None:
            self.out = td["observation"].clone()
        self.out.copy_(td["observation"])
        td["observation"] = self.out
        return td


def test_envs_reusing_output_buffers_still_give_correct_batches():
    collector = SyncDataCollector(_ReusingEnv(batch_size=[2]), frames_per_batch=20)
    batch = collector.next()
    assert collector._copy_steps is True
    obs = batch["next", "observation"]
    assert not (obs[:, 1:] == obs[:, :-1]).all(-1).any()  # each step kept its own values
    collector.shutdown()


def test_shutdown_closes_only_the_envs_it_created(kit):
    given = kit.WalkEnv()
    collector = SyncDataCollector(given, frames_per_batch=2)
    collector.shutdown()
    collector.shutdown()  # idempotent
    assert not given.is_closed
    created = SyncDataCollector(lambda: kit.WalkEnv(), frames_per_batch=2)
    env = created.env
    created.shutdown()
    assert env.is_closed
    with pytest.raises(CollectorClosedError, match="after shutdown"):
        created.next()


def test_iteration_stops_after_total_frames(kit):
    with SyncDataCollector(kit.WalkEnv(), frames_per_batch=3, total_frames=3) as collector:
        collector.next()
        with pytest.raises(StopIteration):
            collector.next()
        assert list(collector) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"frames_per_batch": 0}, "frames_per_batch must be a positive int"),
        ({"frames_per_batch": 7}, "not a multiple of the env's 2 sub-envs.*6 or 8"),
        ({"frames_per_batch": 8, "total_frames": 0}, "total_frames must be"),
        ({"frames_per_batch": 8, "max_frames_per_traj": 0}, "max_frames_per_traj"),
        ({"frames_per_batch": 8, "policy": 3}, "policy must be a callable"),
        ({"frames_per_batch": 8, "postproc": "x"}, "postproc must be a callable"),
        ({"frames_per_batch": 8, "exploration_type": "random"}, "ExplorationType"),
        ({"frames_per_batch": 8, "replay_buffer": object()}, "extend"),
    ],
)
def test_bad_arguments_are_rejected_with_the_fix(kit, kwargs, match):
    with pytest.raises(CollectorConfigError, match=match):
        SyncDataCollector(kit.WalkEnv(batch_size=[2]), **kwargs)


def test_bad_env_factories_are_rejected():
    with pytest.raises(CollectorConfigError, match="create_env_fn must be"):
        SyncDataCollector(3, frames_per_batch=2)
    with pytest.raises(CollectorConfigError, match="returned dict"):
        SyncDataCollector(dict, frames_per_batch=2)


def test_steps_with_different_entries_raise_a_clear_error(kit):
    def policy(td):
        td.set("action", torch.zeros((), dtype=torch.int64))
        if float(td["observation"]) > 0:
            td.set("extra", torch.ones(()))
        return td

    env = kit.WalkEnv(seed=3)
    collector = SyncDataCollector(env, policy, frames_per_batch=50)
    with pytest.raises(CollectorError, match="other entries than step 0.*extra"):
        collector.next()
    collector.shutdown()


def test_the_first_policy_action_is_checked_against_the_spec(kit):
    def bad_policy(td):
        return td.set("action", torch.full(td.batch_size, 5))

    collector = SyncDataCollector(kit.WalkEnv(), bad_policy, frames_per_batch=2)
    with pytest.raises(InvalidActionError, match="action"):
        collector.next()
    collector.shutdown()


@pytest.mark.parametrize(
    "make",
    [
        lambda: ParallelEnv(2, lambda: GymEnv("CartPole-v1")),
        lambda: SerialEnv(2, lambda: GymEnv("CartPole-v1")),
    ],
    ids=["parallel", "serial"],
)
def test_random_batches_from_batched_gym_envs_continue_across_batches(make):
    # Without a policy these envs' own fast rollouts give the batches (the ParallelEnv one
    # only from a full reset: never from the partial reset that ends a batch).
    torch.manual_seed(2)  # with it, an env ends an episode on a batch's last step
    env = make()
    with SyncDataCollector(env, frames_per_batch=100, total_frames=600) as collector:
        batch = torch.cat(list(collector), -1)
    env.close()
    assert batch.batch_size == (2, 300)
    same = (batch["observation"][:, 1:] == batch["next", "observation"][:, :-1]).all(-1)
    done = batch["next", "done"][:, :-1, 0]
    assert done.any() and (same | done).all()
