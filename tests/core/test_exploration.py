"""Exploration mode shares tensordict's interaction type."""

from __future__ import annotations

from tensordict.nn import InteractionType, interaction_type

from rlblocks.core import ExplorationType, exploration_type, set_exploration_type


def test_default_is_random():
    assert exploration_type() is ExplorationType.RANDOM


def test_context_manager_and_decorator_set_the_tensordict_interaction_type():
    assert ExplorationType is InteractionType
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        assert exploration_type() is ExplorationType.DETERMINISTIC
        assert interaction_type() is InteractionType.DETERMINISTIC
        with set_exploration_type(ExplorationType.MODE):
            assert exploration_type() is ExplorationType.MODE
        assert exploration_type() is ExplorationType.DETERMINISTIC
    assert exploration_type() is ExplorationType.RANDOM

    @set_exploration_type(ExplorationType.MEAN)
    def act() -> ExplorationType:
        return exploration_type()

    assert act() is ExplorationType.MEAN
    assert exploration_type() is ExplorationType.RANDOM
