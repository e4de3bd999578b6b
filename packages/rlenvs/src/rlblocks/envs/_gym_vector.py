"""Gymnasium vector envs with manual resets: :class:`GymVectorSteps`.

Whatever a vector env's autoreset mode, rlblocks sees one model (the :class:`Stepper`
contract): ``step`` returns the observation that *ends* an episode, and the ``reset`` that
follows starts the next one. With ``AutoresetMode.SAME_STEP`` gym has already started it
inside ``step`` (the final observation is in ``info["final_obs"]``), so that reset costs no
gym call; with ``NEXT_STEP`` and ``DISABLED`` it is a ``reset_mask`` reset. Both the
TensorDict path of :class:`GymWrapper` and the numpy loops use this one object, so they
share its view of the envs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rlblocks.envs._gym_spaces import SpaceLayout
from rlblocks.envs.errors import UnsupportedEnvOperationError

__all__ = ["GymVectorSteps"]


class GymVectorSteps:
    """Steps and resets a gymnasium vector env as the :class:`Stepper` contract wants.

    Args:
        env: The vector env.
        layout: Its (single-env) observation layout.
        autoreset: The env's autoreset mode: ``"SameStep"``, ``"NextStep"`` or ``"Disabled"``.
        partial_reset_ok: Whether ``reset(options={"reset_mask": ...})`` is available.
    """

    def __init__(
        self, env: Any, layout: SpaceLayout, autoreset: str, partial_reset_ok: bool
    ) -> None:
        self.env = env
        self.layout = layout
        self.same_step = autoreset == "SameStep"
        self.autoreset = autoreset
        self.partial_reset_ok = partial_reset_ok
        n = env.num_envs
        self.auto_reset_rows = np.zeros(n, dtype=bool)  # SAME_STEP rows gym already reset
        self.last_obs: Any = None  # SAME_STEP: gym's last observation (reset rows included)
        # SAME_STEP: the done rows of the last step and whether all rows were done.
        self.last_done: np.ndarray | None = None
        self.last_all_done = False

    def step(self, action: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, Any]:
        """Step every env; the observation holds the *final* one of every ended episode."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.same_step:
            self.last_obs = obs
            done = terminated | truncated
            self.auto_reset_rows |= done
            self.last_done = done
            self.last_all_done = bool(done.all())
            if done.any():
                obs = self._with_final_obs(obs, info, done)
        return obs, reward, terminated, truncated, info

    def reset_all(self, **kwargs: Any) -> tuple[Any, Mapping[str, Any]]:
        """Reset every env (``kwargs`` go to gym's ``reset``, e.g. ``seed``)."""
        obs, info = self.env.reset(**kwargs)
        self.auto_reset_rows[:] = False
        self.last_obs = obs
        self.last_done = None
        return obs, info

    def reset(self, mask: np.ndarray) -> tuple[Any, Mapping[str, Any]]:
        """Start new episodes in the rows of ``mask``; the observations of all rows."""
        if not self.same_step:
            return self._reset_mask(mask)
        extra = mask & ~self.auto_reset_rows
        self.auto_reset_rows[mask] = False
        if not extra.any():
            return self.last_obs, {}
        obs, info = self._reset_mask(extra)
        # Rows not reset keep our view of them (the vector env's may be stale after a
        # rollout that stepped its sub-envs directly).
        layout = self.layout
        merged = {leaf.key: np.array(leaf.extract(self.last_obs)) for leaf in layout.leaves}
        for leaf in layout.leaves:
            merged[leaf.key][extra] = np.asarray(leaf.extract(obs))[extra]
        self.last_obs = layout.to_gym(merged)
        return self.last_obs, info

    def resync(self, obs: Any) -> None:
        """The envs were stepped by someone else and now hold ``obs``, no episode pending."""
        self.last_obs = obs
        self.auto_reset_rows[:] = False
        self.last_done = None

    def _reset_mask(self, mask: np.ndarray) -> tuple[Any, Mapping[str, Any]]:
        if not self.partial_reset_ok:
            raise UnsupportedEnvOperationError(
                f"GymWrapper: cannot reset only some envs of a {type(self.env).__name__} "
                f"(autoreset mode {self.autoreset}): it has no reset_mask option. Use "
                f"gymnasium.vector.SyncVectorEnv/AsyncVectorEnv, or reset all envs"
            )
        return self.env.reset(options={"reset_mask": mask})

    def _with_final_obs(self, obs: Any, info: Mapping[str, Any], done: np.ndarray) -> Any:
        layout = self.layout
        final = info["final_obs"]
        if layout.simple and layout.leaves[0].start is None:
            buffer = np.array(obs)
            for i in np.flatnonzero(done):
                buffer[i] = final[i]
            return buffer
        buffers = {leaf.key: np.array(leaf.extract(obs)) for leaf in layout.leaves}
        for i in np.flatnonzero(done):
            layout.write(final[i], buffers, i)
        return layout.to_gym(buffers)
