"""Specs: the shape, dtype, device and valid values of observations, actions and rewards.

The vocabulary is TorchRL's, so practitioners are never surprised: ``Unbounded`` and
``Bounded`` boxes, the discrete ``Categorical``/``OneHot`` (and their ``Multi`` variants),
``Binary`` flags, and the nested, dict-like ``Composite`` that describes a whole TensorDict.

Every spec offers ``shape``, ``dtype``, ``device``, ``rand(shape)``, ``zero(shape)``,
``is_in(x)``, ``assert_is_in(x, key)``, ``project(x)``, ``expand(*shape)``, ``to(device)``,
``clone()`` and ``==``.

Example:
    >>> from rlblocks.core.specs import Bounded, Categorical, Composite
    >>> spec = Composite(action=Categorical(3), observation=Bounded(-1.0, 1.0, shape=(4,)))
    >>> td = spec.rand(16)
    >>> td.batch_size
    torch.Size([16])
    >>> spec.is_in(td)
    True
"""

from __future__ import annotations

from rlblocks.core._specs_base import TensorSpec
from rlblocks.core._specs_composite import Composite
from rlblocks.core._specs_continuous import Bounded, Unbounded
from rlblocks.core._specs_discrete import Binary, Categorical, MaskableSpec, OneHot
from rlblocks.core._specs_multi import MultiCategorical, MultiOneHot

__all__ = [
    "TensorSpec",
    "Unbounded",
    "Bounded",
    "Categorical",
    "OneHot",
    "MaskableSpec",
    "MultiCategorical",
    "MultiOneHot",
    "Binary",
    "Composite",
]
