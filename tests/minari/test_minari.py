"""rlblocks-minari: Minari datasets read into transitions, recorded from rlblocks policies.

Datasets are recorded in ``tmp_path`` with Minari's own ``DataCollector`` (no network).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import warnings

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.wrappers import TransformObservation
from tensordict.nn import TensorDictModule

import rlblocks.minari._dataset as minari_dataset
from rlblocks.buffers import (
    DATASET_CACHE_ENV_VAR,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetSpecError,
    SamplerWithoutReplacement,
)
from rlblocks.core import list_dataset_formats, make_dataset
from rlblocks.envs import GymEnv, GymWrapper
from rlblocks.minari import (
    MinariExperienceReplay,
    __version__,
    minari_root,
    record_minari_dataset,
)

# Minari's metadata, given so that create_dataset neither warns about it nor estimates a
# reference score by running 100 random episodes.
CREATE_KWARGS = {
    "author": "rlblocks tests",
    "author_email": "tests@example.org",
    "code_permalink": "https://example.org/rlblocks/tests",
    "description": "a few steps for the tests",
    "ref_min_score": 0.0,
    "ref_max_score": 1.0,
}


@pytest.fixture(autouse=True, name="root")
def root_fixture(tmp_path, monkeypatch):
    """The Minari root and the caches inside ``tmp_path``; the root is returned."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv(DATASET_CACHE_ENV_VAR, str(tmp_path / "cache"))
    return tmp_path / "minari"


@pytest.fixture(name="reads")
def reads_fixture(monkeypatch) -> list[str]:
    """The dataset ids whose episodes were read (a cache build), one entry per build."""
    calls: list[str] = []
    chunks = minari_dataset._Reader.chunks

    def spy(self):
        calls.append(self.dataset_id)
        return chunks(self)

    monkeypatch.setattr(minari_dataset._Reader, "chunks", spy)
    return calls


@contextlib.contextmanager
def collector_cleanup():
    """Collect the DataCollectors dropped in the block, their temporary folders unwarned.

    minari 0.5.4's DataCollector drops its ``TemporaryDirectory`` objects without calling
    ``cleanup()`` (it removes the folders itself), so their finalizers warn whenever the
    garbage collector gets to them: in this block, not in a later test.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield
        gc.collect()


def record(dataset_id: str, env, policy=None, total_steps: int = 40, **kwargs):
    """``record_minari_dataset`` with the tests' metadata."""
    with collector_cleanup():
        return record_minari_dataset(
            dataset_id, env, policy, total_steps=total_steps, **CREATE_KWARGS, **kwargs
        )


def minari_transitions(dataset_id: str) -> dict[str, torch.Tensor]:
    """The transitions of Minari's own episodes, concatenated (Box observations)."""
    parts: dict[str, list] = {k: [] for k in ("obs", "next_obs", "action", "reward", "te", "tr")}
    for episode in minari.load_dataset(dataset_id).iterate_episodes():
        parts["obs"].append(episode.observations[:-1])
        parts["next_obs"].append(episode.observations[1:])
        parts["action"].append(episode.actions)
        parts["reward"].append(episode.rewards)
        parts["te"].append(episode.terminations)
        parts["tr"].append(episode.truncations)
    return {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}


def assert_same_transitions(data: MinariExperienceReplay, dataset_id: str) -> None:
    flat, expected = data[:], minari_transitions(dataset_id)
    assert len(data) == len(expected["obs"])
    assert (flat["observation"] == expected["obs"]).all()
    assert (flat["next", "observation"] == expected["next_obs"]).all()
    assert (flat["action"] == expected["action"]).all()
    torch.testing.assert_close(flat["next", "reward"][:, 0], expected["reward"].float())
    assert (flat["next", "terminated"][:, 0] == expected["te"]).all()
    assert (flat["next", "truncated"][:, 0] == expected["tr"]).all()


def test_entry_point_registers_the_minari_format():
    (entry,) = [
        ep
        for ep in importlib.metadata.entry_points(group="rlblocks")
        if ep.dist is not None and ep.dist.name == "rlblocks-minari"
    ]
    assert (entry.name, entry.value) == ("minari", "rlblocks.minari._plugin")
    assert set(entry.load().rlblocks_datasets()) == {"minari"}
    assert importlib.metadata.version("rlblocks-minari") == __version__
    assert "minari" in list_dataset_formats()


