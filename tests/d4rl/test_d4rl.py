"""rlblocks-d4rl: D4RL-format HDF5 files read into transitions, written from rollouts."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from tensordict import TensorDict

import rlblocks.d4rl._dataset as d4rl_dataset
from rlblocks.buffers import (
    DATASET_CACHE_ENV_VAR,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetSpecError,
    SliceSampler,
)
from rlblocks.core import list_dataset_formats, make_dataset
from rlblocks.d4rl import (
    D4RL_DATASET_DIR_ENV_VAR,
    D4RLExperienceReplay,
    __version__,
    d4rl_dataset_dir,
    save_d4rl_hdf5,
)
from rlblocks.envs import GymEnv

N = 12
TERMINAL, TIMEOUT = 3, 7  # episodes: rows 0-3 (terminal), 4-7 (timeout), 8-11 (left open)


def write_d4rl(
    path: Path,
    *,
    next_observations: bool = True,
    timeouts: bool = True,
    infos: bool = False,
    reward_scale: float = 0.5,
    drop: str | None = None,
    short: str | None = None,
) -> Path:
    """A D4RL file of ``N`` rows: ``observations[i] = [i, 10 i]``, ``next_observations[i] =
    observations[i] + 0.5`` (so it is told apart from row ``i + 1``)."""
    row = np.arange(N, dtype=np.float32)
    terminals = np.zeros(N, dtype=bool)
    terminals[TERMINAL] = True
    arrays = {
        "observations": np.stack([row, row * 10], -1),
        "actions": (row[:, None] / 10).astype(np.float32),
        "rewards": row * reward_scale,
        "terminals": terminals,
    }
    if timeouts:
        arrays["timeouts"] = np.arange(N) == TIMEOUT
    if next_observations:
        arrays["next_observations"] = arrays["observations"] + 0.5
    if infos:
        arrays["infos/qpos"] = np.arange(2 * N, dtype=np.float64).reshape(N, 2)
        arrays["infos/goal/reached"] = np.arange(N) % 2 == 0
    arrays.pop(drop, None)
    if short is not None:
        arrays[short] = arrays[short][:-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=value)
    return path


@pytest.fixture(autouse=True)
def folders(tmp_path, monkeypatch):
    """Caches and the D4RL folder inside ``tmp_path``, never in the home folder."""
    monkeypatch.setenv(DATASET_CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setenv(D4RL_DATASET_DIR_ENV_VAR, str(tmp_path / "d4rl"))


@pytest.fixture(name="reads")
def reads_fixture(monkeypatch) -> list[Path]:
    """The files whose rows were read (a cache build), one entry per build."""
    calls: list[Path] = []
    chunks = d4rl_dataset._Reader.chunks

    def spy(self):
        calls.append(self.path)
        return chunks(self)

    monkeypatch.setattr(d4rl_dataset._Reader, "chunks", spy)
    return calls


def cache_folders(root: Path) -> list[Path]:
    """The cache folders under ``root`` a later load would trust (a complete manifest)."""
    return [p.parent for p in root.glob("**/dataset.json")] if root.exists() else []


def test_entry_point_registers_the_d4rl_format():
    (entry,) = [
        ep
        for ep in importlib.metadata.entry_points(group="rlblocks")
        if ep.dist is not None and ep.dist.name == "rlblocks-d4rl"
    ]
    assert (entry.name, entry.value) == ("d4rl", "rlblocks.d4rl._plugin")
    assert set(entry.load().rlblocks_datasets()) == {"d4rl"}
    assert importlib.metadata.version("rlblocks-d4rl") == __version__
    assert "d4rl" in list_dataset_formats()


def test_rows_with_next_observations_are_read_as_they_are(tmp_path):
    path = write_d4rl(tmp_path / "toy.hdf5")
    flat = D4RLExperienceReplay(path)[:]
    row = torch.arange(N, dtype=torch.float32)
    assert flat.shape == (N,)
    assert flat["observation"].tolist() == torch.stack([row, row * 10], -1).tolist()
    assert flat["next", "observation"].tolist() == (flat["observation"] + 0.5).tolist()
    assert flat["action"][:, 0].tolist() == (row / 10).tolist()
    assert flat["next", "reward"][:, 0].tolist() == (row * 0.5).tolist()
    assert torch.nonzero(flat["next", "terminated"][:, 0]).flatten().tolist() == [TERMINAL]
    # The timeout, and the file's last row (an episode left open), are truncations.
    assert torch.nonzero(flat["next", "truncated"][:, 0]).flatten().tolist() == [TIMEOUT, N - 1]
    assert flat["episode"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert flat["observation"].dtype == torch.float32 and flat["action"].shape == (N, 1)


def test_without_next_observations_the_next_row_is_the_next_observation(tmp_path):
    path = write_d4rl(tmp_path / "toy.hdf5", next_observations=False)
    data = D4RLExperienceReplay(path)
    flat = data[:]
    # The timeout row (its next row starts another episode) and the last row are dropped.
    kept = [r for r in range(N) if r not in (TIMEOUT, N - 1)]
    assert flat["observation"][:, 0].tolist() == kept
    assert flat["next", "observation"][:, 0].tolist() == [r + 1 for r in kept]
    assert flat["next", "observation"][:, 1].tolist() == [10.0 * (r + 1) for r in kept]
    assert flat["next", "reward"][:, 0].tolist() == [r * 0.5 for r in kept]
    # The row before the dropped timeout now ends its episode, truncated.
    truncated = flat["observation"][flat["next", "truncated"][:, 0], 0].tolist()
    assert truncated == [TIMEOUT - 1, N - 2]
    assert flat["observation"][flat["next", "terminated"][:, 0], 0].tolist() == [TERMINAL]
    assert data.episode_lengths.tolist() == [4, 3, 3]


def test_without_timeouts_episodes_end_at_terminals(tmp_path):
    flat = D4RLExperienceReplay(write_d4rl(tmp_path / "a.hdf5", timeouts=False))[:]
    assert flat["episode"].tolist() == [0] * 4 + [1] * 8
    assert torch.nonzero(flat["next", "truncated"][:, 0]).flatten().tolist() == [N - 1]
    no_next = D4RLExperienceReplay(
        write_d4rl(tmp_path / "b.hdf5", timeouts=False, next_observations=False)
    )[:]
    assert no_next["observation"][:, 0].tolist() == list(range(N - 1))
    assert no_next["next", "observation"][:, 0].tolist() == list(range(1, N))
    assert no_next["episode"].tolist() == [0] * 4 + [1] * 7


def test_infos_are_kept_under_info(tmp_path):
    data = D4RLExperienceReplay(write_d4rl(tmp_path / "toy.hdf5", infos=True))
    flat = data[:]
    assert flat["info", "qpos"].tolist() == np.arange(2 * N).reshape(N, 2).tolist()
    assert flat["info", "qpos"].dtype == torch.float64
    assert flat["info", "goal", "reached"].tolist() == (np.arange(N) % 2 == 0).tolist()
    # Infos are no observation: the specs check leaves them out.
    env = GymEnv("Pendulum-v1")
    with pytest.raises(DatasetSpecError, match="'observation': dataset has shape") as caught:
        data.check_specs(env)
    assert "qpos" not in str(caught.value) and "reached" not in str(caught.value)
    env.close()


def test_small_chunks_give_the_same_transitions(tmp_path, monkeypatch):
    path = write_d4rl(tmp_path / "toy.hdf5", next_observations=False, infos=True)
    whole = D4RLExperienceReplay(path, root=tmp_path / "whole")[:]
    monkeypatch.setattr(d4rl_dataset, "_CHUNK_ROWS", 1)  # one episode per chunk
    chunked = D4RLExperienceReplay(path, root=tmp_path / "chunked")[:]
    assert (whole == chunked).all()


def test_summary_of_a_d4rl_file(tmp_path):
    data = D4RLExperienceReplay(write_d4rl(tmp_path / "toy.hdf5"))
    rewards = np.arange(N) * 0.5
    assert data.episode_lengths.tolist() == [4, 4, 4]
    assert data.episode_returns.tolist() == [rewards[i : i + 4].sum() for i in (0, 4, 8)]
    assert data.stats["observation", "max"].tolist() == [N - 1, 10 * (N - 1)]
    assert data.metadata["format"] == "d4rl"
    assert data.metadata["source"] == str((tmp_path / "toy.hdf5").resolve())


def test_datasets_are_found_by_id_in_data_dir_and_the_d4rl_folder(tmp_path, monkeypatch):
    write_d4rl(tmp_path / "mine" / "hopper-toy-v2.hdf5")
    write_d4rl(tmp_path / "d4rl" / "walker-toy-v2.h5", reward_scale=2.0)
    data = D4RLExperienceReplay("hopper-toy-v2", data_dir=tmp_path / "mine")
    assert len(data) == N and data.metadata["dataset_id"] == "hopper-toy-v2"
    assert d4rl_dataset_dir() == tmp_path / "d4rl"
    walker = D4RLExperienceReplay("walker-toy-v2")
    assert walker[:]["next", "reward"][-1, 0].item() == 2.0 * (N - 1)
    monkeypatch.delenv(D4RL_DATASET_DIR_ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert d4rl_dataset_dir() == tmp_path / "home" / ".d4rl" / "datasets"


def test_make_dataset_opens_d4rl_files_through_the_registry(tmp_path):
    path = write_d4rl(tmp_path / "d4rl" / "toy-v2.hdf5")
    by_id = make_dataset(
        "d4rl:toy-v2", batch_size=6, sampler=SliceSampler(slice_len=3, traj_key="episode")
    )
    assert isinstance(by_id, D4RLExperienceReplay)
    batch = by_id.sample().reshape(2, 3)
    assert (batch["episode"] == batch["episode"][:, :1]).all()
    by_path = make_dataset(f"d4rl:{path}", split_trajs=True)
    assert by_path[:].shape == (3, 4) and by_path[:]["collector", "mask"].all()


def test_the_cache_is_reused_and_rebuilt_when_the_file_changes(tmp_path, reads):
    path = write_d4rl(tmp_path / "toy.hdf5")
    D4RLExperienceReplay(path)
    (manifest,) = (tmp_path / "cache" / "d4rl").glob("*/dataset.json")
    built = manifest.stat().st_mtime_ns
    again = D4RLExperienceReplay(path, split_trajs=True)
    D4RLExperienceReplay(path)
    assert len(reads) == 1 and manifest.stat().st_mtime_ns == built
    assert again[:].shape == (3, 4)
    stat = path.stat()
    write_d4rl(path, reward_scale=3.0)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # even on coarse clocks
    changed = D4RLExperienceReplay(path)
    assert len(reads) == 2
    assert changed[:]["next", "reward"][:, 0].tolist() == (np.arange(N) * 3.0).tolist()
    assert D4RLExperienceReplay(path, split_trajs=True)[:]["next", "reward"].max() == 3.0 * (N - 1)
    assert len(cache_folders(tmp_path / "cache")) == 2  # the flat cache and its split variant


def test_a_missing_file_names_the_paths_searched(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        D4RLExperienceReplay("hopper-medium-v2", data_dir=tmp_path / "nowhere")
    message = str(caught.value)
    assert str(tmp_path / "nowhere" / "hopper-medium-v2.hdf5") in message
    assert str(tmp_path / "nowhere" / "hopper-medium-v2.h5") in message
    assert "save_d4rl_hdf5" in message
    with pytest.raises(DatasetNotFoundError, match="rlblocks does not download"):
        D4RLExperienceReplay("hopper-medium-v2", download=True)
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "d4rl" / "gone-v0.hdf5")):
        make_dataset("d4rl:gone-v0")
    assert isinstance(caught.value, FileNotFoundError)


@pytest.mark.parametrize("key", ["observations", "actions", "rewards", "terminals"])
def test_a_missing_key_is_named(tmp_path, key):
    path = write_d4rl(tmp_path / "toy.hdf5", drop=key)
    with pytest.raises(DatasetFormatError, match=rf"lacks the key\(s\) \['{key}'\]") as caught:
        D4RLExperienceReplay(path)
    assert str(path.resolve()) in str(caught.value)
    assert cache_folders(tmp_path / "cache") == []


@pytest.mark.parametrize("key", ["actions", "terminals", "timeouts", "next_observations"])
def test_keys_of_different_lengths_are_named(tmp_path, key):
    path = write_d4rl(tmp_path / "toy.hdf5", short=key)
    with pytest.raises(
        DatasetFormatError, match=f"key '{key}' .* has {N - 1} rows, 'rewards' has {N}"
    ):
        D4RLExperienceReplay(path)
    assert cache_folders(tmp_path / "cache") == []


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_file_is_a_format_error_naming_it(tmp_path, damage):
    path = write_d4rl(tmp_path / "toy.hdf5")
    content = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(content[: len(content) // 2])
    else:
        path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, len(content), np.uint8)))
    with pytest.raises(DatasetFormatError, match="corrupt or truncated") as caught:
        D4RLExperienceReplay(path)
    assert str(path.resolve()) in str(caught.value)
    assert cache_folders(tmp_path / "cache") == []


def test_a_corrupt_group_is_a_format_error_naming_the_file(tmp_path):
    path = write_d4rl(tmp_path / "toy.hdf5")
    content = bytearray(path.read_bytes())
    heap = content.index(b"HEAP")  # the root group's local heap (its member names)
    content[heap : heap + 4] = b"XXXX"
    path.write_bytes(bytes(content))
    with pytest.raises(DatasetFormatError, match="corrupt or truncated") as caught:
        D4RLExperienceReplay(path)
    assert str(path.resolve()) in str(caught.value)


def transitions(n: int, start: int = 0) -> TensorDict:
    """Pendulum-shaped transitions numbered by ``observation[:, 0]`` from ``start``."""
    row = torch.arange(start, start + n, dtype=torch.float32)
    obs = torch.stack([row, row * 0, row * 0], -1)
    return TensorDict(
        {
            "observation": obs,
            "action": (row / 100).unsqueeze(-1),
            "next": {
                "observation": obs + 1,
                "reward": -row.unsqueeze(-1),
                "terminated": torch.zeros(n, 1, dtype=torch.bool),
                "truncated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        batch_size=[n],
    )


def test_save_d4rl_hdf5_round_trip(tmp_path):
    data = transitions(10)
    data["next", "terminated"][3] = True
    data["next", "truncated"][6] = True
    path = save_d4rl_hdf5(data, tmp_path / "out" / "rollout.hdf5")
    assert path == tmp_path / "out" / "rollout.hdf5"
    assert [p.name for p in path.parent.iterdir()] == ["rollout.hdf5"]  # no partial file left
    with h5py.File(path) as f:
        assert set(f) == {
            "observations", "next_observations", "actions", "rewards", "terminals", "timeouts"
        }  # fmt: skip
        assert f["rewards"].shape == (10,) and f["observations"].dtype == np.float32
    flat = D4RLExperienceReplay(path)[:]
    for key in ["observation", "action", ("next", "observation"), ("next", "reward")]:
        assert (flat[key] == data[key]).all(), key
    assert (flat["next", "terminated"] == data["next", "terminated"]).all()
    # The last transition was left open: the dataset truncates it.
    assert torch.nonzero(flat["next", "truncated"][:, 0]).flatten().tolist() == [6, 9]
    assert flat["episode"].tolist() == [0] * 4 + [1] * 3 + [2] * 3


def test_save_d4rl_hdf5_writes_a_batch_env_by_env(tmp_path):
    batch = torch.stack([transitions(5), transitions(5, start=100)])  # [num_envs=2, T=5]
    batch["next", "terminated"][0, 2] = True
    path = save_d4rl_hdf5(batch, tmp_path / "batch.hdf5")
    data = D4RLExperienceReplay(path)
    flat = data[:]
    assert flat["observation"][:, 0].tolist() == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    # Env 0's last episode ends with its row: it does not continue into env 1's.
    assert data.episode_lengths.tolist() == [3, 2, 5]
    assert torch.nonzero(flat["next", "truncated"][:, 0]).flatten().tolist() == [4, 9]
    assert torch.nonzero(flat["next", "terminated"][:, 0]).flatten().tolist() == [2]


def test_save_d4rl_hdf5_names_what_is_missing(tmp_path):
    with pytest.raises(KeyError, match=r"\('next', 'reward'\)"):
        save_d4rl_hdf5(transitions(4).exclude(("next", "reward")), tmp_path / "x.hdf5")
    with pytest.raises(ValueError, match=r"\[N\] or \[num_envs, T\]"):
        save_d4rl_hdf5(transitions(4).expand(2, 2, 4), tmp_path / "x.hdf5")
    assert not (tmp_path / "x.hdf5").exists()


def test_check_specs_against_the_env_the_dataset_was_recorded_on(tmp_path):
    env = GymEnv("Pendulum-v1")
    env.set_seed(0)
    rollout = env.rollout(20)
    data = D4RLExperienceReplay(save_d4rl_hdf5(rollout, tmp_path / "pendulum.hdf5"))
    assert (data[:]["observation"] == rollout["observation"]).all()
    data.check_specs(env)
    other = D4RLExperienceReplay(write_d4rl(tmp_path / "toy.hdf5"))
    with pytest.raises(DatasetSpecError, match=r"'observation': dataset has shape \[2\]"):
        other.check_specs(env)
    env.close()
