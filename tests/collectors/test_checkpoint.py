"""Atomic checkpoint folders and random-generator states."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rlblocks.collectors._checkpoint import rng_state, set_rng_state, write_atomic_folder


def test_folder_replaces_an_old_one_only_when_complete(tmp_path):
    target = tmp_path / "ckpt"
    write_atomic_folder(target, lambda f: (f / "a").write_text("old"))

    def failing(folder):
        (folder / "a").write_text("new, half written")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic_folder(target, failing)
    assert (target / "a").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary left
    write_atomic_folder(target, lambda f: (f / "b").write_text("new"))
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]
