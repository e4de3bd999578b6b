"""``ChainWalkEnv``: the template's environment, a batched random walk on a chain, in torch."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core import ACTION, DONE, OBSERVATION, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.specs import Bounded, Categorical, Composite, Unbounded
from rlblocks.envs import EnvBase

__all__ = ["ChainWalkEnv"]


class ChainWalkEnv(EnvBase):
    """A walk on a chain of ``length`` states, for ``batch_size`` walkers at once.

    Each walker starts on a random inner state and moves left (action 0) or right (action
    1). Reaching either end terminates its episode; the right end pays reward 1, every
    other step pays 0. The observation is the one-hot position (float32).

    Args:
        length: Number of states, at least 3.
        batch_size: Number of walkers (``[N]``, or ``[]`` for one).
        device: Where the tensors live.
        check_actions: Validate actions in ``step`` (see :class:`~rlblocks.envs.EnvBase`).

    Example:
        >>> env = ChainWalkEnv(length=5, batch_size=[8])
        >>> env.rollout(20, break_when_any_done=False).batch_size
        torch.Size([8, 20])
    """

    # _step always returns done, terminated and truncated: EnvBase need not fill them in.
    _done_flags_complete = True

    def __init__(
        self,
        length: int = 7,
        batch_size: Any = (),
        device: Any = None,
        *,
        check_actions: bool = True,
    ) -> None:
        if isinstance(length, bool) or not isinstance(length, int) or length < 3:
            raise ValueError(f"ChainWalkEnv: length must be an int >= 3, got {length!r}")
        super().__init__(device=device, batch_size=batch_size, check_actions=check_actions)
        self.length = length
        batch = self.batch_size
        # Spec shapes include the batch dims; the setters wrap leaves in a Composite.
        self.observation_spec = Composite(
            {OBSERVATION: Bounded(0.0, 1.0, shape=(*batch, length), device=self.device)},
            shape=batch,
            device=self.device,
        )
        self.action_spec = Categorical(2, shape=batch, device=self.device)
        self.reward_spec = Unbounded(shape=(*batch, 1), device=self.device)
        self._generator = torch.Generator(device=self.device)
        self._generator.seed()
        self._position = torch.zeros(batch, dtype=torch.int64, device=self.device)

    def _observe(self) -> torch.Tensor:
        return torch.nn.functional.one_hot(self._position, self.length).to(torch.float32)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        start = torch.randint(
            1, self.length - 1, self.batch_size, generator=self._generator, device=self.device
        )
        # A "_reset" mask [*batch, 1] restarts only some walkers; the others keep walking.
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        if mask is not None:
            start = torch.where(mask.reshape(self.batch_size), start, self._position)
        self._position = start
        # The done flags are left out: EnvBase fills them with False after a reset.
        return TensorDict(
            {OBSERVATION: self._observe()}, batch_size=self.batch_size, device=self.device
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        move = tensordict.get(ACTION) * 2 - 1
        self._position = (self._position + move).clamp(0, self.length - 1)
        at_right = self._position == self.length - 1
        terminated = (at_right | (self._position == 0)).unsqueeze(-1)
        return TensorDict(
            {
                OBSERVATION: self._observe(),
                REWARD: at_right.to(torch.float32).unsqueeze(-1),
                TERMINATED: terminated,
                TRUNCATED: torch.zeros_like(terminated),  # no time limit: add StepCounter
                DONE: terminated.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
