"""``to_gymnasium``: expose an rlblocks env as a ``gymnasium.Env``.

Useful to run gymnasium tooling (checkers, wrappers, third-party agents) on a native or
transformed rlblocks env.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from tensordict import TensorDictBase

from rlblocks.core import NEXT, TERMINATED, TRUNCATED
from rlblocks.core.specs import OneHot
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs._gym import import_gymnasium
from rlblocks.envs._gym_spaces import spec_to_space
from rlblocks.envs.errors import EnvError

__all__ = ["to_gymnasium"]


def _to_numpy(value: torch.Tensor, space: Any) -> Any:
    from gymnasium import spaces

    array = value.detach().cpu().numpy()
    if isinstance(space, spaces.Discrete):
        return int(array)
    return array.astype(space.dtype, copy=False)


def to_gymnasium(env: EnvBase, *, render_mode: str | None = None) -> Any:
    """Return a ``gymnasium.Env`` that runs ``env`` (which must have ``batch_size == []``).

    Observations: one observation key gives that entry's space; several give a ``Dict``
    space keyed by the entries' names (nested keys joined with ``"/"``). ``reset(seed=s)``
    calls ``env.set_seed(s)`` first, so seeded resets are reproducible. Closing the
    gymnasium env closes the rlblocks env.

    Args:
        env: A single (unbatched) rlblocks env with one reward entry. Several action
            entries become a ``Dict`` action space nested like the action spec.
        render_mode: Reported as the gymnasium env's ``render_mode`` (rendering is not
            forwarded).

    Returns:
        A ``gymnasium.Env`` that passes ``gymnasium.utils.env_checker.check_env``.

    Raises:
        EnvError: ``env`` is batched, or has several reward entries.
        MissingDependencyError: gymnasium is not installed.

    Example:
        >>> from gymnasium.utils.env_checker import check_env
        >>> check_env(to_gymnasium(PendulumEnv()))
    """
    gym = import_gymnasium("to_gymnasium")
    if env.batch_size:
        raise EnvError(
            f"to_gymnasium needs an unbatched env, got batch_size {list(env.batch_size)}; "
            f"export one sub-env, or use gymnasium's vector API on several exports"
        )
    reward_key = env.reward_key
    action_keys = env.action_keys
    obs_keys = env.observation_keys
    obs_spec = env.full_observation_spec
    if len(obs_keys) == 1:
        observation_space = spec_to_space(obs_spec[obs_keys[0]], f"observation {obs_keys[0]!r}")
    else:
        observation_space = gym.spaces.Dict(
            {_name(k): spec_to_space(obs_spec[k], f"observation {k!r}") for k in obs_keys}
        )
    action_spec = env.full_action_spec
    if len(action_keys) == 1:
        action_space = spec_to_space(action_spec[action_keys[0]], f"action {action_keys[0]!r}")
    else:
        action_space = spec_to_space(action_spec, "action")

    class RLBlocksGymEnv(gym.Env):
        """A gymnasium view of an rlblocks env (made by ``rlblocks.envs.to_gymnasium``)."""

        metadata: ClassVar[dict[str, Any]] = {
            "render_modes": [] if render_mode is None else [render_mode]
        }

        def __init__(self) -> None:
            self.observation_space = observation_space
            self.action_space = action_space
            self.render_mode = render_mode
            self.rlblocks_env = env
            self._td: TensorDictBase | None = None

        def _observation(self, td: TensorDictBase) -> Any:
            if len(obs_keys) == 1:
                return _to_numpy(td.get(obs_keys[0]), observation_space)
            return {_name(k): _to_numpy(td.get(k), observation_space[_name(k)]) for k in obs_keys}

        def reset(
            self, *, seed: int | None = None, options: dict[str, Any] | None = None
        ) -> tuple[Any, dict[str, Any]]:
            super().reset(seed=seed)
            if seed is not None:
                env.set_seed(seed)
            self._td = env.reset()
            return self._observation(self._td), {}

        def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
            if self._td is None:
                raise EnvError("call reset() before step() on the exported env")
            td = self._td.copy()
            for key in action_keys:
                value = action
                if len(action_keys) > 1:
                    for part in (key,) if isinstance(key, str) else key:
                        value = value[part]
                td.set(key, _to_tensor(value, action_spec[key], env.device))
            td = env.step(td)
            next_td = td.get(NEXT)
            terminated = bool(next_td.get(TERMINATED).any())
            truncated = bool(next_td.get(TRUNCATED).any())
            reward = float(next_td.get(reward_key).sum())
            self._td = env.step_mdp(td)
            return self._observation(next_td), reward, terminated, truncated, {}

        def close(self) -> None:
            env.close()

    return RLBlocksGymEnv()


def _to_tensor(value: Any, spec: Any, device: torch.device) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value), device=device)
    if isinstance(spec, OneHot):
        return spec.to_categorical_spec().to_one_hot(tensor).to(spec.dtype)
    return tensor.to(spec.dtype).reshape(spec.shape)


def _name(key: Any) -> str:
    return key if isinstance(key, str) else "/".join(key)
