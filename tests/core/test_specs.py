"""Example-based tests of the spec classes in rlblocks.core.specs."""

from __future__ import annotations

import doctest
import importlib
import pickle

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core import specs
from rlblocks.core.errors import MissingKeyError, SpecError
from rlblocks.core.specs import (
    Binary,
    Bounded,
    Categorical,
    Composite,
    MultiCategorical,
    MultiOneHot,
    OneHot,
    TensorSpec,
    Unbounded,
)

LEAF_SPECS = {
    "unbounded": lambda: Unbounded(shape=(3,)),
    "unbounded_int": lambda: Unbounded(shape=(2,), dtype=torch.int32),
    "bounded": lambda: Bounded(-2.0, 2.0, shape=(2,)),
    "bounded_tensor": lambda: Bounded(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 5.0])),
    "bounded_int": lambda: Bounded(0, 9, shape=(2,), dtype=torch.int64),
    "categorical": lambda: Categorical(4, shape=(2,)),
    "categorical_scalar": lambda: Categorical(4),
    "onehot": lambda: OneHot(4),
    # Action masks: rand, zero, expand, to, clone, == and pickling must carry them.
    "categorical_masked": lambda: Categorical(
        4, shape=(2,), mask=torch.tensor([[False, True, False, True], [True, False, False, False]])
    ),
    "onehot_masked": lambda: OneHot(4, mask=torch.tensor([False, False, True, True])),
    "multicategorical": lambda: MultiCategorical([3, 2, 4]),
    "multionehot": lambda: MultiOneHot([3, 2, 4]),
    "binary": lambda: Binary(3),
}


@pytest.fixture(params=sorted(LEAF_SPECS))
def leaf(request) -> TensorSpec:
    return LEAF_SPECS[request.param]()


@pytest.fixture(params=sorted(k for k in LEAF_SPECS if k != "categorical_scalar"))
def shaped_leaf(request) -> TensorSpec:
    """Leaf specs with at least one dim (a scalar spec takes any shape as batch dims)."""
    return LEAF_SPECS[request.param]()


# ---------------------------------------------------------------------------- shared behaviour
class TestLeafContract:
    @pytest.mark.parametrize("batch", [(), 5, (2, 3), [4], torch.Size([1, 2])])
    def test_rand_and_zero_have_batch_shape_dtype_and_are_valid(self, leaf, batch):
        lead = (batch,) if isinstance(batch, int) else tuple(batch)
        for value in (leaf.rand(batch), leaf.zero(batch)):
            assert value.shape == torch.Size([*lead, *leaf.shape])
            assert value.dtype == leaf.dtype
            assert value.device == leaf.device
            assert leaf.is_in(value)

    def test_is_in_rejects_non_tensors_wrong_dtype_and_shape(self, leaf):
        value = leaf.zero()
        assert not leaf.is_in(value.tolist())
        assert not leaf.is_in(None)
        other = torch.float64 if leaf.dtype != torch.float64 else torch.float32
        assert not leaf.is_in(value.to(other))

    def test_is_in_rejects_wrong_trailing_shape(self, shaped_leaf):
        value = shaped_leaf.zero()
        assert not shaped_leaf.is_in(value.unsqueeze(-1))
        assert not shaped_leaf.is_in(torch.cat([value, value], -1))
        assert shaped_leaf.is_in(value.unsqueeze(0))

    def test_assert_is_in_names_type_when_not_a_tensor(self, leaf):
        with pytest.raises(SpecError, match=r"key 'obs'.*expected a torch.Tensor, got list"):
            leaf.assert_is_in([1, 2], key="obs")

    def test_assert_is_in_names_expected_and_given_dtype(self, leaf):
        wrong = leaf.zero().to(torch.float64 if leaf.dtype != torch.float64 else torch.float32)
        with pytest.raises(SpecError) as info:
            leaf.assert_is_in(wrong, key="x")
        message = str(info.value)
        assert type(leaf).__name__ in message
        assert f"expected dtype {leaf.dtype}" in message
        assert f"got dtype {wrong.dtype}" in message

    def test_assert_is_in_names_expected_and_given_shape(self, shaped_leaf):
        wrong = shaped_leaf.zero().unsqueeze(-1)
        with pytest.raises(SpecError, match=r"expected shape \[\*batch.*got shape") as info:
            shaped_leaf.assert_is_in(wrong)
        assert str(list(wrong.shape)) in str(info.value)
        assert str(info.value).startswith("value is not in")

    def test_assert_is_in_passes_on_valid_values(self, leaf):
        leaf.assert_is_in(leaf.rand(4), key="x")

    def test_project_returns_valid_values_and_keeps_valid_ones(self, leaf):
        x = torch.randn(6, *leaf.shape) * 10
        projected = leaf.project(x)
        assert leaf.is_in(projected)
        valid = leaf.rand(6)
        assert leaf.project(valid) is valid

    def test_project_rejects_wrong_shape(self, shaped_leaf):
        with pytest.raises(SpecError, match="cannot project"):
            shaped_leaf.project(torch.zeros(*shaped_leaf.shape, 7))

    def test_expand_clone_to_and_eq(self, leaf):
        expanded = leaf.expand(2, *leaf.shape)
        assert expanded.shape == torch.Size([2, *leaf.shape])
        assert expanded.is_in(expanded.rand(3))
        assert expanded.rand(3).shape == torch.Size([3, 2, *leaf.shape])
        assert expanded.expand(4, 2, *leaf.shape) == leaf.expand((4, 2, *leaf.shape))
        assert expanded != leaf
        assert leaf.clone() == leaf
        assert leaf.clone() is not leaf
        assert leaf.to("cpu") == leaf
        assert leaf.ndim == len(leaf.shape)

    def test_expand_must_keep_trailing_shape(self, shaped_leaf):
        with pytest.raises(SpecError, match="must end with the spec's shape"):
            shaped_leaf.expand(3, *shaped_leaf.shape, 7)
        with pytest.raises(SpecError, match="must end with the spec's shape"):
            shaped_leaf.expand(*shaped_leaf.shape[1:])

    def test_repr_names_class_shape_dtype_device(self, leaf):
        text = repr(leaf)
        assert text.startswith(f"{type(leaf).__name__}(shape=torch.Size(")
        assert str(leaf.dtype) in text
        assert "device=cpu" in text

    def test_values_do_not_alias_the_spec(self, leaf):
        first = leaf.zero()
        expected = first.clone()
        first.fill_(True if first.dtype == torch.bool else 7)
        assert torch.equal(leaf.zero(), expected)

    def test_pickle_round_trip(self, leaf):
        assert pickle.loads(pickle.dumps(leaf)) == leaf


