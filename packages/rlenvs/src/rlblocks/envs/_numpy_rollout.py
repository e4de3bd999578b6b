"""The numpy rollout loops that drive :class:`Stepper` objects: no TensorDict per step.

``EnvBase.fast_rollout`` runs them over the env's :meth:`~EnvBase.steppers`. Each step
writes the simulators' results straight into preallocated numpy buffers, shaped
``[rows, max_steps, ...]`` (a row per simulator of the env's batch, row-major), which
become the trajectory's tensors through ``torch.from_numpy`` (no copy) at the end. The
actions come from an :class:`ActionSource`: all drawn from the action spec at once (no
policy), or from a policy called once per step on a TensorDict of the current observation.
The result is the TensorDict the generic TensorDict loop (``run_rollout``) would build.

Nothing here knows a backend: the steppers carry the backend's step semantics.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey, unravel_key

from rlblocks.core import DONE, NEXT, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.fast_td import new_tensordict
from rlblocks.envs._rollout import TrajectoryStorage
from rlblocks.envs._stepper import Stepper
from rlblocks.envs.errors import EnvError

if TYPE_CHECKING:
    from rlblocks.envs._env_base import EnvBase, Policy

__all__ = ["stepper_rollout", "StepperRows", "to_numpy", "policy_outputs", "numpy_dtype"]

FLAGS = (DONE, TERMINATED, TRUNCATED)


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype of a torch dtype."""
    return torch.empty(0, dtype=dtype).numpy().dtype


def to_numpy(value: torch.Tensor) -> np.ndarray:
    """A numpy view (or CPU copy) of ``value``, also when it requires grad."""
    if value.requires_grad or value.device.type != "cpu":
        return value.numpy(force=True)
    return value.numpy()


def policy_outputs(policy: Any, env: EnvBase, known: set[NestedKey]) -> set | None:
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


# ---------------------------------------------------------------------- layout
class _Layout:
    """What the loops need of the env: keys, per-row shapes and dtypes, the row count."""

    def __init__(self, env: EnvBase, steppers: Sequence[Stepper]) -> None:
        name = type(env).__name__
        self.batch = tuple(env.batch_size)
        self.rows = max(1, env.batch_size.numel())
        nb = len(self.batch)
        if sum(s.rows for s in steppers) != self.rows:
            raise EnvError(
                f"{name}.steppers() returned steppers for {sum(s.rows for s in steppers)} "
                f"envs, but the env's batch_size {list(self.batch)} holds {self.rows}; "
                f"return one stepper per sub-env (or one per vector of sub-envs)"
            )
        self.observation = {
            key: (tuple(spec.shape[nb:]), numpy_dtype(spec.dtype))
            for key, spec in env.full_observation_spec.items(True, True)
        }
        self.action_keys = list(env.action_keys)
        self.action_shapes = {
            key: tuple(spec.shape[nb:]) for key, spec in env.full_action_spec.items(True, True)
        }
        for what, keys, attr in (
            ("observation", list(self.observation), "write_observation"),
            ("action", self.action_keys, "convert_action"),
        ):
            if len(keys) != 1 and any(getattr(s, attr) is None for s in steppers):
                raise EnvError(
                    f"{name}.steppers(): a stepper without {attr} needs an env with one "
                    f"{what} key, the env has {keys}; give the stepper {attr}"
                )
        reward = env.full_reward_spec
        self.standard = (
            list(reward.keys(True, True)) == [REWARD]
            and reward[REWARD].shape[nb:] == (1,)
            and set(env.full_done_spec.keys(True, True)) == set(FLAGS)
            and all(env.full_done_spec[f].shape[nb:] == (1,) for f in FLAGS)
        )
        self.reward_dtype = numpy_dtype(reward[REWARD].dtype) if self.standard else None


class RolloutBuffers:
    """Numpy storage of a fast rollout, row-major: ``[rows, max_steps, ...]``.

    Observations at the root (the state each action was taken in) and under ``"next"``,
    rewards and the two flags (``done`` is derived at the end).
    """

    def __init__(self, layout: _Layout, max_steps: int) -> None:
        rows = layout.rows
        self.root = {
            key: np.empty((rows, max_steps, *shape), dtype)
            for key, (shape, dtype) in layout.observation.items()
        }
        self.nxt = {key: np.empty_like(array) for key, array in self.root.items()}
        self.reward = np.zeros((rows, max_steps), layout.reward_dtype)
        self.terminated = np.zeros((rows, max_steps), bool)
        self.truncated = np.zeros((rows, max_steps), bool)

    def write_start(self, start: TensorDictBase, rows: int) -> None:
        """The first root observation, from the rollout's starting TensorDict."""
        for key, array in self.root.items():
            array[:, 0] = to_numpy(start.get(key)).reshape(rows, *array.shape[2:])


