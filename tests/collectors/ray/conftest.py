"""Fixtures of the RayCollector tests: one local Ray instance for the whole folder.

Run with ``pytest tests/collectors/ray`` (Ray installed). Ray owns its processes (raylet,
workers), so the process-table check of the parent conftest is replaced here by checks on
the actors themselves.
"""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(scope="session", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Ray starts and reuses worker processes itself; actors are checked by the tests."""
