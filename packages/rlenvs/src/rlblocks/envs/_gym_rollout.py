"""The numpy rollout loop of :class:`GymWrapper`: random actions, no TensorDict per step.

All actions are drawn from the action spec at once; each step writes gym's results
straight into preallocated numpy buffers, which become the trajectory's tensors through
``torch.from_numpy`` (no copy) at the end. The result is the TensorDict the generic loop
would build.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core import DONE, NEXT, REWARD, TERMINATED, TRUNCATED

if TYPE_CHECKING:
    from rlblocks.envs._env_base import EnvBase
    from rlblocks.envs._gym import GymWrapper
    from rlblocks.envs._gym_spaces import SpaceLayout

__all__ = ["gym_rollout", "gym_actions", "finish_rollout", "fast_loop_ok", "RolloutBuffers"]


def gym_actions(env: GymWrapper, actions: TensorDictBase, steps: int) -> list[Any]:
    """Per-step gym actions (time-major) for a batch of sampled action TensorDicts."""
    layout = env._act_layout
    arrays = [actions.get(key).cpu().numpy() for key in layout.keys]
    if env._int_action:
        # numpy integers (not ints): gymnasium's Discrete.contains checks them faster.
        start = layout.leaves[0].start or 0
        return list(arrays[0] + start)
    if layout.simple:
        start = layout.leaves[0].start
        return list(arrays[0] if start is None else arrays[0] + start)
    return [layout.to_gym([a[t] for a in arrays]) for t in range(steps)]


class RolloutBuffers:
    """Numpy storage of a fast rollout, batch-major: ``[*batch, max_steps, ...]``.

    Observations at the root (the state each action was taken in) and under ``"next"``,
    rewards and the two flags (``done`` is derived at the end).
    """

    def __init__(self, layout: SpaceLayout, batch: tuple[int, ...], max_steps: int) -> None:
        self.root = {
            leaf.key: np.empty((*batch, max_steps, *leaf.shape), leaf.np_dtype)
            for leaf in layout.leaves
        }
        self.nxt = {key: np.empty_like(array) for key, array in self.root.items()}
        self.reward = np.empty((*batch, max_steps), np.float32)
        self.terminated = np.zeros((*batch, max_steps), bool)
        self.truncated = np.zeros((*batch, max_steps), bool)


def finish_rollout(
    env: EnvBase,
    start: TensorDictBase,
    actions: TensorDictBase,
    buffers: RolloutBuffers,
    steps: int,
    max_steps: int,
) -> TensorDictBase:
    """Wrap the first ``steps`` steps of ``buffers`` into the trajectory TensorDict."""
    batch = env.batch_size
    nb = len(batch)
    cut = (slice(None),) * nb + (slice(0, steps),)

    def tensor(array: np.ndarray) -> torch.Tensor:
        view = array[cut]
        # A short rollout keeps only what it used, not the storage for max_steps.
        return torch.from_numpy(view.copy() if steps < max_steps else view)

    data: dict[Any, torch.Tensor] = {}
    for key, array in buffers.root.items():
        data[key] = tensor(array)
        data[(NEXT, *((key,) if isinstance(key, str) else key))] = tensor(buffers.nxt[key])
    flags_shape = (*batch, steps, 1)
    data[(NEXT, REWARD)] = tensor(buffers.reward).reshape(flags_shape)
    term = tensor(buffers.terminated).reshape(flags_shape)
    trunc = tensor(buffers.truncated).reshape(flags_shape)
    data[(NEXT, TERMINATED)] = term
    data[(NEXT, TRUNCATED)] = trunc
    data[(NEXT, DONE)] = term | trunc
    for flag in (DONE, TERMINATED, TRUNCATED):
        value = torch.zeros(flags_shape, dtype=torch.bool)
        first = start.get(flag, None)
        if first is not None:
            value.select(nb, 0).copy_(first)
        data[flag] = value
    # Actions were sampled time-major; the trajectory is batch-major.
    for key in env.action_keys:
        value = actions.get(key)[:steps]
        data[key] = value.movedim(0, nb).contiguous() if nb else value
    return TensorDict(data, batch_size=(*batch, steps), device=env.device)


def gym_rollout(
    env: GymWrapper,
    max_steps: int,
    start: TensorDictBase,
    break_when_any_done: bool,
    episode_limit: int | None,
) -> TensorDictBase | None:
    """Random-action rollout of a gymnasium env, or ``None`` if this loop cannot do it."""
    if not fast_loop_ok(env, start):
        return None
    if env._vector and episode_limit is not None and not env._owns_sync_vector:
        return None
    if env._vector and env._autoreset != "SameStep" and not env._partial_reset_ok:
        return None
    if env._owns_sync_vector:
        from rlblocks.envs._serial_rollout import sync_vector_rollout

        return sync_vector_rollout(env, max_steps, start, break_when_any_done, episode_limit)
    actions = env.full_action_spec.rand((max_steps,))
    per_step = gym_actions(env, actions, max_steps)
    buffers = RolloutBuffers(env._obs_layout, tuple(env.batch_size), max_steps)
    if env._vector:
        steps = _vector_loop(env, start, per_step, buffers, break_when_any_done)
    else:
        steps = _single_loop(env, start, per_step, buffers, break_when_any_done, episode_limit)
    return finish_rollout(env, start, actions, buffers, steps, max_steps)


def fast_loop_ok(env: GymWrapper, start: TensorDictBase) -> bool:
    """Whether the numpy loop can produce what the generic loop would from ``start``."""
    if env.from_pixels or env._info_specs:
        return False
    known = {*env._obs_layout.keys, DONE, TERMINATED, TRUNCATED}
    # Extra entries (e.g. a recurrent state) are carried by the generic loop only.
    return all(key in known for key in start.keys(True, True))


def _single_loop(
    env: GymWrapper,
    start: TensorDictBase,
    per_step: list[Any],
    buffers: RolloutBuffers,
    break_when_any_done: bool,
    episode_limit: int | None,
) -> int:
    root, nxt, reward = buffers.root, buffers.nxt, buffers.reward
    terminated, truncated = buffers.terminated, buffers.truncated
    limit = sys.maxsize if episode_limit is None else episode_limit
    count = 0
    layout = env._obs_layout
    gym_env = env._env
    step, reset = gym_env.step, gym_env.reset
    max_steps = len(per_step)
    steps = max_steps
    resets: list[tuple[int, Any]] = []
    skip = env.frame_skip
    simple = layout.simple and layout.leaves[0].start is None
    buffer = nxt[layout.keys[0]] if simple else None
    for t, action in enumerate(per_step):
        obs, r, term, trunc, _ = step(action)
        for _ in range(skip - 1):
            if term or trunc:
                break
            obs, more, term, trunc, _ = step(action)
            r += more
        count += 1
        if count >= limit:
            trunc = True
        if simple:
            buffer[t] = obs
        else:
            layout.write(obs, nxt, t)
        reward[t] = r
        if term or trunc:
            terminated[t] = term
            truncated[t] = trunc
            if break_when_any_done:
                steps = t + 1
                break
            if t + 1 < max_steps:
                resets.append((t + 1, reset()[0]))
                count = 0
    # Root observations: the start, then each next observation, except after a reset.
    for key, array in root.items():
        array[0] = start.get(key).cpu().numpy()
        array[1:steps] = nxt[key][: steps - 1]
    for t, obs in resets:
        layout.write(obs, root, t)
    return steps


def _vector_loop(
    env: GymWrapper,
    start: TensorDictBase,
    per_step: list[Any],
    buffers: RolloutBuffers,
    break_when_any_done: bool,
) -> int:
    root, nxt, reward = buffers.root, buffers.nxt, buffers.reward
    terminated, truncated = buffers.terminated, buffers.truncated
    layout = env._obs_layout
    venv = env._env
    step = venv.step
    same_step = env._autoreset == "SameStep"
    max_steps = len(per_step)
    steps = max_steps
    for key, array in root.items():
        array[:, 0] = start.get(key).cpu().numpy()
    for t, action in enumerate(per_step):
        obs, r, term, trunc, info = step(action)
        layout.write(obs, nxt, (slice(None), t))
        reward[:, t] = r
        terminated[:, t] = term
        truncated[:, t] = trunc
        done = term | trunc
        if done.any():
            if same_step:
                # gym already reset these rows: obs holds the new episodes' first
                # observation, info["final_obs"] the last one of the finished episodes.
                env._auto_reset_rows |= done
                env._last_obs = obs
                final = info["final_obs"]
                for i in np.flatnonzero(done):
                    layout.write(final[i], nxt, (i, t))
            if break_when_any_done:
                steps = t + 1
                break
            if t + 1 < max_steps and not same_step:
                obs, _ = venv.reset(options={"reset_mask": done})
        elif same_step:
            env._last_obs = obs
        if t + 1 < max_steps:
            layout.write(obs, root, (slice(None), t + 1))
    return steps