def _writer(stepper: Stepper, buffers: dict[NestedKey, np.ndarray]) -> Callable[[Any, Any], None]:
    """``write(index, observation)`` into ``buffers`` for ``stepper``'s observations."""
    write = stepper.write_observation
    if write is None:
        (array,) = buffers.values()
        return array.__setitem__  # the simulator's array goes in as it is: one copy

    def writer(index: Any, observation: Any) -> None:
        write(observation, buffers, index)

    return writer


# ---------------------------------------------------------------------- actions
class ActionSource:
    """Where a numpy loop gets its actions from, and what it records of them.

    ``actions(t)`` returns, for each stepper, what its ``step`` takes at step ``t``; it is
    called once per step, after the root observation of step ``t`` was written.
    """

    def __init__(self, env: EnvBase, layout: _Layout, steppers: Sequence[Stepper]) -> None:
        self._env = env
        self._layout = layout
        self._steppers = steppers
        bounds, lo = [], 0
        for stepper in steppers:
            bounds.append((lo, lo + stepper.rows))
            lo += stepper.rows
        self._bounds = bounds

    def _split(self, arrays: Mapping[NestedKey, np.ndarray]) -> list[Any]:
        """Per-stepper actions from ``{key: array [rows, *action]}``."""
        out = []
        keys = self._layout.action_keys
        for stepper, (lo, hi) in zip(self._steppers, self._bounds):
            index: Any = lo if stepper.num_envs is None else slice(lo, hi)
            convert = stepper.convert_action
            if convert is None:
                out.append(arrays[keys[0]][index])
            else:
                out.append(convert({key: arrays[key][index] for key in keys}))
        return out

    def actions(self, t: int) -> list[Any]:
        raise NotImplementedError

    def column(self, i: int) -> list[Any] | None:
        """All the actions of single-env stepper ``i``, if known before the loop."""
        return None

    def recorded(self, steps: int) -> dict[NestedKey, torch.Tensor]:
        """The actions (and anything else recorded), shaped ``[*batch, steps, ...]``."""
        raise NotImplementedError


