"""DatasetReplayBuffer: an offline dataset as a read-only buffer over a memory-mapped cache."""

from __future__ import annotations

import pickle
import re
from types import SimpleNamespace

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import (
    DATASET_CACHE_ENV_VAR,
    DatasetFormatError,
    DatasetReplayBuffer,
    DatasetSpecError,
    LazyMemmapStorage,
    LazyTensorStorage,
    ReplayBufferError,
    SamplerWithoutReplacement,
    SliceSampler,
    TensorDictReplayBuffer,
    dataset_cache_root,
)
from rlblocks.core.specs import Bounded, Composite, Unbounded

OBS_DIM, ACT_DIM = 3, 2


def episode(length: int, source_id: int, start: int, end: str | None) -> TensorDict:
    """One episode of ``length`` steps; ``observation[:, 0]`` numbers the steps of the whole
    source from ``start``, ``observation[:, 1]`` is constant (a zero-variance feature).

    ``end`` is how it ends: ``"terminated"``, ``"truncated"`` or ``None`` (left open).
    """
    g = torch.Generator().manual_seed(start)
    row = torch.arange(start, start + length, dtype=torch.float32)
    obs = torch.stack([row, torch.full_like(row, 0.5), torch.randn(length, generator=g)], -1)
    next_obs = torch.stack(
        [row + 1, torch.full_like(row, 0.5), torch.randn(length, generator=g)], -1
    )
    terminated = torch.zeros(length, 1, dtype=torch.bool)
    truncated = torch.zeros(length, 1, dtype=torch.bool)
    if end == "terminated":
        terminated[-1] = True
    elif end == "truncated":
        truncated[-1] = True
    return TensorDict(
        {
            "observation": obs,
            "action": torch.rand(length, ACT_DIM, generator=g) * 2 - 1,
            "episode": torch.full((length,), source_id),
            "next": {
                "observation": next_obs,
                "reward": torch.randn(length, 1, generator=g),
                "terminated": terminated,
                "truncated": truncated,
            },
        },
        batch_size=[length],
    )


def chunked(*chunks: list[tuple[int, int, str | None]]) -> list[TensorDict]:
    """Chunks of whole episodes from ``(length, source_id, end)`` triples, numbered in order."""
    out, start = [], 0
    for chunk in chunks:
        parts = []
        for length, source_id, end in chunk:
            parts.append(episode(length, source_id, start, end))
            start += length
        out.append(torch.cat(parts))
    return out


# Two chunks, four episodes (lengths 4, 3, 5, 4): the source reuses id 7 for the first two
# (the first one terminated in between) and leaves the last one open.
LENGTHS = [4, 3, 5, 4]
CHUNKS = chunked([(4, 7, "terminated"), (3, 7, "terminated")], [(5, 2, "truncated"), (4, 9, None)])
N = sum(LENGTHS)


