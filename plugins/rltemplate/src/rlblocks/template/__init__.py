"""rlblocks-template: a minimal, complete rlblocks plugin to copy from.

It registers one component of three kinds through the ``rlblocks`` entry point (see
``docs/plugins.md``, which walks through this code):

- the ``template`` env backend: :class:`ChainWalkEnv`, a batched torch env on ``EnvBase``;
- the ``template_td_value`` loss: :class:`TDValueLoss`, on ``LossModule``;
- the ``template_recent`` sampler: :class:`RecentSampler`, on ``Sampler``.
"""

from __future__ import annotations

from rlblocks.template._env import ChainWalkEnv
from rlblocks.template._loss import TDValueLoss
from rlblocks.template._sampler import RecentSampler
from rlblocks.template._version import __version__

__all__ = ["__version__", "ChainWalkEnv", "TDValueLoss", "RecentSampler"]