class RandomActions(ActionSource):
    """Uniform actions of the env's action spec, all drawn (and converted) before the loop."""

    def __init__(
        self, env: EnvBase, layout: _Layout, steppers: Sequence[Stepper], max_steps: int
    ) -> None:
        super().__init__(env, layout, steppers)
        self._columns: list[list[Any]] | None = None
        self._actions = env.full_action_spec.rand((max_steps,))  # time-major
        rows = layout.rows
        arrays = {
            key: to_numpy(self._actions.get(key)).reshape(
                max_steps, rows, *layout.action_shapes[key]
            )
            for key in layout.action_keys
        }
        plain = all(s.num_envs is None and s.convert_action is None for s in steppers)
        if plain:
            # One numpy value per row and step, made in bulk: numpy scalars (or rows) are
            # what simulators such as gymnasium's Discrete check fastest.
            (array,) = arrays.values()
            self._columns = [list(array[:, i]) for i in range(rows)]
        else:
            self._per_step = [
                self._split({k: a[t] for k, a in arrays.items()}) for t in range(max_steps)
            ]

    def column(self, i: int) -> list[Any] | None:
        return self._columns[i] if self._columns is not None else None

    def actions(self, t: int) -> list[Any]:
        return self._per_step[t]

    def recorded(self, steps: int) -> dict[NestedKey, torch.Tensor]:
        nb = len(self._layout.batch)
        out = {}
        for key in self._layout.action_keys:
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
        layout: _Layout,
        steppers: Sequence[Stepper],
        policy: Policy,
        buffers: RolloutBuffers,
        start: TensorDictBase,
        max_steps: int,
        validate: Callable[[TensorDictBase], None] | None,
    ) -> None:
        super().__init__(env, layout, steppers)
        self._policy = policy
        self._validate = validate
        self._root = buffers.root
        self._start = start
        self._max_steps = max_steps
        batch = env.batch_size
        self._batch = batch
        zeros = torch.zeros((*batch, 1), dtype=torch.bool)
        self._zeros = dict.fromkeys(FLAGS, zeros)  # root flags of every step after the first
        self._storage: TrajectoryStorage | None = None
        self._plain = all(s.num_envs is None and s.convert_action is None for s in steppers)

    def actions(self, t: int) -> list[Any]:
        batch, layout = self._batch, self._layout
        data: dict[str, Any] = {
            key: torch.from_numpy(array[:, t].reshape(*batch, *layout.observation[key][0]))
            for key, array in self._root.items()
        }
        if t == 0:
            data.update({flag: self._start.get(flag) for flag in FLAGS if flag in self._start})
        else:
            data.update(self._zeros)
        known = set(data)  # before the call: the policy writes into the TensorDict's dict
        out = self._policy(new_tensordict(data, batch, self._env.device))
        if self._validate is not None:
            self._validate(out)
        if self._storage is None:
            recorded = [
                key
                for key in out.keys(include_nested=True, leaves_only=True)
                if unravel_key(key) not in known
            ]
            self._storage = TrajectoryStorage(out.select(*recorded), self._max_steps)
        self._storage.write(t, out)
        rows = layout.rows
        arrays = {
            key: to_numpy(out.get(key)).reshape(rows, *layout.action_shapes[key])
            for key in layout.action_keys
        }
        if self._plain:
            (array,) = arrays.values()
            return list(array)
        return self._split(arrays)

    def recorded(self, steps: int) -> dict[NestedKey, torch.Tensor]:
        assert self._storage is not None
        trajectory = self._storage.result(steps)
        return dict(trajectory.items(include_nested=True, leaves_only=True))


# ---------------------------------------------------------------------- loops
def _one_loop(
    stepper: Stepper,
    source: ActionSource,
    buffers: RolloutBuffers,
    break_when_any_done: bool,
    episode_limit: int | None,
) -> int:
    """Step one single-env stepper (the common case, kept as lean as a raw gym loop)."""
    step, reset = stepper.step, stepper.reset
    write_next = _writer(stepper, {k: a[0] for k, a in buffers.nxt.items()})
    write_root = _writer(stepper, {k: a[0] for k, a in buffers.root.items()})
    reward, terminated, truncated = buffers.reward[0], buffers.terminated[0], buffers.truncated[0]
    column, actions = source.column(0), source.actions
    limit = sys.maxsize if episode_limit is None else episode_limit
    max_steps = len(reward)
    count = 0
    for t in range(max_steps):
        obs, r, term, trunc, _ = step(column[t] if column is not None else actions(t)[0])
        count += 1
        if count >= limit:
            trunc = True
        write_next(t, obs)
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
        write_root(t + 1, obs)
    return max_steps


def _lockstep_loop(
    steppers: Sequence[Stepper],
    source: ActionSource,
    buffers: RolloutBuffers,
    break_when_any_done: bool,
    episode_limit: int | None,
) -> int:
    """Step single-env steppers in lockstep (row ``i`` is stepper ``i``); the step count."""
    n = len(steppers)
    max_steps = buffers.reward.shape[1]
    rows = range(n)
    reward = list(buffers.reward)  # per-row views, indexed by time only
    terminated, truncated = list(buffers.terminated), list(buffers.truncated)
    steps = [s.step for s in steppers]
    resets = [s.reset for s in steppers]
    write_next = [
        _writer(s, {k: a[i] for k, a in buffers.nxt.items()}) for i, s in enumerate(steppers)
    ]
    write_root = [
        _writer(s, {k: a[i] for k, a in buffers.root.items()}) for i, s in enumerate(steppers)
    ]
    columns = [source.column(i) for i in rows]
    precomputed = all(c is not None for c in columns)
    limit = sys.maxsize if episode_limit is None else episode_limit
    counts = [0] * n
    for t in range(max_steps):
        any_done = False
        last = t + 1 == max_steps
        actions = None if precomputed else source.actions(t)
        for i in rows:
            obs, r, term, trunc, _ = steps[i](columns[i][t] if precomputed else actions[i])
            counts[i] += 1
            if counts[i] >= limit:
                trunc = True
            write_next[i](t, obs)
            reward[i][t] = r
            if term or trunc:
                terminated[i][t] = term
                truncated[i][t] = trunc
                any_done = True
                if not break_when_any_done and not last:
                    obs = resets[i]()[0]
                    counts[i] = 0
            if not last:
                write_root[i](t + 1, obs)
        if any_done and break_when_any_done:
            return t + 1
    return max_steps


