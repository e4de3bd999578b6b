"""Key edits: :class:`RenameTransform`, :class:`SelectTransform`, :class:`ExcludeTransform`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import ACTION, DONE_KEYS, NEXT, REWARD
from rlblocks.core.specs import Composite
from rlblocks.envs.errors import TransformError
from rlblocks.envs.transforms._base import Transform
from rlblocks.envs.transforms._common import key_parts, replay_specs

__all__ = ["RenameTransform", "SelectTransform", "ExcludeTransform"]


def _related(key: NestedKey, others: Iterable[NestedKey]) -> bool:
    """Whether ``key`` is one of ``others``, inside one of them, or contains one."""
    k = key_parts(key)
    for other in others:
        o = key_parts(other)
        n = min(len(k), len(o))
        if k[:n] == o[:n]:
            return True
    return False


def _leaves(spec: Composite) -> list[NestedKey]:
    return spec.keys(include_nested=True, leaves_only=True)


def _star_keys(keys: tuple[Any, ...]) -> list[NestedKey]:
    """``f("a", "b")`` and ``f(["a", "b"])`` both mean the keys ``a`` and ``b``."""
    if len(keys) == 1 and isinstance(keys[0], list):
        return list(keys[0])
    return list(keys)


class RenameTransform(Transform):
    """Rename entries (outputs forward, actions through :meth:`inv`).

    Args:
        in_keys: Entries to rename (observations, rewards, done flags).
        out_keys: Their new names.
        in_keys_inv: Entries the wrapped env reads (action, state) ...
        out_keys_inv: ... and the names the policy writes them under.
        create_copy: Keep the old entries too.

    An entry the env reads back as state (its state spec, e.g. ``"state"`` of
    ``PendulumEnv``) can only be renamed if it is renamed back through ``in_keys_inv`` /
    ``out_keys_inv``, or copied (``create_copy=True``).

    Raises:
        TransformError: ``in_keys`` and ``out_keys`` differ in length, or a state entry is
            renamed one way only.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), RenameTransform(["observation"], ["obs"]))
        >>> "obs" in env.reset().keys()
        True
    """

    stateless = True

    def __init__(
        self,
        in_keys: NestedKey | Sequence[NestedKey],
        out_keys: NestedKey | Sequence[NestedKey],
        in_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
        out_keys_inv: NestedKey | Sequence[NestedKey] | None = None,
        create_copy: bool = False,
    ) -> None:
        super().__init__(in_keys, out_keys, in_keys_inv, out_keys_inv)
        self.create_copy = create_copy
        self._state_keys: list[NestedKey] = []

    def _inv_apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        return value  # only the key changes

    def _rename(self, container: Any) -> Any:
        """Rename in a TensorDict or a Composite (both have get, del and item assignment)."""
        # Read everything first, so that swaps (a -> b, b -> a) work.
        moved = [(out, container.get(key, None)) for key, out in zip(self.in_keys, self.out_keys)]
        if not self.create_copy:
            for key, (_, value) in zip(self.in_keys, moved):
                if value is not None:
                    del container[key]
        for out, value in moved:
            if value is not None:
                container[out] = value
        return container

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self._rename(tensordict)

    def _transform_keys_spec(self, spec: Composite) -> Composite:
        return self._rename(spec)

    def transform_state_spec(self, state_spec: Composite) -> Composite:
        self._state_keys = _leaves(state_spec)
        return super().transform_state_spec(state_spec)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        if not self.create_copy:
            renamed_back = dict(zip(self.in_keys_inv, self.out_keys_inv))
            for key, out in zip(self.in_keys, self.out_keys):
                if key in self._state_keys and renamed_back.get(key) != out:
                    raise TransformError(
                        f"RenameTransform: {key!r} is read back by the env at every step (it is "
                        f"in its state spec); rename it back too: in_keys_inv=[{key!r}], "
                        f"out_keys_inv=[{out!r}], or keep it with create_copy=True"
                    )
        return super().transform_observation_spec(observation_spec)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, create_copy={self.create_copy}"


class _KeyFilter(Transform):
    """Shared by Select and Exclude: drop output entries found from the env's specs.

    The spec methods record the env's reward, done and state keys and decide which
    observation and reward entries to drop; ``_reset``/``_step`` then pop those.
    """

    stateless = True

    def __init__(self) -> None:
        super().__init__()
        self._drop: list[NestedKey] | None = None  # None until the specs were seen
        self._reward_keys: list[NestedKey] = []
        self._done_keys: list[NestedKey] = []
        self._state_keys: list[NestedKey] = []

    # Subclass hooks: what to drop, and what to refuse.
    def _dropped_rewards(self) -> list[NestedKey]:
        raise NotImplementedError

    def _dropped_observations(self, observation_spec: Composite) -> list[NestedKey]:
        raise NotImplementedError

    def _validate(self, observation_spec: Composite) -> None:
        raise NotImplementedError

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._drop is None:  # used before the enclosing env computed its specs
            replay_specs(self, self.parent)
        for key in self._drop or ():
            tensordict.pop(key, None)
        return tensordict

    def _call_trajectory(
        self, trajectory: TensorDictBase, start: TensorDictBase | None = None
    ) -> TensorDictBase:
        # A rollout gets what stepping would give (the env's rules), not forward()'s.
        return Transform.forward(self, trajectory)

    def transform_reward_spec(self, reward_spec: Composite) -> Composite:
        self._reward_keys = _leaves(reward_spec)
        for key in self._dropped_rewards():
            del reward_spec[key]
        return reward_spec

    def transform_done_spec(self, done_spec: Composite) -> Composite:
        self._done_keys = _leaves(done_spec)
        return done_spec

    def transform_state_spec(self, state_spec: Composite) -> Composite:
        self._state_keys = _leaves(state_spec)
        return state_spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        self._validate(observation_spec)
        drop = self._dropped_observations(observation_spec)
        for key in drop:
            del observation_spec[key]
        self._drop = drop + self._dropped_rewards()
        return observation_spec


class SelectTransform(_KeyFilter):
    """Keep only the selected observation entries.

    Rewards and done flags are kept (unless ``keep_rewards=False``), and so are entries the
    env reads back as state (its state spec), which it needs to step. On a plain
    TensorDict, every entry other than the selected ones, the action, the rewards, the done
    flags and ``"next"`` is dropped.

    Args:
        *selected_keys: The entries to keep (a nested key keeps everything below it).
        keep_rewards: Keep the reward entries.
        keep_dones: Keep the done flags. Must be ``True`` in an env, which needs them.

    Raises:
        TransformError: No key is given, a selected key is not an entry of the env, or
            ``keep_dones=False`` is used in an env.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), SelectTransform("observation"))
        >>> sorted(env.observation_spec.keys())
        ['observation', 'state']
    """

    def __init__(
        self, *selected_keys: NestedKey, keep_rewards: bool = True, keep_dones: bool = True
    ) -> None:
        super().__init__()
        self.selected_keys = _star_keys(selected_keys)
        if not self.selected_keys:
            raise TransformError(
                "SelectTransform: name the entries to keep, e.g. SelectTransform('observation')"
            )
        self.keep_rewards = keep_rewards
        self.keep_dones = keep_dones

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Keep the selected entries of a plain TensorDict (root and ``"next"``)."""
        kept: list[NestedKey] = [*self.selected_keys, ACTION]
        if self.keep_rewards:
            kept.append(REWARD)
        if self.keep_dones:
            kept.extend(DONE_KEYS)
        out = tensordict.select(*kept, strict=False)
        next_td = tensordict.get(NEXT, None)
        if isinstance(next_td, TensorDictBase):
            out.set(NEXT, next_td.select(*kept, strict=False))
        return out

    def _dropped_rewards(self) -> list[NestedKey]:
        return [] if self.keep_rewards else list(self._reward_keys)

    def _dropped_observations(self, observation_spec: Composite) -> list[NestedKey]:
        keep = [*self.selected_keys, *self._state_keys]
        drop: list[NestedKey] = []
        # Parents come before their children: drop whole sub-trees where nothing is kept.
        for key in observation_spec.keys(include_nested=True):
            if not _related(key, keep) and not _related(key, drop):
                drop.append(key)
        return drop

    def _validate(self, observation_spec: Composite) -> None:
        if not self.keep_dones:
            raise TransformError(
                "SelectTransform(keep_dones=False) cannot be used in an env, which needs its "
                "done flags; drop them from the collected data instead"
            )
        known = [
            *_leaves(observation_spec),
            *self._reward_keys,
            *self._done_keys,
            *self._state_keys,
        ]
        unknown = [k for k in self.selected_keys if not _related(k, known)]
        if unknown:
            raise TransformError(
                f"SelectTransform: {unknown} are not entries of the env (observations: "
                f"{_leaves(observation_spec)}); fix the selected keys"
            )

    def extra_repr(self) -> str:
        return (
            f"selected_keys={self.selected_keys}, keep_rewards={self.keep_rewards}, "
            f"keep_dones={self.keep_dones}"
        )


