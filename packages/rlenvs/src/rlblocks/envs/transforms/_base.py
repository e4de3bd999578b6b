"""``Transform``, ``Compose`` and ``TransformedEnv``: composable edits of env inputs and outputs.

A transform edits what an env returns (after ``reset`` and after ``step``), what it reads
(the action, through :meth:`Transform.inv`) and the specs that describe both. The same
transform also works on a plain TensorDict, e.g. on replay-buffer samples::

    env = TransformedEnv(GymEnv("Pendulum-v1"), Compose(StepCounter(200), RewardSum()))
    norm = ObservationNorm(loc=0.0, scale=2.0, in_keys=["observation"])
    batch = norm(buffer.sample())     # root and "next" observations are normalized

Writing a transform
-------------------
* A per-key, stateless edit (scaling, casting, reshaping) only implements
  :meth:`Transform._apply_transform` (value -> value) and, if it changes the spec, one of
  :meth:`Transform._apply_transform_spec` or the ``transform_*_spec`` methods. It is applied
  to every ``in_keys`` entry present, writing ``out_keys``. Set ``stateless = True`` so a
  random-action ``rollout`` may apply it to the whole trajectory at once.
* An action edit implements :meth:`Transform._inv_apply_transform` with ``in_keys_inv``
  (keys of the wrapped env) and ``out_keys_inv`` (keys the policy writes), and
  :meth:`Transform._inv_apply_transform_spec` to derive the outer action spec.
* A stateful transform (counters, running statistics, frame stacks) overrides
  :meth:`Transform._reset` and :meth:`Transform._step`; ``_reset`` must honour the
  ``"_reset"`` mask of partial resets. If its effect on a whole trajectory can be computed
  at once, it may also override :meth:`Transform._call_trajectory` (see ``StepCounter``);
  otherwise random-action rollouts step through it like any other loop.
* A transform that moves data to another device (see ``DeviceCastTransform``) also
  implements :meth:`Transform.transform_env_device`, so that ``TransformedEnv.device`` (and
  the tensors it creates, e.g. random actions) follow.

The input of a (partial) reset goes through :meth:`Transform.inv` before it reaches the
wrapped env, as a step's input does: entries renamed, cast or moved both ways reach the
wrapped env in its own form.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torch import nn

from rlblocks.core import NEXT
from rlblocks.core.specs import Composite, TensorSpec
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs.errors import TransformError

if TYPE_CHECKING:
    from typing import Self

    from rlblocks.envs.transforms._transformed_env import TransformedEnv

__all__ = ["Transform", "Compose"]


def as_key_list(keys: NestedKey | Sequence[NestedKey] | None) -> list[NestedKey]:
    """Normalize a key argument: one key (``str`` or tuple = nested key) or a list of keys."""
    if keys is None:
        return []
    if isinstance(keys, (str, tuple)):
        return [keys]
    return list(keys)


class Transform(nn.Module):
    """Base class of transforms: edits env outputs, inputs (actions) and specs.

    Args:
        in_keys: Entries read by the forward direction (observations, reward, ...).
        out_keys: Where the results are written (default: ``in_keys``, in place).
        in_keys_inv: Keys of the wrapped env written by :meth:`inv` (e.g. its action).
        out_keys_inv: Keys read by :meth:`inv`: what the policy writes (default:
            ``in_keys_inv``).

    Attributes:
        stateless: ``True`` when the output at a step depends only on that step's data (no
            state carried across steps, no effect on when episodes end). A
            ``TransformedEnv`` may then apply the transform to a whole trajectory at once.

    Example:
        >>> class Double(Transform):
        ...     stateless = True
        ...     def _apply_transform(self, value):
        ...         return value * 2
        >>> Double(in_keys=["observation"])(TensorDict(observation=torch.ones(2))).get(
        ...     "observation")
        tensor([2., 2.])
    """

    stateless: ClassVar[bool] = False

    def __init__(
        self,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
        in_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
        out_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        super().__init__()
        self.in_keys = as_key_list(in_keys)
        self.out_keys = as_key_list(out_keys) if out_keys is not None else list(self.in_keys)
        self.in_keys_inv = as_key_list(in_keys_inv)
        self.out_keys_inv = (
            as_key_list(out_keys_inv) if out_keys_inv is not None else list(self.in_keys_inv)
        )
        for a, b, names in (
            (self.in_keys, self.out_keys, "in_keys and out_keys"),
            (self.in_keys_inv, self.out_keys_inv, "in_keys_inv and out_keys_inv"),
        ):
            if len(a) != len(b):
                raise TransformError(
                    f"{type(self).__name__}: {names} must have the same length, got {a} and "
                    f"{b}; give one output key per input key"
                )
        # Not an nn.Module attribute: the container owns the transform, not the reverse.
        object.__setattr__(self, "_container", None)

    # ------------------------------------------------------------------ per-key ops
    def _apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        """Transform one entry read from an ``in_keys`` key (forward direction)."""
        raise NotImplementedError(
            f"{type(self).__name__} has in_keys but does not implement _apply_transform"
        )

    def _inv_apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        """Map one entry read from an ``out_keys_inv`` key to the wrapped env's space."""
        raise NotImplementedError(
            f"{type(self).__name__} has in_keys_inv but does not implement _inv_apply_transform"
        )

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Apply :meth:`_apply_transform` to every ``in_keys`` entry present, in place.

        This is what acts on a reset output, on a step's ``"next"`` TensorDict and on each
        level of a plain TensorDict given to :meth:`forward`.
        """
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            value = tensordict.get(in_key, None)
            if value is not None:
                tensordict.set(out_key, self._apply_transform(value))
        return tensordict

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Apply :meth:`_inv_apply_transform` from ``out_keys_inv`` to ``in_keys_inv``."""
        for in_key, out_key in zip(self.in_keys_inv, self.out_keys_inv):
            value = tensordict.get(out_key, None)
            if value is not None:
                tensordict.set(in_key, self._inv_apply_transform(value))
        return tensordict

    # ------------------------------------------------------------------ env hooks
    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        """Edit the output of the wrapped env's reset.

        Args:
            tensordict: The input of ``reset`` (``None``, or holding a ``"_reset"`` mask for
                a partial reset, and the previous values of entries this transform writes).
            tensordict_reset: What the wrapped env (and the transforms before) returned.

        Returns:
            The edited ``tensordict_reset``.
        """
        return self._call(tensordict_reset)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        """Edit the output of the wrapped env's step.

        Args:
            tensordict: The input of the step (root entries: observation, action, ...).
            next_tensordict: What the wrapped env returned (next observation, reward, done).

        Returns:
            The edited ``next_tensordict``.
        """
        return self._call(next_tensordict)

    def inv(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Map a step's input (the policy's action) to what the wrapped env reads."""
        return self._inv_call(tensordict)

    def _passes_steps(self) -> bool:
        """Whether :meth:`_step` leaves step outputs as they are (lets frame skipping go
        straight to the wrapped env)."""
        cls = type(self)
        return cls._step is Transform._step and (not self.in_keys and cls._call is Transform._call)

    def _has_inv(self) -> bool:
        """Whether :meth:`inv` does anything (lets ``TransformedEnv`` skip a copy)."""
        return (
            bool(self.in_keys_inv)
            or type(self).inv is not Transform.inv
            or (type(self)._inv_call is not Transform._inv_call)
        )

    def _call_trajectory(
        self, trajectory: TensorDictBase, start: TensorDictBase | None = None
    ) -> TensorDictBase:
        """Apply the transform to a whole rollout of the wrapped env at once.

        ``trajectory`` is what the wrapped env's fast rollout returned (time is the last
        batch dim); the result must equal what stepping through the transform would have
        recorded. The rollout began at a fresh reset when ``start`` is ``None``; otherwise
        ``start`` is the (transformed) TensorDict it continued from, e.g. a collector's
        previous batch, holding the per-episode state carried so far. ``TransformedEnv``
        uses this so a transform costs one vectorized call per rollout instead of one per
        step. Stateless transforms get it for free (``_call`` on the root and ``"next"``
        levels); stateful ones may override it (see ``StepCounter``).

        Raises:
            NotImplementedError: The transform cannot be applied to a whole trajectory.
        """
        if not self.stateless:
            raise NotImplementedError(f"{type(self).__name__} has no trajectory form")
        return self.forward(trajectory)

    def _supports_trajectory(self, continuing: bool = False) -> bool:
        """Whether :meth:`_call_trajectory` is available (and the action needs no inverse);
        ``continuing``: also for a rollout that does not start at a fresh reset."""
        overridden = type(self)._call_trajectory is not Transform._call_trajectory
        if continuing and not self.stateless:
            return False  # the per-episode state carried in ``start`` must be read back
        return (self.stateless or overridden) and not self._has_inv()

    def _episode_limit(self) -> int | None:
        """Steps after which this transform truncates episodes (``None``: it does not)."""
        return None

    def transform_env_device(self, device: torch.device) -> torch.device:
        """Return the device of the env seen through this transform.

        Args:
            device: The device of the wrapped env (with the transforms before applied).

        Returns:
            The device of what the transform outputs (default: ``device``, unchanged).
        """
        return device

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Apply the transform to a plain TensorDict (root and ``"next"`` levels), in place.

        This is the use outside an env, e.g. on replay-buffer samples.
        """
        tensordict = self._call(tensordict)
        next_td = tensordict.get(NEXT, None)
        if isinstance(next_td, TensorDictBase):
            tensordict.set(NEXT, self._call(next_td))
        return tensordict

    # ------------------------------------------------------------------ specs
    def _apply_transform_spec(self, spec: TensorSpec) -> TensorSpec:
        """Spec of ``_apply_transform(value)`` for a value of ``spec`` (default: unchanged)."""
        return spec

    def _inv_apply_transform_spec(self, spec: TensorSpec) -> TensorSpec:
        """Outer spec (``out_keys_inv``) for a wrapped env's ``in_keys_inv`` spec."""
        return spec

    def _transform_keys_spec(self, spec: Composite) -> Composite:
        for in_key, out_key in zip(self.in_keys, self.out_keys):
            leaf = spec.get(in_key, None)
            if leaf is not None:
                spec[out_key] = self._apply_transform_spec(leaf)
        return spec

    def _transform_inv_keys_spec(self, spec: Composite) -> Composite:
        for in_key, out_key in zip(self.in_keys_inv, self.out_keys_inv):
            leaf = spec.get(in_key, None)
            if leaf is not None:
                if out_key != in_key:
                    del spec[in_key]
                spec[out_key] = self._inv_apply_transform_spec(leaf)
        return spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        """Return the observation spec seen through this transform.

        ``TransformedEnv`` calls it after the reward, done, action and state spec methods,
        so a transform may derive observations from what it saw of those (as ``RewardSum``
        does).

        Args:
            observation_spec: The wrapped env's spec (a copy the method may edit).
        """
        return self._transform_keys_spec(observation_spec)

    def transform_reward_spec(self, reward_spec: Composite) -> Composite:
        """Return the reward spec seen through this transform (argument may be edited)."""
        return self._transform_keys_spec(reward_spec)

    def transform_done_spec(self, done_spec: Composite) -> Composite:
        """Return the done spec seen through this transform (argument may be edited)."""
        return self._transform_keys_spec(done_spec)

    def transform_action_spec(self, action_spec: Composite) -> Composite:
        """Return the action spec the policy sees (argument may be edited)."""
        return self._transform_inv_keys_spec(action_spec)

    def transform_state_spec(self, state_spec: Composite) -> Composite:
        """Return the state spec seen through this transform (argument may be edited)."""
        return self._transform_inv_keys_spec(state_spec)

    # ------------------------------------------------------------------ place in an env
    @property
    def container(self) -> Compose | TransformedEnv | None:
        """The Compose or TransformedEnv holding this transform, if any."""
        return self._container

    def _set_container(self, container: Compose | TransformedEnv | None) -> None:
        if container is not None and self._container is not None:
            raise TransformError(
                f"{type(self).__name__} already belongs to {type(self._container).__name__}; "
                f"a transform can sit in one place only. Fix: pass transform.clone()"
            )
        object.__setattr__(self, "_container", container)

    @property
    def parent(self) -> EnvBase | None:
        """The env this transform sees: the base env with the transforms before it applied.

        ``None`` while the transform is not attached to a ``TransformedEnv``.
        """
        container = self._container
        return None if container is None else container._parent_of(self)

    def _enclosing_env(self) -> Any:
        """The ``TransformedEnv`` this transform sits in (through Compose levels), or None.

        The env is the first container that is not a transform: this module does not
        import the env class, which imports it.
        """
        node: Any = self._container
        while isinstance(node, Transform):
            node = node._container
        return node

    def _invalidate_specs(self) -> None:
        """Tell the enclosing env to recompute its specs (call after a spec-changing edit)."""
        env = self._enclosing_env()
        if env is not None:
            env.invalidate_specs()

    def clone(self) -> Self:
        """Return a detached deep copy (no container), e.g. to reuse in another env."""
        container = self._container
        object.__setattr__(self, "_container", None)
        try:
            return copy.deepcopy(self)
        finally:
            object.__setattr__(self, "_container", container)

    def extra_repr(self) -> str:
        parts = [f"in_keys={self.in_keys}"]
        if self.out_keys != self.in_keys:
            parts.append(f"out_keys={self.out_keys}")
        if self.in_keys_inv:
            parts.append(f"in_keys_inv={self.in_keys_inv}")
        if self.out_keys_inv != self.in_keys_inv:
            parts.append(f"out_keys_inv={self.out_keys_inv}")
        return ", ".join(parts)


