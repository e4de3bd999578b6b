"""The numpy rollout loops of :class:`GymWrapper`: no TensorDict per env step.

Each step writes gym's results straight into preallocated numpy buffers, which become the
trajectory's tensors through ``torch.from_numpy`` (no copy) at the end. The actions come
from an :class:`ActionSource`: all drawn from the action spec at once (no policy), or from
a policy called once per step on a TensorDict of the current observation. The result is
the TensorDict the generic loop (``rollout.run_rollout``) would build.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey, unravel_key

from rlblocks.core import DONE, NEXT, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.fast_td import new_tensordict
from rlblocks.envs._rollout import TrajectoryStorage

if TYPE_CHECKING:
    from rlblocks.envs._env_base import EnvBase, Policy
    from rlblocks.envs._gym import GymWrapper
    from rlblocks.envs._gym_spaces import SpaceLayout

__all__ = [
    "ActionSource",
    "RandomActions",
    "PolicyActions",
    "action_source",
    "gym_rollout",
    "finish_rollout",
    "RolloutBuffers",
]

FLAGS = (DONE, TERMINATED, TRUNCATED)


def _to_numpy(value: torch.Tensor) -> np.ndarray:
    if value.requires_grad or value.device.type != "cpu":
        return value.numpy(force=True)
    return value.numpy()


def _gym_value(layout: SpaceLayout, arrays: list[np.ndarray]) -> Any:
    """The gym action holding per-leaf arrays of action indices/values."""
    if layout.simple:
        start = layout.leaves[0].start
        return arrays[0] if start is None else arrays[0] + start
    return layout.to_gym(arrays)


def _rows(layout: SpaceLayout, arrays: list[np.ndarray], n: int) -> list[Any]:
    """Per-sub-env gym actions from per-leaf arrays of shape ``[n, *leaf]``."""
    if layout.simple:
        value = _gym_value(layout, arrays)
        return [value[i] for i in range(n)]
    return [layout.to_gym([a[i] for a in arrays]) for i in range(n)]


class ActionSource:
    """Where a numpy rollout loop gets its actions from, and what it records of them.

    ``whole(t)`` is the gym action of the wrapped (single or vector) env at step ``t``;
    ``rows(t)`` the actions of each sub-env of a lockstep loop. They are called once per
    step, after the root observation of step ``t`` was written to the buffers.
    """

    def whole(self, t: int) -> Any:
        raise NotImplementedError

    def rows(self, t: int) -> list[Any]:
        raise NotImplementedError

    def recorded(self, steps: int) -> dict[NestedKey, torch.Tensor]:
        """The actions (and anything else recorded), shaped ``[*batch, steps, ...]``."""
        raise NotImplementedError


class RandomActions(ActionSource):
    """Uniform actions of ``env``'s action spec, all drawn before the loop starts."""

    def __init__(self, env: EnvBase, layout: SpaceLayout, max_steps: int) -> None:
        self._env = env
        self._actions = env.full_action_spec.rand((max_steps,))  # time-major
        self._arrays = [_to_numpy(self._actions.get(key)) for key in layout.keys]
        self._layout = layout
        self._n = env.batch_size.numel() if env.batch_size else 1
        self._whole: list[Any] | None = None
        self._rows: list[list[Any]] | None = None

    def whole(self, t: int) -> Any:
        if self._whole is None:
            layout, arrays = self._layout, self._arrays
            if layout.simple:  # numpy integers: gymnasium's Discrete checks them fastest
                self._whole = list(_gym_value(layout, arrays))
            else:
                steps = range(len(arrays[0]))
                self._whole = [layout.to_gym([a[s] for a in arrays]) for s in steps]
        return self._whole[t]

    def rows(self, t: int) -> list[Any]:
        if self._rows is None:
            self._rows = [
                _rows(self._layout, [a[s] for a in self._arrays], self._n)
                for s in range(len(self._arrays[0]))
            ]
        return self._rows[t]

    def recorded(self, steps: int) -> dict[NestedKey, torch.Tensor]:
        nb = len(self._env.batch_size)
        out = {}
        for key in self._env.action_keys:
            value = self._actions.get(key)[:steps]
            out[key] = value.movedim(0, nb).contiguous() if nb else value
        return out


