"""RayCollector without Ray installed names the extra to install."""

from __future__ import annotations

import sys

import pytest

from rlblocks.collectors import RayCollector
from rlblocks.core import MissingDependencyError


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"rlblocks-collectors\[ray\]"):
        RayCollector([lambda: None], frames_per_batch=4)
