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
from rlblocks.envs._gym_rollout import RolloutBuffers, fast_loop_ok, finish_rollout, gym_actions

if TYPE_CHECKING:
    from rlblocks.envs._batched import SerialEnv
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
) -> TensorDictBase | None:
    """Random-action rollout of a SerialEnv of single gym envs, or ``None`` if not one."""
    subs = env._envs
    if not all(
        isinstance(sub, GymWrapper) and not sub.is_vector and fast_loop_ok(sub, start[0])
        for sub in subs
    ):
        return None
    actions = env.full_action_spec.rand((max_steps,))
    per_env = [gym_actions(sub, actions[:, i], max_steps) for i, sub in enumerate(subs)]
    steppers = [(sub._env.step, sub._env.reset, sub.frame_skip) for sub in subs]
    buffers, steps = lockstep_rollout(
        subs[0]._obs_layout, steppers, per_env, start, break_when_any_done, episode_limit
    )
    return finish_rollout(env, start, actions, buffers, steps, max_steps)


def sync_vector_rollout(
    env: GymWrapper,
    max_steps: int,
    start: TensorDictBase,
    break_when_any_done: bool,
    episode_limit: int | None,
) -> TensorDictBase:
    """Random-action rollout of a ``SyncVectorEnv`` made by ``GymEnv``, via its sub-envs.

    Stepping the sub-envs directly skips the vector env's autoreset bookkeeping (its
    ``SAME_STEP`` mode packs final observations into ``info`` on every episode end); the
    wrapper's own view of the current observations is updated afterwards.
    """
    venv = env._env
    layout = env._act_layout
    actions = env.full_action_spec.rand((max_steps,))
    arrays = [actions.get(key).cpu().numpy() for key in layout.keys]
    per_env = []
    for i in range(len(venv.envs)):
        rows = [a[:, i] for a in arrays]
        leaf = layout.leaves[0]
        if layout.simple and not leaf.shape:
            per_env.append(list(rows[0] + (leaf.start or 0)))
        else:
            per_env.append([layout.to_gym([r[t] for r in rows]) for t in range(max_steps)])
    steppers = [(sub.step, sub.reset, 1) for sub in venv.envs]
    buffers, steps = lockstep_rollout(
        env._obs_layout, steppers, per_env, start, break_when_any_done, episode_limit
    )
    # What the wrapper now holds as the envs' current observation: the last next one
    # (no env was reset after the last step).
    env._last_obs = env._obs_layout.to_gym(
        {key: array[:, steps - 1].copy() for key, array in buffers.nxt.items()}
    )
    env._auto_reset_rows[:] = False
    return finish_rollout(env, start, actions, buffers, steps, max_steps)


def lockstep_rollout(
    layout: SpaceLayout,
    steppers: Sequence[Stepper],
    per_env: Sequence[Sequence[Any]],
    start: TensorDictBase,
    break_when_any_done: bool,
    episode_limit: int | None,
) -> tuple[RolloutBuffers, int]:
    """Step ``len(steppers)`` envs in lockstep; returns the filled buffers and step count."""
    n = len(steppers)
    max_steps = len(per_env[0])
    buffers = RolloutBuffers(layout, (n,), max_steps)
    root, nxt, reward = buffers.root, buffers.nxt, buffers.reward
    terminated, truncated = buffers.terminated, buffers.truncated
    for key, array in root.items():
        array[:, 0] = start.get(key).cpu().numpy()
    limit = sys.maxsize if episode_limit is None else episode_limit
    counts = [0] * n
    steps = max_steps
    for t in range(max_steps):
        any_done = False
        last = t + 1 == max_steps
        for i, (step, reset, skip) in enumerate(steppers):
            obs, r, term, trunc, _ = step(per_env[i][t])
            for _ in range(skip - 1):
                if term or trunc:
                    break
                obs, more, term, trunc, _ = step(per_env[i][t])
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
            steps = t + 1
            break
    return buffers, steps
