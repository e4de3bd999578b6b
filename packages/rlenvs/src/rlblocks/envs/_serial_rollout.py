"""The lockstep numpy rollout over several single gymnasium envs.

Used by a :class:`SerialEnv` of single :class:`GymEnv`s and by ``GymEnv(num_envs=N)``
(whose ``SyncVectorEnv`` sub-envs it steps directly): each env is stepped in turn, like
``gymnasium.vector.SyncVectorEnv`` would, writing its results into its row of
preallocated numpy buffers; no TensorDict is built per step. Random actions only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tensordict import TensorDictBase

from rlblocks.envs._gym import GymWrapper
from rlblocks.envs._gym_rollout import ActionSource, RolloutBuffers, action_source, finish_rollout

if TYPE_CHECKING:
    from rlblocks.envs._batched import SerialEnv
    from rlblocks.envs._env_base import Policy
    from rlblocks.envs._gym_spaces import SpaceLayout

__all__ = ["serial_gym_rollout", "sync_vector_rollout", "lockstep_rollout"]

# (step, reset, frame_skip) of one gym env
Stepper = tuple[Callable[[Any], tuple], Callable[[], tuple], int]


def serial_gym_rollout(
    env: SerialEnv,
    max_steps: int,
    start: TensorDictBase,
    break_when_any_done: bool,
    episode_limit: int | None,
    policy: Policy | None,
) -> TensorDictBase | None:
    """Rollout of a SerialEnv of single gym envs by a numpy loop, or ``None`` if not one."""
    subs = env._envs
    if not all(
        isinstance(sub, GymWrapper) and not (sub.is_vector or sub.from_pixels or sub._info_specs)
        for sub in subs
    ):
        return None
    first = subs[0]
    made = action_source(env, first._act_layout, first._obs_layout, policy, start, max_steps)
    if made is None:
        return None
    source, buffers = made
    steppers = [(sub._env.step, sub._env.reset, sub.frame_skip) for sub in subs]
    steps = lockstep_rollout(
        first._obs_layout, steppers, source, buffers, start, break_when_any_done, episode_limit
    )
    return finish_rollout(env, start, source, buffers, steps, max_steps)


def sync_vector_rollout(
    env: GymWrapper,
    max_steps: int,
    start: TensorDictBase,
    break_when_any_done: bool,
    episode_limit: int | None,
    policy: Policy | None,
) -> TensorDictBase | None:
    """Rollout of a ``SyncVectorEnv`` made by ``GymEnv``, via its sub-envs.

    Stepping the sub-envs directly skips the vector env's autoreset bookkeeping (its
    ``SAME_STEP`` mode packs final observations into ``info`` on every episode end); the
    wrapper's own view of the current observations is updated afterwards.
    """
    made = action_source(env, env._act_layout, env._obs_layout, policy, start, max_steps)
    if made is None:
        return None
    source, buffers = made
    steppers = [(sub.step, sub.reset, 1) for sub in env._env.envs]
    steps = lockstep_rollout(
        env._obs_layout, steppers, source, buffers, start, break_when_any_done, episode_limit
    )
    # What the wrapper now holds as the envs' current observation: the last next one
    # (no env was reset after the last step).
    env._last_obs = env._obs_layout.to_gym(
        {key: array[:, steps - 1].copy() for key, array in buffers.nxt.items()}
    )
    env._auto_reset_rows[:] = False
    return finish_rollout(env, start, source, buffers, steps, max_steps)


def lockstep_rollout(
    layout: SpaceLayout,
    steppers: Sequence[Stepper],
    source: ActionSource,
    buffers: RolloutBuffers,
    start: TensorDictBase,
    break_when_any_done: bool,
    episode_limit: int | None,
) -> int:
    """Step ``len(steppers)`` envs in lockstep into ``buffers``; returns the step count."""
    n = len(steppers)
    max_steps = buffers.reward.shape[1]
    root, nxt, reward = buffers.root, buffers.nxt, buffers.reward
    terminated, truncated = buffers.terminated, buffers.truncated
    buffers.write_start(start)
    limit = sys.maxsize if episode_limit is None else episode_limit
    counts = [0] * n
    for t in range(max_steps):
        any_done = False
        last = t + 1 == max_steps
        actions = source.rows(t)
        for i, (step, reset, skip) in enumerate(steppers):
            obs, r, term, trunc, _ = step(actions[i])
            for _ in range(skip - 1):
                if term or trunc:
                    break
                obs, more, term, trunc, _ = step(actions[i])
                r += more
            counts[i] += 1
            if counts[i] >= limit:
                trunc = True
            layout.write(obs, nxt, (i, t))
            reward[i, t] = r
            if term or trunc:
                terminated[i, t] = term
                truncated[i, t] = trunc
                any_done = True
                if not break_when_any_done and not last:
                    obs = reset()[0]
                    counts[i] = 0
            if not last:
                layout.write(obs, root, (i, t + 1))
        if any_done and break_when_any_done:
            return t + 1
    return max_steps
