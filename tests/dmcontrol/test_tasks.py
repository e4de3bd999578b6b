"""Listing the suite's domain/task ids, and errors that suggest the closest ones."""

from __future__ import annotations

import pytest
from dm_control import suite

from rlblocks.core import RLBlocksError, make_env
from rlblocks.dmcontrol import DMControlEnv, UnknownTaskError, list_tasks


def test_list_tasks_lists_every_suite_task_as_domain_slash_task():
    ids = list_tasks()
    assert ids == sorted(ids)
    assert len(ids) == len(suite.ALL_TASKS)
    assert {"cartpole/swingup", "walker/walk", "lqr/lqr_2_1", "humanoid_CMU/run"} <= set(ids)
    assert all(i.count("/") == 1 for i in ids)


def test_list_tasks_of_one_domain():
    assert list_tasks("cartpole") == [
        f"cartpole/{t}" for t in sorted(suite.TASKS_BY_DOMAIN["cartpole"])
    ]
    with pytest.raises(UnknownTaskError, match="no domain 'cartpol'.*Did you mean 'cartpole'"):
        list_tasks("cartpol")


@pytest.mark.parametrize(
    ("env_id", "suggestion"),
    [
        ("cartpole/swingupp", "cartpole/swingup"),
        ("carpole/swingup", "cartpole/swingup"),
        ("walker/wlk", "walker/walk"),
    ],
)
def test_unknown_ids_suggest_the_closest(env_id, suggestion):
    with pytest.raises(UnknownTaskError, match=f"Did you mean '{suggestion}'") as info:
        make_env(f"dm_control:{env_id}")
    assert isinstance(info.value, RLBlocksError) and isinstance(info.value, LookupError)
    assert "list_tasks()" in str(info.value)


def test_an_unknown_task_of_a_known_domain_lists_its_tasks():
    with pytest.raises(UnknownTaskError, match="Tasks of 'cartpole': .*swingup"):
        DMControlEnv("cartpole", "juggle")


@pytest.mark.parametrize("env_id", ["cartpole", "cartpole/swingup/extra", "cartpole-swingup"])
def test_malformed_ids_say_the_expected_form(env_id):
    with pytest.raises(UnknownTaskError, match="must be '<domain>/<task>'"):
        make_env(f"dm_control:{env_id}")