class ExcludeTransform(_KeyFilter):
    """Remove entries (observations or rewards) from what the env returns.

    Args:
        *excluded_keys: The entries to remove (a nested key removes everything below it).

    Raises:
        TransformError: No key is given, or (in an env) a key is not an output of the env,
            is a done flag, or is read back by the env as state.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), ExcludeTransform("reward"))
        >>> env.reward_keys
        []
    """

    def __init__(self, *excluded_keys: NestedKey) -> None:
        super().__init__()
        self.excluded_keys = _star_keys(excluded_keys)
        if not self.excluded_keys:
            raise TransformError(
                "ExcludeTransform: name the entries to remove, e.g. ExcludeTransform('pixels')"
            )

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Remove the excluded entries from a plain TensorDict (root and ``"next"``)."""
        out = tensordict.exclude(*self.excluded_keys)
        next_td = out.get(NEXT, None)
        if isinstance(next_td, TensorDictBase):
            out.set(NEXT, next_td.exclude(*self.excluded_keys))
        return out

    def _dropped_rewards(self) -> list[NestedKey]:
        return [k for k in self._reward_keys if _related(k, self.excluded_keys)]

    def _dropped_observations(self, observation_spec: Composite) -> list[NestedKey]:
        return [k for k in self.excluded_keys if k in observation_spec]

    def _validate(self, observation_spec: Composite) -> None:
        outputs = [*observation_spec.keys(include_nested=True), *self._reward_keys]
        for key in self.excluded_keys:
            problem = None
            if _related(key, self._done_keys):
                problem = "is a done flag, which the env needs"
            elif _related(key, self._state_keys):
                problem = "is read back by the env at every step (it is in its state spec)"
            elif key not in outputs:
                problem = (
                    f"is not an output of the env (observations: {_leaves(observation_spec)}, "
                    f"rewards: {self._reward_keys})"
                )
            if problem is not None:
                raise TransformError(f"ExcludeTransform: {key!r} {problem}; fix excluded_keys")

    def extra_repr(self) -> str:
        return f"excluded_keys={self.excluded_keys}"
