"""Episode returns from collector batches, for progress bars and logs.

Episodes run across batches, so the return of an episode is summed per trajectory id
(``("collector", "traj_ids")``) and reported in the batch where its ``("next", "done")``
flag is set. Works for any batch layout a collector yields (time-major rows, split
trajectories with a mask, batches from one worker of an asynchronous collector).
"""

from __future__ import annotations

import collections
from typing import Any

import torch
from tensordict import TensorDictBase

from rlblocks.collectors._trajectories import MASK, TRAJ_IDS
from rlblocks.core import DONE, NEXT, REWARD

__all__ = ["EpisodeTracker"]


class EpisodeTracker:
    """Running episode returns, keyed by trajectory id.

    Args:
        max_open: How many unfinished episodes to remember; the oldest are forgotten
            beyond that (episodes abandoned by a reset never finish).
    """

    def __init__(self, max_open: int = 100_000) -> None:
        self.max_open = max_open
        self._open: collections.OrderedDict[int, float] = collections.OrderedDict()

    def update(self, batch: TensorDictBase) -> list[float]:
        """Add a batch's rewards; return the returns of the episodes it finished.

        A batch without trajectory ids, rewards or done flags finishes nothing.
        """
        ids = batch.get(TRAJ_IDS, None)
        reward = batch.get((NEXT, REWARD), None)
        done = batch.get((NEXT, DONE), None)
        if ids is None or reward is None or done is None:
            return []
        ids = ids.reshape(-1)
        reward = reward.reshape(ids.numel(), -1).sum(-1).to(torch.float64)
        done = done.reshape(ids.numel(), -1).any(-1)
        mask = batch.get(MASK, None)
        if mask is not None:
            mask = mask.reshape(-1)
            ids, reward, done = ids[mask], reward[mask], done[mask]
        unique, inverse = torch.unique(ids, return_inverse=True)
        sums = torch.zeros(unique.numel(), dtype=torch.float64, device=reward.device)
        sums.index_add_(0, inverse, reward)
        finished = set(ids[done].tolist())
        returns = []
        for traj, value in zip(unique.tolist(), sums.tolist()):
            total = self._open.pop(traj, 0.0) + value
            if traj in finished:
                returns.append(total)
            else:
                self._open[traj] = total
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return returns

    def state_dict(self) -> dict[str, Any]:
        """The unfinished episodes' running returns."""
        return {"ids": list(self._open), "returns": list(self._open.values())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._open = collections.OrderedDict(zip(state["ids"], state["returns"]))
