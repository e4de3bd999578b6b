"""dm_env specs become rlblocks specs: Composite, Bounded, Unbounded, Categorical."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dm_env import specs

from rlblocks.core.specs import Bounded, Categorical, Composite, Unbounded
from rlblocks.dmcontrol import DMControlError
from rlblocks.dmcontrol._specs import convert_spec, to_numpy, to_tensors

CPU = torch.device("cpu")


def test_array_is_unbounded_with_its_dtype_and_scalars_get_shape_one():
    assert convert_spec(specs.Array((4,), np.float64), "x", CPU) == Unbounded(
        shape=(4,), dtype=torch.float64
    )
    assert convert_spec(specs.Array((), np.int32), "x", CPU) == Unbounded(
        shape=(1,), dtype=torch.int32
    )


def test_bounded_array_keeps_per_element_bounds():
    spec = convert_spec(specs.BoundedArray((2,), np.float32, [-1.0, 0.0], 3.0), "x", CPU)
    assert isinstance(spec, Bounded) and spec.dtype == torch.float32
    assert spec.low.tolist() == [-1.0, 0.0] and spec.high.tolist() == [3.0, 3.0]
    pixels = convert_spec(specs.BoundedArray((2, 2, 3), np.uint8, 0, 255), "x", CPU)
    assert pixels == Bounded(0, 255, shape=(2, 2, 3), dtype=torch.uint8)


def test_discrete_array_is_a_scalar_categorical():
    spec = convert_spec(specs.DiscreteArray(5, dtype=np.int32), "x", CPU)
    assert spec == Categorical(5, shape=(), dtype=torch.int32)


def test_nested_dicts_become_nested_composites():
    spec = convert_spec(
        {"a": specs.Array((3,), np.float64), "b": {"c": specs.DiscreteArray(2)}}, "obs", CPU
    )
    assert isinstance(spec, Composite) and isinstance(spec["b"], Composite)
    assert spec.keys(include_nested=True, leaves_only=True) == ["a", ("b", "c")]
    assert spec["b", "c"].n == 2


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ((specs.Array((), np.float64),), "cannot convert dm_env spec"),
        (specs.Array((2,), np.dtype("U3")), "torch cannot hold"),
    ],
)
def test_unconvertible_specs_name_where_they_are(spec, match):
    with pytest.raises(DMControlError, match=f"observation 'odd'.*{match}|{match}"):
        convert_spec({"odd": spec}, "observation", CPU)


def test_values_round_trip_through_tensors():
    dm_spec = {"a": specs.Array((), np.float64), "b": {"c": specs.Array((2,), np.float32)}}
    spec = convert_spec(dm_spec, "obs", CPU)
    source = np.array([1.0, 2.0], np.float32)
    tensors = to_tensors({"a": 0.5, "b": {"c": source}}, spec)
    assert tensors["a"].tolist() == [0.5] and tensors["a"].dtype == torch.float64
    source[0] = 9.0  # values are copied: dm_control reuses its buffers
    assert tensors["b"]["c"].tolist() == [1.0, 2.0]
    action_spec = specs.BoundedArray((), np.float64, -1.0, 1.0)
    assert to_numpy(torch.tensor([0.25]), action_spec).shape == ()
