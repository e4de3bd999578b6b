"""rlblocks.core.utils: the argument checks every distribution shares."""

from __future__ import annotations

import numpy as np
import pytest

from rlblocks.core.utils import check_timeout


class OwnError(ValueError):
    pass


@pytest.mark.parametrize(("value", "expected"), [(None, None), (2, 2.0), (0.5, 0.5)])
def test_check_timeout_accepts_positive_seconds_or_none(value, expected):
    result = check_timeout(value, "timeout", "Owner")
    assert result == expected and (result is None or type(result) is float)


def test_check_timeout_accepts_numpy_numbers():
    assert check_timeout(np.int64(3), "timeout", "Owner") == 3.0
    assert check_timeout(np.float32(0.25), "timeout", "Owner") == 0.25


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("inf"), float("nan"), True, "10", [1]])
def test_check_timeout_names_owner_argument_value_and_fix(bad):
    with pytest.raises(OwnError) as info:
        check_timeout(bad, "wait_s", "Owner", error=OwnError)
    message = str(info.value)
    assert message.startswith("Owner: wait_s must be a positive number of seconds or None")
    assert f"got {bad!r}" in message and "wait_s=60" in message