class Source:
    """The ``episodes`` callable of a format: yields the chunks, counts the calls."""

    def __init__(self, chunks: list[TensorDict], fail_after: int | None = None) -> None:
        self.chunks, self.fail_after, self.calls = chunks, fail_after, 0

    def __call__(self):
        self.calls += 1
        return self._yield()

    def _yield(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_after:
                raise RuntimeError("the source broke mid-build")
            yield chunk.clone()


def open_dataset(cache_dir, source=None, **kwargs) -> DatasetReplayBuffer:
    kwargs = {"fingerprint": {"file": "toy", "size": 1}, "num_transitions": N, **kwargs}
    return DatasetReplayBuffer.from_episodes(
        source or Source(CHUNKS), cache_dir=cache_dir, **kwargs
    )


@pytest.fixture(name="data")
def data_fixture(tmp_path) -> DatasetReplayBuffer:
    return open_dataset(tmp_path / "cache", metadata={"format": "toy", "dataset_id": "toy-v0"})


def test_transitions_have_the_source_data_and_torchrl_keys(data):
    source = torch.cat(CHUNKS)
    flat = data[:]
    assert len(data) == N and flat.shape == (N,)
    assert set(flat.keys(include_nested=True, leaves_only=True)) == {
        "observation", "action", "episode", "step_count", "return_to_go", "index",
        "done", "terminated", "truncated",
        ("next", "observation"), ("next", "reward"),
        ("next", "done"), ("next", "terminated"), ("next", "truncated"),
    }  # fmt: skip
    for key in ["observation", "action", ("next", "observation"), ("next", "reward")]:
        torch.testing.assert_close(flat[key], source[key], rtol=0, atol=0)
    for flag in ["done", "terminated", "truncated"]:
        assert flat[flag].shape == (N, 1) and flat[flag].dtype == torch.bool
        assert not flat[flag].any()
    assert flat["return_to_go"].shape == (N, 1) and flat["episode"].dtype == torch.int64


def test_done_is_terminated_or_truncated_and_an_open_last_episode_is_truncated(data):
    flat = data[:]
    ends = torch.tensor(LENGTHS).cumsum(0) - 1
    assert torch.nonzero(flat["next", "done"][:, 0]).flatten().tolist() == ends.tolist()
    assert (flat["next", "done"] == flat["next", "terminated"] | flat["next", "truncated"]).all()
    assert torch.nonzero(flat["next", "terminated"][:, 0]).flatten().tolist() == [3, 6]
    # Episode 2 was truncated by the source; the dataset's last one was left open.
    assert torch.nonzero(flat["next", "truncated"][:, 0]).flatten().tolist() == [11, 15]


def test_episode_ids_are_consecutive_although_the_source_reuses_them(data):
    expected = torch.cat([torch.full((n,), i) for i, n in enumerate(LENGTHS)])
    assert data[:]["episode"].tolist() == expected.tolist()
    assert data.num_episodes == 4 and data.metadata["num_episodes"] == 4


def test_a_reused_id_in_the_next_chunk_after_a_done_is_a_new_episode(tmp_path):
    chunks = chunked([(3, 0, "terminated")], [(2, 0, "terminated")])
    data = open_dataset(tmp_path / "c", Source(chunks), num_transitions=5)
    assert data[:]["episode"].tolist() == [0, 0, 0, 1, 1]
    assert data.episode_lengths.tolist() == [3, 2]


def test_step_count_numbers_the_steps_of_each_episode_from_zero(data):
    flat = data[:]
    expected = torch.cat([torch.arange(n) for n in LENGTHS]).unsqueeze(-1)
    assert flat["step_count"].dtype == torch.int64
    assert flat["step_count"].tolist() == expected.tolist()


def test_return_to_go_is_the_reverse_cumulative_reward_of_each_episode(data):
    flat = data[:]
    expected = torch.cat(
        [r.flip(0).cumsum(0).flip(0) for r in flat["next", "reward"].split(LENGTHS)]
    )
    torch.testing.assert_close(flat["return_to_go"], expected)
    assert flat["return_to_go"].dtype == torch.float32


def test_episode_returns_and_lengths(data):
    rewards = data[:]["next", "reward"][:, 0].double()
    assert data.episode_lengths.tolist() == LENGTHS
    assert data.episode_returns.dtype == torch.float64
    torch.testing.assert_close(
        data.episode_returns, torch.stack([r.sum() for r in rewards.split(LENGTHS)])
    )
    # Copies: editing them leaves the dataset's summary alone.
    data.episode_lengths.zero_()
    assert data.episode_lengths.tolist() == LENGTHS


def test_stats_are_mean_std_min_max_of_the_data(data):
    flat, stats = data[:], data.stats
    for key in ["observation", "action", ("next", "reward"), "return_to_go"]:
        path = key if isinstance(key, tuple) else (key,)
        x = flat[key]
        torch.testing.assert_close(stats[(*path, "loc")], x.mean(0))
        # The population std, clamped to 1e-6 (observation[:, 1] is constant).
        torch.testing.assert_close(stats[(*path, "scale")], x.std(0, correction=0).clamp_min(1e-6))
        torch.testing.assert_close(stats[(*path, "min")], x.amin(0), rtol=0, atol=0)
        torch.testing.assert_close(stats[(*path, "max")], x.amax(0), rtol=0, atol=0)
    assert stats["observation", "scale"][1].item() == pytest.approx(1e-6)
    assert "episode" not in stats.keys() and "done" not in stats.keys()


def test_sample_returns_batches_of_transitions(tmp_path):
    data = open_dataset(tmp_path / "c", batch_size=5)
    batch = data.sample()
    assert batch.shape == (5,) and batch["observation"].shape == (5, OBS_DIM)
    rows = batch["observation"][:, 0].long()
    assert (batch["index"] == rows).all()  # observation[:, 0] numbers the rows
    assert data.sample(7).shape == (7,)


@pytest.mark.parametrize(("batch_size", "batches"), [(4, 4), (5, 3)])
def test_iteration_without_replacement_visits_each_transition_once_per_epoch(
    tmp_path, batch_size, batches
):
    data = open_dataset(
        tmp_path / "c", batch_size=batch_size, sampler=SamplerWithoutReplacement(drop_last=True)
    )
    for _ in range(2):
        epoch = list(data)
        assert len(epoch) == batches and all(b.shape == (batch_size,) for b in epoch)
        rows = torch.cat([b["observation"][:, 0] for b in epoch]).long()
        assert len(set(rows.tolist())) == batches * batch_size
        if batch_size * batches == N:
            assert sorted(rows.tolist()) == list(range(N))


def test_slices_never_cross_episodes(tmp_path):
    data = open_dataset(
        tmp_path / "c", batch_size=12, sampler=SliceSampler(slice_len=3, traj_key="episode")
    )
    seen = set()
    for _ in range(30):
        batch = data.sample().reshape(4, 3)
        assert (batch["episode"] == batch["episode"][:, :1]).all()
        rows = batch["observation"][..., 0]
        assert (rows[:, 1:] - rows[:, :-1] == 1).all()
        seen.update(batch["episode"][:, 0].tolist())
    assert seen == {0, 1, 2, 3}


def test_split_trajs_gives_padded_episodes_with_a_mask(tmp_path):
    flat_data = open_dataset(tmp_path / "c")
    split = open_dataset(tmp_path / "c", split_trajs=True)
    episodes, flat = split[:], flat_data[:].exclude("index")
    max_len = max(LENGTHS)
    assert len(split) == 4 and episodes.shape == (4, max_len)
    assert split.metadata["split_trajs"] and not flat_data.metadata["split_trajs"]
    lengths = torch.tensor(LENGTHS)
    mask = episodes["collector", "mask"]
    assert (mask == (torch.arange(max_len) < lengths[:, None])).all()
    real = episodes.exclude("index", "collector")
    for key, value in real.items(include_nested=True, leaves_only=True):
        padded = value[~mask]
        assert (padded == 0).all(), key
        torch.testing.assert_close(value[mask], flat[key], rtol=0, atol=0)
    # The summary is the flat dataset's.
    assert split.episode_lengths.tolist() == LENGTHS and split.num_episodes == 4


def test_the_cache_is_reused_and_rebuilt_when_the_fingerprint_changes(tmp_path):
    cache = tmp_path / "cache"
    first = Source(CHUNKS)
    open_dataset(cache, first)
    again = Source(CHUNKS)
    reopened = open_dataset(cache, again, split_trajs=True)
    open_dataset(cache, again)
    assert (first.calls, again.calls) == (1, 0)
    assert len(reopened) == 4
    # A changed source (another fingerprint) is converted again, its split variant too.
    doubled = [c.clone() for c in CHUNKS]
    for c in doubled:
        c["next", "reward"] *= 2
    changed = Source(doubled)
    data = open_dataset(cache, changed, fingerprint={"file": "toy", "size": 2})
    split = open_dataset(cache, changed, fingerprint={"file": "toy", "size": 2}, split_trajs=True)
    assert changed.calls == 1
    torch.testing.assert_close(data[:]["next", "reward"], torch.cat(doubled)["next", "reward"])
    torch.testing.assert_close(
        split[:]["next", "reward"][split[:]["collector", "mask"]], data[:]["next", "reward"]
    )
    # So is one announcing another number of transitions.
    shorter = Source(CHUNKS[:1])
    assert len(open_dataset(cache, shorter, num_transitions=7)) == 7 and shorter.calls == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no leftover folder


def test_a_failing_source_leaves_no_cache_behind(tmp_path):
    cache = tmp_path / "datasets" / "toy"
    broken = Source(CHUNKS, fail_after=1)
    with pytest.raises(RuntimeError, match="mid-build"):
        open_dataset(cache, broken)
    assert not cache.exists()
    assert list(cache.parent.iterdir()) == []  # no partial folder either
    good = Source(CHUNKS)
    assert len(open_dataset(cache, good)) == N and good.calls == 1
    assert [p.name for p in cache.parent.iterdir()] == ["toy"]


def test_a_failing_rebuild_keeps_the_old_cache(tmp_path):
    cache = tmp_path / "cache"
    open_dataset(cache)
    with pytest.raises(RuntimeError, match="mid-build"):
        open_dataset(cache, Source(CHUNKS, fail_after=1), fingerprint={"changed": True})
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    kept = Source(CHUNKS)
    assert len(open_dataset(cache, kept)) == N and kept.calls == 0


@pytest.mark.parametrize(
    ("announced", "match"),
    [(N + 4, f"yields {N} transitions, not the {N + 4}"), (10, "more than the 10 transitions")],
)
def test_a_wrong_number_of_transitions_is_a_format_error(tmp_path, announced, match):
    with pytest.raises(DatasetFormatError, match=match):
        open_dataset(tmp_path / "c", num_transitions=announced)
    assert list(tmp_path.iterdir()) == []


def test_an_empty_source_is_a_format_error(tmp_path):
    with pytest.raises(DatasetFormatError, match="holds no transitions"):
        open_dataset(tmp_path / "c", Source([]), num_transitions=0)


@pytest.mark.parametrize(
    "key",
    [
        "action",
        ("next", "reward"),
        ("next", "terminated"),
        ("next", "truncated"),
        "episode",
    ],
)
def test_a_missing_required_key_is_named(tmp_path, key):
    chunks = [c.exclude(key) for c in CHUNKS]
    with pytest.raises(DatasetFormatError, match=r"lack \[" + re.escape(repr(key))):
        open_dataset(tmp_path / "c", Source(chunks), metadata={"dataset_id": "toy-v0"})
    assert list(tmp_path.iterdir()) == []


def test_an_episode_spanning_two_chunks_is_a_format_error(tmp_path):
    chunks = chunked([(4, 0, "terminated"), (3, 1, None)], [(2, 1, "terminated")])
    with pytest.raises(DatasetFormatError, match="episode 1 spans two chunks"):
        open_dataset(tmp_path / "c", Source(chunks), num_transitions=9)
    assert list(tmp_path.iterdir()) == []


def test_the_dataset_is_read_only(data):
    before = data[:]
    with pytest.raises(ReplayBufferError, match="read-only"):
        data.add(before[0])
    with pytest.raises(ReplayBufferError, match="read-only"):
        data.extend(before)
    with pytest.raises(ReplayBufferError, match="read-only"):
        data.empty()
    assert len(data) == N
    assert (data[:] == before).all()


@pytest.mark.parametrize("how", ["load_state_dict", "loads"])
def test_loading_a_state_into_a_dataset_is_refused(tmp_path, how):
    data = open_dataset(tmp_path / "cache")
    zeros = TensorDictReplayBuffer(storage=LazyTensorStorage(N))
    zeros.extend(data[:].exclude("index").apply(torch.zeros_like))
    zeros.dumps(tmp_path / "checkpoint")
    load = {
        "loads": lambda: data.loads(tmp_path / "checkpoint"),
        "load_state_dict": lambda: data.load_state_dict(zeros.state_dict()),
    }[how]
    with pytest.raises(ReplayBufferError, match="read-only"):
        load()
    reopened = open_dataset(tmp_path / "cache")
    assert reopened[:]["observation"][:, 0].tolist() == list(range(N))


def test_metadata_keeps_the_formats_facts(data, tmp_path):
    meta = data.metadata
    assert meta["format"] == "toy" and meta["dataset_id"] == "toy-v0"
    assert meta["num_transitions"] == N and meta["num_episodes"] == 4
    assert meta["cache_dir"] == str(tmp_path / "cache") and meta["split_trajs"] is False


def test_a_dataset_pickles_with_its_data_and_summary(data):
    copy = pickle.loads(pickle.dumps(data))
    assert (copy[:]["observation"] == data[:]["observation"]).all()
    assert copy.episode_lengths.tolist() == LENGTHS and copy.metadata == data.metadata
    with pytest.raises(ReplayBufferError, match="read-only"):
        copy.extend(data[:])


def test_a_buffer_without_summary_says_how_to_get_one(data):
    bare = DatasetReplayBuffer(LazyMemmapStorage.open(data.metadata["cache_dir"]))
    assert len(bare) == N
    with pytest.raises(ReplayBufferError, match="without a dataset summary"):
        _ = bare.stats


def specs(obs_shape=(OBS_DIM,), obs_dtype=torch.float32, act_shape=(ACT_DIM,), batch=(), **extra):
    observation_spec = Composite(
        observation=Unbounded((*batch, *obs_shape), dtype=obs_dtype), shape=batch, **extra
    )
    action_spec = Bounded(-1.0, 1.0, (*batch, *act_shape))
    return observation_spec, action_spec


def test_check_specs_passes_for_matching_specs(data, tmp_path):
    observation_spec, action_spec = specs()
    data.check_specs(observation_spec=observation_spec, action_spec=action_spec)
    # An env's specs carry its batch dims; they are dropped.
    observation_spec, action_spec = specs(batch=(4,))
    env = SimpleNamespace(
        batch_size=torch.Size([4]), observation_spec=observation_spec, action_spec=action_spec
    )
    data.check_specs(env)
    open_dataset(tmp_path / "cache", split_trajs=True).check_specs(env)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"pixels": Unbounded((2, 2))}, "in the env's specs but not in the dataset: pixels"),
        ({"obs_shape": (4,)}, "'observation': dataset has shape [3] torch.float32, env's spec [4]"),
        ({"obs_dtype": torch.float64}, "[3] torch.float32, env's spec [3] torch.float64"),
        ({"act_shape": (1,)}, "'action': dataset has shape [2] torch.float32, env's spec [1]"),
    ],
)  # fmt: skip
def test_check_specs_names_each_difference(data, kwargs, problem):
    observation_spec, action_spec = specs(**kwargs)
    with pytest.raises(DatasetSpecError, match="'toy-v0' does not match") as caught:
        data.check_specs(observation_spec=observation_spec, action_spec=action_spec)
    assert problem in str(caught.value)


