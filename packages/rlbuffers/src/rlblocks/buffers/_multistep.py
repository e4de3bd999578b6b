"""n-step returns for replay: :class:`MultiStepTransform`, applied to batches before ``extend``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.buffers.errors import BufferConfigError
from rlblocks.core import DONE, NEXT, REWARD
from rlblocks.core.utils import check_int

__all__ = ["MultiStepTransform", "STEPS_TO_NEXT_OBS"]

STEPS_TO_NEXT_OBS = "steps_to_next_obs"
"""Where :class:`MultiStepTransform` writes how many steps ahead ``("next", ...)`` is
(TorchRL's key; rlblocks' DQN losses discount by ``gamma ** steps_to_next_obs``)."""


def _as_key(key: NestedKey) -> tuple[str, ...]:
    return tuple(key) if isinstance(key, (tuple, list)) else (key,)


def _fmt(key: tuple[str, ...]) -> str:
    return repr(key[0]) if len(key) == 1 else repr(key)


class MultiStepTransform:
    """Turn collected steps into n-step transitions before they are written to a buffer.

    Each transition ``t`` of a batch (time along the last batch dim, e.g. ``[n_envs, T]``
    from a collector) becomes ``t``'s root entries with, under ``"next"``:

    - the reward: ``r_t + gamma r_{t+1} + ... + gamma^(k-1) r_{t+k-1}``;
    - every other entry (next observations, ``done``, ``terminated``, ``truncated``...)
      taken ``k - 1`` steps later;

    where ``k = n_steps``, or fewer when the episode ends first: a window never crosses
    an episode's end (``("next", "done")``), and it ends with that step's flags, so a
    terminated episode is not bootstrapped and a truncated one still is. The root entry
    ``steps_to_next_obs`` (``[..., 1]``, TorchRL's key) holds ``k``: a loss discounts the
    bootstrapped value by ``gamma ** steps_to_next_obs`` (``DQNLoss``,
    ``DistributionalDQNLoss`` and the value estimators of ``rlblocks.objectives`` do).

    A transition needs the ``n_steps - 1`` steps after it, which the next batch of the
    same envs brings: the transform holds the last ``n_steps - 1`` steps of each env
    between calls. So the first call returns ``n_steps - 1`` fewer transitions than it
    was given (nothing if the batch is shorter) and each later call returns as many as it
    is given, the held ones first; every call must come from the same envs, in order.

    Unlike TorchRL's ``MultiStepTransform``, whose done flags stay those of step ``t``,
    the flags come from the window's last step (with TorchRL's, a window that reaches a
    termination is still bootstrapped), and a transition is output once its n steps are
    known (TorchRL holds ``n_steps`` steps and outputs one fewer on the first call).

    Args:
        n_steps: The horizon ``n`` (>= 1; 1 leaves the data as it is, adding
            ``steps_to_next_obs``). May be changed between calls.
        gamma: Discount of the summed rewards, in ``[0, 1]``.
        reward_keys: Keys under ``"next"`` whose values are summed (default
            ``["reward"]``).
        done_key: Key under ``"next"`` that ends an episode (default ``"done"``).

    Raises:
        BufferConfigError: ``n_steps`` is not an int >= 1, or ``gamma`` is not in
            ``[0, 1]``.

    Example:
        >>> multistep = MultiStepTransform(n_steps=3, gamma=0.99)
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(100_000), batch_size=256)
        >>> for batch in collector:  # [n_envs, T]
        ...     rb.extend(multistep(batch).reshape(-1))
    """

    def __init__(
        self,
        n_steps: int,
        gamma: float,
        *,
        reward_keys: Sequence[NestedKey] | None = None,
        done_key: NestedKey = DONE,
    ) -> None:
        self.n_steps = n_steps
        if not isinstance(gamma, (int, float)) or not 0.0 <= float(gamma) <= 1.0:
            raise BufferConfigError(
                f"MultiStepTransform: gamma must be a number in [0, 1], got {gamma!r}; "
                f"pass e.g. gamma=0.99"
            )
        self.gamma = float(gamma)
        self.reward_keys = [_as_key(k) for k in (reward_keys or [REWARD])]
        self.done_key = _as_key(done_key)
        self._held: TensorDictBase | None = None

    @property
    def n_steps(self) -> int:
        """The horizon: how many rewards a transition sums at most."""
        return self._n_steps

    @n_steps.setter
    def n_steps(self, value: int) -> None:
        self._n_steps = check_int(value, "n_steps", "MultiStepTransform", error=BufferConfigError)

    def reset(self) -> None:
        """Forget the held steps (for batches that do not continue the previous ones)."""
        self._held = None

    def __repr__(self) -> str:
        return f"MultiStepTransform(n_steps={self.n_steps}, gamma={self.gamma})"

    def __call__(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The n-step transitions completed by ``tensordict`` (see the class docstring).

        Args:
            tensordict: Steps ``[*envs, T]`` with ``("next", reward)`` and
                ``("next", done)``, continuing the envs of the previous call.

        Returns:
            ``[*envs, T']`` transitions, ``T' = T`` once ``n_steps - 1`` steps are held,
            in new memory (they share none with ``tensordict``).

        Raises:
            BufferConfigError: The input is not a TensorDict with a time dim, lacks the
                reward or done key, or does not continue the held steps (other envs or
                other keys); nothing is held from a rejected call.
        """
        self._check(tensordict)
        fresh = self._held is not None  # torch.cat copies: nothing aliases the input then
        data = torch.cat([self._held, tensordict], -1) if fresh else tensordict
        length = data.batch_size[-1]
        ready = max(length - (self.n_steps - 1), 0)
        out = self._transitions(data, ready, copy_root=not fresh)
        # Copied: a collector may write its next batch into the memory of this one.
        self._held = data[..., ready:].clone() if ready < length else None
        return out

    def _check(self, tensordict: TensorDictBase) -> None:
        who = "MultiStepTransform"
        if not isinstance(tensordict, TensorDictBase) or tensordict.batch_dims < 1:
            shape = getattr(tensordict, "batch_size", None)
            raise BufferConfigError(
                f"{who} takes a TensorDict of steps with time along its last batch dim "
                f"([n_envs, T] or [T]), got {type(tensordict).__name__}"
                + (f" with batch_size {list(shape)}" if shape is not None else "")
            )
        for key in (*self.reward_keys, self.done_key):
            if tensordict.get((NEXT, *key), None) is None:
                raise BufferConfigError(
                    f"{who} needs {_fmt((NEXT, *key))} but the batch lacks it; pass "
                    f"reward_keys=/done_key= if your data names them differently"
                )
        held = self._held
        if held is None:
            return
        if held.batch_size[:-1] != tensordict.batch_size[:-1]:
            raise BufferConfigError(
                f"{who}: this batch has batch_size {list(tensordict.batch_size)} but the held "
                f"steps are of envs {list(held.batch_size[:-1])}: every call must continue "
                f"the same envs; call reset() first for unrelated batches"
            )
        keys = set(tensordict.keys(True, True))
        held_keys = set(held.keys(True, True))
        if keys != held_keys:
            raise BufferConfigError(
                f"{who}: this batch's keys differ from the held steps' (missing "
                f"{sorted(map(str, held_keys - keys))}, new {sorted(map(str, keys - held_keys))}); "
                f"every call must carry the same keys; call reset() first for unrelated batches"
            )

    def _transitions(self, data: TensorDictBase, ready: int, copy_root: bool) -> TensorDictBase:
        """The first ``ready`` transitions of ``data`` (their windows fit in it), in new
        memory (the root entries copied when ``copy_root``, those under "next" always)."""
        envs, length = data.batch_size[:-1], data.batch_size[-1]
        time = len(envs)
        done = data.get((NEXT, *self.done_key))
        if done.shape not in (data.batch_size, (*data.batch_size, 1)):
            raise BufferConfigError(
                f"MultiStepTransform: {_fmt((NEXT, *self.done_key))} has shape "
                f"{list(done.shape)}, expected {list(data.batch_size)} or "
                f"{[*data.batch_size, 1]} (one flag per step)"
            )
        done = done.reshape(data.batch_size).bool()
        rewards = [data.get((NEXT, *key)) for key in self.reward_keys]
        sums = [torch.zeros_like(r.narrow(time, 0, ready)) for r in rewards]
        start = torch.arange(ready, device=done.device).expand(*envs, ready)
        last = start.clone()
        alive = torch.ones_like(start, dtype=torch.bool)  # the window has not ended yet
        for k in range(min(self.n_steps, length)):
            for total, reward in zip(sums, rewards):
                weight = alive.to(reward.dtype) * self.gamma**k
                step = reward.narrow(time, k, ready)
                total += weight.reshape(*weight.shape, *(1,) * (step.ndim - weight.ndim)) * step
            last = torch.where(alive, start + k, last)
            alive = alive & ~done.narrow(time, k, ready)
        # ("next", ...) of each window's last step, env by env.
        flat = data.get(NEXT).reshape(-1, length)
        rows = torch.arange(flat.batch_size[0], device=done.device).unsqueeze(-1)
        following = flat[rows, last.reshape(len(rows), ready)].reshape(*envs, ready)
        for key, total in zip(self.reward_keys, sums):
            following.set(key, total)
        out = data[..., :ready].exclude(NEXT)
        if copy_root:
            out = out.clone()
        out.set(NEXT, following)
        out.set(STEPS_TO_NEXT_OBS, (last - start + 1).unsqueeze(-1))
        return out
