"""Gymnasium spaces <-> specs, and gym values <-> tensors, for every supported space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from rlblocks.core.specs import (
    Binary,
    Bounded,
    Categorical,
    MultiCategorical,
    OneHot,
    Unbounded,
)
from rlblocks.envs import UnsupportedEnvOperationError
from rlblocks.envs._gym_spaces import SpaceLayout, spec_to_space

CPU = torch.device("cpu")


def layout(space, batch=(), root="observation"):
    return SpaceLayout(space, root, batch, CPU, dict_at_root=root == "observation")


def test_leaf_spaces_map_to_specs():
    assert layout(spaces.Box(-1, 1, (3,))).spec["observation"] == Bounded(-1.0, 1.0, shape=(3,))
    assert layout(spaces.Box(-np.inf, np.inf, (2,))).spec["observation"] == Unbounded(shape=(2,))
    image = layout(spaces.Box(0, 255, (4, 4, 3), np.uint8)).spec["observation"]
    assert image == Bounded(0, 255, shape=(4, 4, 3), dtype=torch.uint8)
    assert layout(spaces.Discrete(5), (2,)).spec["observation"] == Categorical(5, shape=(2,))
    multi = layout(spaces.MultiDiscrete([2, 3])).spec["observation"]
    assert multi == MultiCategorical([2, 3])
    assert layout(spaces.MultiBinary(3)).spec["observation"] == Binary(3, dtype=torch.int8)


def test_nested_dict_and_tuple_keys_and_round_trip():
    space = spaces.Dict(
        {
            "pos": spaces.Box(-1, 1, (2,)),
            "pair": spaces.Tuple(
                (spaces.Discrete(3, start=-1), spaces.MultiDiscrete([4, 4], start=[1, 1]))
            ),
        }
    )
    lay = layout(space, root="action")
    assert set(lay.keys) == {("action", "pos"), ("action", "pair", "0"), ("action", "pair", "1")}
    value = space.sample()
    tensors = lay.to_tensors(value)
    assert tensors[("action", "pair", "0")].item() == value["pair"][0] + 1
    assert tensors[("action", "pair", "1")].tolist() == (value["pair"][1] - 1).tolist()
    back = lay.to_gym([t.numpy() for t in tensors.values()])
    assert space.contains(back)
    np.testing.assert_array_equal(back["pos"], value["pos"])
    assert back["pair"][0] == value["pair"][0]


def test_batched_buffers_and_writes():
    lay = layout(spaces.Dict({"a": spaces.Box(0, 1, (2,)), "b": spaces.Discrete(3)}), (4,))
    buffers = lay.empty((5,))
    assert buffers["a"].shape == (5, 4, 2) and buffers["b"].shape == (5, 4)
    lay.write({"a": np.ones((4, 2)), "b": np.arange(4) % 3}, buffers, 2)
    assert buffers["b"][2].tolist() == [0, 1, 2, 0]


@pytest.mark.parametrize(
    "space",
    [spaces.Text(5), spaces.MultiDiscrete(np.full((2, 2), 3)), spaces.Sequence(spaces.Discrete(2))],
    ids=["text", "2d-multidiscrete", "sequence"],
)
def test_unsupported_spaces_say_what_is_supported(space):
    with pytest.raises(UnsupportedEnvOperationError, match="observation"):
        layout(space)


@pytest.mark.parametrize(
    ("spec", "space"),
    [
        (Bounded(-2.0, 2.0, shape=(3,)), spaces.Box(-2, 2, (3,), np.float32)),
        (Unbounded(shape=(2,)), spaces.Box(-np.inf, np.inf, (2,), np.float32)),
        (Categorical(4), spaces.Discrete(4)),
        (OneHot(4), spaces.Discrete(4)),
        (MultiCategorical([2, 5]), spaces.MultiDiscrete([2, 5])),
        (Binary(3), spaces.MultiBinary(3)),
    ],
)
def test_specs_map_back_to_spaces(spec, space):
    assert spec_to_space(spec, "x") == space


def test_spec_without_space_is_refused():
    with pytest.raises(UnsupportedEnvOperationError, match="has no gymnasium space"):
        spec_to_space(OneHot(3, shape=(2, 3)), "observation")
