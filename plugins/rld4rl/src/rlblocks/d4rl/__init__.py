"""rlblocks-d4rl: datasets in D4RL's HDF5 layout as rlblocks replay buffers.

A plugin distribution: installing it registers the ``d4rl`` dataset format through the
``rlblocks`` entry point, so that ``rlblocks.core.make_dataset("d4rl:hopper-medium-v2")``
works with no change elsewhere.

- :class:`D4RLExperienceReplay` opens a D4RL-format file (``observations``, ``actions``,
  ``rewards``, ``terminals``, ``timeouts``, optional ``next_observations`` and ``infos/*``)
  by path or by id in the D4RL folder, converting it once into a memory-mapped cache.
- :func:`save_d4rl_hdf5` writes transitions (an rlblocks rollout or buffer content) in that
  layout, for tools that read D4RL files.
"""

from __future__ import annotations

from rlblocks.d4rl._dataset import (
    D4RL_DATASET_DIR_ENV_VAR,
    D4RLExperienceReplay,
    d4rl_dataset_dir,
    save_d4rl_hdf5,
)
from rlblocks.d4rl._version import __version__

__all__ = [
    "__version__",
    "D4RLExperienceReplay",
    "save_d4rl_hdf5",
    "d4rl_dataset_dir",
    "D4RL_DATASET_DIR_ENV_VAR",
]
