"""The spec half of :class:`~rlblocks.envs.EnvBase`: spec properties and key caches.

An env declares five Composites (observation, action, reward, done, state), each with the
env's batch dims. The properties here read and write them, and cache the key lists and
per-key action checks/samplers that the step loop uses on every step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from tensordict.utils import NestedKey

from rlblocks.core import DONE, NEXT, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.errors import MissingKeyError, SpecError
from rlblocks.core.specs import Bounded, Categorical, Composite, TensorSpec
from rlblocks.envs.errors import EnvError, EnvSpecError, InvalidActionError

__all__ = ["EnvSpecs", "Keys"]


def _validator(spec: TensorSpec) -> Callable[[Any], bool]:
    """A cheap ``is this a valid value of spec`` test (one ``item()`` for one-element specs)."""
    shape, dtype = spec.shape, spec.dtype
    if shape.numel() == 1 and isinstance(spec, Categorical):
        n = spec.n  # integer tensors never require grad
        return lambda v: v.dtype == dtype and v.shape == shape and 0 <= int(v) < n
    if shape.numel() == 1 and isinstance(spec, Bounded) and dtype.is_floating_point:
        low, high = float(spec.low.reshape(-1)[0]), float(spec.high.reshape(-1)[0])
        # ``.data`` reads an action that requires grad (a network's output) without
        # autograd's warning; only then, as it costs a tensor object.
        return lambda v: (
            v.dtype == dtype
            and v.shape == shape
            and low <= float(v.data if v.requires_grad else v) <= high
        )
    return lambda v: v.shape == shape and spec.is_in(v)


def _sampler(spec: TensorSpec) -> Callable[[], torch.Tensor]:
    """``spec.rand`` for one value, with the common Categorical case inlined (it is hot):
    a ``partial`` of ``torch.randint`` adds no Python frame, and ``low=0`` is its default.
    A masked spec (``ActionMask`` masks it from the start) keeps ``rand``, which reads the
    mask it holds at each call."""
    if isinstance(spec, Categorical) and spec.mask is None:
        return functools.partial(
            torch.randint, spec.n, spec.shape, dtype=spec.dtype, device=spec.device
        )
    return spec.rand


def _names_by_parent(keys: list[NestedKey]) -> dict[tuple[str, ...], frozenset[str]]:
    """``{path of the parent: names}`` of (nested) keys: ``("agents", "action")`` is
    ``{("agents",): {"action"}}``."""
    out: dict[tuple[str, ...], set[str]] = {}
    for key in keys:
        parts = (key,) if isinstance(key, str) else tuple(key)
        out.setdefault(parts[:-1], set()).add(parts[-1])
    return {parent: frozenset(names) for parent, names in out.items()}


class Keys:
    """Key lists read on every step, computed once per spec change."""

    __slots__ = (
        "action",
        "action_checks",
        "action_samplers",
        "action_top",
        "done",
        "drop_next",
        "drop_root",
        "observation",
        "reward",
        "state",
    )

    def __init__(self, specs: dict[str, Composite]) -> None:
        self.observation = specs["observation"].keys(True, True)
        self.action = specs["action"].keys(True, True)
        self.reward = specs["reward"].keys(True, True)
        self.done = specs["done"].keys(True, True)
        self.state = specs["state"].keys(True, True)
        self.action_checks = [
            (key, spec, _validator(spec)) for key, spec in specs["action"].items(True, True)
        ]
        self.action_samplers = [
            (key, _sampler(spec)) for key, spec in specs["action"].items(True, True)
        ]
        # What step_mdp drops, by the path of the sub-TensorDict holding it: the rewards of
        # "next"; the actions, rewards and "next" of the root.
        self.drop_next = _names_by_parent(self.reward)
        self.drop_root = _names_by_parent([*self.action, *self.reward, NEXT])
        # Top-level root entries holding actions, dropped when the next step is prepared.
        self.action_top = {k if isinstance(k, str) else k[0] for k in self.action}

    def check_actions(self, owner: str, tensordict: Any) -> None:
        """Validate the action entries of ``tensordict`` (cheap: one min/max per key).

        Raises:
            MissingKeyError: An action key is missing.
            InvalidActionError: An action has the wrong shape, dtype or values; the message
                names ``owner``, the key, the spec and what was given.
        """
        for key, leaf, valid in self.action_checks:
            value = tensordict.get(key, None)
            if value is None:
                raise MissingKeyError(
                    f"{owner}.step(): the TensorDict has no action {key!r} (expected "
                    f"{leaf!r}); set it with a policy or env.rand_action(td)"
                )
            # try costs nothing until it catches: the check stays one call on the hot path.
            try:
                if isinstance(value, torch.Tensor) and valid(value):
                    continue
            except (RuntimeError, NotImplementedError):
                pass  # a tensor the check cannot read (e.g. on the "meta" device): see below
            raise _invalid_action(owner, key, leaf, value)

    def check_action_devices(self, owner: str, tensordict: Any) -> None:
        """Raise if an action of ``tensordict`` is on another device than its spec.

        Called only after a step failed, to replace the backend's low-level error (a
        ``Tensor.item()`` or numpy conversion error) by one naming the key and both devices.

        Raises:
            InvalidActionError: An action tensor is on another device than its spec.
        """
        for key, leaf, _ in self.action_checks:
            value = tensordict.get(key, None)
            if isinstance(value, torch.Tensor) and value.device != leaf.device:
                raise _invalid_action(owner, key, leaf, value)


def _invalid_action(owner: str, key: Any, leaf: TensorSpec, value: Any) -> InvalidActionError:
    """The error for an action ``value`` that failed the check against ``leaf``."""
    fix = "Fix the policy's output, or project it with env.action_spec.project(action)"
    if isinstance(value, torch.Tensor) and value.shape != leaf.shape:
        problem = f"expected shape {list(leaf.shape)}, got shape {list(value.shape)}"
    elif isinstance(value, torch.Tensor) and value.device != leaf.device:
        problem = f"the spec is on device {leaf.device}, the action on device {value.device}"
        fix = (
            f"Fix: move the action to the env's device, e.g. td.to({str(leaf.device)!r}), "
            f"or run the policy on that device"
        )
    else:
        try:
            leaf.assert_is_in(value, key)
            problem = "invalid value"
        except SpecError as err:
            problem = str(err)
        except (RuntimeError, NotImplementedError) as err:
            problem = f"its values cannot be read ({type(err).__name__}: {err})"
    return InvalidActionError(
        f"{owner}.step(): action {key!r} does not match the action spec {leaf!r}: {problem}. {fix}"
    )


class EnvSpecs:
    """Spec properties shared by every env (mixed into :class:`EnvBase`)."""

    _batch_size: torch.Size
    _device: torch.device
    _specs: dict[str, Composite]
    _keys_cache: Keys | None

    # ------------------------------------------------------------------ specs
    def _set_spec(self, name: str, spec: Composite) -> None:
        if not isinstance(spec, Composite):
            raise EnvSpecError(
                f"{type(self).__name__}.full_{name}_spec must be a Composite, got "
                f"{type(spec).__name__}; wrap it: Composite({{key: spec}}, shape=env.batch_size)"
            )
        if spec.shape != self._batch_size:
            raise EnvSpecError(
                f"{type(self).__name__}.full_{name}_spec has batch shape {list(spec.shape)}, "
                f"but the env's batch_size is {list(self._batch_size)}; build it with "
                f"Composite(..., shape={list(self._batch_size)}) and leaf shapes starting "
                f"with {list(self._batch_size)}"
            )
        self._specs[name] = spec.to(self._device)
        self._keys_cache = None

    def _wrap_leaf(self, name: str, key: str, spec: TensorSpec | Composite) -> Composite:
        if isinstance(spec, Composite):
            return spec
        if not isinstance(spec, TensorSpec):
            raise EnvSpecError(
                f"{type(self).__name__}.{name}_spec must be a TensorSpec, got {type(spec).__name__}"
            )
        return Composite({key: spec}, shape=self._batch_size, device=self._device)

    @property
    def full_observation_spec(self) -> Composite:
        """Spec of every observation entry (under the root after reset, under ``"next"``)."""
        return self._specs["observation"]

    @full_observation_spec.setter
    def full_observation_spec(self, spec: Composite) -> None:
        self._set_spec("observation", spec)

    @property
    def full_action_spec(self) -> Composite:
        """Spec of every action entry the env reads in ``step``."""
        return self._specs["action"]

    @full_action_spec.setter
    def full_action_spec(self, spec: Composite) -> None:
        self._set_spec("action", spec)

    @property
    def full_reward_spec(self) -> Composite:
        """Spec of every reward entry written under ``"next"``."""
        return self._specs["reward"]

    @full_reward_spec.setter
    def full_reward_spec(self, spec: Composite) -> None:
        self._set_spec("reward", spec)

    @property
    def full_done_spec(self) -> Composite:
        """Spec of the ``done``/``terminated``/``truncated`` flags."""
        return self._specs["done"]

    @full_done_spec.setter
    def full_done_spec(self, spec: Composite) -> None:
        self._set_spec("done", spec)

    @property
    def full_state_spec(self) -> Composite:
        """Spec of inputs of ``step`` other than the action (e.g. a simulator state)."""
        return self._specs["state"]

    @full_state_spec.setter
    def full_state_spec(self, spec: Composite) -> None:
        self._set_spec("state", spec)

    @property
    def observation_spec(self) -> Composite:
        """Same as :attr:`full_observation_spec` (observations are always a Composite)."""
        return self._specs["observation"]

    @observation_spec.setter
    def observation_spec(self, spec: Composite) -> None:
        self._set_spec("observation", spec)

    @property
    def action_spec(self) -> TensorSpec:
        """The spec of the action: a leaf if there is one action key, else the Composite.

        Setting a leaf spec stores it under ``"action"``.
        """
        spec = self._specs["action"]
        keys = self._keys().action
        return spec[keys[0]] if len(keys) == 1 else spec

    @action_spec.setter
    def action_spec(self, spec: TensorSpec) -> None:
        self._set_spec("action", self._wrap_leaf("action", "action", spec))

    @property
    def reward_spec(self) -> TensorSpec:
        """The spec of the reward: a leaf if there is one reward key, else the Composite."""
        spec = self._specs["reward"]
        keys = self._keys().reward
        return spec[keys[0]] if len(keys) == 1 else spec

    @reward_spec.setter
    def reward_spec(self, spec: TensorSpec) -> None:
        self._set_spec("reward", self._wrap_leaf("reward", REWARD, spec))

    @property
    def done_spec(self) -> Composite:
        """The Composite of the ``done``, ``terminated`` and ``truncated`` flags.

        Setting a leaf spec uses it for all three flags.
        """
        return self._specs["done"]

    @done_spec.setter
    def done_spec(self, spec: TensorSpec) -> None:
        if not isinstance(spec, Composite):
            spec = Composite(
                {k: spec.clone() for k in (DONE, TERMINATED, TRUNCATED)},
                shape=self._batch_size,
                device=self._device,
            )
        self._set_spec("done", spec)

    @property
    def state_spec(self) -> Composite:
        """Same as :attr:`full_state_spec`."""
        return self._specs["state"]

    @state_spec.setter
    def state_spec(self, spec: Composite) -> None:
        self._set_spec("state", spec)

    @property
    def input_spec(self) -> Composite:
        """A new Composite of everything ``step`` reads: the state and action entries."""
        spec = self._specs["state"].clone()
        spec.update(self._specs["action"])
        return spec

    @property
    def output_spec(self) -> Composite:
        """A new Composite of everything ``step`` writes under ``"next"``."""
        spec = self._specs["observation"].clone()
        spec.update(self._specs["reward"])
        spec.update(self._specs["done"])
        return spec

    def _keys(self) -> Keys:
        keys = self._keys_cache
        if keys is None:
            keys = self._keys_cache = Keys(self._specs)
        return keys

    @property
    def observation_keys(self) -> list[NestedKey]:
        """Leaf keys of :attr:`full_observation_spec`."""
        return list(self._keys().observation)

    @property
    def action_keys(self) -> list[NestedKey]:
        """Leaf keys of :attr:`full_action_spec`."""
        return list(self._keys().action)

    @property
    def reward_keys(self) -> list[NestedKey]:
        """Leaf keys of :attr:`full_reward_spec`."""
        return list(self._keys().reward)

    @property
    def done_keys(self) -> list[NestedKey]:
        """Leaf keys of :attr:`full_done_spec`."""
        return list(self._keys().done)

    @property
    def state_keys(self) -> list[NestedKey]:
        """Leaf keys of :attr:`full_state_spec`."""
        return list(self._keys().state)

    @property
    def action_key(self) -> NestedKey:
        """The action key, when there is exactly one."""
        return self._single_key("action", self._keys().action)

    @property
    def reward_key(self) -> NestedKey:
        """The reward key, when there is exactly one."""
        return self._single_key("reward", self._keys().reward)

    def _single_key(self, what: str, keys: list[NestedKey]) -> NestedKey:
        if len(keys) != 1:
            raise EnvError(
                f"{type(self).__name__} has {len(keys)} {what} keys ({keys}), so there is no "
                f"single {what}_key; use {what}_keys"
            )
        return keys[0]
