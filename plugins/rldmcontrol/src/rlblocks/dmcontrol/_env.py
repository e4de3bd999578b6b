"""dm_control environments as rlblocks envs: :class:`DMControlWrapper` and :class:`DMControlEnv`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core import ACTION, DONE, PIXELS, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.errors import MissingDependencyError
from rlblocks.core.specs import Bounded, Composite, Unbounded
from rlblocks.core.utils import check_int
from rlblocks.dmcontrol._rendering import MUJOCO_GL, choose_gl_backend, rendering_error
from rlblocks.dmcontrol._specs import (
    arrays_to_action,
    convert_spec,
    to_numpy,
    to_tensors,
    write_values,
)
from rlblocks.dmcontrol._tasks import check_task, import_suite
from rlblocks.dmcontrol.errors import DMControlError
from rlblocks.envs import EnvBase, Stepper, repeat_action
from rlblocks.envs.errors import UnsupportedEnvOperationError

__all__ = ["DMControlWrapper", "DMControlEnv", "DISCOUNT"]

DISCOUNT = "discount"
"""Key of dm_env's discount of the last transition (1 while running, 0 on termination)."""

# numpy's RandomState, which dm_control tasks draw from, takes 32-bit seeds.
_SEED_RANGE = 2**32


class DMControlWrapper(EnvBase):
    """Wrap a ``dm_env.Environment`` (a dm_control suite or composer env) as an rlblocks env.

    Keys: the entries of dm_env's observation dict sit at the root under their names
    (nested dicts nest), ``"pixels"`` holds rendered frames with ``from_pixels``, and
    ``"discount"`` holds dm_env's discount of the transition. The action is ``"action"``.

    Episode ends: a ``LAST`` step with discount 0 is ``terminated`` (the task ended the
    episode: no bootstrapping from the next state); any other ``LAST`` step, such as
    dm_control's time limit (discount 1), is ``truncated``. ``done`` is their union.

    Specs come from dm_env's specs: a dict of specs is a ``Composite``, ``BoundedArray`` is
    ``Bounded``, ``Array`` is ``Unbounded``, ``DiscreteArray`` is ``Categorical``. Dtypes are
    kept (physics values are float64; add ``DoubleToFloat`` for float32 policies) and scalar
    observations get shape ``[1]``.

    Args:
        env: The dm_env environment (not stepped by anyone else while wrapped).
        from_pixels: Add ``"pixels"``, a ``uint8`` frame ``[height, width, 3]`` rendered by
            MuJoCo after every reset and step (needs an OpenGL backend; see the README).
        pixels_only: With ``from_pixels``, drop dm_env's own observations.
        frame_skip: Repeat each action this many times, summing the rewards (stopping early
            when the episode ends).
        camera_id: The MuJoCo camera rendered.
        height: Frame height in pixels.
        width: Frame width in pixels.
        device: Device of the returned tensors.
        check_actions: Validate actions in ``step`` (see :class:`~rlblocks.envs.EnvBase`).

    Raises:
        TypeError: ``env`` is not a ``dm_env.Environment``.
        ValueError: A size or ``frame_skip`` is not a positive int, or ``pixels_only``
            without ``from_pixels``.
        RenderingError: ``from_pixels`` and MuJoCo cannot render.

    Example:
        >>> from dm_control import suite
        >>> env = DMControlWrapper(suite.load("cartpole", "swingup"))
        >>> env.rollout(10)["next", "position"].shape
        torch.Size([10, 3])
    """

    step_returns_done_flags = True

    def __init__(
        self,
        env: Any,
        *,
        from_pixels: bool = False,
        pixels_only: bool = False,
        frame_skip: int = 1,
        camera_id: int | str = 0,
        height: int = 84,
        width: int = 84,
        device: Any = None,
        check_actions: bool = True,
    ) -> None:
        import dm_env

        who = type(self).__name__
        if not isinstance(env, dm_env.Environment):
            raise TypeError(
                f"{who} wraps a dm_env.Environment, got {type(env).__name__}; build one with "
                f"dm_control.suite.load(domain, task), or use DMControlEnv(domain, task)"
            )
        self.frame_skip = check_int(frame_skip, "frame_skip", who)
        self.height = check_int(height, "height", who)
        self.width = check_int(width, "width", who)
        if pixels_only and not from_pixels:
            raise ValueError(f"{who}: pixels_only=True needs from_pixels=True")
        super().__init__(device=device, batch_size=(), check_actions=check_actions)
        self._env = env
        self.from_pixels = bool(from_pixels)
        self.pixels_only = bool(pixels_only)
        self.camera_id = camera_id
        self._episode_over = True

        obs_spec = env.observation_spec()
        if not isinstance(obs_spec, Mapping):
            obs_spec = {"observation": obs_spec}
        self._obs_spec = Composite(shape=(), device=self.device)
        if not self.pixels_only:
            self._obs_spec = convert_spec(obs_spec, "observation", self.device)
        observation = self._obs_spec.clone()
        if self.from_pixels:
            observation[PIXELS] = self._probe_pixels()
        if DISCOUNT in observation.keys():
            raise DMControlError(
                f"{who}: the env has an observation named {DISCOUNT!r}, which is also the key "
                f"of dm_env's discount; rename that observation in the task"
            )
        discount_dtype = convert_spec(env.discount_spec(), "discount", self.device).dtype
        observation[DISCOUNT] = Bounded(
            0.0, 1.0, shape=(1,), dtype=discount_dtype, device=self.device
        )
        self.full_observation_spec = observation

        self._dm_action_spec = env.action_spec()
        self.full_action_spec = Composite(
            {ACTION: convert_spec(self._dm_action_spec, "action", self.device)},
            shape=(),
            device=self.device,
        )
        reward_spec = env.reward_spec()
        if isinstance(reward_spec, Mapping) or int(np.prod(reward_spec.shape)) != 1:
            raise DMControlError(
                f"{who}: only scalar rewards are supported, the env's reward spec is "
                f"{reward_spec!r}; wrap the env to sum or select one reward"
            )
        self._reward_dtype = convert_spec(reward_spec, "reward", self.device).dtype
        self.reward_spec = Unbounded(shape=(1,), dtype=self._reward_dtype, device=self.device)
        self._discount_dtype = discount_dtype
        self._skip_step = repeat_action(self._dm_step, self.frame_skip)
        self._steppers = [
            Stepper(
                self._skip_step,
                self._dm_reset,
                frame_skip=self.frame_skip,
                write_observation=self._write_observation,
                convert_action=self._convert_action,
            )
        ]

    # ------------------------------------------------------------------ properties
    @property
    def env(self) -> Any:
        """The wrapped dm_env environment."""
        return self._env

    @property
    def physics(self) -> Any:
        """The MuJoCo physics of the wrapped env (dm_control envs only)."""
        physics = getattr(self._env, "physics", None)
        if physics is None:
            raise UnsupportedEnvOperationError(
                f"{type(self).__name__}: the wrapped {type(self._env).__name__} has no "
                f"MuJoCo physics; pixels and physics access need a dm_control environment"
            )
        return physics

    # ------------------------------------------------------------------ helpers
    def _render(self) -> np.ndarray:
        return self.physics.render(height=self.height, width=self.width, camera_id=self.camera_id)

    def _probe_pixels(self) -> Bounded:
        """Render one frame now, so that a missing OpenGL backend fails here, clearly."""
        self.physics  # noqa: B018 (an env without physics fails here, with its own message)
        try:
            frame = np.asarray(self._render())
        except Exception as exc:  # MuJoCo and PyOpenGL raise many kinds of errors
            raise rendering_error(type(self).__name__, exc) from exc
        return Bounded(0, 255, shape=frame.shape, dtype=torch.uint8, device=self.device)

    def _output(
        self, observation: Any, discount: float, reward: float | None, flags: tuple[bool, bool]
    ) -> TensorDictBase:
        data: dict[str, Any] = {}
        if not self.pixels_only:
            data.update(to_tensors(observation, self._obs_spec))
        if self.from_pixels:
            data[PIXELS] = torch.from_numpy(np.array(self._render(), dtype=np.uint8))
        data[DISCOUNT] = torch.tensor([discount], dtype=self._discount_dtype)
        terminated, truncated = flags
        data[TERMINATED] = torch.tensor([terminated])
        data[TRUNCATED] = torch.tensor([truncated])
        data[DONE] = torch.tensor([terminated or truncated])
        if reward is not None:
            data[REWARD] = torch.tensor([reward], dtype=self._reward_dtype)
        return TensorDict(data, batch_size=(), device=self.device)

    # ------------------------------------------------------------------ EnvBase API
    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        if kwargs:
            raise TypeError(
                f"{type(self).__name__}.reset() takes no keyword arguments, got {sorted(kwargs)}"
            )
        (observation, discount), _ = self._dm_reset()
        return self._output(observation, discount, None, (False, False))

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._episode_over:
            # dm_env would silently start a new episode and return its first observation
            # as if it followed the action.
            raise DMControlError(
                f"{type(self).__name__}.step(): the episode is over (or was never started); "
                f"call reset() first (rollout and collectors do it for you)"
            )
        action = to_numpy(tensordict.get(ACTION), self._dm_action_spec)
        (observation, discount), reward, terminated, truncated, _ = self._skip_step(action)
        return self._output(observation, discount, reward, (terminated, truncated))

    # ------------------------------------------------------------------ dm_env in gym terms
    # One implementation of a step (episode ends, frame skip) for step() and the fast path.
    def _dm_reset(self) -> tuple[tuple[Any, float], None]:
        timestep = self._env.reset()
        self._episode_over = False
        return (timestep.observation, 1.0), None

    def _dm_step(self, action: Any) -> tuple[tuple[Any, float], float, bool, bool, None]:
        timestep = self._env.step(action)
        discount = 1.0 if timestep.discount is None else float(timestep.discount)
        last = timestep.last()
        # dm_env: discount 0 at a LAST step means the task ended the episode; a LAST step
        # with a non-zero discount (dm_control's time limit gives 1) only cuts it short.
        terminated = last and discount == 0.0
        self._episode_over = last
        return (
            (timestep.observation, discount),
            float(timestep.reward),
            terminated,
            (last and not terminated),
            None,
        )

    def _write_observation(
        self, observation: tuple[Any, float], buffers: Mapping[Any, np.ndarray], index: Any
    ) -> None:
        values, discount = observation
        if not self.pixels_only:
            write_values(values, self._obs_spec, buffers, index)
        buffers[DISCOUNT][index] = discount

    def _convert_action(self, arrays: Mapping[Any, np.ndarray]) -> Any:
        return arrays_to_action(arrays, self._dm_action_spec)

    def steppers(self) -> list[Stepper] | None:
        """One stepper of the wrapped env (none with pixels: the fast loops record no
        frames), so ``rollout``, ``SerialEnv`` and the collectors step dm_env directly."""
        if self.from_pixels:
            return None
        return self._steppers

    def _set_seed(self, seed: int | None) -> None:
        task = getattr(self._env, "task", None)
        random_state = getattr(task, "random", None)
        if random_state is None:  # composer environments keep it on the env
            random_state = getattr(self._env, "random_state", None)
        if not isinstance(random_state, np.random.RandomState):
            raise UnsupportedEnvOperationError(
                f"{type(self).__name__}.set_seed(): the wrapped {type(self._env).__name__} "
                f"exposes no numpy RandomState (task.random or random_state) to seed; seed "
                f"it when you build it instead"
            )
        random_state.seed(None if seed is None else seed % _SEED_RANGE)

    def _close(self) -> None:
        self._env.close()


