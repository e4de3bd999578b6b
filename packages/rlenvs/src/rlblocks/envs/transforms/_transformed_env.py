"""``TransformedEnv``: an env seen through a transform (see :mod:`.transforms._base`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey, unravel_key
from torch import nn

from rlblocks.core import RESET
from rlblocks.core.specs import Composite
from rlblocks.envs._env_base import EnvBase, Policy
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import Compose, Transform

if TYPE_CHECKING:
    from typing import Self

__all__ = ["TransformedEnv"]


class TransformedEnv(EnvBase):
    """An env seen through a transform: its outputs, inputs and specs are edited.

    ``env.transform`` is always a :class:`Compose`; add transforms with
    :meth:`append_transform` / :meth:`insert_transform`. Specs are computed from the base
    env's specs through the transforms and cached.

    Args:
        env: The wrapped env.
        transform: A transform (or a ``Compose``) to apply; more can be appended later.
        check_actions: Default of ``step(check=...)`` (default: the base env's).

    Example:
        >>> env = TransformedEnv(GymEnv("CartPole-v1"), StepCounter(max_steps=100))
        >>> env.append_transform(RewardSum())
        >>> td = env.rollout(1000)
        >>> int(td["next", "step_count"].max()) <= 100
        True
    """

    def __init__(
        self,
        env: EnvBase,
        transform: Transform | None = None,
        *,
        check_actions: bool | None = None,
    ) -> None:
        if not isinstance(env, EnvBase):
            raise TransformError(
                f"TransformedEnv wraps an rlblocks EnvBase, got {type(env).__name__}; wrap "
                f"gymnasium envs with GymWrapper first"
            )
        super().__init__(
            device=env.device,
            batch_size=env.batch_size,
            check_actions=env.check_actions if check_actions is None else check_actions,
        )
        self._base_env = env
        self._specs_stale = True
        compose = transform if isinstance(transform, Compose) else Compose()
        compose._set_container(self)
        self._transform = compose
        if transform is not None and transform is not compose:
            compose.append(transform)
        self.invalidate_specs()

    @classmethod
    def _view(cls, env: EnvBase, transforms: list[Transform]) -> TransformedEnv:
        """An env applying ``transforms`` that does not take ownership of them (for parent)."""
        view = cls.__new__(cls)
        EnvBase.__init__(
            view, device=env.device, batch_size=env.batch_size, check_actions=env.check_actions
        )
        view._base_env = env
        compose = Compose()
        compose.transforms = nn.ModuleList(transforms)  # registered, but not re-parented
        object.__setattr__(compose, "_container", view)
        view._transform = compose
        view.invalidate_specs()
        return view

    # ------------------------------------------------------------------ structure
    @property
    def base_env(self) -> EnvBase:
        """The wrapped env."""
        return self._base_env

    @property
    def group_map(self) -> dict[str, list[str]]:  # type: ignore[override]
        """The base env's agent groups (transforms do not regroup agents)."""
        return self._base_env.group_map

    @property
    def transform(self) -> Compose:
        """The transforms applied, as one ``Compose``."""
        return self._transform

    def _parent_of(self, transform: Transform) -> EnvBase:
        """What a transform held directly by this env sees: the base env."""
        return self._base_env

    @property
    def batch_locked(self) -> bool:  # type: ignore[override]
        return self._base_env.batch_locked

    @property
    def device(self) -> torch.device:
        """The base env's device as the transforms move it (``Transform.transform_env_device``).

        New tensors the env creates (random actions, missing done flags) go there too.
        """
        return self._device

    def append_transform(self, transform: Transform) -> Self:
        """Apply ``transform`` after the current ones; returns ``self``."""
        self._transform.append(transform)
        return self

    def insert_transform(self, index: int, transform: Transform) -> Self:
        """Insert ``transform`` before position ``index`` of :attr:`transform`."""
        self._transform.insert(index, transform)
        return self

    def invalidate_specs(self) -> None:
        """Recompute the specs on next access (after editing a transform or the base env)."""
        self._specs_stale = True
        self._keys_cache = None
        # The transforms' parent views derive their specs from the same sources.
        self._transform._clear_parent_views()
        # EnvBase reads _device wherever it creates tensors; the transforms may move them.
        self._device = self._transform.transform_env_device(self._base_env.device)

    # ------------------------------------------------------------------ specs
    @property
    def _specs(self) -> dict[str, Composite]:  # type: ignore[override]
        if self._specs_stale:
            base = self._base_env
            t = self._transform
            # Observation last: a transform may derive an observation from what it saw of
            # the other specs (RewardSum's sums have the reward's spec).
            specs = {
                "reward": t.transform_reward_spec(base.full_reward_spec.clone()),
                "done": t.transform_done_spec(base.full_done_spec.clone()),
                "action": t.transform_action_spec(base.full_action_spec.clone()),
                "state": t.transform_state_spec(base.full_state_spec.clone()),
            }
            specs["observation"] = t.transform_observation_spec(base.full_observation_spec.clone())
            self.__dict__["_specs_value"] = specs
            self.__dict__["_needs_inv_value"] = t._has_inv()
            self._specs_stale = False
            self._keys_cache = None
        return self.__dict__["_specs_value"]

    @_specs.setter
    def _specs(self, value: dict[str, Composite]) -> None:
        # EnvBase.__init__ stores default specs; a TransformedEnv derives its own instead.
        pass

    def _set_spec(self, name: str, spec: Composite) -> None:
        raise TransformError(
            f"the specs of a TransformedEnv come from its base env and transforms; set "
            f"base_env.full_{name}_spec or add a transform that edits it"
        )

    # ------------------------------------------------------------------ env API
    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        base_input = tensordict
        # The specs first (cached): a transform that does not fit its env says so here.
        if self._needs_inv and tensordict is not None:
            # As for a step: the base env reads its own keys, dtypes and device (a partial
            # reset keeps the state it reads back for the elements it does not reset).
            base_input = self._transform.inv(tensordict.copy())
        out = self._base_env.reset(base_input, **kwargs)
        # Kept for the fast rollout, which restarts from the base env's own reset output
        # (after a full reset only: a partial one leaves episodes running).
        self._last_base_reset = out
        reset = self._transform._reset(tensordict, out.copy())
        partial = tensordict is not None and RESET in tensordict.keys()
        self._last_reset = None if partial else reset
        return reset

    def fast_rollout(
        self,
        max_steps: int,
        tensordict: TensorDictBase,
        *,
        policy: Policy | None = None,
        break_when_any_done: bool = True,
        episode_limit: int | None = None,
        check: bool = False,
    ) -> TensorDictBase | None:
        # Let the base env run its own fast loop, then apply the transforms once to the
        # whole trajectory. From a fresh reset any trajectory-capable transform works; from
        # elsewhere (a collector's next batch) the transforms must carry their per-episode
        # state in ``tensordict``. A policy, or a start other than the base env's own reset
        # output, needs the base observations untouched by the transforms.
        transform = self._transform
        base = self._base_env
        fresh = tensordict is self.__dict__.get("_last_reset")
        if self._needs_inv or not transform._supports_trajectory(continuing=not fresh):
            return None
        if (policy is not None or not fresh) and self._edits_observations():
            return None
        # What the base env's loop reads: its observations and done flags (a reset also
        # carries other entries of its input, e.g. the transforms' running sums).
        own = [*base.full_observation_spec.keys(True, True), *base.full_done_spec.keys(True, True)]
        start = (self._last_base_reset if fresh else tensordict).select(*own, strict=False)
        limits = [x for x in (transform._episode_limit(), episode_limit) if x is not None]
        trajectory = base.fast_rollout(
            max_steps,
            start,
            policy=policy,
            break_when_any_done=break_when_any_done,
            episode_limit=min(limits, default=None),
            check=check,
        )
        if trajectory is None:
            return None
        return transform._call_trajectory(trajectory, None if fresh else tensordict)

    def _edits_observations(self) -> bool:
        """Whether a transform reads or writes an observation entry of the base env."""

        def leaves(transform: Transform) -> list[Transform]:
            if isinstance(transform, Compose):
                return [leaf for t in transform.transforms for leaf in leaves(t)]
            return [transform]

        touched = {
            unravel_key(key) for t in leaves(self._transform) for key in (*t.in_keys, *t.out_keys)
        }
        observed = self._base_env.full_observation_spec.keys(True, True)
        return any(unravel_key(key) in touched for key in observed)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        base_input = self._transform.inv(tensordict.copy()) if self._needs_inv else tensordict
        base = self._base_env
        next_td = base._step(base_input)  # the backend protocol's step: input untouched
        if not base.step_returns_done_flags:
            self._fill_done(next_td)
        self._last_reset = None  # the fast rollout starts from a fresh reset only
        return self._transform._step(tensordict, next_td)

    def _step_frames(
        self,
        tensordict: TensorDictBase,
        previous: TensorDictBase,
        frames: int,
        max_pool: Sequence[NestedKey] = (),
    ) -> TensorDictBase:
        # Transforms that leave steps alone (e.g. NoopResetEnv) let the base env take the
        # frames its own (possibly faster) way.
        if not self._needs_inv and self._transform._passes_steps():
            return self._base_env._step_frames(tensordict, previous, frames, max_pool)
        return super()._step_frames(tensordict, previous, frames, max_pool)

    def any_done(self, done: torch.Tensor) -> bool:
        # The base env's answer holds while the transforms keep its done tensor (it
        # compares the tensor's identity).
        return self._base_env.any_done(done)

    @property
    def _needs_inv(self) -> bool:
        self._specs  # noqa: B018 (refreshes the cached flag with the specs)
        return self.__dict__["_needs_inv_value"]

    def _set_seed(self, seed: int | None) -> None:
        self._base_env.set_seed(seed)

    def _num_seeds(self) -> int:
        return self._base_env._num_seeds()

    def _close(self) -> None:
        self._base_env.close()

    def state_dict(self) -> dict[str, Any]:
        """The transforms' state (running statistics, ...), as ``nn.Module.state_dict``."""
        return self._transform.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` returned."""
        self._transform.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return f"TransformedEnv(env={self._base_env!r}, transform={self._transform!r})"