class PolicyActions(ActionSource):
    """Actions of ``policy``, called at each step on the env's root outputs.

    The policy's input holds the observation leaves and the done flags of the current
    step, read from the rollout buffers (no copy); what it writes (the action and, e.g.,
    log-probabilities or logits) is recorded at every step.
    """

    def __init__(
        self,
        env: EnvBase,
        layout: SpaceLayout,
        policy: Policy,
        buffers: RolloutBuffers,
        start: TensorDictBase,
        max_steps: int,
    ) -> None:
        self._env = env
        self._layout = layout
        self._policy = policy
        self._root = buffers.root
        self._start = start
        self._max_steps = max_steps
        batch = env.batch_size
        self._batch = batch
        self._lead = (slice(None),) * len(batch)
        self._n = batch.numel() if batch else 1
        zeros = torch.zeros((*batch, 1), dtype=torch.bool)
        self._zeros = dict.fromkeys(FLAGS, zeros)  # root flags of every step after the first
        self._storage: TrajectoryStorage | None = None

    def _act(self, t: int) -> list[np.ndarray]:
        index = (*self._lead, t)
        data: dict[str, Any] = {
            key: torch.from_numpy(array[index]) for key, array in self._root.items()
        }
        if t == 0:
            data.update({flag: self._start.get(flag) for flag in FLAGS if flag in self._start})
        else:
            data.update(self._zeros)
        known = set(data)  # before the call: the policy writes into the TensorDict's dict
        out = self._policy(new_tensordict(data, self._batch, self._env.device))
        if self._storage is None:
            recorded = [
                key
                for key in out.keys(include_nested=True, leaves_only=True)
                if unravel_key(key) not in known
            ]
            self._storage = TrajectoryStorage(out.select(*recorded), self._max_steps)
        self._storage.write(t, out)
        return [_to_numpy(out.get(key)) for key in self._layout.keys]

    def whole(self, t: int) -> Any:
        return _gym_value(self._layout, self._act(t))

    def rows(self, t: int) -> list[Any]:
        return _rows(self._layout, self._act(t), self._n)

    def recorded(self, steps: int) -> dict[NestedKey, torch.Tensor]:
        assert self._storage is not None
        trajectory = self._storage.result(steps)
        return dict(trajectory.items(include_nested=True, leaves_only=True))


def policy_outputs(policy: Policy | None, env: EnvBase, known: set[NestedKey]) -> set | None:
    """The keys ``policy`` writes, if a numpy loop can drive it; else ``None``.

    It can when the policy declares its ``in_keys``/``out_keys`` (a ``TensorDictModule``),
    reads only what the env outputs (``known``: observation leaves and done flags), and
    writes the action and no observation or ``"next"`` entry (a recurrent policy writing
    its next state takes the generic loop).
    """
    in_keys = getattr(policy, "in_keys", None)
    out_keys = getattr(policy, "out_keys", None)
    if in_keys is None or out_keys is None:
        return None
    reads = {unravel_key(k) for k in in_keys}
    writes = {unravel_key(k) for k in out_keys}
    if not reads <= known or writes & known:
        return None
    if any(isinstance(k, tuple) and k[0] == NEXT for k in writes) or NEXT in writes:
        return None
    if not {unravel_key(k) for k in env.action_keys} <= writes:
        return None
    return writes