# ---------------------------------------------------------------------------- Unbounded
class TestUnbounded:
    def test_defaults(self):
        spec = Unbounded()
        assert spec.shape == torch.Size([])
        assert spec.dtype == torch.float32
        assert spec.device == torch.device("cpu")
        assert spec.rand().shape == torch.Size([])

    @pytest.mark.parametrize("dtype", [torch.float64, torch.int8, torch.int64, torch.bool])
    def test_rand_dtypes(self, dtype):
        spec = Unbounded(shape=(50,), dtype=dtype)
        x = spec.rand()
        assert x.dtype == dtype
        assert spec.is_in(x)
        assert x.unique().numel() > 1  # actually random

    def test_accepts_any_value_including_nan(self):
        assert Unbounded(shape=(2,)).is_in(torch.tensor([float("nan"), 1e30]))

    def test_project_casts_and_saturates_integers(self):
        spec = Unbounded(shape=(3,), dtype=torch.int8)
        out = spec.project(torch.tensor([1e6, -3.6, float("nan")]))
        assert out.tolist() == [127, -4, 0]
        assert out.dtype == torch.int8

    def test_equality_compares_shape_and_dtype(self):
        assert Unbounded((2,)) == Unbounded([2])
        assert Unbounded((2,)) != Unbounded((3,))
        assert Unbounded((2,)) != Unbounded((2,), dtype=torch.float64)
        assert Unbounded((1,)) != Bounded(-1.0, 1.0, shape=(1,))

    def test_invalid_arguments(self):
        with pytest.raises(SpecError, match=r"dtype must be a torch\.dtype"):
            Unbounded(dtype="float32")
        with pytest.raises(SpecError, match="non-negative"):
            Unbounded(shape=(-1,))
        with pytest.raises(SpecError, match="shape must be"):
            Unbounded(shape="ab")


