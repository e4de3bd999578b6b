"""fast_td's TensorDict helpers give what tensordict's own calls give."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.fast_td import (
    PLAIN_LAYOUT,
    detached,
    fast_get,
    flat_entries,
    has_key,
    shallow_copy,
)


def flat() -> TensorDict:
    return TensorDict(
        {"observation": torch.randn(4, 3, requires_grad=True), "action": torch.zeros(4)},
        batch_size=[4],
    )


def nested() -> TensorDict:
    td = flat()
    td["next", "reward"] = torch.ones(4, 1)
    return td


def named() -> TensorDict:
    td = flat()
    td.names = ["time"]
    return td


def test_flat_entries_only_for_flat_tensordicts():
    td = flat()
    assert flat_entries(td) is (td._tensordict if PLAIN_LAYOUT else None)
    assert flat_entries(nested()) is None
    assert flat_entries(named()) is None


@pytest.mark.parametrize("make", [flat, nested, named])
def test_shallow_copy_holds_the_same_tensors_and_leaves_the_original(make):
    td = make()
    copy = shallow_copy(td)
    assert copy is not td
    assert set(copy.keys(True, True)) == set(td.keys(True, True))
    assert all(copy.get(k) is td.get(k) for k in td.keys(True, True))
    assert copy.batch_size == td.batch_size and copy.names == td.names
    copy["logits"] = torch.zeros(4, 2)
    copy["action"] = torch.ones(4)
    copy["next", "observation"] = torch.zeros(4, 3)
    assert "logits" not in td.keys()
    assert (td["action"] == 0).all()
    assert ("next", "observation") not in td.keys(True)


def test_shallow_copy_of_a_deeper_tree_keeps_each_level():
    td = nested()
    td["next", "agents"] = TensorDict({"reward": torch.ones(4, 2, 1)}, batch_size=[4, 2])
    copy = shallow_copy(td)
    assert copy["next", "agents"].batch_size == torch.Size([4, 2])
    assert copy["next", "agents"] is not td["next", "agents"]
    assert copy["next", "agents", "reward"] is td["next", "agents", "reward"]
    copy["next", "agents", "done"] = torch.zeros(4, 2, 1, dtype=torch.bool)
    assert ("next", "agents", "done") not in td.keys(True)


@pytest.mark.parametrize("make", [flat, nested, named])
def test_has_key_answers_as_the_nested_keys(make):
    td = make()
    for key in [*td.keys(True), "next", ("next", "reward"), ("next", "done"), "missing",
                ("observation", "x"), ("next", "reward", "x")]:  # fmt: skip
        assert has_key(td, key) == (key in td.keys(True)), key


@pytest.mark.parametrize("make", [flat, nested, named])
def test_detached_equals_detach(make):
    td = make()
    out = detached(td)
    expected = td.detach()
    assert set(out.keys(True, True)) == set(expected.keys(True, True))
    for key in td.keys(True, True):
        assert not out.get(key).requires_grad
        assert torch.equal(out.get(key), expected.get(key))
    assert out.batch_size == td.batch_size and out.names == td.names
    assert td["observation"].requires_grad  # the original keeps its graph


def test_a_copy_of_a_locked_tensordict_takes_writes():
    td = flat().lock_()
    copy = shallow_copy(td)
    copy["logits"] = torch.zeros(4, 2)
    assert "logits" in copy.keys()


@pytest.mark.parametrize("make", [flat, nested, named])
def test_fast_get_reads_what_get_reads(make):
    td = make()
    for key in [*td.keys(True), "next", ("next", "reward"), ("next", "done"), "missing"]:
        expected = td.get(key, "absent")
        got = fast_get(td, key, "absent")
        assert got is expected or (got == "absent" and expected == "absent"), key