def test_a_random_pendulum_dataset_has_minaris_transitions(root):
    folder = record("test/pendulum/random-v0", "Pendulum-v1", total_steps=50)
    assert folder == root / "test" / "pendulum" / "random-v0"
    data = MinariExperienceReplay("test/pendulum/random-v0")
    assert_same_transitions(data, "test/pendulum/random-v0")
    flat = data[:]
    assert flat["observation"].shape == (50, 3) and flat["action"].shape == (50, 1)
    assert flat["observation"].dtype == torch.float32 and flat["action"].dtype == torch.float32
    # The recording stopped after 50 steps: the one episode is cut there.
    assert data.episode_lengths.tolist() == [50]
    assert torch.nonzero(flat["next", "truncated"][:, 0]).flatten().tolist() == [49]
    assert data.metadata["format"] == "minari"
    assert data.metadata["dataset_id"] == "test/pendulum/random-v0"
    assert "Pendulum-v1" in data.metadata["env_spec"]


def test_a_policy_recording_has_the_policys_actions(root):
    net = torch.nn.Linear(3, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.1, -0.2, 0.3]]))
        net.bias.fill_(0.05)
    actor = torch.nn.Sequential(net, torch.nn.Tanh())  # inside Pendulum's [-2, 2]
    policy = TensorDictModule(actor, in_keys=["observation"], out_keys=["action"])
    record("test/pendulum/linear-v0", "Pendulum-v1", policy, total_steps=30)
    data = MinariExperienceReplay("test/pendulum/linear-v0", minari_root=root)
    assert_same_transitions(data, "test/pendulum/linear-v0")
    flat = data[:]
    with torch.no_grad():
        torch.testing.assert_close(flat["action"], actor(flat["observation"]))


def test_discrete_actions_are_int64_indices_and_episodes_end_at_terminations(root):
    record("test/cartpole/random-v0", "CartPole-v1", total_steps=60)
    data = MinariExperienceReplay("test/cartpole/random-v0")
    assert_same_transitions(data, "test/cartpole/random-v0")
    flat = data[:]
    assert flat["action"].dtype == torch.int64 and flat["action"].shape == (60,)
    assert set(flat["action"].tolist()) <= {0, 1}
    # Random CartPole falls within 60 steps: several episodes, ids consecutive from 0.
    lengths = data.episode_lengths
    assert data.num_episodes > 1 and int(lengths.sum()) == 60
    expected = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    assert flat["episode"].tolist() == expected.tolist()
    ends = flat["next", "done"][:, 0]
    assert torch.nonzero(ends).flatten().tolist() == (lengths.cumsum(0) - 1).tolist()


def test_rerecording_replaces_the_dataset(root):
    record("test/cartpole/random-v0", "CartPole-v1", total_steps=20)
    record("test/cartpole/random-v0", "CartPole-v1", total_steps=30, seed=1)
    assert len(MinariExperienceReplay("test/cartpole/random-v0")) == 30


def test_tuple_observations_are_entries_like_gymenvs(root):
    record("test/blackjack/random-v0", "Blackjack-v1", total_steps=20)
    data = MinariExperienceReplay("test/blackjack/random-v0")
    assert data[:]["observation", "0"].dtype == torch.int64
    data.check_specs(GymEnv("Blackjack-v1"))


def test_recording_into_another_root_leaves_the_environment_alone(root, tmp_path):
    record("test/cartpole/random-v0", "CartPole-v1", total_steps=10, minari_root=tmp_path / "b")
    assert (tmp_path / "b" / "test" / "cartpole" / "random-v0").is_dir()
    assert minari_root() == root


def dict_cartpole() -> gym.Env:
    """CartPole with a Dict observation: ``position`` (x, angle), ``velocity`` (both rates)."""
    space = spaces.Dict(
        {
            "position": spaces.Box(-5.0, 5.0, (2,), np.float32),
            "velocity": spaces.Box(-np.inf, np.inf, (2,), np.float32),
        }
    )

    def split(obs):
        return {"position": obs[[0, 2]], "velocity": obs[[1, 3]]}

    return TransformObservation(gym.make("CartPole-v1"), split, space)