# ---------------------------------------------------------------------------- Bounded
class TestBounded:
    def test_repr_shows_scalar_bounds(self):
        spec = Bounded(-2.0, 2.0, shape=(1,))
        assert repr(spec) == (
            "Bounded(shape=torch.Size([1]), low=-2.0, high=2.0, dtype=torch.float32, device=cpu)"
        )

    def test_repr_shows_tensor_bounds(self):
        spec = Bounded(torch.tensor([-1.0, 0.0]), 5.0)
        assert "low=tensor([-1.0, 0.0])" in repr(spec)
        assert "high=5.0" in repr(spec)
        long = Bounded(torch.arange(20.0), 100.0)
        assert "low=tensor(shape=[20], min=0.0, max=19.0)" in repr(long)

    def test_shape_inferred_and_bounds_full_shape(self):
        spec = Bounded(torch.zeros(3), 1.0)
        assert spec.shape == torch.Size([3])
        assert spec.low.shape == spec.high.shape == torch.Size([3])
        assert torch.equal(spec.high, torch.ones(3))
        spec = Bounded(torch.zeros(2, 1), torch.ones(3))
        assert spec.shape == torch.Size([2, 3])

    def test_rand_within_bounds(self):
        spec = Bounded(torch.tensor([-1.0, 10.0]), torch.tensor([0.0, 10.5]))
        x = spec.rand(1000)
        assert (x[:, 0] >= -1).all()
        assert (x[:, 0] <= 0).all()
        assert (x[:, 1] >= 10).all()
        assert (x[:, 1] <= 10.5).all()
        assert x[:, 0].std() > 0.1  # spread over the box, not a constant

    def test_integer_bounds_inclusive(self):
        spec = Bounded(0, 2, shape=(3000,), dtype=torch.int64)
        assert set(spec.rand().tolist()) == {0, 1, 2}

    def test_integer_bounds_rounded_inwards(self):
        spec = Bounded(0.5, 3.7, shape=(1,), dtype=torch.int32)
        assert spec.low.item() == 1
        assert spec.high.item() == 3
        with pytest.raises(SpecError, match="round low up and high down"):
            Bounded(0.2, 0.7, dtype=torch.int64)

    def test_infinite_bounds(self):
        spec = Bounded(0.0, float("inf"), shape=(3,))
        x = spec.rand(100)
        assert spec.is_in(x)
        assert (x >= 0).all()
        assert spec.zero().tolist() == [0.0, 0.0, 0.0]

    def test_huge_bounds_do_not_overflow(self):
        spec = Bounded(-3e38, 3e38, shape=(4,))
        assert spec.is_in(spec.rand(100))

    def test_zero_uses_low_when_zero_is_outside(self):
        assert Bounded(1.0, 2.0, shape=(2,)).zero().tolist() == [1.0, 1.0]
        assert Bounded(-5.0, -2.0).zero().item() == -5.0
        assert Bounded(-1.0, 1.0).zero().item() == 0.0

    def test_is_in_checks_range_including_nan(self):
        spec = Bounded(-1.0, 1.0, shape=(2,))
        assert spec.is_in(torch.tensor([-1.0, 1.0]))
        assert not spec.is_in(torch.tensor([-1.0, 1.01]))
        assert not spec.is_in(torch.tensor([0.0, float("nan")]))
        per_elem = Bounded(torch.tensor([-1.0, 0.0]), torch.tensor([0.0, 1.0]))
        assert per_elem.is_in(torch.tensor([[-0.5, 0.5]]))
        assert not per_elem.is_in(torch.tensor([[0.5, 0.5]]))

    def test_assert_is_in_message(self):
        spec = Bounded(-2.0, 2.0, shape=(1,))
        with pytest.raises(SpecError) as info:
            spec.assert_is_in(torch.tensor([[-3.1], [0.5]]), key="action")
        assert str(info.value).startswith(
            "value for key 'action' is not in Bounded(shape=[1], low=-2.0, high=2.0, "
            "dtype=torch.float32): expected values in [-2.0, 2.0], got min -3.1 max 0.5"
        )

    def test_assert_is_in_message_per_element_bounds(self):
        spec = Bounded(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 5.0]))
        with pytest.raises(SpecError, match=r"x\[0, 1\] = 6.0 outside \[0.0, 5.0\]"):
            spec.assert_is_in(torch.tensor([[0.0, 6.0]]), key=("next", "obs"))

    def test_project_clamps(self):
        spec = Bounded(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 5.0]))
        out = spec.project(torch.tensor([[-7.0, 2.0], [3.0, 9.0]]))
        assert out.tolist() == [[-1.0, 2.0], [1.0, 5.0]]

    def test_project_nan_and_integer_dtypes(self):
        spec = Bounded(-1.0, 1.0, shape=(2,))
        assert spec.project(torch.tensor([float("nan"), 3.0])).tolist() == [0.0, 1.0]
        ints = Bounded(0, 9, shape=(3,), dtype=torch.int16)
        out = ints.project(torch.tensor([1e30, -4.0, 3.4]))
        assert out.tolist() == [9, 0, 3]
        assert out.dtype == torch.int16
        assert ints.project(torch.tensor([100, -5, 4])).tolist() == [9, 0, 4]

    def test_equality_compares_bounds(self):
        assert Bounded(0.0, 1.0, shape=(2,)) == Bounded(torch.zeros(2), torch.ones(2))
        assert Bounded(0.0, 1.0, shape=(2,)) != Bounded(0.0, 2.0, shape=(2,))

    def test_expand_expands_bounds(self):
        spec = Bounded(torch.tensor([-1.0, 0.0]), 1.0).expand(3, 2)
        assert spec.low.shape == torch.Size([3, 2])
        assert spec.is_in(spec.rand(4))
        assert spec.expand(3, -1) == spec

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"low": 1.0, "high": 0.0}, "low must be <= high, got low=1.0 > high=0.0"),
            ({"low": torch.zeros(3), "high": torch.ones(2)}, "do not broadcast"),
            ({"low": torch.zeros(3), "high": 1.0, "shape": (2,)}, "does not broadcast to"),
            ({"low": 0, "high": 1, "dtype": torch.bool}, "floating or integer dtype"),
            ({"low": float("nan"), "high": 1.0}, "NaN"),
            ({"low": "a", "high": 1.0}, "must be a number or a tensor"),
        ],
    )
    def test_invalid_arguments(self, kwargs, match):
        with pytest.raises(SpecError, match=match):
            Bounded(**kwargs)

    def test_low_greater_than_high_names_index(self):
        with pytest.raises(SpecError, match=r"at index \(1,\)"):
            Bounded(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]))


