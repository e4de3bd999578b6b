"""Action masks on Categorical and OneHot specs (TorchRL's ``mask`` / ``update_mask``)."""

from __future__ import annotations

import pytest
import torch

from rlblocks.core.errors import SpecError
from rlblocks.core.specs import Categorical, Composite, OneHot

MASK = torch.tensor([[False, True, False, True], [True, False, False, False]])


def test_rand_draws_only_allowed_categories_and_all_of_them():
    spec = Categorical(4, shape=(2,), mask=MASK)
    draws = spec.rand((2000,))
    assert set(draws[:, 0].tolist()) == {1, 3} and set(draws[:, 1].tolist()) == {0}
    # Uniform among the allowed ones.
    assert 0.4 < (draws[:, 0] == 1).float().mean() < 0.6
    one_hot = OneHot(4, shape=(2, 4), mask=MASK)
    rows = one_hot.rand((500,))
    assert not (rows & ~MASK).any() and one_hot.is_in(rows)


def test_is_in_rejects_forbidden_values_and_says_which():
    spec = Categorical(4, shape=(2,), mask=MASK)
    assert spec.is_in(torch.tensor([3, 0]))
    assert not spec.is_in(torch.tensor([2, 0]))
    with pytest.raises(SpecError, match=r"'action'.*forbids.*index \[0\]: category 2"):
        spec.assert_is_in(torch.tensor([2, 0]), "action")
    batched = torch.tensor([[1, 0], [3, 0], [1, 1]])  # leading batch dims broadcast the mask
    with pytest.raises(SpecError, match=r"index \[2, 1\]: category 1"):
        spec.assert_is_in(batched)
    one_hot = OneHot(4, mask=MASK[0])
    assert not one_hot.is_in(torch.tensor([True, False, False, False]))


def test_zero_is_the_first_allowed_category():
    spec = Categorical(4, shape=(2,), mask=MASK)
    assert spec.zero().tolist() == [1, 0] and spec.is_in(spec.zero((3,)))
    assert OneHot(4, mask=MASK[0]).zero().tolist() == [False, True, False, False]


def test_update_mask_replaces_and_clears_in_place():
    spec = Categorical(3)
    spec.update_mask(torch.tensor([False, False, True]))
    assert (spec.rand((50,)) == 2).all()
    spec.update_mask(None)
    assert spec.mask is None and set(spec.rand((300,)).tolist()) == {0, 1, 2}


def test_masks_survive_expand_conversion_and_composites():
    spec = Categorical(4, shape=(2,), mask=MASK)
    wide = spec.expand(5, 2)
    assert wide.mask.shape == (5, 2, 4) and wide.is_in(wide.rand())
    assert spec.to_one_hot_spec().mask.equal(MASK)
    assert spec.to_one_hot_spec().to_categorical_spec() == spec
    assert spec != Categorical(4, shape=(2,))  # a mask is part of the spec
    composite = Composite(action=spec)
    assert set(composite.rand((100,))["action"][:, 1].tolist()) == {0}


def test_conversions_ignore_the_mask():
    """Stored actions were legal under the mask of their own step, not the current one."""
    spec = Categorical(4, mask=torch.tensor([True, False, False, False]))
    assert spec.to_one_hot(torch.tensor(2)).tolist() == [False, False, True, False]


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.ones(2, 4), r"expected a bool tensor of shape \[2, 4\].*dtype torch.float32"),
        ([[True] * 4] * 2, r"expected a bool tensor of shape \[2, 4\].*got list"),
        (torch.ones(3, 4, dtype=torch.bool), r"broadcasts to it\), got shape \[3, 4\]"),
        (torch.tensor([[True] * 4, [False] * 4]), r"allows no category at index \[1\]"),
    ],
)
def test_bad_masks_are_named(mask, message):
    spec = Categorical(4, shape=(2,), mask=MASK)
    with pytest.raises(SpecError, match=message):
        spec.update_mask(mask)
    assert spec.mask.equal(MASK)  # the previous mask is kept
    with pytest.raises(SpecError, match=message):
        Categorical(4, shape=(2,), mask=mask)


def test_project_picks_the_nearest_allowed_category():
    spec = Categorical(5, mask=torch.tensor([True, False, False, True, False]))
    x = torch.tensor([1.2, 2.0, 4.0, -3.0, float("nan")])
    assert spec.project(x).tolist() == [0, 3, 3, 0, 0]
    one_hot = OneHot(3, mask=torch.tensor([False, True, True]))
    scores = torch.tensor([[9.0, 1.0, 2.0], [float("-inf")] * 3])
    assert one_hot.project(scores).tolist() == [[False, False, True], [False, True, False]]
