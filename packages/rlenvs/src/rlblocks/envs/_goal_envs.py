"""Goal-conditioned envs in torch: :class:`BitFlippingEnv`.

A goal env writes what the agent has reached (``"achieved_goal"``) and what it is asked to
reach (``"desired_goal"``) beside its observation, and exposes its reward as a function of
the two (:meth:`BitFlippingEnv.compute_reward`), so that hindsight experience replay
(:class:`rlblocks.buffers.HindsightRelabel`) can swap the goal of a stored transition and
recompute its reward. The keys and method names are gymnasium-robotics' ``GoalEnv`` ones.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase

from rlblocks.core import DONE, OBSERVATION, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.fast_td import new_tensordict
from rlblocks.core.specs import Binary, Categorical, Composite, Unbounded
from rlblocks.core.utils import check_int
from rlblocks.envs._env_base import EnvBase

__all__ = ["BitFlippingEnv"]

ACHIEVED_GOAL = "achieved_goal"
"""The goal a goal env's state has reached (gymnasium-robotics' key)."""
DESIRED_GOAL = "desired_goal"
"""The goal a goal env asks for (gymnasium-robotics' key)."""


class BitFlippingEnv(EnvBase):
    """Flip bits until they match a target: the bit-flipping task of the HER paper.

    Each episode starts from ``n_bits`` random bits and a random target that differs from
    them; each step flips the bit the action names. The reward is ``0`` once the bits equal
    the target and ``-1`` before (Stable-Baselines3's convention); the episode is
    terminated on success and truncated after ``max_steps`` steps otherwise. With a random
    policy the success rate falls fast as ``n_bits`` grows, which is what hindsight
    experience replay (Andrychowicz et al., 2017) fixes.

    Keys (float32 bits, ``[*batch, n_bits]``): ``"observation"`` and ``"achieved_goal"``
    (both the current bits) and ``"desired_goal"`` (the target); ``"action"``:
    ``Categorical(n_bits)`` of shape ``[*batch]``; ``("next", "reward")`` ``[*batch, 1]``.
    A policy reads the goal from ``"desired_goal"`` (e.g. by concatenating it to the
    observation inside the policy), so that relabelling that key relabels its input.

    Args:
        n_bits: Number of bits (and of actions).
        batch_size: Batch dims (independent copies of the env, reset one by one).
        max_steps: Steps before an unsolved episode is truncated (default ``n_bits``, the
            most any target needs).
        device: Device of the tensors.
        seed: Seed of the env's random generator (``None``: fresh entropy).
        check_actions: Validate actions (see :class:`EnvBase`).

    Raises:
        ValueError: ``n_bits`` or ``max_steps`` is not an int ``>= 1``.

    Example:
        >>> env = BitFlippingEnv(n_bits=8, batch_size=[16], seed=0)
        >>> td = env.rollout(8, break_when_any_done=False)
        >>> reward = BitFlippingEnv.compute_reward(
        ...     td["next", "achieved_goal"], td["next", "desired_goal"]
        ... )
        >>> torch.equal(reward, td["next", "reward"])
        True
    """

    step_returns_done_flags = True

    def __init__(
        self,
        n_bits: int = 15,
        *,
        batch_size: Any = (),
        max_steps: int | None = None,
        device: Any = None,
        seed: int | None = None,
        check_actions: bool = True,
    ) -> None:
        owner = "BitFlippingEnv"
        self.n_bits = check_int(n_bits, "n_bits", owner, minimum=1)
        max_steps = self.n_bits if max_steps is None else max_steps
        self.max_steps = check_int(max_steps, "max_steps", owner, minimum=1)
        super().__init__(batch_size=batch_size, device=device, check_actions=check_actions)
        batch, dev = self.batch_size, self.device
        bits = (*batch, self.n_bits)
        self.full_observation_spec = Composite(
            {
                key: Binary(shape=bits, dtype=torch.float32, device=dev)
                for key in (OBSERVATION, ACHIEVED_GOAL, DESIRED_GOAL)
            },
            shape=batch,
            device=dev,
        )
        self.action_spec = Categorical(self.n_bits, shape=batch, device=dev)
        self.reward_spec = Unbounded(shape=(*batch, 1), device=dev)
        self._generator = torch.Generator(device=dev)
        self._bits = torch.zeros(bits, device=dev)
        self._goal = torch.zeros(bits, device=dev)
        self._steps = torch.zeros((*batch, 1), dtype=torch.long, device=dev)
        if seed is None:
            self._generator.seed()
        else:
            self.set_seed(seed)

    @staticmethod
    def compute_reward(achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        """The reward of reaching ``achieved_goal`` when asked for ``desired_goal``.

        Vectorized over any leading dims, with no env instance needed, so that HER can
        recompute the rewards of relabelled transitions.

        Args:
            achieved_goal: Bits ``[..., n_bits]``.
            desired_goal: Target bits, broadcastable to ``achieved_goal``.

        Returns:
            ``0.0`` where every bit matches, else ``-1.0``; float32 of shape ``[..., 1]``
            (the reward's shape).
        """
        success = BitFlippingEnv.compute_terminated(achieved_goal, desired_goal)
        return success.to(torch.float32) - 1.0

    @staticmethod
    def compute_terminated(achieved_goal: torch.Tensor, desired_goal: torch.Tensor) -> torch.Tensor:
        """Whether ``achieved_goal`` reaches ``desired_goal``: the env's termination.

        Args:
            achieved_goal: Bits ``[..., n_bits]``.
            desired_goal: Target bits, broadcastable to ``achieved_goal``.

        Returns:
            A bool tensor of shape ``[..., 1]`` (the ``terminated`` flag's shape).
        """
        return (achieved_goal == desired_goal).all(-1, keepdim=True)

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)

    def _random_bits(self) -> torch.Tensor:
        return torch.randint(
            2,
            (*self.batch_size, self.n_bits),
            generator=self._generator,
            device=self.device,
        ).to(torch.float32)

    def _observe(self, flags: dict[str, torch.Tensor]) -> TensorDictBase:
        bits = self._bits
        data = {
            OBSERVATION: bits.clone(),
            ACHIEVED_GOAL: bits.clone(),
            DESIRED_GOAL: self._goal.clone(),
            **flags,
        }
        return new_tensordict(data, self.batch_size, self.device)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        bits, goal = self._random_bits(), self._random_bits()
        # Never start solved: where the draw equals the target, flip one random bit.
        which = torch.randint(
            self.n_bits, self.batch_size, generator=self._generator, device=self.device
        )
        flip = torch.nn.functional.one_hot(which, self.n_bits).to(torch.float32)
        solved = (bits == goal).all(-1, keepdim=True)
        bits = torch.where(solved, (bits - flip).abs(), bits)
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        if mask is None:
            self._bits, self._goal = bits, goal
            self._steps.zero_()
        else:
            rows = mask.reshape(*self.batch_size, 1)
            self._bits = torch.where(rows, bits, self._bits)
            self._goal = torch.where(rows, goal, self._goal)
            self._steps.masked_fill_(rows, 0)
        flag = torch.zeros((*self.batch_size, 1), dtype=torch.bool, device=self.device)
        return self._observe({DONE: flag, TERMINATED: flag.clone(), TRUNCATED: flag.clone()})

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action").long()
        flip = torch.nn.functional.one_hot(action, self.n_bits).to(torch.float32)
        self._bits = (self._bits - flip).abs()
        self._steps += 1
        terminated = self.compute_terminated(self._bits, self._goal)
        truncated = (self._steps >= self.max_steps) & ~terminated
        out = self._observe(
            {DONE: terminated | truncated, TERMINATED: terminated, TRUNCATED: truncated}
        )
        out.set(REWARD, self.compute_reward(self._bits, self._goal))
        return out
