"""MultiStepTransform against a naive per-env loop, across batch edges and episode ends."""

from __future__ import annotations

import itertools

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import (
    STEPS_TO_NEXT_OBS,
    BufferConfigError,
    LazyTensorStorage,
    MultiStepTransform,
    TensorDictReplayBuffer,
)

GAMMA = 0.9


def episodes(n_envs: int, length: int, seed: int) -> TensorDict:
    """``[n_envs, length]`` steps of random episodes, each ending by termination,
    truncation or both; observations number the steps (the terminal one negated)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n_envs, length)
    end = torch.rand(shape, generator=g) < 0.3
    kind = torch.randint(3, shape, generator=g)  # 0: terminated, 1: truncated, 2: both
    terminated = end & (kind != 1)
    truncated = end & (kind != 0)
    step = torch.arange(n_envs * length, dtype=torch.float32).reshape(shape)
    next_obs = torch.where(end, -step - 1, step + 1)
    return TensorDict(
        {
            "observation": torch.stack([step, -step], -1),
            "step_count": torch.randint(100, (*shape, 1), generator=g),
            "next": {
                "observation": torch.stack([next_obs, -next_obs], -1),
                "reward": torch.randn(*shape, 1, generator=g),
                "done": (terminated | truncated).unsqueeze(-1),
                "terminated": terminated.unsqueeze(-1),
                "truncated": truncated.unsqueeze(-1),
                "info": {"x": torch.randn(*shape, 3, generator=g)},
            },
        },
        batch_size=shape,
    )


def naive(steps: TensorDict, n: int, gamma: float) -> TensorDict:
    """The n-step transitions of ``steps`` ``[n_envs, L]`` whose n steps are all in it,
    env by env and step by step."""
    n_envs, length = steps.batch_size
    rows = []
    for e in range(n_envs):
        row = []
        for t in range(length - (n - 1)):
            total, k = 0.0, 0
            while True:
                total += gamma**k * float(steps["next", "reward"][e, t + k])
                k += 1
                if bool(steps["next", "done"][e, t + k - 1]) or k == n:
                    break
            item = steps[e, t].clone()
            item["next"] = steps["next"][e, t + k - 1].clone()
            item["next", "reward"] = torch.tensor([total])
            item[STEPS_TO_NEXT_OBS] = torch.tensor([k])
            row.append(item)
        rows.append(torch.stack(row) if row else steps[e, :0].clone())
    return torch.stack(rows)


def run(multistep: MultiStepTransform, steps: TensorDict, sizes: list[int]) -> TensorDict:
    """Feed ``steps`` in batches of ``sizes``; concatenate what comes out."""
    assert sum(sizes) == steps.batch_size[-1]
    edges = torch.tensor([0, *sizes]).cumsum(0).tolist()
    outs = [multistep(steps[:, a:b].clone()) for a, b in itertools.pairwise(edges)]
    return torch.cat(outs, -1)


def assert_same(got: TensorDict, expected: TensorDict) -> None:
    assert got.batch_size == expected.batch_size
    assert set(got.keys(True, True)) == set(expected.keys(True, True))
    for key in expected.keys(True, True):
        assert got.get(key).dtype == expected.get(key).dtype, key
        torch.testing.assert_close(got.get(key), expected.get(key), msg=str(key))


SIZES = [1, 4, 2, 7, 3, 9, 5]  # batches shorter and longer than the horizon


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_matches_a_naive_loop_across_batches_and_episode_ends(n):
    steps = episodes(n_envs=3, length=sum(SIZES), seed=n)
    done = steps["next", "done"].squeeze(-1)
    terminated = steps["next", "terminated"].squeeze(-1)
    truncated = steps["next", "truncated"].squeeze(-1)
    # The data has what the test is about: both kinds of ends, some next to batch edges.
    assert (terminated & ~truncated).any() and (truncated & ~terminated).any()
    edges = torch.tensor(SIZES).cumsum(0)[:-1]
    assert done[:, edges - 1].any() and done[:, edges].any()
    got = run(MultiStepTransform(n, GAMMA), steps, SIZES)
    expected = naive(steps, n, GAMMA)
    assert_same(got, expected)
    if n > 1:
        # Windows cut by an episode's end keep its flags: a truncation (bootstrapped by
        # a loss) stays apart from a termination.
        short = got[STEPS_TO_NEXT_OBS].squeeze(-1) < n
        flags = got["next"][short]
        assert flags["done"].all()
        assert (flags["truncated"] & ~flags["terminated"]).any()
        assert (flags["terminated"] & ~flags["truncated"]).any()


def test_first_call_returns_n_minus_1_fewer_then_as_many_as_given():
    steps = episodes(n_envs=2, length=12, seed=0)
    multistep = MultiStepTransform(n_steps=4, gamma=GAMMA)
    assert multistep(steps[:, :2].clone()).batch_size == (2, 0)  # shorter than n - 1
    assert multistep(steps[:, 2:6].clone()).batch_size == (2, 3)
    assert multistep(steps[:, 6:12].clone()).batch_size == (2, 6)
    multistep.reset()  # forgets the held steps: as a first call again
    assert multistep(steps[:, 6:12].clone()).batch_size == (2, 3)


def test_n_one_is_the_identity_plus_the_step_count():
    steps = episodes(n_envs=2, length=8, seed=1)
    multistep = MultiStepTransform(n_steps=1, gamma=GAMMA)
    for batch in (steps[:, :3], steps[:, 3:]):
        out = multistep(batch.clone())
        assert torch.equal(out[STEPS_TO_NEXT_OBS], torch.ones(*batch.batch_size, 1).long())
        assert_same(out.exclude(STEPS_TO_NEXT_OBS), batch)


def test_single_env_batches_and_a_changed_horizon():
    steps = episodes(n_envs=1, length=10, seed=2)
    multistep = MultiStepTransform(n_steps=3, gamma=GAMMA)
    first = multistep(steps[0, :5].clone())  # [T]: one env
    assert_same(first, naive(steps, 3, GAMMA)[0, :3])
    multistep.n_steps = 1  # the two held steps come out as one-step transitions
    second = multistep(steps[0, 5:].clone())
    assert_same(second, naive(steps, 1, GAMMA)[0, 3:])


def test_held_steps_are_copies():
    # A collector may write its next batch into the memory of the previous one.
    steps = episodes(n_envs=2, length=10, seed=3)
    multistep = MultiStepTransform(n_steps=3, gamma=GAMMA)
    batch = steps[:, :5].clone()
    first = multistep(batch)
    batch.apply_(lambda x: x.zero_())
    second = multistep(steps[:, 5:].clone())
    assert_same(torch.cat([first, second], -1), naive(steps, 3, GAMMA))


def test_written_to_a_replay_buffer():
    steps = episodes(n_envs=2, length=10, seed=4)
    multistep = MultiStepTransform(n_steps=3, gamma=GAMMA)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100))
    for a, b in ((0, 4), (4, 10)):
        rb.extend(multistep(steps[:, a:b].clone()).reshape(-1))
    assert len(rb) == 2 * 8
    stored = rb[:]
    assert stored[STEPS_TO_NEXT_OBS].shape == (16, 1)
    assert set(stored[STEPS_TO_NEXT_OBS].unique().tolist()) <= {1, 2, 3}


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3", None])
def test_bad_horizon_names_the_argument_the_value_and_what_is_allowed(bad):
    with pytest.raises(BufferConfigError, match=rf"n_steps must be a positive int, got {bad!r}"):
        MultiStepTransform(bad, GAMMA)
    multistep = MultiStepTransform(3, GAMMA)
    with pytest.raises(BufferConfigError, match="n_steps must be a positive int"):
        multistep.n_steps = bad
    assert multistep.n_steps == 3


def test_bad_gamma_and_bad_batches():
    with pytest.raises(BufferConfigError, match=r"gamma must be a number in \[0, 1\], got 1.5"):
        MultiStepTransform(3, 1.5)
    steps = episodes(n_envs=2, length=10, seed=5)
    multistep = MultiStepTransform(3, GAMMA)
    with pytest.raises(BufferConfigError, match="time along its last batch dim"):
        multistep(steps[0, 0])
    with pytest.raises(BufferConfigError, match=r"needs \('next', 'reward'\).*reward_keys="):
        multistep(steps.exclude(("next", "reward")))
    first = multistep(steps[:, :4].clone())
    # Rejected calls hold nothing: the stream goes on as if they had not happened.
    with pytest.raises(BufferConfigError, match="same envs; call reset"):
        multistep(steps[:1, 4:].clone())
    with pytest.raises(BufferConfigError, match=r"missing \['step_count'\]"):
        multistep(steps[:, 4:].exclude("step_count"))
    second = multistep(steps[:, 4:].clone())
    assert_same(torch.cat([first, second], -1), naive(steps, 3, GAMMA))


def test_renamed_reward_and_done_keys():
    steps = episodes(n_envs=2, length=6, seed=6)
    renamed = steps.clone()
    renamed.rename_key_(("next", "reward"), ("next", "r"))
    renamed.rename_key_(("next", "done"), ("next", "end"))
    got = MultiStepTransform(3, GAMMA, reward_keys=["r"], done_key="end")(renamed)
    expected = naive(steps, 3, GAMMA)
    torch.testing.assert_close(got["next", "r"], expected["next", "reward"])
    torch.testing.assert_close(got[STEPS_TO_NEXT_OBS], expected[STEPS_TO_NEXT_OBS])
