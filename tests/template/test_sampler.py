"""RecentSampler: only the newest elements are drawn, across wrap-around and empty buffers."""

from __future__ import annotations

import pytest
import torch

from rlblocks.buffers import EmptyBufferError, ListStorage, ReplayBuffer
from rlblocks.template import RecentSampler


def buffer(size, window, generator=None):
    return ReplayBuffer(
        storage=ListStorage(size), sampler=RecentSampler(window, generator), batch_size=200
    )


def test_draws_only_the_window_of_newest_elements():
    rb = buffer(100, 3)
    rb.extend(list(range(10)))
    assert set(rb.sample().tolist()) == {7, 8, 9}


def test_draws_everything_while_the_buffer_holds_fewer_than_the_window():
    rb = buffer(100, 50)
    rb.extend(list(range(4)))
    assert set(rb.sample().tolist()) == {0, 1, 2, 3}


def test_follows_the_cursor_when_the_storage_wraps_around():
    rb = buffer(5, 3)
    rb.extend(list(range(7)))  # positions hold 5, 6, 2, 3, 4; the cursor is at 2
    assert set(rb.sample().tolist()) == {4, 5, 6}


def test_samples_are_reproducible_with_a_generator():
    def draw():
        rb = buffer(100, 10, torch.Generator().manual_seed(0))
        rb.extend(list(range(50)))
        return rb.sample()

    assert torch.equal(draw(), draw())


def test_an_empty_buffer_says_so():
    with pytest.raises(EmptyBufferError, match="RecentSampler.sample: the buffer is empty"):
        RecentSampler(4).sample(ListStorage(3), 2)


@pytest.mark.parametrize("window", [0, -1, 2.5, True])
def test_window_is_validated(window):
    with pytest.raises(ValueError, match="window must be a positive int"):
        RecentSampler(window)