class Compose(Transform):
    """A sequence of transforms applied in order (and in reverse order by :meth:`inv`).

    Args:
        *transforms: The transforms, first applied first.

    Example:
        >>> t = Compose(StepCounter(200), RewardSum())
        >>> t.append(DoubleToFloat())
        >>> len(t)
        3
    """

    def __init__(self, *transforms: Transform) -> None:
        super().__init__()
        self.transforms = nn.ModuleList()
        # Parent views by id of transform, built on first use (a view recomputes its specs
        # when built); cleared by TransformedEnv.invalidate_specs.
        self._parent_views: dict[int, TransformedEnv] = {}
        for transform in transforms:
            self.append(transform)

    def __getstate__(self) -> dict[str, Any]:
        # Views hold the wrapped env: neither copies nor pickles of the transforms take it.
        state = super().__getstate__()
        state["_parent_views"] = {}
        return state

    @property
    def stateless(self) -> bool:  # type: ignore[override]
        return all(t.stateless for t in self.transforms)

    def append(self, transform: Transform) -> None:
        """Add ``transform`` at the end."""
        self.insert(len(self.transforms), transform)

    def insert(self, index: int, transform: Transform) -> None:
        """Insert ``transform`` before position ``index`` (negative counts from the end)."""
        if not isinstance(transform, Transform):
            raise TransformError(
                f"Compose accepts Transform instances, got {type(transform).__name__}"
            )
        n = len(self.transforms)
        if not -n - 1 <= index <= n:
            raise TransformError(f"insert index {index} is out of range for {n} transforms")
        if index < 0:
            index += n + 1
        transform._set_container(self)
        self.transforms.insert(index, transform)
        self._invalidate_specs()

    def __getitem__(self, index: int) -> Transform:
        return self.transforms[index]

    def __len__(self) -> int:
        return len(self.transforms)

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.transforms)

    def _parent_of(self, transform: Transform) -> EnvBase | None:
        env = self.parent
        if env is None:
            return None
        view = self._parent_views.get(id(transform))
        if view is not None and view.base_env is env:
            return view
        index = next(i for i, t in enumerate(self.transforms) if t is transform)
        if index == 0:
            return env
        view = self._enclosing_env()._view(env, list(self.transforms[:index]))
        self._parent_views[id(transform)] = view
        return view

    def _clear_parent_views(self) -> None:
        """Forget the cached parent views, here and in nested ``Compose`` transforms."""
        self._parent_views.clear()
        for transform in self.transforms:
            if isinstance(transform, Compose):
                transform._clear_parent_views()

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        for transform in self.transforms:
            tensordict = transform._call(tensordict)
        return tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        for transform in self.transforms:
            tensordict = transform(tensordict)
        return tensordict

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        for transform in self.transforms:
            tensordict_reset = transform._reset(tensordict, tensordict_reset)
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        for transform in self.transforms:
            next_tensordict = transform._step(tensordict, next_tensordict)
        return next_tensordict

    def inv(self, tensordict: TensorDictBase) -> TensorDictBase:
        for transform in reversed(self.transforms):
            tensordict = transform.inv(tensordict)
        return tensordict

    def _passes_steps(self) -> bool:
        return all(t._passes_steps() for t in self.transforms)

    def _has_inv(self) -> bool:
        return any(t._has_inv() for t in self.transforms)

    def _supports_trajectory(self, continuing: bool = False) -> bool:
        return all(t._supports_trajectory(continuing) for t in self.transforms)

    def _call_trajectory(
        self, trajectory: TensorDictBase, start: TensorDictBase | None = None
    ) -> TensorDictBase:
        for transform in self.transforms:
            trajectory = transform._call_trajectory(trajectory, start)
        return trajectory

    def _episode_limit(self) -> int | None:
        limits = [t._episode_limit() for t in self.transforms]
        return min((x for x in limits if x is not None), default=None)

    def transform_env_device(self, device: torch.device) -> torch.device:
        for transform in self.transforms:
            device = transform.transform_env_device(device)
        return device

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        for transform in self.transforms:
            observation_spec = transform.transform_observation_spec(observation_spec)
        return observation_spec

    def transform_reward_spec(self, reward_spec: Composite) -> Composite:
        for transform in self.transforms:
            reward_spec = transform.transform_reward_spec(reward_spec)
        return reward_spec

    def transform_done_spec(self, done_spec: Composite) -> Composite:
        for transform in self.transforms:
            done_spec = transform.transform_done_spec(done_spec)
        return done_spec

    def transform_action_spec(self, action_spec: Composite) -> Composite:
        for transform in self.transforms:
            action_spec = transform.transform_action_spec(action_spec)
        return action_spec

    def transform_state_spec(self, state_spec: Composite) -> Composite:
        for transform in self.transforms:
            state_spec = transform.transform_state_spec(state_spec)
        return state_spec

    def extra_repr(self) -> str:
        return ""
