"""rlblocks-buffers: replay buffers, storages, samplers and writers.

A :class:`ReplayBuffer` puts together a storage (where elements live), a sampler (which
ones a batch holds) and a writer (where new ones go). Tensor storages keep TensorDicts,
tensors, arrays and pytrees of them in preallocated memory (RAM, a device, or memory-mapped
files); :class:`ListStorage` keeps any Python object. Prioritized sampling runs on the
active segment-tree provider: the compiled ``rlblocks-kernel`` when installed, else the
numpy fallback registered here (``rlblocks.core.active_segment_tree_provider()`` says which).
:class:`MultiStepTransform` turns collected steps into n-step transitions before ``extend``.
:class:`HindsightRelabel` relabels the goals of sampled transitions (hindsight experience
replay).
"""

from __future__ import annotations

from rlblocks.buffers._collate import default_collate
from rlblocks.buffers._datasets import (
    DATASET_CACHE_ENV_VAR,
    DatasetReplayBuffer,
    dataset_cache_root,
)
from rlblocks.buffers._her import HER_STRATEGIES, HindsightRelabel
from rlblocks.buffers._multistep import STEPS_TO_NEXT_OBS, MultiStepTransform
from rlblocks.buffers._prioritized import PrioritizedSampler
from rlblocks.buffers._ray import RayReplayBuffer
from rlblocks.buffers._replay_buffers import ReplayBuffer
from rlblocks.buffers._samplers import RandomSampler, Sampler, SamplerWithoutReplacement
from rlblocks.buffers._segment_tree import NumpyMinSegmentTree, NumpySumSegmentTree
from rlblocks.buffers._slice_sampler import SliceSampler
from rlblocks.buffers._storages import ListStorage, Storage
from rlblocks.buffers._td_buffers import (
    PrioritizedReplayBuffer,
    TensorDictPrioritizedReplayBuffer,
    TensorDictReplayBuffer,
)
from rlblocks.buffers._tensor_storages import LazyMemmapStorage, LazyTensorStorage, TensorStorage
from rlblocks.buffers._version import __version__
from rlblocks.buffers._writers import RoundRobinWriter, TensorDictMaxValueWriter, Writer
from rlblocks.buffers.errors import (
    BufferConfigError,
    BufferIndexError,
    CheckpointError,
    DatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetSpecError,
    DiskFullError,
    EmptyBufferError,
    NotShareableError,
    PriorityError,
    ReplayBufferError,
    StorageLayoutError,
)

__all__ = [
    "__version__",
    # buffers
    "ReplayBuffer",
    "TensorDictReplayBuffer",
    "PrioritizedReplayBuffer",
    "TensorDictPrioritizedReplayBuffer",
    # a buffer hosted by a Ray actor
    "RayReplayBuffer",
    # offline datasets
    "DatasetReplayBuffer",
    "dataset_cache_root",
    "DATASET_CACHE_ENV_VAR",
    # storages
    "Storage",
    "ListStorage",
    "TensorStorage",
    "LazyTensorStorage",
    "LazyMemmapStorage",
    # samplers
    "Sampler",
    "RandomSampler",
    "SamplerWithoutReplacement",
    "PrioritizedSampler",
    "SliceSampler",
    # writers
    "Writer",
    "RoundRobinWriter",
    "TensorDictMaxValueWriter",
    # segment trees (numpy fallback provider)
    "NumpySumSegmentTree",
    "NumpyMinSegmentTree",
    # transforms applied before writing
    "MultiStepTransform",
    "STEPS_TO_NEXT_OBS",
    # transforms applied to sampled batches
    "HindsightRelabel",
    "HER_STRATEGIES",
    # helpers
    "default_collate",
    # errors
    "ReplayBufferError",
    "BufferConfigError",
    "StorageLayoutError",
    "EmptyBufferError",
    "BufferIndexError",
    "PriorityError",
    "CheckpointError",
    "NotShareableError",
    "DiskFullError",
    "DatasetError",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "DatasetSpecError",
]