def test_check_specs_names_every_difference_at_once(data):
    observation_spec, action_spec = specs(obs_shape=(4,), act_shape=(1,), pixels=Unbounded((2,)))
    with pytest.raises(DatasetSpecError) as caught:
        data.check_specs(observation_spec=observation_spec, action_spec=action_spec)
    message = str(caught.value)
    assert "not in the dataset: pixels" in message
    assert "'observation': dataset has shape [3]" in message
    assert "'action': dataset has shape [2]" in message


def test_check_specs_names_keys_only_the_dataset_has(data):
    observation_spec = Composite(state=Unbounded((OBS_DIM,)))
    with pytest.raises(DatasetSpecError) as caught:
        data.check_specs(observation_spec=observation_spec, action_spec=Bounded(-1.0, 1.0, (2,)))
    message = str(caught.value)
    assert "in the env's specs but not in the dataset: state" in message
    assert "in the dataset but not in the env's specs: observation" in message


def test_check_specs_needs_an_env_or_both_specs(data):
    observation_spec, _ = specs()
    with pytest.raises(TypeError, match="give an env, or both"):
        data.check_specs(observation_spec=observation_spec)


def test_dataset_cache_root_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(DATASET_CACHE_ENV_VAR, str(tmp_path))
    assert dataset_cache_root() == tmp_path
    monkeypatch.delenv(DATASET_CACHE_ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dataset_cache_root() == tmp_path / "home" / ".cache" / "rlblocks" / "datasets"