# ---------------------------------------------------------------------------- Categorical
class TestCategorical:
    def test_rand_covers_all_categories(self):
        spec = Categorical(3, shape=(2,))
        x = spec.rand(500)
        assert x.shape == torch.Size([500, 2])
        assert x.dtype == torch.int64
        assert set(x.unique().tolist()) == {0, 1, 2}
        assert spec.n == 3

    def test_is_in_range(self):
        spec = Categorical(3)
        assert spec.is_in(torch.tensor([0, 2]))
        assert not spec.is_in(torch.tensor([0, 3]))
        assert not spec.is_in(torch.tensor([-1]))
        assert not spec.is_in(torch.tensor(1.0))

    def test_assert_is_in_message(self):
        with pytest.raises(SpecError, match=r"expected integers in \[0, 3\), got min 0 max 5"):
            Categorical(3).assert_is_in(torch.tensor([0, 5]), key="action")

    def test_project_rounds_and_clamps(self):
        spec = Categorical(4, dtype=torch.int32)
        out = spec.project(torch.tensor([-3.0, 1.4, 2.6, 99.0, float("nan")]))
        assert out.tolist() == [0, 1, 3, 3, 0]
        assert out.dtype == torch.int32
        assert spec.project(torch.tensor([7, -2])).tolist() == [3, 0]

    def test_one_hot_round_trip(self):
        spec = Categorical(4, shape=(2,))
        x = spec.rand(5)
        one_hot = spec.to_one_hot(x)
        assert one_hot.shape == torch.Size([5, 2, 4])
        assert one_hot.dtype == torch.bool
        one_hot_spec = spec.to_one_hot_spec()
        assert one_hot_spec == OneHot(4, shape=(2, 4))
        assert one_hot_spec.is_in(one_hot)
        assert torch.equal(one_hot_spec.to_categorical(one_hot), x)
        assert one_hot_spec.to_categorical_spec() == spec

    def test_to_one_hot_accepts_other_int_dtypes_and_rejects_bad_values(self):
        spec = Categorical(3)
        assert spec.to_one_hot(torch.tensor(2, dtype=torch.int32)).tolist() == [0, 0, 1]
        with pytest.raises(SpecError, match=r"to_one_hot: expected integers in \[0, 3\)"):
            spec.to_one_hot(torch.tensor([3]))
        with pytest.raises(SpecError, match="expected an integer tensor"):
            spec.to_one_hot(torch.tensor([1.0]))

    def test_equality_compares_n(self):
        assert Categorical(3) == Categorical(3)
        assert Categorical(3) != Categorical(4)

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"n": 0}, "n must be a positive int, got 0"),
            ({"n": 2.5}, "n must be a positive int"),
            ({"n": True}, "n must be a positive int"),
            ({"n": 3, "dtype": torch.float32}, "must be an integer dtype, got torch.float32"),
            ({"n": 3, "dtype": torch.bool}, "integer dtype"),
            ({"n": 300, "dtype": torch.uint8}, "cannot hold the category 299"),
        ],
    )
    def test_invalid_arguments(self, kwargs, match):
        with pytest.raises(SpecError, match=match):
            Categorical(**kwargs)


