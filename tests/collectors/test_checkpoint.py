"""Random-generator states in trainer checkpoints."""

from __future__ import annotations

import random

import numpy as np
import torch

from rlblocks.collectors._checkpoint import rng_state, set_rng_state


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]
