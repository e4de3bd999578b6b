"""rlblocks-minari's plugin: registers the ``minari`` dataset format.

``make_dataset("minari:<dataset id>", **kwargs)`` calls
``MinariExperienceReplay("<dataset id>", **kwargs)``. This module does not import Minari, so
listing plugins stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlblocks.core import hookimpl

__all__ = ["rlblocks_datasets", "make_minari_dataset"]


def make_minari_dataset(dataset_id: str, **kwargs: Any) -> Any:
    """Open ``MinariExperienceReplay(dataset_id, **kwargs)``."""
    from rlblocks.minari._dataset import MinariExperienceReplay

    return MinariExperienceReplay(dataset_id, **kwargs)


@hookimpl
def rlblocks_datasets() -> Mapping[str, Callable[..., Any]]:
    """Provide the ``minari`` format."""
    return {"minari": make_minari_dataset}