# ---------------------------------------------------------------------------- OneHot
class TestOneHot:
    def test_defaults(self):
        spec = OneHot(3)
        assert spec.shape == torch.Size([3])
        assert spec.dtype == torch.bool
        assert spec.n == 3
        assert spec.zero().tolist() == [True, False, False]

    def test_rand_is_one_hot_and_random(self):
        x = OneHot(4, shape=(2, 4)).rand(200)
        assert (x.sum(-1) == 1).all()
        assert set(x.int().argmax(-1).unique().tolist()) == {0, 1, 2, 3}

    def test_is_in_requires_exactly_one(self):
        spec = OneHot(3)
        assert spec.is_in(torch.tensor([False, True, False]))
        assert not spec.is_in(torch.tensor([False, False, False]))
        assert not spec.is_in(torch.tensor([True, True, False]))
        ints = OneHot(3, dtype=torch.int64)
        assert ints.is_in(torch.tensor([0, 1, 0]))
        assert not ints.is_in(torch.tensor([2, -1, 0]))
        assert not ints.is_in(torch.tensor([0, 2, 0]))
        floats = OneHot(3, dtype=torch.float32)
        assert not floats.is_in(torch.tensor([0.5, 0.5, 0.0]))

    def test_assert_is_in_names_bad_row(self):
        with pytest.raises(SpecError, match=r"first at index \[1\]: \[1, 1, 0\]"):
            OneHot(3).assert_is_in(torch.tensor([[1, 0, 0], [1, 1, 0]]).bool(), key="action")

    def test_project_takes_argmax(self):
        spec = OneHot(3)
        out = spec.project(torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 0.0]]))
        assert out.tolist() == [[False, True, False], [True, False, False]]
        assert spec.project(torch.tensor([False, False, False])).tolist() == [True, False, False]

    def test_to_categorical(self):
        spec = OneHot(3)
        assert spec.to_categorical(torch.tensor([[0, 0, 1], [1, 0, 0]])).tolist() == [2, 0]
        assert spec.to_categorical_spec() == Categorical(3)
        with pytest.raises(SpecError, match="to_categorical"):
            spec.to_categorical(torch.tensor([True, True, False]))

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"n": 3, "shape": (4,)}, "last dim of shape must be n = 3, got shape \\[4\\]"),
            ({"n": 3, "shape": ()}, "last dim of shape must be n"),
            ({"n": -1}, "positive int"),
            ({"n": 3, "dtype": torch.complex64}, "dtype"),
        ],
    )
    def test_invalid_arguments(self, kwargs, match):
        with pytest.raises(SpecError, match=match):
            OneHot(**kwargs)


# ---------------------------------------------------------------------------- MultiCategorical
class TestMultiCategorical:
    def test_defaults_and_rand_ranges(self):
        spec = MultiCategorical([3, 2, 4])
        assert spec.shape == torch.Size([3])
        assert spec.dtype == torch.int64
        assert spec.nvec.tolist() == [3, 2, 4]
        x = spec.rand(500)
        assert [set(x[:, i].unique().tolist()) for i in range(3)] == [
            {0, 1, 2},
            {0, 1},
            {0, 1, 2, 3},
        ]

    def test_is_in_per_entry_range(self):
        spec = MultiCategorical([3, 2])
        assert spec.is_in(torch.tensor([2, 1]))
        assert not spec.is_in(torch.tensor([1, 2]))
        assert not spec.is_in(torch.tensor([-1, 0]))
        with pytest.raises(SpecError, match=r"x\[0, 1\] = 3 outside \[0, 2\)"):
            spec.assert_is_in(torch.tensor([[1, 3]]))

    def test_nvec_as_tensor_and_batched_shape(self):
        spec = MultiCategorical(torch.tensor([2, 2]), shape=(5, 2))
        assert spec.rand(3).shape == torch.Size([3, 5, 2])
        assert spec == MultiCategorical([2, 2], shape=(5, 2))
        assert spec != MultiCategorical([2, 3], shape=(5, 2))

    def test_project_clamps_per_entry(self):
        spec = MultiCategorical([3, 2])
        assert spec.project(torch.tensor([9.0, -1.0])).tolist() == [2, 0]
        assert spec.project(torch.tensor([[5, 5]])).tolist() == [[2, 1]]

    def test_one_hot_round_trip(self):
        spec = MultiCategorical([3, 2, 4], shape=(2, 3))
        x = spec.rand(6)
        one_hot = spec.to_one_hot(x)
        assert one_hot.shape == torch.Size([6, 2, 9])
        one_hot_spec = spec.to_one_hot_spec()
        assert one_hot_spec == MultiOneHot([3, 2, 4], shape=(2, 9))
        assert one_hot_spec.is_in(one_hot)
        assert torch.equal(one_hot_spec.to_categorical(one_hot), x)
        assert one_hot_spec.to_categorical_spec() == spec
        assert MultiCategorical([3, 2]).to_one_hot(torch.tensor([2, 0])).tolist() == [
            False,
            False,
            True,
            True,
            False,
        ]

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"nvec": []}, "nvec must not be empty"),
            ({"nvec": [2, 0]}, "every entry of nvec must be a positive int, got 0"),
            ({"nvec": 3}, "sequence of positive ints"),
            ({"nvec": torch.ones(2, 2, dtype=torch.int64)}, "1-D integer tensor"),
            ({"nvec": [2, 3], "shape": (3,)}, "last dim of shape must be len\\(nvec\\) = 2"),
            ({"nvec": [2, 3], "dtype": torch.float32}, "integer dtype"),
        ],
    )
    def test_invalid_arguments(self, kwargs, match):
        with pytest.raises(SpecError, match=match):
            MultiCategorical(**kwargs)


