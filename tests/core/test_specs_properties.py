"""Property-based tests of the spec classes: every generated spec keeps its own contract."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensordict import TensorDictBase

from rlblocks.core.errors import SpecError
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

SETTINGS = settings(max_examples=50, deadline=None)

FLOAT_DTYPES = [torch.float32, torch.float64, torch.float16]
INT_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]
ONE_HOT_DTYPES = [torch.bool, torch.int64, torch.float32]

spec_shapes = st.lists(st.integers(1, 4), max_size=3).map(tuple)
prefixes = st.lists(st.integers(1, 4), max_size=2).map(tuple)
# Batch shapes for rand/zero include empty dims, which must work too.
batch_shapes = st.lists(st.integers(0, 3), max_size=2).map(tuple)
seeds = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------------------- strategies
@st.composite
def unbounded_specs(draw) -> Unbounded:
    dtype = draw(st.sampled_from([*FLOAT_DTYPES, *INT_DTYPES, torch.bool]))
    return Unbounded(shape=draw(spec_shapes), dtype=dtype)


@st.composite
def float_bounds(draw, shape: tuple[int, ...], dtype: torch.dtype):
    limit = 1e4 if dtype == torch.float16 else 1e30
    finite = st.floats(-limit, limit, allow_nan=False)
    width = st.floats(0.0, limit, allow_nan=False)
    if draw(st.booleans()):
        low, high = draw(finite), None
        high = low + draw(width)
    else:
        numel = math.prod(shape)
        low = torch.tensor(draw(st.lists(finite, min_size=numel, max_size=numel)))
        widths = torch.tensor(draw(st.lists(width, min_size=numel, max_size=numel)))
        low = low.reshape(shape).double()
        high = low + widths.reshape(shape).double()
    infinite = draw(st.sampled_from(["none", "none", "low", "high", "both"]))
    if infinite in ("low", "both"):
        low = -math.inf
    if infinite in ("high", "both"):
        high = math.inf
    return low, high


@st.composite
def bounded_specs(draw) -> Bounded:
    shape = draw(spec_shapes)
    if draw(st.booleans()):
        dtype = draw(st.sampled_from(FLOAT_DTYPES))
        low, high = draw(float_bounds(shape, dtype))
        return Bounded(low, high, shape=shape, dtype=dtype)
    dtype = draw(st.sampled_from(INT_DTYPES))
    info = torch.iinfo(dtype)
    low = draw(st.integers(max(info.min, -(10**6)), min(info.max, 10**6)))
    high = draw(st.integers(low, min(info.max, low + 10**6)))
    return Bounded(low, high, shape=shape, dtype=dtype)


@st.composite
def categorical_specs(draw) -> Categorical:
    dtype = draw(st.sampled_from(INT_DTYPES))
    return Categorical(draw(st.integers(1, 10)), shape=draw(spec_shapes), dtype=dtype)


@st.composite
def one_hot_specs(draw) -> OneHot:
    n = draw(st.integers(1, 4))
    shape = (*draw(prefixes), n)
    return OneHot(n, shape=shape, dtype=draw(st.sampled_from(ONE_HOT_DTYPES)))


nvecs = st.lists(st.integers(1, 4), min_size=1, max_size=4)


@st.composite
def multi_categorical_specs(draw) -> MultiCategorical:
    nvec = draw(nvecs)
    shape = (*draw(prefixes), len(nvec))
    dtype = draw(st.sampled_from(INT_DTYPES))
    return MultiCategorical(nvec, shape=shape, dtype=dtype)


@st.composite
def multi_one_hot_specs(draw) -> MultiOneHot:
    nvec = draw(nvecs)
    shape = (*draw(prefixes), sum(nvec))
    return MultiOneHot(nvec, shape=shape, dtype=draw(st.sampled_from(ONE_HOT_DTYPES)))


@st.composite
def binary_specs(draw) -> Binary:
    shape = (*draw(prefixes), draw(st.integers(1, 4)))
    return Binary(shape=shape, dtype=draw(st.sampled_from(ONE_HOT_DTYPES)))


leaf_specs = st.one_of(
    unbounded_specs(),
    bounded_specs(),
    categorical_specs(),
    one_hot_specs(),
    multi_categorical_specs(),
    multi_one_hot_specs(),
    binary_specs(),
)

KEYS = ["observation", "action", "reward", "done", "state", "info"]


@st.composite
def composite_specs(draw, depth: int = 2, batch: tuple[int, ...] | None = None, flat=False):
    """Composites nesting every leaf kind; ``flat`` keeps one batch shape, no empty children."""
    if batch is None:
        batch = draw(st.lists(st.integers(1, 3), max_size=2).map(tuple))
    names = draw(st.lists(st.sampled_from(KEYS), unique=True, min_size=int(flat), max_size=3))
    children: dict[str, TensorSpec] = {}
    for name in names:
        if depth > 0 and draw(st.booleans()):
            extra = () if flat else draw(st.lists(st.integers(1, 2), max_size=1).map(tuple))
            children[name] = draw(composite_specs(depth - 1, (*batch, *extra), flat))
        else:
            leaf = draw(leaf_specs)
            children[name] = leaf.expand(*batch, *leaf.shape)
    return Composite(children, shape=batch)


all_specs = st.one_of(leaf_specs, composite_specs())


@st.composite
def arbitrary_tensors(draw, shape: torch.Size) -> torch.Tensor:
    """Any tensor of ``shape``: floats of any magnitude (with inf/nan), ints, or bools."""
    generator = torch.Generator().manual_seed(draw(seeds))
    kind = draw(st.sampled_from(["float", "float", "int", "bool"]))
    if kind == "float":
        scale = 10.0 ** draw(st.integers(-3, 30))
        x = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
        if x.numel() and draw(st.booleans()):
            index = draw(st.integers(0, x.numel() - 1))
            x.view(-1)[index] = draw(st.sampled_from([math.inf, -math.inf, math.nan]))
        return x.to(draw(st.sampled_from([torch.float32, torch.float64])))
    if kind == "int":
        x = torch.randint(-(2**40), 2**40, shape, generator=generator)
        return x.to(draw(st.sampled_from([torch.int64, torch.int32])))
    return torch.randint(0, 2, shape, generator=generator).bool()


def perturb(spec: TensorSpec, value, draw):
    """Replace every leaf of ``value`` by an arbitrary tensor of the same shape."""
    if isinstance(spec, Composite):
        out = value.clone(recurse=False)
        for key in spec.keys(include_nested=True, leaves_only=True):
            out[key] = draw(arbitrary_tensors(value[key].shape))
        return out
    return draw(arbitrary_tensors(value.shape))


def expected_batch(batch: tuple[int, ...], spec: TensorSpec) -> torch.Size:
    return torch.Size([*batch, *spec.shape])


def check_value(spec: TensorSpec, value, batch: tuple[int, ...]) -> None:
    """Shape/dtype/device of a rand/zero result and its validity."""
    if isinstance(spec, Composite):
        assert isinstance(value, TensorDictBase)
        assert value.batch_size == expected_batch(batch, spec)
        leaves = set(value.keys(include_nested=True, leaves_only=True))
        assert leaves == set(spec.keys(include_nested=True, leaves_only=True))
    else:
        assert value.shape == expected_batch(batch, spec)
        assert value.dtype == spec.dtype
        assert value.device == spec.device
    assert spec.is_in(value)
    spec.assert_is_in(value, key="x")


# ---------------------------------------------------------------------------- properties
@SETTINGS
@given(spec=all_specs, batch=batch_shapes)
def test_rand_is_in_spec(spec, batch):
    check_value(spec, spec.rand(batch), batch)


@SETTINGS
@given(spec=all_specs, batch=batch_shapes)
def test_zero_is_in_spec(spec, batch):
    check_value(spec, spec.zero(batch), batch)
    check_value(spec, spec.zero(), ())


@SETTINGS
@given(spec=all_specs, batch=batch_shapes, data=st.data())
def test_project_returns_valid_values(spec, batch, data):
    x = perturb(spec, spec.zero(batch), data.draw)
    projected = spec.project(x)
    assert spec.is_in(projected)
    if not isinstance(spec, Composite):
        assert projected.shape == x.shape
        assert projected.dtype == spec.dtype


@SETTINGS
@given(spec=leaf_specs, batch=batch_shapes)
def test_project_is_identity_inside(spec, batch):
    value = spec.rand(batch)
    projected = spec.project(value)
    assert torch.equal(projected, value)


@SETTINGS
@given(spec=composite_specs(), batch=batch_shapes)
def test_composite_project_is_identity_inside(spec, batch):
    value = spec.rand(batch)
    projected = spec.project(value)
    for key in spec.keys(include_nested=True, leaves_only=True):
        assert torch.equal(projected[key], value[key])


@SETTINGS
@given(spec=all_specs, lead=prefixes, outer=prefixes)
def test_expand(spec, lead, outer):
    expanded = spec.expand(*lead, *spec.shape)
    assert expanded.shape == torch.Size([*lead, *spec.shape])
    assert expanded.is_in(expanded.rand((2,)))
    assert expanded.is_in(expanded.zero())
    twice = expanded.expand(*outer, *lead, *spec.shape)
    assert twice == spec.expand((*outer, *lead, *spec.shape))
    assert (expanded == spec) == (len(lead) == 0)


@SETTINGS
@given(spec=all_specs)
def test_clone_and_to_keep_equality(spec):
    clone = spec.clone()
    assert clone == spec
    assert clone is not spec
    assert spec.to("cpu") == spec
    assert spec.to(torch.device("cpu")).to("cpu") == clone
    # The meta device stands in for an accelerator: the device takes part in equality.
    moved = spec.to("meta")
    assert moved != spec
    assert moved.device == torch.device("meta")
    assert moved.rand((2,)).device == torch.device("meta")


@SETTINGS
@given(spec=all_specs, data=st.data())
def test_wrong_dtype_is_not_in(spec, data):
    if isinstance(spec, Composite):
        leaves = spec.keys(include_nested=True, leaves_only=True)
        if not leaves:
            return
        key = data.draw(st.sampled_from(leaves))
        value = spec.rand()
        leaf = spec[key]
        other = torch.float64 if leaf.dtype != torch.float64 else torch.float32
        value[key] = value[key].to(other)
        assert not spec.is_in(value)
        with pytest.raises(SpecError) as info:
            spec.assert_is_in(value)
        assert repr(key) in str(info.value)
        return
    other = torch.float64 if spec.dtype != torch.float64 else torch.float32
    assert not spec.is_in(spec.rand().to(other))


@SETTINGS
@given(spec=bounded_specs())
def test_bounded_rejects_values_beyond_finite_bounds(spec):
    high = spec.high
    finite = high.isfinite()
    if spec.dtype.is_floating_point:
        above = torch.where(finite, high + high.abs().clamp(min=1) * 0.5, high)
        above = above.to(spec.dtype)
        # Half precision may round the step away; only then is the value still inside.
        changed = above > high
    else:
        info = torch.iinfo(spec.dtype)
        changed = high < info.max
        above = torch.where(changed, high.to(torch.int64) + 1, high.to(torch.int64))
        above = above.to(spec.dtype)
    assert spec.is_in(above) == (not bool(changed.any()))
    assert spec.project(above).le(spec.high).all()


@SETTINGS
@given(spec=categorical_specs(), batch=batch_shapes)
def test_categorical_one_hot_round_trip(spec, batch):
    x = spec.rand(batch)
    one_hot_spec = spec.to_one_hot_spec()
    one_hot = spec.to_one_hot(x)
    assert one_hot_spec.is_in(one_hot)
    assert torch.equal(one_hot_spec.to_categorical(one_hot), x.long())
    assert one_hot_spec.to_categorical_spec() == Categorical(spec.n, shape=spec.shape)


@SETTINGS
@given(spec=multi_categorical_specs(), batch=batch_shapes)
def test_multi_categorical_one_hot_round_trip(spec, batch):
    x = spec.rand(batch)
    one_hot_spec = spec.to_one_hot_spec()
    one_hot = spec.to_one_hot(x)
    assert one_hot_spec.is_in(one_hot)
    assert torch.equal(one_hot_spec.to_categorical(one_hot), x.long())
    assert one_hot_spec.to_categorical_spec() == MultiCategorical(spec.nvec, shape=spec.shape)


def rebuild(spec: Composite, leaves_only: bool) -> Composite:
    """Rebuild ``spec`` key by key through the public dict interface."""
    new = Composite(shape=spec.shape)
    for key in spec.keys(include_nested=True, leaves_only=leaves_only):
        child = spec.get(key)
        new[key] = Composite(shape=child.shape) if isinstance(child, Composite) else child
    return new


@SETTINGS
@given(spec=composite_specs())
def test_composite_round_trip_through_nested_keys(spec):
    assert rebuild(spec, leaves_only=False) == spec


@SETTINGS
@given(spec=composite_specs(flat=True))
def test_composite_round_trip_through_leaf_keys(spec):
    # With one batch shape and no empty children the leaves alone determine the spec.
    assert rebuild(spec, leaves_only=True) == spec
    td = spec.rand()
    assert set(td.keys(include_nested=True, leaves_only=True)) == set(
        spec.keys(include_nested=True, leaves_only=True)
    )


@SETTINGS
@given(spec=composite_specs(), data=st.data())
def test_composite_missing_key_is_not_in(spec, data):
    leaves = spec.keys(include_nested=True, leaves_only=True)
    if not leaves:
        assert spec.is_in(spec.rand())
        return
    key = data.draw(st.sampled_from(leaves))
    td = spec.rand().exclude(key)
    assert not spec.is_in(td)
    with pytest.raises(SpecError, match="is missing") as info:
        spec.assert_is_in(td)
    assert repr(key) in str(info.value)
