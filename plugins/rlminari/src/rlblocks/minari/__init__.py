"""rlblocks-minari: Minari datasets as rlblocks replay buffers.

A plugin distribution: installing it registers the ``minari`` dataset format through the
``rlblocks`` entry point, so that ``rlblocks.core.make_dataset("minari:<dataset id>")`` works
with no change elsewhere.

- :class:`MinariExperienceReplay` opens a dataset from the local Minari root, converting it
  once into a memory-mapped cache.
- :func:`record_minari_dataset` records an rlblocks policy with Minari's ``DataCollector``.
"""

from __future__ import annotations

from rlblocks.minari._dataset import MinariExperienceReplay, minari_root, record_minari_dataset
from rlblocks.minari._version import __version__

__all__ = ["__version__", "MinariExperienceReplay", "record_minari_dataset", "minari_root"]
