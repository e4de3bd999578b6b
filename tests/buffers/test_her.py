"""HindsightRelabel: goals from the same episode and the strategy's window (checked against a
naive per-transition scan of what was written), the k/(k+1) relabel rate, recomputed
rewards and flags, untouched other transitions, and bad input."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import (
    HER_STRATEGIES,
    BufferConfigError,
    HindsightRelabel,
    LazyTensorStorage,
    ListStorage,
    RandomSampler,
    TensorDictReplayBuffer,
)
from rlblocks.core.specs import Binary, Composite

FLAG = "relabelled"


def reward_fn(achieved: torch.Tensor, desired: torch.Tensor) -> torch.Tensor:
    return (achieved == desired).all(-1, keepdim=True).float() - 1.0


def terminated_fn(achieved: torch.Tensor, desired: torch.Tensor) -> torch.Tensor:
    return (achieved == desired).all(-1, keepdim=True)


def episodes(lengths: list[int], first_id: int = 0, unfinished_last: bool = False) -> TensorDict:
    """Steps of episodes of ``lengths``; the achieved goal after step ``s`` of episode ``e``
    is ``[e, s]``, the desired goal ``[-1, -1]`` (never reached). Odd episodes end by
    truncation, even ones by termination; the last one is left running if asked."""
    traj, step, end = [], [], []
    for i, length in enumerate(lengths):
        traj += [first_id + i] * length
        step += list(range(length))
        end += [False] * (length - 1) + [not (unfinished_last and i == len(lengths) - 1)]
    traj_t = torch.tensor(traj)
    step_t = torch.tensor(step, dtype=torch.float32)
    end_t = torch.tensor(end).unsqueeze(-1)
    odd = (traj_t % 2 == 1).unsqueeze(-1)
    n = len(traj)
    achieved = torch.stack([traj_t.float(), step_t], -1)
    desired = torch.full((n, 2), -1.0)
    return TensorDict(
        {
            "traj": traj_t,
            "observation": achieved - torch.tensor([0.0, 1.0]),
            "achieved_goal": achieved - torch.tensor([0.0, 1.0]),
            "desired_goal": desired,
            "next": {
                "observation": achieved,
                "achieved_goal": achieved,
                "desired_goal": desired.clone(),
                "reward": torch.full((n, 1), -1.0),
                "done": end_t,
                "terminated": end_t & ~odd,
                "truncated": end_t & odd,
                "info": {"x": torch.randn(n, 3, generator=torch.Generator().manual_seed(n))},
            },
        },
        batch_size=[n],
    )


def naive_windows(written: TensorDict, max_size: int, by: str) -> dict[int, list[list]]:
    """For each stored position, the achieved goals ``[e, s]`` of its episode from the
    transition on ("future"), the last one ("final") and all ("episode"), found by
    scanning the last ``max_size`` written steps one by one."""
    n = written.batch_size[0]
    kept = range(max(0, n - max_size), n)
    groups: list[list[int]] = []
    for k in kept:
        if groups:
            prev = groups[-1][-1]
            if by == "traj_key":
                new = int(written["traj"][k]) != int(written["traj"][prev])
            else:
                new = bool(written["next", "done"][prev])
            if not new:
                groups[-1].append(k)
                continue
        groups.append([k])
    windows = {}
    for group in groups:
        goals = [written["next", "achieved_goal"][k].tolist() for k in group]
        for i, k in enumerate(group):
            windows[k % max_size] = {
                "future": goals[i:],
                "final": [goals[-1]],
                "episode": goals,
            }
    return windows


def make_buffer(max_size: int, **kwargs) -> tuple[TensorDictReplayBuffer, HindsightRelabel]:
    storage = kwargs.pop("storage", None) or LazyTensorStorage(max_size)
    kwargs.setdefault("generator", torch.Generator().manual_seed(0))
    her = HindsightRelabel(storage, reward_fn, relabelled_key=FLAG, **kwargs)
    sampler = RandomSampler(generator=torch.Generator().manual_seed(1))
    rb = TensorDictReplayBuffer(storage=storage, sampler=sampler, transform=her)
    return rb, her


@pytest.mark.parametrize("strategy", HER_STRATEGIES)
@pytest.mark.parametrize("by", ["traj_key", "end_key"])
def test_goals_come_from_the_same_episode_within_the_strategys_window(strategy, by):
    max_size = 60
    keys = {"traj_key": "traj"} if by == "traj_key" else {}
    rb, _ = make_buffer(max_size, strategy=strategy, **keys)
    # 3 extends, 143 steps: the ring wraps twice, the oldest stored episode is cut by
    # overwrites, an episode spans two extends, and the newest one is still running.
    lengths = [[7, 1, 12, 5], [9, 30, 3, 14], [20, 6, 11, 25]]
    parts = []
    for i, ls in enumerate(lengths):
        part = episodes(ls, first_id=4 * i, unfinished_last=i == len(lengths) - 1)
        parts.append(part)
        rb.extend(part)
    written = torch.cat(parts)
    windows = naive_windows(written, max_size, by)
    offsets = []
    for _ in range(6):
        batch = rb.sample(500)
        for i in torch.nonzero(batch[FLAG].squeeze(-1)).squeeze(-1).tolist():
            pos = int(batch["index"][i])
            goal = batch["desired_goal"][i].tolist()
            allowed = windows[pos][strategy]
            assert goal in allowed, (pos, goal, allowed)
            assert batch["next", "desired_goal"][i].tolist() == goal
            offsets.append((allowed.index(goal) + 0.5) / len(allowed))
    assert len(offsets) > 1500
    # Uniform over the window ("future", "episode"): the relative place averages 1/2.
    assert sum(offsets) / len(offsets) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(("k", "rate"), [(4, 0.8), (1, 0.5), (0, 0.0)])
def test_relabel_fraction_is_k_over_k_plus_1(k, rate):
    rb, her = make_buffer(100, n_sampled_goal=k)
    rb.extend(episodes([10] * 10))
    assert her.relabel_probability == pytest.approx(rate)
    flags = torch.cat([rb.sample(1000)[FLAG] for _ in range(4)])
    assert float(flags.float().mean()) == pytest.approx(rate, abs=0.02)


def test_a_fixed_generator_gives_the_same_relabelled_batches():
    batches = []
    for _ in range(2):
        rb, _ = make_buffer(100, generator=torch.Generator().manual_seed(5))
        rb.extend(episodes([10] * 10))
        batches.append(rb.sample(64))
    assert (batches[0] == batches[1]).all()


def test_rewards_and_flags_are_recomputed_and_the_rest_is_unchanged(tensor_storage):
    storage = tensor_storage(200)
    rb, _ = make_buffer(200, storage=storage, strategy="future", terminated_fn=terminated_fn)
    rb.extend(episodes([6, 9, 4, 12, 1, 8]))
    batch = rb.sample(400)
    stored = rb[batch["index"]]
    flag = batch[FLAG].squeeze(-1)
    assert 0 < int(flag.sum()) < len(flag)
    # Untouched transitions are exactly what is stored.
    keep = ~flag
    assert (batch[keep].exclude("index", FLAG) == stored[keep].exclude("index")).all()
    # Relabelled ones: only the goals, the reward and the done flags change.
    new, old = batch[flag], stored[flag]
    changed = [
        "desired_goal",
        ("next", "desired_goal"),
        ("next", "reward"),
        ("next", "terminated"),
        ("next", "done"),
    ]
    assert (new.exclude("index", FLAG, *changed) == old.exclude("index", *changed)).all()
    achieved, goal = new["next", "achieved_goal"], new["desired_goal"]
    assert torch.equal(new["next", "reward"], reward_fn(achieved, goal))
    assert torch.equal(new["next", "terminated"], terminated_fn(achieved, goal))
    assert torch.equal(new["next", "done"], new["next", "terminated"] | old["next", "truncated"])
    assert torch.equal(new["next", "truncated"], old["next", "truncated"])
    # The goal reached at the transition itself is among "future"'s: some become successes.
    assert 0 < int((new["next", "reward"] == 0).sum()) < len(new)


def test_without_terminated_fn_the_stored_flags_are_kept():
    rb, _ = make_buffer(100, strategy="final")
    rb.extend(episodes([5, 5, 5]))
    batch = rb.sample(100)
    stored = rb[batch["index"]]
    for key in ("terminated", "done"):
        assert torch.equal(batch["next", key], stored["next", key])
    last = batch["next", "achieved_goal"] == batch["desired_goal"]
    assert (batch["next", "reward"][last.all(-1)] == 0).all()


def test_list_storage_works_too():
    storage = ListStorage(100)
    rb, _ = make_buffer(100, storage=storage, strategy="episode", traj_key="traj")
    data = episodes([4, 6, 3])
    rb.extend(data)
    windows = naive_windows(data, 100, "traj_key")
    batch = rb.sample(50)
    for i in torch.nonzero(batch[FLAG].squeeze(-1)).squeeze(-1).tolist():
        goal = batch["desired_goal"][i].tolist()
        assert goal in windows[int(batch["index"][i])]["episode"]


def test_rows_overwritten_since_sampling_are_left_alone():
    storage = LazyTensorStorage(30)
    her = HindsightRelabel(storage, reward_fn, relabelled_key=FLAG)
    rb = TensorDictReplayBuffer(storage=storage)  # the transform is applied by hand below
    rb.extend(episodes([10, 10, 10]))
    batch = rb.sample(64)
    rb.extend(episodes([10, 10, 10], first_id=100))  # every row replaced
    out = her(batch.clone())
    assert not out[FLAG].any()
    assert (out.exclude(FLAG) == batch).all()


# -- bad input ---------------------------------------------------------------------------


def test_an_unknown_strategy_names_the_allowed_ones():
    with pytest.raises(
        BufferConfigError,
        match=r"unknown strategy 'futur'; did you mean 'future'\? allowed: 'future', "
        r"'final', 'episode'",
    ):
        HindsightRelabel(LazyTensorStorage(10), reward_fn, strategy="futur")


def test_bad_arguments_are_refused():
    storage = LazyTensorStorage(10)
    with pytest.raises(BufferConfigError, match="n_sampled_goal"):
        HindsightRelabel(storage, reward_fn, n_sampled_goal=-1)
    with pytest.raises(BufferConfigError, match="traj_key or end_key"):
        HindsightRelabel(storage, reward_fn, traj_key="traj", end_key="done")
    with pytest.raises(BufferConfigError, match="reward_fn must be a function"):
        HindsightRelabel(storage, "reward")
    with pytest.raises(BufferConfigError, match="storage must be the replay buffer's Storage"):
        HindsightRelabel(TensorDictReplayBuffer(), reward_fn)


def test_data_without_goal_keys_names_the_missing_keys_and_the_strategy(transitions):
    rb, _ = make_buffer(20, strategy="final")
    rb.extend(transitions(10))  # CartPole-like: no goals
    with pytest.raises(
        BufferConfigError,
        match=r"strategy='final'.*has no \('next', 'achieved_goal'\), 'desired_goal'\. "
        r"HER needs goal keys.*found \[.*observation",
    ):
        rb.sample(4)


def test_an_env_spec_without_goal_keys_is_refused_before_collecting():
    her = HindsightRelabel(LazyTensorStorage(10), reward_fn, strategy="episode")
    bits = Binary(shape=(4,), dtype=torch.float32)
    her.check_observation_spec(
        Composite(observation=bits, achieved_goal=bits.clone(), desired_goal=bits.clone())
    )
    with pytest.raises(
        BufferConfigError,
        match=r"strategy='episode'.*the observation spec has no 'desired_goal'",
    ):
        her.check_observation_spec(Composite(observation=bits, achieved_goal=bits.clone()))


def test_a_batch_that_is_not_from_a_tensordict_buffer_is_refused():
    her = HindsightRelabel(LazyTensorStorage(10), reward_fn)
    with pytest.raises(BufferConfigError, match=r"no 'index'.*TensorDictReplayBuffer"):
        her(episodes([3]))
    with pytest.raises(BufferConfigError, match="batches of transitions"):
        her({"desired_goal": torch.zeros(3, 2)})


def test_a_storage_without_the_episode_key_is_named():
    rb, _ = make_buffer(20, traj_key="episode_id")
    rb.extend(episodes([5, 5]))
    with pytest.raises(BufferConfigError, match="cannot find the episodes.*'episode_id'"):
        rb.sample(8)


def test_functions_returning_the_wrong_shape_are_named():
    def bad_reward(achieved, desired):
        return torch.zeros(len(achieved), 3)

    storage = LazyTensorStorage(20)
    her = HindsightRelabel(storage, bad_reward, generator=torch.Generator().manual_seed(0))
    rb = TensorDictReplayBuffer(storage=storage, transform=her)
    rb.extend(episodes([5, 5]))
    with pytest.raises(BufferConfigError, match=r"reward_fn gave \[\d+, 3\].*\('next', 'reward'\)"):
        rb.sample(8)
    batch = TensorDictReplayBuffer(storage=storage).sample(8)
    her = HindsightRelabel(storage, reward_fn, terminated_fn=terminated_fn, n_sampled_goal=10**6)
    with pytest.raises(BufferConfigError, match=r"no \('next', 'terminated'\) to recompute"):
        her(batch.exclude(("next", "terminated")))


def test_prefetched_batches_are_relabelled_in_the_background_thread():
    storage = LazyTensorStorage(100)
    her = HindsightRelabel(storage, reward_fn, relabelled_key=FLAG)
    rb = TensorDictReplayBuffer(storage=storage, batch_size=32, prefetch=2, transform=her)
    rb.extend(episodes([10] * 10))
    try:
        flags = torch.cat([rb.sample()[FLAG] for _ in range(5)])
    finally:
        rb.shutdown()
    assert 0 < int(flags.sum()) < len(flags)