class DMControlEnv(DMControlWrapper):
    """A DeepMind Control Suite task, e.g. ``DMControlEnv("cartpole", "swingup")``.

    Also made by ``rlblocks.core.make_env("dm_control:cartpole/swingup", **kwargs)``;
    :func:`~rlblocks.dmcontrol.list_tasks` lists the ids. See :class:`DMControlWrapper` for
    the keys, specs and episode ends. ``set_seed(s)`` seeds the task's random state, so the
    next ``reset()`` (and every step with the same actions) is reproducible.

    Physics runs headless. With ``from_pixels=True`` and ``MUJOCO_GL`` unset on a machine
    without a display, ``MUJOCO_GL`` is set to ``egl`` (or ``osmesa``) before dm_control is
    imported, when that library is installed.

    Args:
        domain: Suite domain, e.g. ``"cartpole"``.
        task: Task of that domain, e.g. ``"swingup"``.
        from_pixels: Add rendered ``"pixels"``.
        pixels_only: With ``from_pixels``, drop the physics observations.
        frame_skip: Repeat each action this many times, summing rewards.
        camera_id: The MuJoCo camera rendered.
        height: Frame height in pixels.
        width: Frame width in pixels.
        device: Device of the returned tensors.
        task_kwargs: Passed to the task (e.g. ``{"random": 0}``, ``{"time_limit": 5.0}``).
        environment_kwargs: Passed to dm_control's ``control.Environment`` (e.g.
            ``{"flat_observation": True}``).
        check_actions: Validate actions in ``step``.

    Raises:
        UnknownTaskError: ``domain/task`` is no suite task; the message suggests close ids.
        RenderingError: ``from_pixels`` and MuJoCo cannot render.

    Example:
        >>> env = DMControlEnv("cartpole", "swingup")
        >>> env.set_seed(0)
        1
        >>> traj = env.rollout(100)
        >>> traj["next", "reward"].shape
        torch.Size([100, 1])
    """

    def __init__(
        self,
        domain: str,
        task: str,
        *,
        from_pixels: bool = False,
        pixels_only: bool = False,
        frame_skip: int = 1,
        camera_id: int | str = 0,
        height: int = 84,
        width: int = 84,
        device: Any = None,
        task_kwargs: Mapping[str, Any] | None = None,
        environment_kwargs: Mapping[str, Any] | None = None,
        check_actions: bool = True,
    ) -> None:
        suite = self._import_suite(from_pixels)
        check_task(domain, task)
        self.domain, self.task = domain, task
        try:
            env = suite.load(
                domain,
                task,
                task_kwargs=dict(task_kwargs or {}),
                environment_kwargs=dict(environment_kwargs or {}),
            )
        except Exception as exc:
            exc.add_note(
                f"(raised by dm_control while building {domain}/{task} with "
                f"task_kwargs={task_kwargs}, environment_kwargs={environment_kwargs})"
            )
            raise
        try:
            super().__init__(
                env,
                from_pixels=from_pixels,
                pixels_only=pixels_only,
                frame_skip=frame_skip,
                camera_id=camera_id,
                height=height,
                width=width,
                device=device,
                check_actions=check_actions,
            )
        except BaseException:
            env.close()
            raise

    @staticmethod
    def _import_suite(from_pixels: bool) -> Any:
        if not from_pixels:
            return import_suite()
        chosen = choose_gl_backend()
        try:
            return import_suite()
        except MissingDependencyError:
            raise
        except (ImportError, RuntimeError) as exc:  # the chosen OpenGL backend cannot load
            if chosen is not None:
                # Leave the process as it was: physics-only envs must still import.
                os.environ.pop(MUJOCO_GL, None)
            raise rendering_error("DMControlEnv", exc) from exc

    def __repr__(self) -> str:
        return (
            f"DMControlEnv({self.domain!r}, {self.task!r}, from_pixels={self.from_pixels}, "
            f"frame_skip={self.frame_skip}, device={self.device})"
        )