# ---------------------------------------------------------------------------- MultiOneHot
class TestMultiOneHot:
    def test_defaults_zero_and_rand(self):
        spec = MultiOneHot([2, 3])
        assert spec.shape == torch.Size([5])
        assert spec.dtype == torch.bool
        assert spec.zero().tolist() == [True, False, True, False, False]
        x = spec.rand(100)
        assert (x[:, :2].sum(-1) == 1).all()
        assert (x[:, 2:].sum(-1) == 1).all()

    def test_is_in_checks_every_block(self):
        spec = MultiOneHot([2, 3])
        assert spec.is_in(torch.tensor([0, 1, 0, 0, 1]).bool())
        assert not spec.is_in(torch.tensor([1, 1, 0, 0, 1]).bool())
        assert not spec.is_in(torch.tensor([0, 1, 0, 0, 0]).bool())
        ints = MultiOneHot([2, 3], dtype=torch.int64)
        assert not ints.is_in(torch.tensor([0, 1, 2, -1, 0]))

    def test_assert_is_in_names_bad_block(self):
        with pytest.raises(SpecError, match=r"block 1 at index \[0\]: \[1, 1, 0\]"):
            MultiOneHot([2, 3]).assert_is_in(torch.tensor([[1, 0, 1, 1, 0]]).bool())

    def test_project_per_block_argmax(self):
        spec = MultiOneHot([2, 3])
        out = spec.project(torch.tensor([0.3, 0.1, -1.0, 4.0, 2.0]))
        assert out.int().tolist() == [1, 0, 0, 1, 0]
        all_inf = torch.full((5,), float("-inf"))
        assert spec.is_in(spec.project(all_inf))

    def test_to_categorical_rejects_invalid(self):
        spec = MultiOneHot([2, 3])
        assert spec.to_categorical(torch.tensor([0, 1, 0, 0, 1]).bool()).tolist() == [1, 2]
        with pytest.raises(SpecError, match=r"MultiOneHot\.to_categorical"):
            spec.to_categorical(torch.tensor([0, 1, 0, 1, 1]).bool())

    def test_invalid_arguments(self):
        with pytest.raises(SpecError, match="sum\\(nvec\\) = 5"):
            MultiOneHot([2, 3], shape=(4,))
        with pytest.raises(SpecError, match="positive int"):
            MultiOneHot([2, -3])


# ---------------------------------------------------------------------------- Binary
class TestBinary:
    def test_shape_from_n_or_shape(self):
        assert Binary(3).shape == torch.Size([3])
        assert Binary(shape=(2, 1)).n == 1
        assert Binary(2, shape=(4, 2)).shape == torch.Size([4, 2])

    def test_values(self):
        spec = Binary(4, dtype=torch.float32)
        x = spec.rand(100)
        assert set(x.unique().tolist()) == {0.0, 1.0}
        assert spec.is_in(torch.tensor([0.0, 1.0, 1.0, 0.0]))
        assert not spec.is_in(torch.tensor([0.0, 1.0, 0.5, 0.0]))
        assert not Binary(1, dtype=torch.int64).is_in(torch.tensor([2]))
        with pytest.raises(SpecError, match=r"expected values in \{0, 1\}.*= 0.5"):
            spec.assert_is_in(torch.tensor([[1.0, 0.5, 0.0, 0.0]]))

    def test_project_rounds_to_nearest(self):
        spec = Binary(4, dtype=torch.float32)
        assert spec.project(torch.tensor([0.2, 0.7, 5.0, -3.0])).tolist() == [0, 1, 1, 0]
        assert Binary(2).project(torch.tensor([3, 0])).tolist() == [True, False]

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({}, "give n or shape"),
            ({"n": 3, "shape": (2,)}, "last dim of shape must be n = 3"),
            ({"shape": ()}, "at least one dim"),
            ({"n": 0}, "positive int"),
        ],
    )
    def test_invalid_arguments(self, kwargs, match):
        with pytest.raises(SpecError, match=match):
            Binary(**kwargs)


# ---------------------------------------------------------------------------- Composite
def make_composite() -> Composite:
    return Composite(
        observation=Unbounded(shape=(4,)),
        action=Categorical(2),
        next={"reward": Unbounded(shape=(1,)), "done": Binary(1)},
    )