def _vector_loop(
    steppers: Sequence[Stepper],
    source: ActionSource,
    buffers: RolloutBuffers,
    break_when_any_done: bool,
    episode_limit: int | None,
) -> int:
    """Step steppers of several rows each (single-env ones count as one row)."""
    max_steps = buffers.reward.shape[1]
    reward, terminated, truncated = buffers.reward, buffers.terminated, buffers.truncated
    plans = []
    lo = 0
    for stepper in steppers:
        rows = slice(lo, lo + stepper.rows)
        lo += stepper.rows
        single = stepper.num_envs is None
        plans.append(
            (
                rows,
                single,
                stepper.step,
                stepper.reset,
                _writer(stepper, buffers.nxt),
                _writer(stepper, buffers.root),
            )
        )
    limit = sys.maxsize if episode_limit is None else episode_limit
    counts = np.zeros(lo, dtype=np.int64)
    for t in range(max_steps):
        any_done = False
        last = t + 1 == max_steps
        actions = source.actions(t)
        for s, (rows, single, step, reset, write_next, write_root) in enumerate(plans):
            obs, r, term, trunc, _ = step(actions[s])
            index = (rows.start, t) if single else (rows, t)
            write_next(index, obs)
            reward[rows, t] = r
            counts[rows] += 1
            trunc = np.asarray(trunc, dtype=bool) | (counts[rows] >= limit)
            term = np.asarray(term, dtype=bool)
            terminated[rows, t] = term
            truncated[rows, t] = trunc
            done = (term | trunc).reshape(-1)
            if done.any():
                any_done = True
                if not break_when_any_done and not last:
                    obs = reset()[0] if single else reset(done)[0]
                    counts[rows][done] = 0
            if not last:
                write_root((rows.start, t + 1) if single else (rows, t + 1), obs)
        if any_done and break_when_any_done:
            return t + 1
    return max_steps


def _finish(
    env: EnvBase,
    layout: _Layout,
    start: TensorDictBase,
    source: ActionSource,
    buffers: RolloutBuffers,
    steps: int,
    max_steps: int,
) -> TensorDictBase:
    """Wrap the first ``steps`` steps of ``buffers`` into the trajectory TensorDict."""
    batch = layout.batch
    nb = len(batch)

    def tensor(array: np.ndarray) -> torch.Tensor:
        view = array[:, :steps]
        # A short rollout keeps only what it used, not the storage for max_steps.
        view = view.copy() if steps < max_steps else view
        return torch.from_numpy(view).reshape(*batch, steps, *array.shape[2:])

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


def stepper_rollout(
    env: EnvBase,
    steppers: Sequence[Stepper],
    max_steps: int,
    start: TensorDictBase,
    *,
    policy: Policy | None,
    break_when_any_done: bool,
    episode_limit: int | None,
    validate: Callable[[TensorDictBase], None] | None = None,
) -> TensorDictBase | None:
    """The rollout of ``env`` from ``start`` by a numpy loop over ``steppers``.

    ``validate`` (if given) checks each of the policy's outputs before it is used.

    Returns ``None`` (the caller then steps through TensorDicts) when this loop cannot
    produce what the TensorDict loop would: ``start`` holds entries the loop would not
    carry (e.g. a recurrent state), the policy reads or writes more than the loop handles,
    or the env's reward and done entries are not the standard ones.
    """
    layout = _Layout(env, steppers)
    if not layout.standard:
        return None
    known = {unravel_key(k) for k in (*layout.observation, *FLAGS)}
    allowed = known
    if policy is not None:
        if env.device.type != "cpu":
            return None  # the loop's observations are CPU tensors
        writes = policy_outputs(policy, env, known)
        if writes is None:
            return None
        allowed = known | writes  # the policy's previous outputs: overwritten at step 0
    if any(unravel_key(k) not in allowed for k in start.keys(True, True)):
        return None
    buffers = RolloutBuffers(layout, max_steps)
    buffers.write_start(start, layout.rows)
    source: ActionSource
    if policy is None:
        source = RandomActions(env, layout, steppers, max_steps)
    else:
        source = PolicyActions(env, layout, steppers, policy, buffers, start, max_steps, validate)
    if len(steppers) == 1 and steppers[0].num_envs is None:
        steps = _one_loop(steppers[0], source, buffers, break_when_any_done, episode_limit)
    elif all(s.num_envs is None for s in steppers):
        steps = _lockstep_loop(steppers, source, buffers, break_when_any_done, episode_limit)
    else:
        steps = _vector_loop(steppers, source, buffers, break_when_any_done, episode_limit)
    return _finish(env, layout, start, source, buffers, steps, max_steps)