def action_source(
    env: EnvBase,
    layout: SpaceLayout,
    obs_layout: SpaceLayout,
    policy: Policy | None,
    start: TensorDictBase,
    max_steps: int,
) -> tuple[ActionSource, RolloutBuffers] | None:
    """The action source and buffers of a numpy rollout from ``start``, or ``None`` if the
    generic loop must run (``start`` holds entries the loop would not carry, or the
    policy reads or writes more than the loop handles)."""
    known = {unravel_key(k) for k in (*obs_layout.keys, *FLAGS)}
    allowed = known
    if policy is not None:
        writes = policy_outputs(policy, env, known)
        if writes is None:
            return None
        allowed = known | writes  # the policy's previous outputs: overwritten at step 0
    if any(unravel_key(k) not in allowed for k in start.keys(True, True)):
        return None  # e.g. a recurrent state: carried by the generic loop only
    buffers = RolloutBuffers(obs_layout, tuple(env.batch_size), max_steps)
    if policy is None:
        return RandomActions(env, layout, max_steps), buffers
    return PolicyActions(env, layout, policy, buffers, start, max_steps), buffers


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

    def write_start(self, start: TensorDictBase) -> None:
        """The first root observation, from the rollout's starting TensorDict."""
        nb = self.reward.ndim - 1
        for key, array in self.root.items():
            array[(slice(None),) * nb + (0,)] = _to_numpy(start.get(key))


def finish_rollout(
    env: EnvBase,
    start: TensorDictBase,
    source: ActionSource,
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
    for flag in FLAGS:
        value = torch.zeros(flags_shape, dtype=torch.bool)
        first = start.get(flag, None)
        if first is not None:
            value.select(nb, 0).copy_(first)
        data[flag] = value
    data.update(source.recorded(steps))
    return TensorDict(data, batch_size=(*batch, steps), device=env.device)


def gym_rollout(
    env: GymWrapper,
    max_steps: int,
    start: TensorDictBase,
    break_when_any_done: bool,
    episode_limit: int | None,
    policy: Policy | None,
) -> TensorDictBase | None:
    """Rollout of a gymnasium env by a numpy loop, or ``None`` if this loop cannot do it."""
    if env.from_pixels or env._info_specs:
        return None
    if env._vector and episode_limit is not None and not env._owns_sync_vector:
        return None
    if env._vector and env._autoreset != "SameStep" and not env._partial_reset_ok:
        return None
    if env._owns_sync_vector:
        from rlblocks.envs._serial_rollout import sync_vector_rollout

        return sync_vector_rollout(
            env, max_steps, start, break_when_any_done, episode_limit, policy
        )
    made = action_source(env, env._act_layout, env._obs_layout, policy, start, max_steps)
    if made is None:
        return None
    source, buffers = made
    buffers.write_start(start)
    if env._vector:
        steps = _vector_loop(env, source, buffers, break_when_any_done)
    else:
        steps = _single_loop(env, source, buffers, break_when_any_done, episode_limit)
    return finish_rollout(env, start, source, buffers, steps, max_steps)


def _single_loop(
    env: GymWrapper,
    source: ActionSource,
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
    max_steps = len(reward)
    skip = env.frame_skip
    simple = layout.simple and layout.leaves[0].start is None
    next_buffer = nxt[layout.keys[0]] if simple else None
    root_buffer = root[layout.keys[0]] if simple else None
    for t in range(max_steps):
        action = source.whole(t)
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
            next_buffer[t] = obs
        else:
            layout.write(obs, nxt, t)
        reward[t] = r
        last = t + 1 == max_steps
        if term or trunc:
            terminated[t] = term
            truncated[t] = trunc
            if break_when_any_done:
                return t + 1
            if last:
                break
            obs = reset()[0]
            count = 0
        elif last:
            break
        if simple:
            root_buffer[t + 1] = obs
        else:
            layout.write(obs, root, t + 1)
    return max_steps


def _vector_loop(
    env: GymWrapper, source: ActionSource, buffers: RolloutBuffers, break_when_any_done: bool
) -> int:
    root, nxt, reward = buffers.root, buffers.nxt, buffers.reward
    terminated, truncated = buffers.terminated, buffers.truncated
    layout = env._obs_layout
    venv = env._env
    step = venv.step
    same_step = env._autoreset == "SameStep"
    max_steps = reward.shape[1]
    for t in range(max_steps):
        obs, r, term, trunc, info = step(source.whole(t))
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
                return t + 1
            if t + 1 < max_steps and not same_step:
                obs, _ = venv.reset(options={"reset_mask": done})
        elif same_step:
            env._last_obs = obs
        if t + 1 < max_steps:
            layout.write(obs, root, (slice(None), t + 1))
    return max_steps
