"""rlblocks-d4rl's plugin: registers the ``d4rl`` dataset format.

``make_dataset("d4rl:<id or path>", **kwargs)`` calls
``D4RLExperienceReplay("<id or path>", **kwargs)``. This module does not import h5py, so
listing plugins stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import hookimpl

__all__ = ["rlblocks_datasets", "make_d4rl_dataset"]


def make_d4rl_dataset(dataset_id: str, **kwargs: Any) -> Any:
    """Open ``D4RLExperienceReplay(dataset_id, **kwargs)``."""
    from rlblocks.d4rl._dataset import D4RLExperienceReplay

    return D4RLExperienceReplay(dataset_id, **kwargs)


@hookimpl
def rlblocks_datasets() -> Mapping[str, Callable[..., Any]]:
    """Provide the ``d4rl`` format."""
    return {"d4rl": make_d4rl_dataset}
