"""Trajectory bookkeeping done once per batch, vectorized: ids and splitting.

Every frame of a batch gets the id of the trajectory (episode) it belongs to under
``("collector", "traj_ids")``. Ids are unique over the collector's life: a new episode
takes the next free id. They are computed from the batch's ``("next", "done")`` flags after
the batch is collected, with a few tensor ops instead of per-step Python.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from rlblocks.core import DONE, NEXT

__all__ = ["TRAJ_IDS", "MASK", "TrajectoryIds", "split_trajectories"]

TRAJ_IDS = ("collector", "traj_ids")
MASK = ("collector", "mask")


class TrajectoryIds:
    """The trajectory id of each env of a batched env, carried from batch to batch.

    Ids are ``offset + stride * k`` for ``k = 0, 1, 2, ...``, so workers given the same
    ``stride`` and distinct ``offset`` never hand out the same id.

    Args:
        batch_size: The env's batch size.
        device: Where the ids live.
        offset: First id.
        stride: Gap between consecutive ids.
    """

    def __init__(
        self, batch_size: torch.Size, device: torch.device, offset: int = 0, stride: int = 1
    ) -> None:
        self.batch_size = batch_size
        self.offset = offset
        self.stride = stride
        n = max(1, batch_size.numel())
        # The current id of env i is offset + stride * current[i]; every env starts a new
        # trajectory at its first frame.
        self.current = torch.zeros(n, dtype=torch.int64, device=device)
        self.next_free = 0
        self.pending_new = torch.ones(n, dtype=torch.bool, device=device)

    def new_episodes(self) -> None:
        """Every env starts a new trajectory at the next frame (after a full reset)."""
        self.pending_new.fill_(True)

    def assign(self, batch: TensorDictBase) -> torch.Tensor:
        """Return the ids of a batch ``[*batch_size, T]`` and advance the carried state."""
        done = batch.get((NEXT, DONE))
        n = self.current.numel()
        device = self.current.device
        done = done.reshape(n, -1).to(device)
        # A frame starts a trajectory when the previous frame ended one.
        starts = torch.cat([self.pending_new.unsqueeze(1), done[:, :-1]], dim=1)
        k = starts.cumsum(1)  # number of trajectories started so far, per env
        new_per_env = k[:, -1]
        first_new = self.next_free + new_per_env.cumsum(0) - new_per_env
        counts = torch.where(k == 0, self.current.unsqueeze(1), first_new.unsqueeze(1) + k - 1)
        self.next_free += int(new_per_env.sum())
        self.current = counts[:, -1].clone()
        self.pending_new = done[:, -1].clone()
        ids = self.offset + self.stride * counts
        return ids.reshape(*self.batch_size, -1)

    def state_dict(self) -> dict[str, object]:
        """The carried state, to resume numbering after a restart."""
        return {
            "current": self.current.clone(),
            "next_free": self.next_free,
            "pending_new": self.pending_new.clone(),
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Load what :meth:`state_dict` returned."""
        device = self.current.device
        self.current = torch.as_tensor(state["current"]).to(device)
        self.next_free = int(state["next_free"])  # type: ignore[call-overload]
        self.pending_new = torch.as_tensor(state["pending_new"]).to(device)


def split_trajectories(batch: TensorDictBase) -> TensorDictBase:
    """Regroup a batch ``[*B, T]`` into one zero-padded row per trajectory.

    Args:
        batch: A collector batch holding ``("collector", "traj_ids")``.

    Returns:
        A TensorDict ``[num_trajectories, max_length]``; ``("collector", "mask")`` is True
        on real frames and False on padding. Rows follow the env order, then time.
    """
    flat = batch.reshape(-1)
    ids = flat.get(TRAJ_IDS)
    # Within a batch a trajectory is a run of equal ids in one env's row, and rows of
    # different envs never share an id, so runs in the flattened batch are trajectories.
    _, inverse, counts = torch.unique_consecutive(ids, return_inverse=True, return_counts=True)
    n, length = counts.numel(), int(counts.max())
    starts = counts.cumsum(0) - counts
    position = torch.arange(ids.numel(), device=ids.device) - starts[inverse]

    def pad(value: torch.Tensor) -> torch.Tensor:
        out = value.new_zeros((n, length, *value.shape[1:]))
        out[inverse, position] = value
        return out

    out = flat.apply(pad, batch_size=[n, length])
    mask = torch.zeros((n, length), dtype=torch.bool, device=ids.device)
    mask[inverse, position] = True
    out.set(MASK, mask)
    return out
