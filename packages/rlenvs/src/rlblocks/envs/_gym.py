"""The gymnasium backend: :class:`GymWrapper` and :class:`GymEnv`.

Single envs and gymnasium vector envs are both supported; a vector env becomes a batched
env of batch size ``[num_envs]``. Gymnasium 1.x semantics are kept: ``terminated`` and
``truncated`` are separate flags, and whatever the vector env's autoreset mode, the
observation and reward of the last step of an episode land under ``"next"`` while the
first observation of the next episode is what ``reset`` (partial, with a ``"_reset"``
mask) returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey, unravel_key

from rlblocks.core import DONE, NEXT, PIXELS, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.errors import missing_dependency
from rlblocks.core.fast_td import fast_get, new_tensordict, top_items
from rlblocks.core.specs import Bounded, Composite, TensorSpec, Unbounded
from rlblocks.core.utils import check_int
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs._gym_spaces import SpaceLayout, numpy_dtype, torch_dtype
from rlblocks.envs._gym_vector import GymVectorSteps
from rlblocks.envs._numpy_rollout import to_numpy
from rlblocks.envs._stepper import Stepper, repeat_action
from rlblocks.envs.errors import EnvError, UnsupportedEnvOperationError

__all__ = ["GymWrapper", "GymEnv", "import_gymnasium"]

_TRUE = np.ones(1, dtype=bool)
_FALSE = np.zeros(1, dtype=bool)
_CACHED_GYM_INTS = 1024  # Discrete action spaces up to this size have their gym ints cached


def import_gymnasium(feature: str) -> Any:
    """Import gymnasium, or raise the error that names ``pip install rlblocks-envs[gymnasium]``."""
    try:
        import gymnasium
    except ImportError as err:
        raise missing_dependency(feature, "gymnasium", "rlblocks-envs[gymnasium]") from err
    return gymnasium


def _no_tensors(obs: Any) -> dict[Any, torch.Tensor]:
    """The observation tensors of an env that keeps only pixels: none."""
    return {}


def _info_spec(value: Any, key: str) -> TensorSpec:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in "USV":
        raise EnvError(
            f"GymWrapper: info entry {key!r} holds {type(value).__name__} values, which are "
            f"not numeric; give info_keys only numeric entries"
        )
    return Unbounded(shape=array.shape, dtype=torch_dtype(array.dtype))


class GymWrapper(EnvBase):
    """Wrap a ``gymnasium.Env`` or ``gymnasium.vector.VectorEnv`` as an rlblocks env.

    Keys: a Box/Discrete observation is ``"observation"``; the keys of a Dict observation
    space sit at the root (nested Dicts nest); Tuple entries are ``"0"``, ``"1"``, ...
    under their parent key. The action is ``"action"`` (Dict/Tuple actions nest under it).
    Discrete values are ``Categorical`` indices (shape ``[*batch]``), MultiBinary values
    ``Binary`` int8.

    Vector envs: with ``AutoresetMode.SAME_STEP`` the final observation is read from
    ``info["final_obs"]`` and the already-reset observation is returned by the next partial
    reset; with ``NEXT_STEP`` and ``DISABLED`` partial resets use ``reset_mask`` (available on
    ``SyncVectorEnv``/``AsyncVectorEnv``).

    Args:
        env: The gymnasium env (not closed by anyone else while wrapped).
        frame_skip: Repeat each action this many times, summing rewards (single envs).
        from_pixels: Add ``"pixels"`` from ``env.render()`` (the env must have
            ``render_mode="rgb_array"``).
        pixels_only: With ``from_pixels``, drop the other observations.
        device: Device of the returned tensors.
        info_keys: ``info`` entries copied under their name next to the observation: a
            mapping ``{name: unbatched spec}``, or names whose spec is read from a probe
            reset (and step, if the reset info lacks them). Missing entries read as zeros.
        check_actions: Validate actions in ``step`` (see :class:`EnvBase`).

    Example:
        >>> import gymnasium as gym
        >>> env = GymWrapper(gym.make("Pendulum-v1"))
        >>> env.rollout(10).batch_size
        torch.Size([10])
    """

    step_returns_done_flags = True

    def __init__(
        self,
        env: Any,
        *,
        frame_skip: int = 1,
        from_pixels: bool = False,
        pixels_only: bool = True,
        device: Any = None,
        info_keys: Mapping[str, TensorSpec] | Sequence[str] | None = None,
        check_actions: bool = True,
    ) -> None:
        gym = import_gymnasium("GymWrapper")
        vector = isinstance(env, gym.vector.VectorEnv)
        if not vector and not isinstance(env, gym.Env):
            raise TypeError(
                f"GymWrapper wraps a gymnasium.Env or gymnasium.vector.VectorEnv, got "
                f"{type(env).__name__}; create it with gymnasium.make(...) or use GymEnv(id)"
            )
        frame_skip = check_int(frame_skip, "frame_skip", "GymWrapper")
        if vector and frame_skip != 1:
            raise UnsupportedEnvOperationError(
                "GymWrapper: frame_skip > 1 is only supported for single envs (a vector env "
                "may end an episode in the middle of a skip); wrap the single envs with "
                "gymnasium's MaxAndSkipObservation before vectorizing instead"
            )
        batch = (env.num_envs,) if vector else ()
        super().__init__(device=device, batch_size=batch, check_actions=check_actions)
        self._env = env
        self._vector = vector
        self.frame_skip = frame_skip
        self.from_pixels = from_pixels
        self.pixels_only = pixels_only
        self._pending_seed: int | None = None
        obs_space = env.single_observation_space if vector else env.observation_space
        act_space = env.single_action_space if vector else env.action_space
        self._obs_layout = SpaceLayout(obs_space, "observation", batch, self.device, True)
        self._act_layout = SpaceLayout(act_space, "action", batch, self.device, False)
        # A Discrete action of a single env goes to gym as a numpy int64 (envs index with it,
        # and gymnasium's Discrete.contains checks it faster than a Python int).
        leaf = self._act_layout.leaves[0]
        self._int_action = self._act_layout.simple and not leaf.shape and not vector
        self._int_action_n = getattr(leaf.spec, "n", 0)
        self._int_action_start = leaf.start or 0
        # Those numpy ints, made once (they are immutable) unless there are many: a valid
        # action then costs no numpy scalar.
        cached = self._int_action and self._int_action_n <= _CACHED_GYM_INTS
        n_cached = self._int_action_n if cached else 0
        self._gym_ints = tuple(np.int64(i + self._int_action_start) for i in range(n_cached))
        self._check_next_action = False  # set by _check_action, done by _gym_action
        # One step of the wrapped env (frame skip included), for step() and fast rollouts.
        self._gym_step = repeat_action(env.step, frame_skip)
        self._vector_steps: GymVectorSteps | None = None
        if vector:
            mode = env.metadata.get("autoreset_mode")
            self._vector_steps = GymVectorSteps(
                env,
                self._obs_layout,
                getattr(mode, "value", mode) or "NextStep",
                isinstance(env, (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv)),
            )
        # Set by GymEnv for the SyncVectorEnv it made: fast rollouts may step the sub-envs.
        self._owns_sync_vector = False
        self._steppers: list[Stepper] | None = None

        observation = Composite(shape=batch, device=self.device)
        # Gym observation -> {key: fresh tensor} (bound once: it runs on every step).
        self._obs_tensors: Callable[[Any], dict[Any, torch.Tensor]] = _no_tensors
        if not (from_pixels and pixels_only):
            observation.update(self._obs_layout.spec)
            self._obs_tensors = self._obs_layout.to_tensors
        self._info_specs: dict[str, TensorSpec] = {}
        if from_pixels or info_keys:
            self._probe(from_pixels, info_keys)
        if from_pixels:
            observation[PIXELS] = self._pixel_spec
        for key, spec in self._info_specs.items():
            observation[key] = spec
        self.full_observation_spec = observation
        self.full_action_spec = self._act_layout.spec
        self._has_extras = bool(from_pixels or self._info_specs)
        # Flat keys and tensors already on the device: build outputs without checks.
        self._fast_output = self.device.type == "cpu" and all(
            isinstance(k, str) for k in observation.keys(True, True)
        )
        self.reward_spec = Unbounded(shape=(*batch, 1), device=self.device)

    # ------------------------------------------------------------------ construction
    def _probe(
        self, from_pixels: bool, info_keys: Mapping[str, TensorSpec] | Sequence[str] | None
    ) -> None:
        """Reset (and maybe step) once to learn the pixel shape and the info entries' specs."""
        batch = self.batch_size
        wanted = dict(info_keys) if isinstance(info_keys, Mapping) else {}
        names = [k for k in (info_keys or []) if k not in wanted]
        if not from_pixels and not names:
            self._info_specs = {k: s.expand(*batch, *s.shape) for k, s in wanted.items()}
            return
        if from_pixels and getattr(self._env, "render_mode", None) != "rgb_array":
            raise EnvError(
                f"GymWrapper(from_pixels=True) needs an env created with "
                f"render_mode='rgb_array', got render_mode={self._env.render_mode!r}"
            )
        _, info = self._env.reset()
        if from_pixels:
            frame = self._render()
            self._pixel_spec = Bounded(
                0, 255, shape=frame.shape, dtype=torch.uint8, device=self.device
            )
        found = {k: info[k] for k in names if k in info}
        if len(found) < len(names):
            _, _, _, _, step_info = self._env.step(self._env.action_space.sample())
            found.update({k: step_info[k] for k in names if k in step_info and k not in found})
        missing = [k for k in names if k not in found]
        if missing:
            raise EnvError(
                f"GymWrapper: info_keys {missing} are not in the info of a reset or a step; "
                f"give their specs explicitly: info_keys={{'name': Unbounded(shape=...)}}"
            )
        for key, value in found.items():
            spec = _info_spec(value, key)
            if self._vector:  # values are already batched
                spec = Unbounded(shape=spec.shape[1:], dtype=spec.dtype)
            wanted[key] = spec
        self._info_specs = {
            k: s.expand(*batch, *s.shape).to(self.device) for k, s in wanted.items()
        }

    def __getstate__(self) -> dict[str, Any]:
        # The frame-skipping step is a closure: rebuilt after unpickling, as the steppers.
        return {**super().__getstate__(), "_gym_step": None, "_steppers": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._gym_step = repeat_action(self._env.step, self.frame_skip)

    # ------------------------------------------------------------------ properties
    @property
    def env(self) -> Any:
        """The wrapped gymnasium env."""
        return self._env

    @property
    def is_vector(self) -> bool:
        """Whether the wrapped env is a gymnasium vector env."""
        return self._vector

    # ------------------------------------------------------------------ conversions
    def _render(self) -> np.ndarray:
        frames = self._env.render()
        return np.stack(frames) if self._vector else np.asarray(frames)

    def _check_action(self, tensordict: TensorDictBase) -> None:
        if self._int_action:
            # A Discrete action of a single env: _gym_action, which step calls next, reads
            # the index gym needs anyway, and checks it on the way.
            self._check_next_action = True
            return
        super()._check_action(tensordict)

    def _gym_action(self, tensordict: TensorDictBase) -> Any:
        if self._int_action:
            check, self._check_next_action = self._check_next_action, False
            value = fast_get(tensordict, "action")
            # A 0-d entry implies a TensorDict of batch size [], the env's: checked too.
            if value is not None and value.dtype is torch.int64 and not value.ndim:
                index = int(value)
                if 0 <= index < self._int_action_n:
                    gym_ints = self._gym_ints
                    return gym_ints[index] if gym_ints else np.int64(index + self._int_action_start)
            if check:
                super()._check_action(tensordict)  # raises, naming the key, spec and value
            return np.int64(int(value) + self._int_action_start)
        layout = self._act_layout
        return layout.to_gym([to_numpy(fast_get(tensordict, key)) for key in layout.keys])

    def _extras(self, info: Mapping[str, Any], data: dict[Any, torch.Tensor]) -> None:
        """Add pixels and the chosen info entries to ``data``."""
        if self.from_pixels:
            data[PIXELS] = torch.from_numpy(np.array(self._render(), dtype=np.uint8))
        for key, spec in self._info_specs.items():
            data[key] = self._info_value(info, key, spec)

    def _info_value(self, info: Mapping[str, Any], key: str, spec: TensorSpec) -> torch.Tensor:
        value = info.get(key, None)
        dtype = numpy_dtype(spec.dtype)
        if value is None:
            return torch.zeros(spec.shape, dtype=spec.dtype)
        array = np.array(value, dtype=dtype).reshape(spec.shape)
        if self._vector:
            present = np.asarray(info.get("_" + key, True)).reshape((-1,) + (1,) * (array.ndim - 1))
            array = np.where(present, array, np.zeros((), dtype=dtype))
        return torch.from_numpy(array)

    def _output(self, data: dict[Any, torch.Tensor]) -> TensorDictBase:
        if self._fast_output:
            return new_tensordict(data, self._batch_size, self._device)
        return TensorDict(data, batch_size=self._batch_size, device=self._device)

    # ------------------------------------------------------------------ EnvBase API
    def _set_seed(self, seed: int | None) -> None:
        self._pending_seed = seed
        self._env.action_space.seed(seed)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        vector = self._vector_steps
        rows = None if mask is None or vector is None else mask.reshape(-1).cpu().numpy()
        # A partial reset; also when every row is masked, if gym already reset some
        # (SAME_STEP): resetting those again would skip an episode start.
        if rows is not None and not (
            rows.all() and (self._pending_seed is not None or not vector.auto_reset_rows.any())
        ):
            obs, info = vector.reset(rows)
        else:
            seed, self._pending_seed = self._pending_seed, None
            if vector is not None:
                obs, info = vector.reset_all(seed=seed, **kwargs)
            else:
                obs, info = self._env.reset(seed=seed, **kwargs)
        self._done_hint = None
        data = self._obs_tensors(obs)
        self._extras(info, data)
        self._zero_flags(data)
        return self._output(data)

    def _zero_flags(self, data: dict[Any, torch.Tensor]) -> None:
        """The done flags of a reset (all ``False``), as ``EnvBase._fill_done`` writes them."""
        flags = np.zeros((3, *self.batch_size, 1), dtype=bool)  # numpy: cheaper than torch
        data[DONE] = torch.from_numpy(flags[0])
        data[TERMINATED] = torch.from_numpy(flags[1])
        data[TRUNCATED] = torch.from_numpy(flags[2])

    def maybe_reset(self, tensordict: TensorDictBase) -> TensorDictBase:
        # SAME_STEP vector env right after a step with some (not all) rows done: gym has
        # already reset them and returned their first observation, so the partial reset is
        # ``reset(td with "_reset" = done)`` without calling gym or reading the mask back.
        hint = self._done_hint
        vector = self._vector_steps
        if (
            hint is not None
            and vector is not None
            and vector.last_done is not None
            and not vector.last_all_done
            and type(tensordict) is TensorDict
            and hint[0] is fast_get(tensordict, DONE)
        ):
            if not hint[1]:
                return tensordict
            done = vector.last_done
            if not (done & ~vector.auto_reset_rows).any():
                return self._same_step_reset(tensordict, vector, done)
        return super().maybe_reset(tensordict)

    def _same_step_reset(
        self, tensordict: TensorDictBase, vector: GymVectorSteps, done: np.ndarray
    ) -> TensorDictBase:
        """What ``reset`` returns for ``tensordict`` with ``"_reset"`` = ``done`` (SAME_STEP)."""
        self._check_open("reset")
        self._check_batch(tensordict, "reset")
        obs, _ = vector.reset(done)  # no gym call: these rows are already reset
        self._done_hint = None
        data = self._obs_tensors(obs)
        self._extras({}, data)
        self._zero_flags(data)
        skip = {RESET, NEXT, *self._keys().action_top}
        skip.update(k if isinstance(k, str) else k[0] for k in data)  # keys of the reset
        carried = [(k, v) for k, v in top_items(tensordict) if k not in skip]
        fast = self._fast_output and tensordict.device == self.device
        if fast and all(isinstance(v, torch.Tensor) for _, v in carried):
            data.update(carried)
            return self._output(data)
        out = self._output(data)
        for key, value in carried:
            out.set(key, value)
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = self._gym_action(tensordict)
        vector = self._vector_steps
        if vector is not None:
            obs, reward, terminated, truncated, info = vector.step(action)
            n = self.batch_size[0]
            data = self._obs_tensors(obs)
            data[REWARD] = torch.from_numpy(np.asarray(reward, dtype=np.float32).reshape(n, 1))
            flags = np.empty((3, n, 1), dtype=bool)
            flags[0, :, 0] = terminated
            flags[1, :, 0] = truncated
            np.logical_or(flags[0], flags[1], out=flags[2])
            data[TERMINATED] = torch.from_numpy(flags[0])
            data[TRUNCATED] = torch.from_numpy(flags[1])
            data[DONE] = torch.from_numpy(flags[2])
            if vector.same_step:
                self._record_done(data[DONE], bool(flags[2].any()))
        else:
            return self._single_output(*self._gym_step(action))
        if self._has_extras:
            self._extras(info, data)
        return self._output(data)

    def _single_output(
        self, obs: Any, reward: float, terminated: bool, truncated: bool, info: Mapping[str, Any]
    ) -> TensorDictBase:
        """The output of a single env's step from what gymnasium's ``step`` returned."""
        data = self._obs_tensors(obs)
        data[REWARD] = torch.from_numpy(np.array([reward], dtype=np.float32))
        # Copying a one-element array is cheaper than building one from a list.
        data[TERMINATED] = torch.from_numpy((_TRUE if terminated else _FALSE).copy())
        data[TRUNCATED] = torch.from_numpy((_TRUE if truncated else _FALSE).copy())
        done = bool(terminated or truncated)
        data[DONE] = done_flag = torch.from_numpy((_TRUE if done else _FALSE).copy())
        self._record_done(done_flag, done)
        if self._has_extras:
            self._extras(info, data)
        return self._output(data)

    def _step_frames(
        self,
        tensordict: TensorDictBase,
        previous: TensorDictBase,
        frames: int,
        max_pool: Sequence[NestedKey] = (),
    ) -> TensorDictBase:
        # A single env with one array observation on the CPU repeats the action with bare
        # gymnasium steps, and builds one TensorDict for the last.
        layout = self._obs_layout
        key = layout.leaves[0].key if layout.simple else None
        plain = layout.simple and layout.leaves[0].start is None and self.device.type == "cpu"
        if (
            frames < 1
            or self._vector_steps is not None
            or not plain
            or any(unravel_key(k) != key for k in max_pool)
        ):
            return super()._step_frames(tensordict, previous, frames, max_pool)
        action = self._gym_action(tensordict)
        step = self._gym_step
        before = obs = None
        reward = float(previous.get(REWARD))
        terminated = truncated = False
        info: Mapping[str, Any] = {}
        for _ in range(frames):
            before, (obs, more, terminated, truncated, info) = obs, step(action)
            reward += more
            if terminated or truncated:
                break
        if max_pool:
            # gymnasium hands each step's observation over as a new array.
            first = previous.get(key).numpy() if before is None else before
            obs = np.maximum(first, obs)
        return self._single_output(obs, reward, terminated, truncated, info)

    def _close(self) -> None:
        self._env.close()

    # ------------------------------------------------------------------ fast path
    def steppers(self) -> list[Stepper] | None:
        """Steppers of the wrapped env: one for a single env, one for a vector env, and one
        per sub-env of a ``SyncVectorEnv`` that ``GymEnv`` made (stepped directly, without
        the vector env's autoreset bookkeeping). ``None`` with pixels or info entries, which
        the numpy loops do not record."""
        if self.from_pixels or self._info_specs:
            return None
        if self._steppers is None:
            obs, act = self._obs_layout, self._act_layout
            write = None if obs.simple and obs.leaves[0].start is None else obs.write
            convert = None if act.simple and act.leaves[0].start is None else act.to_gym
            vector = self._vector_steps
            if self._owns_sync_vector:
                self._steppers = [
                    Stepper(sub.step, sub.reset, write_observation=write, convert_action=convert)
                    for sub in self._env.envs
                ]
            elif vector is not None:
                self._steppers = [
                    Stepper(
                        vector.step,
                        vector.reset,
                        num_envs=self._env.num_envs,
                        write_observation=write,
                        convert_action=convert,
                    )
                ]
            else:
                self._steppers = [
                    Stepper(
                        self._gym_step,
                        self._env.reset,
                        frame_skip=self.frame_skip,
                        write_observation=write,
                        convert_action=convert,
                    )
                ]
        return self._steppers

    def fast_rollout(
        self, max_steps: int, tensordict: TensorDictBase, **kwargs: Any
    ) -> TensorDictBase | None:
        """:meth:`EnvBase.fast_rollout` over :meth:`steppers`, then this env's own view of
        where its simulators are is brought up to date."""
        trajectory = super().fast_rollout(max_steps, tensordict, **kwargs)
        if trajectory is not None and self._owns_sync_vector:
            # The sub-envs were stepped directly: what the vector view holds as the envs'
            # current observation is the last next one (no env was reset after it).
            assert self._vector_steps is not None
            last = trajectory.get(NEXT)[:, -1]
            layout = self._obs_layout
            self._vector_steps.resync(
                layout.to_gym({key: to_numpy(last.get(key)) for key in layout.keys})
            )
        self._done_hint = None
        return trajectory


class GymEnv(GymWrapper):
    """Create a gymnasium env by id and wrap it (see :class:`GymWrapper`).

    Args:
        env_id: A registered gymnasium id, e.g. ``"CartPole-v1"``.
        num_envs: Create a vector env of this many copies (batch size ``[num_envs]``);
            ``None`` creates a single env.
        frame_skip: Repeat each action this many times (single envs).
        from_pixels: Add ``"pixels"`` rendered with ``render_mode="rgb_array"``.
        pixels_only: With ``from_pixels``, keep only the pixels.
        device: Device of the returned tensors.
        info_keys: ``info`` entries to copy (see :class:`GymWrapper`).
        vectorization_mode: ``"sync"`` (default) or ``"async"`` for ``num_envs``.
        check_actions: Validate actions in ``step``.
        **kwargs: Passed to ``gymnasium.make`` / ``gymnasium.make_vec``.

    Raises:
        MissingDependencyError: gymnasium is not installed.
        gymnasium.error.Error: Unknown id (gymnasium's message suggests close ids).

    Example:
        >>> env = GymEnv("CartPole-v1", num_envs=8)
        >>> env.rollout(100, break_when_any_done=False).batch_size
        torch.Size([8, 100])
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int | None = None,
        frame_skip: int = 1,
        from_pixels: bool = False,
        pixels_only: bool = True,
        device: Any = None,
        *,
        info_keys: Mapping[str, TensorSpec] | Sequence[str] | None = None,
        vectorization_mode: str = "sync",
        check_actions: bool = True,
        **kwargs: Any,
    ) -> None:
        gym = import_gymnasium("GymEnv")
        if from_pixels:
            kwargs.setdefault("render_mode", "rgb_array")
        try:
            if num_envs is None:
                env = gym.make(env_id, **kwargs)
            else:
                # SAME_STEP keeps one gym call per step and hands over the final
                # observation; with pixels the final frame is only available without
                # autoreset, so partial resets go through reset_mask instead.
                mode = gym.vector.AutoresetMode
                vector_kwargs = {"autoreset_mode": mode.DISABLED if from_pixels else mode.SAME_STEP}
                env = gym.make_vec(
                    env_id,
                    num_envs=num_envs,
                    vectorization_mode=vectorization_mode,
                    vector_kwargs=vector_kwargs,
                    **kwargs,
                )
        except gym.error.Error as err:
            err.add_note(
                f"(raised by rlblocks GymEnv({env_id!r}, num_envs={num_envs}, kwargs={kwargs}))"
            )
            raise
        self.env_id = env_id
        GymWrapper.__init__(
            self,
            env,
            frame_skip=frame_skip,
            from_pixels=from_pixels,
            pixels_only=pixels_only,
            device=device,
            info_keys=info_keys,
            check_actions=check_actions,
        )
        self._owns_sync_vector = type(env) is gym.vector.SyncVectorEnv and not from_pixels

    def __repr__(self) -> str:
        return f"GymEnv({self.env_id!r}, batch_size={list(self.batch_size)}, device={self.device})"