# ---------------------------------------------------------------------- one step at a time
class StepperRows:
    """One lockstep step of an env's steppers into numpy row buffers (no TensorDict).

    What a ``ParallelEnv`` worker runs per step: the parent writes the actions into shared
    memory, the worker steps its simulators and writes their results back. Buffers hold
    the env's rows first (its batch flattened): actions ``{key: [rows, *action]}``,
    observations ``{key: [rows, *obs]}``, and ``reward``, ``terminated``, ``truncated``,
    ``done`` of shape ``[rows]``.

    Args:
        env: The env that made ``steppers``.
        steppers: Its steppers.
        actions: Where the actions are read from.
        out: Where each step's observations, reward and flags are written
            (``{key: array}`` with the observation keys and ``"reward"``, ``"terminated"``,
            ``"truncated"``, ``"done"``).

    Raises:
        EnvError: The steppers do not fit the env (see :meth:`EnvBase.steppers`).
    """

    def __init__(
        self,
        env: EnvBase,
        steppers: Sequence[Stepper],
        actions: Mapping[NestedKey, np.ndarray],
        out: Mapping[NestedKey, np.ndarray],
    ) -> None:
        layout = _Layout(env, steppers)
        self.usable = layout.standard
        self._layout = layout
        self._steppers = list(steppers)
        self._actions = actions
        self._out = {key: out[key] for key in layout.observation}
        self._reward, self._done = out[REWARD], out[DONE]
        self._terminated, self._truncated = out[TERMINATED], out[TRUNCATED]
        self._plans = []
        lo = 0
        for stepper in steppers:
            rows = lo if stepper.num_envs is None else slice(lo, lo + stepper.rows)
            lo += stepper.rows
            self._plans.append((stepper, rows))

    def _action(self, stepper: Stepper, rows: Any) -> Any:
        keys = self._layout.action_keys
        if stepper.convert_action is None:
            value = self._actions[keys[0]][rows]
            # A copy: the simulator may keep it, and the shared buffer changes next step.
            return value.copy() if isinstance(value, np.ndarray) else value
        return stepper.convert_action({key: self._actions[key][rows].copy() for key in keys})

    def step(self) -> np.ndarray:
        """Step every simulator once; returns the rows whose episode ended."""
        for stepper, rows in self._plans:
            obs, reward, terminated, truncated, _ = stepper.step(self._action(stepper, rows))
            _write(stepper, self._out, rows, obs)
            self._reward[rows] = reward
            self._terminated[rows] = terminated
            self._truncated[rows] = truncated
        np.logical_or(self._terminated, self._truncated, out=self._done)
        return self._done

    def reset(self, mask: np.ndarray, into: Mapping[NestedKey, np.ndarray]) -> None:
        """Start new episodes in the rows of ``mask``; their first observations go to
        ``into[key][row]`` (the other rows of ``into`` are left as they are)."""
        for stepper, rows in self._plans:
            if stepper.num_envs is None:
                if mask[rows]:
                    _write(stepper, into, rows, stepper.reset()[0])
                continue
            sub = mask[rows]
            if sub.any():
                obs = stepper.reset(sub)[0]
                scratch = {key: np.empty_like(into[key][rows]) for key in self._out}
                _write(stepper, scratch, slice(None), obs)
                for key, values in scratch.items():
                    into[key][rows][sub] = values[sub]


def _write(stepper: Stepper, buffers: Mapping[NestedKey, np.ndarray], index: Any, obs: Any) -> None:
    if stepper.write_observation is None:
        (array,) = buffers.values()
        array[index] = obs
    else:
        stepper.write_observation(obs, buffers, index)
