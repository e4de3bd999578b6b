"""The numpy segment trees against a naive reference, and their contract."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlblocks.buffers import BufferIndexError, NumpyMinSegmentTree, NumpySumSegmentTree
from rlblocks.buffers._segment_tree import NUMPY_PROVIDER
from rlblocks.core import MinSegmentTree, SumSegmentTree

updates = st.lists(
    st.tuples(
        st.lists(st.integers(0, 36), min_size=0, max_size=12),
        st.floats(0.0, 100.0, allow_nan=False),
    ),
    max_size=8,
)


def naive_apply(leaves: np.ndarray, index: list[int], value: float) -> None:
    for i in index:
        leaves[i] = value


def test_trees_follow_the_core_protocols():
    assert isinstance(NumpySumSegmentTree(3), SumSegmentTree)
    assert isinstance(NumpyMinSegmentTree(3), MinSegmentTree)
    assert NUMPY_PROVIDER.priority == 0
    assert NUMPY_PROVIDER.sum_tree is NumpySumSegmentTree


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 37), ops=updates, data=st.data())
def test_sum_tree_matches_naive_sums(capacity, ops, data):
    tree = NumpySumSegmentTree(capacity)
    leaves = np.zeros(capacity)
    for index, value in ops:
        index = [i % capacity for i in index]
        tree.update(np.array(index, dtype=np.int64), np.full(len(index), value))
        naive_apply(leaves, index, value)
    assert np.array_equal(tree[np.arange(capacity)], leaves)
    assert tree.total() == pytest.approx(leaves.sum())
    start = data.draw(st.integers(0, capacity))
    end = data.draw(st.integers(start, capacity))
    assert tree.query(start, end) == pytest.approx(leaves[start:end].sum())
    if leaves.sum() > 0:
        prefixes = np.linspace(0, leaves.sum(), 17, endpoint=False)
        found = tree.find_prefixsum_idx(prefixes)
        cumsum = np.cumsum(leaves)
        for p, i in zip(prefixes, found):
            assert leaves[i] > 0  # a zero leaf is never drawn
            assert cumsum[i] >= p - 1e-9
            assert i == 0 or cumsum[i - 1] <= p + 1e-9


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 37), ops=updates, data=st.data())
def test_min_tree_matches_naive_minimum(capacity, ops, data):
    tree = NumpyMinSegmentTree(capacity)
    leaves = np.full(capacity, np.inf)
    for index, value in ops:
        index = [i % capacity for i in index]
        tree.update(np.array(index, dtype=np.int64), value)
        naive_apply(leaves, index, value)
    start = data.draw(st.integers(0, capacity))
    end = data.draw(st.integers(start, capacity))
    expected = leaves[start:end].min() if end > start else np.inf
    assert tree.query(start, end) == expected


def test_later_duplicate_index_wins():
    tree = NumpySumSegmentTree(4)
    tree.update(np.array([1, 2, 1]), np.array([5.0, 1.0, 7.0]))
    assert tree[np.array([1, 2])].tolist() == [7.0, 1.0]
    assert tree.total() == 8.0


def test_bulk_update_rebuilds_the_same_tree_as_small_updates():
    rng = np.random.default_rng(0)
    values = rng.random(1000)
    bulk, small = NumpySumSegmentTree(1000), NumpySumSegmentTree(1000)
    bulk.update(np.arange(1000), values)
    for start in range(0, 1000, 10):
        small.update(np.arange(start, start + 10), values[start : start + 10])
    assert np.array_equal(bulk._tree, small._tree)  # bit for bit


def test_prefix_past_the_total_gives_the_last_non_zero_leaf():
    tree = NumpySumSegmentTree(8)
    tree.update(np.array([1, 4]), np.array([1.0, 2.0]))
    assert tree.find_prefixsum_idx(np.array([3.0, 100.0])).tolist() == [4, 4]
    assert tree.find_prefixsum_idx(np.array([[0.0, 1.0]])).shape == (1, 2)


@pytest.mark.parametrize("bad", [[-1], [4], [0, 9]])
def test_out_of_range_indices_raise_and_change_nothing(bad):
    tree = NumpySumSegmentTree(4)
    tree.update(np.array([0]), 1.0)
    with pytest.raises(BufferIndexError, match="out of range"):
        tree.update(np.array(bad), 1.0)
    with pytest.raises(IndexError):
        tree[np.array(bad)]
    assert tree.total() == 1.0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="capacity"):
        NumpySumSegmentTree(0)
    tree = NumpyMinSegmentTree(4)
    with pytest.raises(TypeError, match="integers"):
        tree.update(np.array([0.5]), 1.0)
    with pytest.raises(IndexError, match="range"):
        tree.query(3, 2)


def test_trees_pickle_with_their_leaves():
    tree = NumpySumSegmentTree(5)
    tree.update(np.array([0, 4]), np.array([2.0, 3.0]))
    clone = pickle.loads(pickle.dumps(tree))
    clone.update(np.array([1]), 1.0)
    assert (clone.total(), tree.total()) == (6.0, 5.0)
    assert np.array_equal(tree.leaves(), [2.0, 0, 0, 0, 3.0])
