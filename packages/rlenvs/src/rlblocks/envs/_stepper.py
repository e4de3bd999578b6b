"""The optional fast path of the env backend protocol: :class:`Stepper`.

An env that can step its simulator without TensorDicts (gymnasium, dm_control, EnvPool, ...)
returns steppers from :meth:`EnvBase.steppers`. Generic code then drives them with numpy
loops that write straight into preallocated buffers: ``rollout``, ``SerialEnv`` (which
concatenates its sub-envs' steppers), ``TransformedEnv`` and the collectors (through
:meth:`EnvBase.fast_rollout`), and ``ParallelEnv`` workers. A backend gets all of that by
describing its step in gymnasium's terms; it never needs to know who drives it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tensordict.utils import NestedKey

from rlblocks.core.utils import check_int

__all__ = ["Stepper", "repeat_action", "StepFn"]

#: ``step(action) -> (observation, reward, terminated, truncated, info)``, gymnasium's step.
StepFn = Callable[[Any], tuple[Any, Any, Any, Any, Any]]


def repeat_action(step: StepFn, frame_skip: int) -> StepFn:
    """A step function that repeats each action ``frame_skip`` times, summing the rewards.

    The repetition stops early when the episode ends (``terminated`` or ``truncated``); the
    observation, flags and info are those of the last simulator step. With ``frame_skip=1``
    this returns ``step`` itself (no extra call per step).

    Args:
        step: A gymnasium-style step function of one env.
        frame_skip: How many simulator steps one step takes (an int >= 1).

    Returns:
        The repeating step function.

    Example:
        >>> step = repeat_action(gym_env.step, 4)
        >>> obs, reward, terminated, truncated, info = step(action)  # up to 4 gym steps
    """
    frame_skip = check_int(frame_skip, "frame_skip", "repeat_action")
    if frame_skip == 1:
        return step

    def skipping(action: Any) -> tuple[Any, Any, Any, Any, Any]:
        obs, reward, terminated, truncated, info = step(action)
        for _ in range(frame_skip - 1):
            if terminated or truncated:
                break
            obs, more, terminated, truncated, info = step(action)
            reward += more
        return obs, reward, terminated, truncated, info

    return skipping


class Stepper:
    """How to step one env (or one vector of envs) without TensorDicts.

    A backend builds steppers in :meth:`EnvBase.steppers`; generic numpy loops call them.
    The semantics are gymnasium's, with one simplification that the stepper guarantees:
    **resets are manual**. ``step`` returns the observation that *ends* an episode (for a
    simulator that restarts episodes by itself, as gymnasium's ``SAME_STEP`` vector envs
    or EnvPool do, the stepper returns the final observation from ``step`` and the already
    started episode from the ``reset`` the loop calls next, without restarting it twice).

    Single env (``num_envs is None``): ``step(action)`` returns Python or numpy scalars for
    the reward and flags; ``reset()`` starts a new episode.

    Vector of envs (``num_envs = N``): ``step(actions)`` takes the ``N`` actions at once and
    returns arrays of ``N`` rewards and flags; ``reset(mask)`` restarts the rows where the
    boolean ``mask`` is set and returns the observations of all ``N`` rows.

    The stepper's observations and actions are those of the env that made it, in the
    env's own structure: ``write_observation`` puts an observation into per-key numpy
    buffers, ``convert_action`` builds the simulator's action from per-key numpy arrays.
    Either may be ``None`` when the env has a single observation (action) key whose value
    the simulator takes and returns as a plain array; the loops then copy it directly,
    which is what makes them as fast as the simulator's own loop.

    Args:
        step: ``step(action) -> (observation, reward, terminated, truncated, info)``; the
            ``info`` is not read. Frame skipping, if any, happens inside (see
            :func:`repeat_action`).
        reset: ``reset() -> (observation, info)`` for a single env; ``reset(mask) ->
            (observation, info)`` for a vector of envs.
        num_envs: ``None`` for a single env, else the number of rows one call steps.
        frame_skip: Declares how many simulator steps one ``step`` takes (informational:
            the stepper applies it itself).
        write_observation: ``write_observation(observation, buffers, index)`` writes the
            observation into ``buffers[key][index]`` for every observation key of the env
            (``index`` selects the row(s) and time step). ``None``: the observation is the
            array of the env's only observation key.
        convert_action: ``convert_action(arrays)`` turns ``{action key: array}`` (the env's
            action keys, shaped like one action, or ``N`` of them for a vector) into what
            ``step`` takes. ``None``: ``step`` takes the array of the env's only action key.

    Example:
        A backend whose simulator follows gymnasium's single-env API::

            class MyEnv(EnvBase):
                def steppers(self):
                    return [Stepper(self._sim.step, self._sim.reset)]
    """

    __slots__ = ("convert_action", "frame_skip", "num_envs", "reset", "step", "write_observation")

    def __init__(
        self,
        step: StepFn,
        reset: Callable[..., tuple[Any, Any]],
        *,
        num_envs: int | None = None,
        frame_skip: int = 1,
        write_observation: Callable[[Any, Mapping[NestedKey, np.ndarray], Any], None] | None = None,
        convert_action: Callable[[Mapping[NestedKey, np.ndarray]], Any] | None = None,
    ) -> None:
        if not callable(step) or not callable(reset):
            raise TypeError(
                f"Stepper: step and reset must be callables, got {type(step).__name__} and "
                f"{type(reset).__name__}"
            )
        self.step = step
        self.reset = reset
        self.num_envs = None if num_envs is None else check_int(num_envs, "num_envs", "Stepper")
        self.frame_skip = check_int(frame_skip, "frame_skip", "Stepper")
        self.write_observation = write_observation
        self.convert_action = convert_action

    @property
    def rows(self) -> int:
        """How many rows of the env's batch this stepper steps (1 for a single env)."""
        return 1 if self.num_envs is None else self.num_envs

    def __repr__(self) -> str:
        kind = "single env" if self.num_envs is None else f"{self.num_envs} envs"
        return f"Stepper({kind}, frame_skip={self.frame_skip}, step={self.step!r})"
