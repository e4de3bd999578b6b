"""``ChainWalkEnv``: the template's environment, a batched random walk on a chain, in torch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core import ACTION, DONE, OBSERVATION, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.specs import Bounded, Categorical, Composite, Unbounded
from rlblocks.envs import EnvBase, Stepper

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
    step_returns_done_flags = True

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

    # The dynamics, written once: _reset/_step (TensorDicts) and the stepper (numpy) use them.
    def _restart(self, mask: torch.Tensor | None) -> None:
        """Put the walkers in ``mask`` (all when ``None``) on random inner states."""
        start = torch.randint(
            1, self.length - 1, self.batch_size, generator=self._generator, device=self.device
        )
        if mask is not None:
            start = torch.where(mask.reshape(self.batch_size), start, self._position)
        self._position = start

    def _walk(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move every walker; returns its reward and whether its episode terminated."""
        self._position = (self._position + action * 2 - 1).clamp(0, self.length - 1)
        at_right = self._position == self.length - 1
        return at_right.to(torch.float32), at_right | (self._position == 0)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        # A "_reset" mask [*batch, 1] restarts only some walkers; the others keep walking.
        self._restart(tensordict.get(RESET, None) if tensordict is not None else None)
        # The done flags are left out: EnvBase fills them with False after a reset.
        return TensorDict(
            {OBSERVATION: self._observe()}, batch_size=self.batch_size, device=self.device
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        reward, terminated = self._walk(tensordict.get(ACTION))
        terminated = terminated.unsqueeze(-1)
        return TensorDict(
            {
                OBSERVATION: self._observe(),
                REWARD: reward.unsqueeze(-1),
                TERMINATED: terminated,
                TRUNCATED: torch.zeros_like(terminated),  # no time limit: add StepCounter
                DONE: terminated.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    # The optional fast path of the backend protocol.
    def steppers(self) -> list[Stepper] | None:
        """One stepper for all walkers (a vector of ``N``, or a single walker).

        ``rollout``, ``SerialEnv`` and the collectors then step the walk through numpy
        arrays, with no TensorDict per step. Only on the CPU (numpy arrays are views of the
        CPU tensors) and for batch sizes ``[]`` and ``[N]``.
        """
        if self.device.type != "cpu" or len(self.batch_size) > 1:
            return None
        num_envs = self.batch_size[0] if self.batch_size else None
        return [Stepper(self._numpy_step, self._numpy_reset, num_envs=num_envs)]

    def _numpy_step(self, action: np.ndarray) -> tuple[Any, Any, Any, Any, None]:
        # gymnasium's (observation, reward, terminated, truncated, info); the observation
        # and action are plain arrays of the env's one observation (action) key.
        reward, terminated = self._walk(torch.as_tensor(action))
        observation = self._observe().numpy()
        return observation, reward.numpy(), terminated.numpy(), np.zeros_like(terminated), None

    def _numpy_reset(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, None]:
        # The loops reset manually: a vector stepper gets the mask of the walkers to restart.
        self._restart(None if mask is None else torch.from_numpy(mask))
        return self._observe().numpy(), None

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