# The env's spec holds the wrapper's function, which Minari cannot write as JSON (and so
# cannot take as eval_env either).
@pytest.mark.filterwarnings("ignore:env_spec is not serializable:UserWarning")
@pytest.mark.filterwarnings("ignore:`eval_env` is set to None:UserWarning")
def test_dict_observations_are_root_entries_like_gymenvs(root):
    dataset_id = "test/dictcartpole/random-v0"
    env = dict_cartpole()
    with collector_cleanup():
        collector = minari.DataCollector(env, record_infos=False)
        collector.reset(seed=0)
        env.action_space.seed(0)
        for _ in range(30):
            _, _, terminated, truncated, _ = collector.step(env.action_space.sample())
            if terminated or truncated:
                collector.reset()
        collector.create_dataset(dataset_id, algorithm_name="random", **CREATE_KWARGS)
        collector.close()
        del collector
    data = MinariExperienceReplay(dataset_id)
    flat = data[:]
    assert "observation" not in flat.keys() and len(data) == 30
    position, velocity = [], []
    for episode in minari.load_dataset(dataset_id).iterate_episodes():
        position.append(episode.observations["position"])
        velocity.append(episode.observations["velocity"])
    assert (flat["position"].numpy() == np.concatenate([p[:-1] for p in position])).all()
    assert (flat["next", "velocity"].numpy() == np.concatenate([v[1:] for v in velocity])).all()
    assert data.stats["position", "loc"].shape == (2,)
    data.check_specs(GymWrapper(dict_cartpole()))
    with pytest.raises(DatasetSpecError, match="not in the dataset: observation"):
        data.check_specs(GymEnv("CartPole-v1"))


def test_the_cache_is_reused_and_rebuilt_when_the_dataset_changes(root, tmp_path, reads):
    record("test/cartpole/random-v0", "CartPole-v1", total_steps=40)
    MinariExperienceReplay("test/cartpole/random-v0")
    split = MinariExperienceReplay("test/cartpole/random-v0", split_trajs=True)
    again = MinariExperienceReplay("test/cartpole/random-v0")
    assert reads == ["test/cartpole/random-v0"]
    assert split[:]["collector", "mask"].sum() == 40 and len(again) == 40
    assert len(list((tmp_path / "cache" / "minari").iterdir())) == 1
    record("test/cartpole/random-v0", "CartPole-v1", total_steps=40, seed=7)
    rebuilt = MinariExperienceReplay("test/cartpole/random-v0")
    assert len(reads) == 2
    assert_same_transitions(rebuilt, "test/cartpole/random-v0")


def test_a_missing_dataset_names_the_root_and_the_local_datasets(root):
    record("test/cartpole/random-v0", "CartPole-v1", total_steps=10)
    with pytest.raises(DatasetNotFoundError) as caught:
        MinariExperienceReplay("test/cartpole/expert-v0")
    message = str(caught.value)
    assert "'test/cartpole/expert-v0'" in message and str(root) in message
    assert "['test/cartpole/random-v0']" in message
    with pytest.raises(DatasetNotFoundError, match="Local datasets there: none"):
        MinariExperienceReplay("test/cartpole/random-v0", minari_root=root / "empty")
    assert isinstance(caught.value, FileNotFoundError)


def test_a_truncated_data_file_is_a_format_error_naming_it(root, tmp_path):
    folder = record("test/cartpole/random-v0", "CartPole-v1", total_steps=40)
    data_file = folder / "data" / "main_data.hdf5"
    content = data_file.read_bytes()
    data_file.write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetFormatError, match="corrupt or truncated") as caught:
        MinariExperienceReplay("test/cartpole/random-v0")
    assert str(data_file) in str(caught.value)
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.glob("**/dataset.json")) == []


def test_make_dataset_opens_minari_datasets_through_the_registry(root):
    record("test/pendulum/random-v0", "Pendulum-v1", total_steps=32)
    data = make_dataset(
        "minari:test/pendulum/random-v0",
        batch_size=8,
        sampler=SamplerWithoutReplacement(drop_last=True),
    )
    assert isinstance(data, MinariExperienceReplay)
    rows = torch.cat([batch["index"] for batch in data])
    assert sorted(rows.tolist()) == list(range(32))


def test_check_specs_against_the_recording_env(root):
    record("test/pendulum/random-v0", "Pendulum-v1", total_steps=20)
    record("test/cartpole/random-v0", "CartPole-v1", total_steps=20)
    pendulum = MinariExperienceReplay("test/pendulum/random-v0")
    cartpole = MinariExperienceReplay("test/cartpole/random-v0")
    pendulum.check_specs(GymEnv("Pendulum-v1"))
    cartpole.check_specs(GymEnv("CartPole-v1"))
    with pytest.raises(DatasetSpecError, match=r"'observation': dataset has shape \[4\]"):
        cartpole.check_specs(GymEnv("Pendulum-v1"))


def test_minari_root_follows_minaris_rule(root, monkeypatch, tmp_path):
    assert minari_root() == root
    monkeypatch.delenv("MINARI_DATASETS_PATH")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert minari_root() == tmp_path / "home" / ".minari" / "datasets"