class TestComposite:
    def test_nested_access_forms(self):
        spec = make_composite()
        reward = spec["next", "reward"]
        assert reward == Unbounded(shape=(1,))
        assert spec[("next", "reward")] is reward
        assert spec["next"]["reward"] is reward
        assert spec.get(("next", "reward")) is reward
        assert isinstance(spec["next"], Composite)

    def test_get_missing(self):
        spec = make_composite()
        assert spec.get("nope", None) is None
        assert spec.get(("next", "nope"), 3) == 3
        with pytest.raises(KeyError, match=r"Composite has no key \('next', 'nope'\)"):
            spec["next", "nope"]
        with pytest.raises(MissingKeyError, match="available"):
            spec.get("nope")
        with pytest.raises(KeyError, match="'action' is a Categorical leaf"):
            spec["action", "sub"]

    def test_set_creates_intermediate_composites(self):
        spec = Composite(shape=(3,))
        spec["a", "b", "c"] = Unbounded(shape=(3, 2))
        assert isinstance(spec["a"], Composite)
        assert isinstance(spec["a", "b"], Composite)
        assert spec["a", "b"].shape == torch.Size([3])
        assert spec.set("x", Categorical(4, shape=(3,))) is spec

    def test_set_through_a_leaf_fails_and_changes_nothing(self):
        spec = make_composite()
        before = spec.clone()
        with pytest.raises(SpecError, match="'action' is a Categorical leaf"):
            spec["action", "sub"] = Unbounded()
        with pytest.raises(SpecError, match="TensorSpec or a dict"):
            spec["other", "x"] = 3
        assert spec == before
        assert "other" not in spec

    def test_batch_shape_mismatch_names_key_and_shapes(self):
        spec = Composite(shape=(4,))
        with pytest.raises(SpecError) as info:
            spec["obs"] = Unbounded(shape=(3,))
        message = str(info.value)
        assert "'obs'" in message
        assert "[3]" in message
        assert "[4]" in message
        with pytest.raises(SpecError, match=r"'next', 'reward'"):
            Composite({"next": {"reward": Unbounded(shape=(1,))}}, shape=(2,))

    def test_delete(self):
        spec = make_composite()
        del spec["next", "done"]
        assert ("next", "done") not in spec
        assert ("next", "reward") in spec
        assert spec.del_("action") is spec
        assert "action" not in spec
        with pytest.raises(KeyError, match="no such key"):
            del spec["action"]

    def test_keys_values_items(self):
        spec = make_composite()
        assert spec.keys() == ["observation", "action", "next"]
        assert spec.keys(include_nested=True) == [
            "observation",
            "action",
            "next",
            ("next", "reward"),
            ("next", "done"),
        ]
        assert spec.keys(include_nested=True, leaves_only=True) == [
            "observation",
            "action",
            ("next", "reward"),
            ("next", "done"),
        ]
        assert spec.keys(leaves_only=True) == ["observation", "action"]
        assert list(spec) == ["observation", "action", "next"]
        assert len(spec) == 3
        assert spec.values(include_nested=True, leaves_only=True)[2] == Unbounded(shape=(1,))
        items = dict(spec.items(include_nested=True, leaves_only=True))
        assert items[("next", "done")] == Binary(1)

    def test_contains(self):
        spec = make_composite()
        assert "next" in spec
        assert ("next", "reward") in spec
        assert ("next",) in spec
        assert ("next", "reward", "deeper") not in spec
        assert "reward" not in spec
        assert 3 not in spec

    def test_update_merges_nested(self):
        spec = make_composite()
        spec.update({"next": {"truncated": Binary(1)}, ("info", "steps"): Unbounded()})
        assert ("next", "reward") in spec
        assert ("next", "truncated") in spec
        assert spec["info", "steps"] == Unbounded()
        spec.update(Composite(action=Categorical(5)))
        assert spec["action"].n == 5

    def test_update_is_all_or_nothing(self):
        spec = make_composite()
        before = spec.clone()
        with pytest.raises(SpecError):
            spec.update({"new": Unbounded(), "action": "not a spec"})
        assert spec == before
        assert "new" not in spec

    def test_rand_and_zero_return_tensordicts(self):
        spec = make_composite().expand(3)
        td = spec.rand((2,))
        assert isinstance(td, TensorDict)
        assert td.batch_size == torch.Size([2, 3])
        assert td["next"].batch_size == torch.Size([2, 3])
        assert td["observation"].shape == torch.Size([2, 3, 4])
        assert spec.is_in(td)
        zero = spec.zero()
        assert zero.batch_size == torch.Size([3])
        assert spec.is_in(zero)
        assert (zero["observation"] == 0).all()
        leaves = set(td.keys(include_nested=True, leaves_only=True))
        assert leaves == set(spec.keys(include_nested=True, leaves_only=True))

    def test_is_in_false_cases(self):
        spec = make_composite()
        td = spec.rand()
        assert not spec.is_in(td.exclude(("next", "done")))
        td["action"] = torch.tensor(5)
        assert not spec.is_in(td)
        assert not spec.is_in(torch.zeros(3))
        assert spec.is_in(
            {
                "observation": torch.zeros(4),
                "action": torch.tensor(1),
                "next": {"reward": torch.zeros(1), "done": torch.ones(1).bool()},
            }
        )

    def test_extra_keys_are_ignored(self):
        spec = make_composite()
        td = spec.rand(2)
        td["extra"] = torch.zeros(2, 7)
        assert spec.is_in(td)

    def test_assert_is_in_names_nested_key(self):
        spec = make_composite()
        td = spec.rand(2)
        td["next", "reward"] = td["next", "reward"].double()
        with pytest.raises(SpecError) as info:
            spec.assert_is_in(td)
        message = str(info.value)
        assert "key ('next', 'reward')" in message
        assert "Unbounded" in message
        assert "torch.float64" in message

    def test_assert_is_in_names_missing_key(self):
        spec = make_composite()
        td = spec.rand().exclude(("next", "done"))
        with pytest.raises(SpecError, match=r"key \('next', 'done'\) is missing"):
            spec.assert_is_in(td)
        with pytest.raises(SpecError, match="expected a TensorDict, got Tensor"):
            spec.assert_is_in(torch.zeros(1))

    def test_project_each_leaf(self):
        spec = Composite(a=Bounded(-1.0, 1.0, shape=(2,)), nested={"b": Categorical(3)})
        td = TensorDict(
            {
                "a": torch.tensor([5.0, -5.0]),
                "nested": {"b": torch.tensor(7)},
                "other": torch.tensor(1.0),
            },
            [],
        )
        out = spec.project(td)
        assert isinstance(out, TensorDict)
        assert spec.is_in(out)
        assert out["a"].tolist() == [1.0, -1.0]
        assert out["nested", "b"].item() == 2
        assert out["other"].item() == 1.0
        assert td["a"].tolist() == [5.0, -5.0]  # the input is not modified
        with pytest.raises(SpecError, match="missing"):
            spec.project(td.exclude("a"))

    def test_expand_to_clone_eq(self):
        spec = make_composite()
        expanded = spec.expand(2, 3)
        assert expanded.shape == torch.Size([2, 3])
        assert expanded["next", "reward"].shape == torch.Size([2, 3, 1])
        assert spec.expand(3).expand(2, 3) == expanded
        assert expanded.is_in(expanded.rand(4))
        assert spec.clone() == spec
        assert spec.clone() is not spec
        assert spec.clone()["next"] is not spec["next"]
        assert spec.to("cpu") == spec
        other = make_composite()
        other["next", "reward"] = Unbounded(shape=(2,))
        assert other != spec
        with pytest.raises(SpecError, match="must end with"):
            expanded.expand(3, 2)

    def test_device_is_inferred_and_checked(self):
        spec = make_composite()
        assert spec.device == torch.device("cpu")
        assert spec["next"].device == torch.device("cpu")
        meta = Unbounded(shape=(1,), device="meta")
        with pytest.raises(SpecError, match="is on meta but the Composite is on cpu"):
            spec["bad"] = meta
        with pytest.raises(SpecError, match="different devices"):
            Composite(a=Unbounded(), b=Unbounded(device="meta"))
        moved = Composite(a=Unbounded(), b=Unbounded(device="meta"), device="cpu")
        assert moved["b"].device == torch.device("cpu")

    def test_to_moves_children(self):
        spec = make_composite().to("meta")
        assert spec.device == torch.device("meta")
        assert all(v.device == torch.device("meta") for v in spec.values(True, True))
        assert spec.to("cpu") == make_composite()

    def test_repr_is_an_indented_tree(self):
        text = repr(make_composite())
        assert text.startswith("Composite(\n    observation: Unbounded(shape=torch.Size([4])")
        assert "\n    next: Composite(\n        reward: Unbounded(" in text
        assert text.endswith("shape=torch.Size([]),\n    device=cpu)")

    def test_constructor_validation(self):
        with pytest.raises(SpecError, match="mapping"):
            Composite([1, 2])
        with pytest.raises(SpecError, match="str or non-empty tuples"):
            Composite({1: Unbounded()})
        assert Composite({"a": Unbounded()}, b=Unbounded()).keys() == ["a", "b"]
        assert Composite(make_composite()) == make_composite()


def test_composite_pickle_round_trip():
    spec = make_composite().expand(2)
    assert pickle.loads(pickle.dumps(spec)) == spec


@pytest.mark.parametrize(
    "module",
    [
        "specs",
        "_specs_base",
        "_specs_continuous",
        "_specs_discrete",
        "_specs_multi",
        "_specs_composite",
    ],
)
def test_docstring_examples_run(module):
    mod = importlib.import_module(f"rlblocks.core.{module}")
    public = {name: getattr(specs, name) for name in specs.__all__}
    result = doctest.testmod(
        mod, extraglobs={"torch": torch, **public}, optionflags=doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0
    assert result.failed == 0
