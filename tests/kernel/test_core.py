"""The compiled segment trees of rlblocks-kernel, checked against the numpy fallback.

These tests import ``rlblocks.kernel._core`` directly: if the kernel was installed without
its compiled module they fail (they must never be skipped).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlblocks.buffers import NumpyMinSegmentTree, NumpySumSegmentTree
from rlblocks.core import MinSegmentTree, SumSegmentTree
from rlblocks.kernel import _core

TREES = [(_core.SumSegmentTree, NumpySumSegmentTree), (_core.MinSegmentTree, NumpyMinSegmentTree)]


def test_compiled_module_is_a_shared_library_without_libtorch():
    path = Path(_core.__file__)
    assert path.suffix in (".so", ".pyd") and path.parent.name == "kernel"
    binary = path.read_bytes()
    assert b"libtorch" not in binary and b"libc10" not in binary
    assert _core.__version__ == "0.1.0"


def test_trees_follow_the_core_protocols():
    assert isinstance(_core.SumSegmentTree(4), SumSegmentTree)
    assert isinstance(_core.MinSegmentTree(4), MinSegmentTree)


operations = st.lists(
    st.tuples(
        st.lists(st.integers(0, 1000), min_size=1, max_size=20),
        st.lists(
            st.floats(0.0, 1e6, allow_nan=False, allow_subnormal=False), min_size=1, max_size=20
        ),
    ),
    min_size=1,
    max_size=10,
)


def apply(tree, capacity, ops):
    for index, values in ops:
        index = np.array([i % capacity for i in index], dtype=np.int64)
        tree.update(index, np.resize(np.array(values), index.shape))
    return tree


@settings(max_examples=80, deadline=None)
@given(capacity=st.integers(1, 300), ops=operations, data=st.data())
def test_kernel_trees_equal_numpy_trees_bit_for_bit(capacity, ops, data):
    start = data.draw(st.integers(0, capacity))
    end = data.draw(st.integers(start, capacity))
    for kernel_cls, numpy_cls in TREES:
        kernel = apply(kernel_cls(capacity), capacity, ops)
        reference = apply(numpy_cls(capacity), capacity, ops)
        everything = np.arange(capacity)
        assert np.array_equal(kernel[everything], reference[everything])
        assert np.array_equal(kernel.leaves(), reference.leaves())
        assert kernel.query(start, end) == reference.query(start, end)
        assert kernel.query(0, capacity) == reference.query(0, capacity)
    kernel = apply(_core.SumSegmentTree(capacity), capacity, ops)
    reference = apply(NumpySumSegmentTree(capacity), capacity, ops)
    assert kernel.total() == reference.total()
    prefixes = np.random.default_rng(0).random(64) * kernel.total() * 1.01
    found = kernel.find_prefixsum_idx(prefixes)
    assert np.array_equal(found, reference.find_prefixsum_idx(prefixes))


def test_bulk_updates_rebuild_the_same_tree():
    rng = np.random.default_rng(1)
    values = rng.random(100_000)
    kernel, reference = _core.SumSegmentTree(100_000), NumpySumSegmentTree(100_000)
    kernel.update(np.arange(100_000), values)
    reference.update(np.arange(100_000), values)
    prefixes = rng.random(10_000) * kernel.total()
    assert kernel.total() == reference.total()
    assert np.array_equal(
        kernel.find_prefixsum_idx(prefixes), reference.find_prefixsum_idx(prefixes)
    )


def test_later_duplicate_index_wins_and_scalars_broadcast():
    tree = _core.SumSegmentTree(4)
    tree.update(np.array([1, 2, 1]), np.array([5.0, 1.0, 7.0]))
    assert tree[np.array([1, 2])].tolist() == [7.0, 1.0] and tree.total() == 8.0
    tree.update(np.array([0, 3]), 2.0)
    assert tree.total() == 12.0
    assert tree.find_prefixsum_idx(np.array([[0.5, 100.0]])).tolist() == [[0, 3]]


def test_bad_input_raises_and_changes_nothing():
    tree = _core.SumSegmentTree(4)
    tree.update(np.array([0]), np.array([1.0]))
    with pytest.raises(IndexError, match="out of range"):
        tree.update(np.array([0, 4]), np.array([9.0, 9.0]))
    with pytest.raises(IndexError, match="out of range"):
        tree.update(np.array([-1]), 1.0)
    with pytest.raises(IndexError):
        tree[np.array([7])]
    with pytest.raises(TypeError, match="integers"):
        tree.update(np.array([0.5]), 1.0)
    with pytest.raises(ValueError, match="2 values for 3 indices"):
        tree.update(np.array([0, 1, 2]), np.array([1.0, 2.0]))
    with pytest.raises(IndexError, match="range"):
        tree.query(2, 1)
    with pytest.raises(ValueError, match="capacity"):
        _core.MinSegmentTree(0)
    assert tree.total() == 1.0


def test_trees_pickle_with_their_leaves():
    tree = _core.MinSegmentTree(5)
    tree.update(np.array([1, 3]), np.array([2.0, 0.5]))
    clone = pickle.loads(pickle.dumps(tree))
    assert clone.capacity == 5 and clone.query(0, 5) == 0.5
    clone.update(np.array([0]), 0.1)
    assert (clone.query(0, 5), tree.query(0, 5)) == (0.1, 0.5)
    assert repr(tree) == "MinSegmentTree(capacity=5)"
