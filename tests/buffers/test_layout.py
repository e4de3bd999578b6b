"""Layouts: inferred from the first write, every later write checked against them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import StorageLayoutError
from rlblocks.buffers._layout import Layout, infer_layout

WHO = "test"


def test_fields_are_packed_largest_item_first_and_aligned(transitions):
    layout = infer_layout(transitions(3), True, frozenset(), WHO)
    assert layout.kind == "tensordict"
    by_key = {f.key: f for f in layout.fields}
    assert by_key[("action",)].offset == 0  # int64 first
    assert by_key[("next", "reward")].shape == (1,)
    for f in layout.fields:
        assert f.offset % f.dtype.itemsize == 0
    assert layout.row_bytes % 8 == 0
    assert layout.row_bytes >= sum(f.nbytes for f in layout.fields)


def test_layout_round_trips_through_json(transitions):
    for data, batched in [
        (transitions(2), True),
        ({"a": np.zeros((2, 3), np.float16), "b": (torch.ones(2), torch.zeros(2, 1))}, True),
        (torch.zeros(4, dtype=torch.bfloat16), False),
    ]:
        layout = infer_layout(data, batched, frozenset(), WHO)
        assert Layout.from_json(layout.to_json()) == layout


def test_malformed_json_raises_value_error(transitions):
    spec = infer_layout(transitions(2), True, frozenset(), WHO).to_json()
    spec["fields"][0]["nbytes"] += 1
    with pytest.raises(ValueError, match="does not fit"):
        Layout.from_json(spec)
    with pytest.raises(ValueError, match="malformed"):
        Layout.from_json({"kind": "tensordict"})


def test_ignored_keys_are_left_out(transitions):
    data = transitions(2)
    data["index"] = torch.arange(2)
    layout = infer_layout(data, True, frozenset({"index"}), WHO)
    assert ("index",) not in {f.key for f in layout.fields}
    assert layout.prepare(data, True, frozenset({"index"}), WHO).n == 2


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"a": ["x", "y"]}, "not a tensor"),
        ({"a": np.array(["x", "y"])}, "not a tensor"),
        ({"a": torch.zeros(2, 0)}, "no element"),
        ({}, "no tensor"),
        ({"a": torch.zeros(2), "b": torch.zeros(3)}, "same first dimension"),
        (torch.tensor(1.0), "scalar"),
    ],
)
def test_unstorable_first_writes_are_refused(data, match):
    with pytest.raises(StorageLayoutError, match=match):
        infer_layout(data, True, frozenset(), WHO)


def test_extend_needs_a_batch_dimension():
    with pytest.raises(StorageLayoutError, match="batch size"):
        infer_layout(TensorDict({"a": torch.zeros(3)}, []), True, frozenset(), WHO)


def test_mismatches_name_the_key_the_expectation_and_what_was_given(transitions):
    layout = infer_layout(transitions(2), True, frozenset(), WHO)
    bad = transitions(2)
    bad["next", "reward"] = torch.ones(2, 2)
    with pytest.raises(StorageLayoutError) as info:
        layout.prepare(bad, True, frozenset(), WHO)
    message = str(info.value)
    assert "('next', 'reward')" in message and "[1]" in message and "[2]" in message
    bad = transitions(2)
    bad["action"] = bad["action"].int()
    with pytest.raises(StorageLayoutError, match=r"'action'.*torch.int64.*torch.int32"):
        layout.prepare(bad, True, frozenset(), WHO)
    bad = transitions(2).exclude(("next", "truncated"))
    with pytest.raises(StorageLayoutError, match=r"\('next', 'truncated'\).*missing"):
        layout.prepare(bad, True, frozenset(), WHO)
    bad = transitions(2)
    bad["extra"] = torch.zeros(2)
    with pytest.raises(StorageLayoutError, match="'extra' is not in the storage"):
        layout.prepare(bad, True, frozenset(), WHO)
    with pytest.raises(StorageLayoutError, match="holds TensorDicts"):
        layout.prepare({"observation": torch.zeros(2, 4)}, True, frozenset(), WHO)
    with pytest.raises(StorageLayoutError, match="batch size"):
        layout.prepare(transitions(4).reshape(2, 2), True, frozenset(), WHO)


def test_pytree_mismatches_are_refused():
    layout = infer_layout({"obs": np.zeros((2, 3)), "r": torch.zeros(2)}, True, frozenset(), WHO)
    with pytest.raises(StorageLayoutError, match="structure"):
        layout.prepare({"obs": np.zeros((2, 3))}, True, frozenset(), WHO)
    with pytest.raises(StorageLayoutError, match=r"\['obs'\].*float64.*float32"):
        layout.prepare(
            {"obs": np.zeros((2, 3), np.float32), "r": torch.zeros(2)}, True, frozenset(), WHO
        )
    with pytest.raises(StorageLayoutError, match="same first dimension"):
        layout.prepare({"obs": np.zeros((2, 3)), "r": torch.zeros(3)}, True, frozenset(), WHO)
    single = layout.prepare({"obs": np.zeros(3), "r": torch.tensor(0.0)}, False, frozenset(), WHO)
    assert single.n == 1 and single.leaves[0].shape == (1, 3)


def test_strings_in_a_tensordict_are_refused_not_dropped(transitions):
    # tensordict's leaves_only walk passes over non-tensor data: a storage that trusted it
    # would keep the tensors and lose the strings without a word.
    from tensordict import NonTensorStack

    from rlblocks.buffers import LazyTensorStorage, ReplayBuffer

    def with_text(key):
        data = transitions(2)
        data.set(key, NonTensorStack.from_list(["a", "b"]))
        return data

    with pytest.raises(StorageLayoutError, match=r"'text' is a NonTensorStack.*exclude"):
        infer_layout(with_text("text"), True, frozenset(), WHO)
    layout = infer_layout(transitions(2), True, frozenset(), WHO)
    with pytest.raises(StorageLayoutError, match=r"\('next', 'text'\) is a NonTensorStack"):
        layout.prepare(with_text(("next", "text")), True, frozenset(), WHO)
    buffer = ReplayBuffer(storage=LazyTensorStorage(10))
    buffer.extend(transitions(2))
    with pytest.raises(StorageLayoutError, match="Nothing was written"):
        buffer.extend(with_text("text"))
    assert len(buffer) == 2
    buffer.extend(with_text("text").exclude("text"))  # the fix the message gives
    assert len(buffer) == 4
