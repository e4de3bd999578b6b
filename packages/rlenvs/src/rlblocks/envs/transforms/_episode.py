"""Per-episode bookkeeping transforms: :class:`StepCounter` and :class:`RewardSum`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import DONE, NEXT, REWARD, TRUNCATED
from rlblocks.core.specs import Bounded, Composite, TensorSpec, Unbounded
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import Transform, as_key_list
from rlblocks.envs.transforms._common import broadcast_flag, reset_mask, where_reset

__all__ = ["StepCounter", "RewardSum"]


def _episode_steps(trajectory: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
    """For a rollout (time last): each step's index and the index its episode started at.

    Both are int64 ``[*batch, T, 1]``. An episode starts at step 0 (a fresh reset) and right
    after every step whose ``("next", "done")`` is set.
    """
    done = trajectory.get((NEXT, DONE))
    steps = done.shape[-2]
    index = torch.arange(steps, device=done.device).reshape(steps, 1).expand(done.shape)
    starts = torch.zeros_like(done)
    starts[..., 1:, :] = done[..., :-1, :]
    start = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=-2).values
    return index, start


class _EpisodeTransform(Transform):
    """Shared by transforms whose state lives in the TensorDict and restarts with episodes."""

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise TransformError(
            f"{type(self).__name__} keeps per-episode state, which a single TensorDict does "
            f"not have; use it inside a TransformedEnv"
        )


class StepCounter(_EpisodeTransform):
    """Count the steps of each episode and optionally truncate it after ``max_steps``.

    Writes ``step_count`` (int64, ``[*batch, 1]``): 0 after a reset, then 1, 2, ... With
    ``max_steps``, a step whose count reaches ``max_steps`` sets ``truncated`` (and
    ``done``), so the next ``step_and_maybe_reset`` or rollout starts a new episode.

    Args:
        max_steps: Truncate episodes after this many steps (``None``: never).
        step_count_key: Where to write the count.
        truncated_key: The flag set when ``max_steps`` is reached.

    Example:
        >>> env = TransformedEnv(GymEnv("Pendulum-v1"), StepCounter(max_steps=50))
        >>> td = env.rollout(100)
        >>> td.batch_size
        torch.Size([50])
    """

    def __init__(
        self,
        max_steps: int | None = None,
        step_count_key: NestedKey = "step_count",
        truncated_key: NestedKey = TRUNCATED,
    ) -> None:
        if max_steps is not None and (
            not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1
        ):
            raise TransformError(
                f"StepCounter: max_steps must be a positive int or None, got {max_steps!r}"
            )
        super().__init__()
        self.max_steps = max_steps
        self.step_count_key = step_count_key
        self.truncated_key = truncated_key
        self._flag_groups: list[tuple[str, ...]] = []

    def _zeros(self, reference: TensorDictBase) -> torch.Tensor:
        return torch.zeros((*reference.batch_size, 1), dtype=torch.int64, device=reference.device)

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        # A partial reset keeps the other elements' counts (carried from its input).
        previous = tensordict_reset.get(self.step_count_key, None)
        count = where_reset(reset_mask(tensordict), self._zeros(tensordict_reset), previous)
        tensordict_reset.set(self.step_count_key, count)
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        count = tensordict.get(self.step_count_key, None)
        count = self._zeros(next_tensordict) + 1 if count is None else count + 1
        next_tensordict.set(self.step_count_key, count)
        if self.max_steps is not None:
            self._truncate(next_tensordict, count >= self.max_steps)
        return next_tensordict

    def _truncate(self, next_tensordict: TensorDictBase, limit: torch.Tensor) -> None:
        """Set ``truncated`` and ``done`` where ``limit`` is, at the root and in every agent
        group with its own flags (a loss reading a group's flags must see the cut too)."""
        truncated = next_tensordict.get(self.truncated_key, None)
        next_tensordict.set(self.truncated_key, limit if truncated is None else truncated | limit)
        done = next_tensordict.get(DONE, None)
        if done is not None:
            next_tensordict.set(DONE, done | limit)
        for group in self._flag_groups:
            for flag in (TRUNCATED, DONE):
                key = (*group, flag)
                value = next_tensordict.get(key, None)
                if value is not None:
                    next_tensordict.set(key, value | broadcast_flag(limit, value))

    def _episode_limit(self) -> int | None:
        return self.max_steps

    def _supports_trajectory(self, continuing: bool = False) -> bool:
        # Continuing would need the wrapped env's loop to truncate at the carried counts.
        return not self._has_inv() and not (continuing and self.max_steps is not None)

    def _call_trajectory(
        self, trajectory: TensorDictBase, start: TensorDictBase | None = None
    ) -> TensorDictBase:
        index, first = _episode_steps(trajectory)
        before = index - first
        if start is not None:  # the first episode began before the rollout
            carried = start.get(self.step_count_key).unsqueeze(-2)
            before = before + torch.where(first == 0, carried, torch.zeros_like(carried))
        trajectory.set(self.step_count_key, before)
        count = before + 1
        next_td = trajectory.get(NEXT)
        next_td.set(self.step_count_key, count)
        if self.max_steps is not None:
            # The env's loop already ended these episodes; record why, as _step does.
            self._truncate(next_td, count >= self.max_steps)
        return trajectory

    def transform_done_spec(self, done_spec: Composite) -> Composite:
        # The agent groups with their own flags (multi-agent envs), found once per spec change.
        keys = done_spec.keys(True, True)
        self._flag_groups = [
            k[:-1]
            for k in keys
            if isinstance(k, tuple) and k[-1] == DONE and (*k[:-1], TRUNCATED) in keys
        ]
        return done_spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        high = self.max_steps if self.max_steps is not None else torch.iinfo(torch.int64).max
        observation_spec[self.step_count_key] = Bounded(
            low=0,
            high=high,
            shape=(*observation_spec.shape, 1),
            dtype=torch.int64,
            device=observation_spec.device,
        )
        return observation_spec

    def extra_repr(self) -> str:
        return f"max_steps={self.max_steps}, step_count_key={self.step_count_key!r}"


class RewardSum(_EpisodeTransform):
    """Accumulate the reward of each episode.

    Writes ``episode_reward`` (``[*batch, 1]``, the reward's dtype): 0 after a reset, then the
    sum of the rewards received so far in the episode, under ``"next"`` after every step.

    Args:
        in_keys: Reward key(s) to sum (default: ``"reward"``).
        out_keys: Where to write the sums (default: ``"episode_reward"`` for one key,
            ``"episode_<key>"`` otherwise).

    Example:
        >>> env = TransformedEnv(GymEnv("CartPole-v1"), RewardSum())
        >>> td = env.rollout(500)
        >>> float(td["next", "episode_reward"][-1]) == float(td["next", "reward"].sum())
        True
    """

    def __init__(
        self,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        in_list = as_key_list(in_keys) or [REWARD]
        if out_keys is None:
            out_keys = (
                ["episode_reward"]
                if in_list == [REWARD]
                else [
                    f"episode_{k}" if isinstance(k, str) else (*k[:-1], f"episode_{k[-1]}")
                    for k in in_list
                ]
            )
        super().__init__(in_keys=in_list, out_keys=out_keys)
        self._reward_leaves: dict[NestedKey, TensorSpec] = {}

    def _reward_leaf(self, key: NestedKey, batch: torch.Size) -> TensorSpec:
        leaf = self._reward_leaves.get(key)
        if leaf is None:
            parent = self.parent
            leaf = parent.full_reward_spec.get(key, None) if parent is not None else None
        if leaf is None:
            leaf = Unbounded(shape=(*batch, 1))
        return leaf

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            zeros = self._reward_leaf(in_key, tensordict_reset.batch_size).zero()
            zeros = zeros.to(tensordict_reset.device)
            previous = tensordict_reset.get(out_key, None)
            tensordict_reset.set(out_key, where_reset(reset_mask(tensordict), zeros, previous))
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            reward = next_tensordict.get(in_key, None)
            if reward is None:
                continue
            previous = tensordict.get(out_key, None)
            next_tensordict.set(out_key, reward if previous is None else previous + reward)
        return next_tensordict

    def _supports_trajectory(self, continuing: bool = False) -> bool:
        return not self._has_inv()  # ``start``'s sums continue its first episode

    def _call_trajectory(
        self, trajectory: TensorDictBase, start: TensorDictBase | None = None
    ) -> TensorDictBase:
        _, first = _episode_steps(trajectory)
        next_td = trajectory.get(NEXT)
        time = trajectory.batch_dims - 1  # agent dims (multi-agent rewards) come after it
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            reward = next_td.get(in_key, None)
            if reward is None:
                continue
            # Segmented cumulative sums: total so far minus the total before the episode
            # began, in float64 so that long rollouts keep the per-episode precision.
            total = reward.to(torch.float64).cumsum(dim=time)
            before = total - reward.to(torch.float64)
            starts = broadcast_flag(first, before).expand_as(before)
            offset = before.gather(time, starts)
            if start is not None:  # the first episode began before the rollout
                carried = start.get(out_key).to(torch.float64).unsqueeze(time)
                offset = offset - torch.where(starts == 0, carried, torch.zeros_like(carried))
            next_td.set(out_key, (total - offset).to(reward.dtype))
            trajectory.set(out_key, (before - offset).to(reward.dtype))
        return trajectory

    def transform_reward_spec(self, reward_spec: Composite) -> Composite:
        # TransformedEnv transforms the reward spec before the observation spec, so the
        # reward specs seen at this position are known when the sums' spec is built.
        self._reward_leaves = {k: reward_spec[k] for k in self.in_keys if k in reward_spec}
        return reward_spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            leaf = self._reward_leaf(in_key, observation_spec.shape)
            observation_spec[out_key] = Unbounded(
                shape=leaf.shape, dtype=leaf.dtype, device=observation_spec.device
            )
        return observation_spec
