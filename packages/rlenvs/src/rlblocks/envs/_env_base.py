"""``EnvBase``: the TensorDict environment API every rlblocks environment implements.

An environment reads and writes TensorDicts with the keys of the rlblocks contract
(:mod:`rlblocks.core`): ``reset()`` returns the first observation and done flags,
``step(td)`` reads ``td["action"]`` and writes the consequences under ``td["next"]``.
Specs describe every entry, with the env's batch dims included in their shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import DONE, NEXT, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.errors import MissingKeyError
from rlblocks.core.fast_td import fast_get, fast_set, new_tensordict, top_items
from rlblocks.core.specs import Binary, Composite, Unbounded
from rlblocks.core.utils import as_device, check_int
from rlblocks.envs._env_specs import EnvSpecs, Keys
from rlblocks.envs._multiagent import check_group_map
from rlblocks.envs._numpy_rollout import stepper_rollout
from rlblocks.envs._rollout import run_rollout
from rlblocks.envs._stepper import Stepper
from rlblocks.envs.errors import BatchSizeError, EnvClosedError, InvalidActionError

if TYPE_CHECKING:
    from typing import Self

__all__ = ["EnvBase", "Policy"]

Policy = Callable[[TensorDictBase], TensorDictBase]


class EnvBase(EnvSpecs):
    """Base class of rlblocks environments: TensorDict in, TensorDict out.

    This class is the **backend protocol**: every environment, rlblocks' own and those of
    plugins alike, is a subclass, and generic code (``rollout``, ``SerialEnv``,
    ``ParallelEnv``, ``TransformedEnv``, the collectors) talks to envs only through the
    public methods below. ``docs/backends.md`` walks through writing one.

    **What a backend implements.** Declare the specs in ``__init__`` (shapes include the
    env's ``batch_size``), then:

    * ``_reset(tensordict, **kwargs) -> TensorDict``: the first observation (and any
      ``done``/``terminated``/``truncated`` flags; missing ones are filled with ``False``).
      For a batched env, ``tensordict`` may hold a ``"_reset"`` mask ``[*batch, 1]``: only
      those elements are reset, the others keep their current values, and the returned
      TensorDict holds values for every element.
    * ``_step(tensordict) -> TensorDict``: reads the action (and state) from ``tensordict``
      and returns a new TensorDict with the next observation, ``reward`` and the done flags
      (``done`` is filled in as ``terminated | truncated`` when absent, unless the class
      declares :attr:`step_returns_done_flags`).
    * ``_set_seed(seed)``: seeds the env's own random generator(s).
    * optionally ``_close()``, to free resources.

    **The optional fast path.** A backend that can step its simulator without building
    TensorDicts returns :class:`~rlblocks.envs.Stepper` objects from :meth:`steppers`
    (gymnasium-style ``step``/``reset`` callables, and how observations and actions map to
    the env's keys). :meth:`fast_rollout` then runs numpy loops over them that write into
    preallocated buffers; ``rollout``, ``SerialEnv`` (which concatenates its sub-envs'
    steppers), ``TransformedEnv``, ``ParallelEnv`` workers and the collectors all use it.
    A backend that knows whether a step ended an episode without reading the done tensor
    records it with :meth:`_record_done`, so :meth:`any_done` costs no device sync.

    **Action validation** follows one setting, :attr:`check_actions` (on by default):
    ``step`` and ``rollout`` (with a policy, on both its fast and TensorDict paths) check
    every action against its spec (shape, dtype, range), or neither does. ``step(td,
    check=...)`` and ``rollout(..., check=...)`` override it per call. Random actions come
    from the spec and are not re-checked.

    Args:
        device: Device of the tensors the env reads and writes (default: torch's default
            device).
        batch_size: Batch dims of the env (``[N]`` for N environments stepped together).
        check_actions: Validate actions in ``step`` and ``rollout`` (see above).

    Example:
        >>> env = PendulumEnv(batch_size=[8])
        >>> td = env.reset()
        >>> td = env.rand_step(td)
        >>> td["next", "reward"].shape
        torch.Size([8, 1])
        >>> traj = env.rollout(100)
        >>> traj.batch_size
        torch.Size([8, 100])
    """

    #: Whether inputs must have exactly ``batch_size``.
    batch_locked: bool = True
    #: Declared by backends whose ``_step`` always returns ``done``, ``terminated`` and
    #: ``truncated``, so that ``step`` need not look for missing ones.
    step_returns_done_flags: ClassVar[bool] = False
    #: ``(done_tensor, any_done)`` of the last step: see :meth:`_record_done`.
    _done_hint: tuple[torch.Tensor, bool] | None = None

    def __init__(
        self,
        *,
        device: Any = None,
        batch_size: Any = (),
        check_actions: bool = True,
    ) -> None:
        self._device = as_device(device)
        self._batch_size = torch.Size(
            [batch_size] if isinstance(batch_size, int) else list(batch_size)
        )
        self.check_actions = check_actions
        self._closed = False
        self._group_map: dict[str, list[str]] = {}  # multi-agent envs: see group_map
        shape = (*self._batch_size, 1)
        self._specs: dict[str, Composite] = {
            "observation": Composite(shape=self._batch_size, device=self._device),
            "action": Composite(shape=self._batch_size, device=self._device),
            "reward": Composite(
                {REWARD: Unbounded(shape=shape, device=self._device)},
                shape=self._batch_size,
                device=self._device,
            ),
            "done": Composite(
                {
                    k: Binary(shape=shape, device=self._device)
                    for k in (DONE, TERMINATED, TRUNCATED)
                },
                shape=self._batch_size,
                device=self._device,
            ),
            "state": Composite(shape=self._batch_size, device=self._device),
        }
        self._keys_cache: Keys | None = None

    # ------------------------------------------------------------------ attributes
    @property
    def batch_size(self) -> torch.Size:
        """Batch dims of every TensorDict the env reads and writes (``[]`` for one env)."""
        return self._batch_size

    @property
    def device(self) -> torch.device:
        """Device of the tensors the env reads and writes."""
        return self._device

    @property
    def group_map(self) -> dict[str, list[str]]:
        """Multi-agent envs: which agents each group holds, ``{group: [agent names]}``.

        A group is a top-level key: its per-agent entries (``(group, "observation")``,
        ``(group, "action")``, ``("next", group, "reward")``...) have an agent dim, in the
        order of this list, right after the env's batch dims. Empty for single-agent envs.
        Backends resolve it with :func:`rlblocks.envs.make_group_map`.
        """
        return {group: list(agents) for group, agents in self._group_map.items()}

    @group_map.setter
    def group_map(self, group_map: Mapping[str, Sequence[str]]) -> None:
        # Backends set it once in __init__, next to the specs that follow it.
        agents = [a for members in group_map.values() for a in members]
        self._group_map = check_group_map(group_map, agents, type(self).__name__)

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    # ------------------------------------------------------------------ subclass API
    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        raise NotImplementedError(f"{type(self).__name__} must implement _reset")

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise NotImplementedError(f"{type(self).__name__} must implement _step")

    def _set_seed(self, seed: int | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _set_seed")

    def _close(self) -> None:
        """Free resources (processes, simulators); called once by :meth:`close`."""

    def _record_done(self, done: torch.Tensor, any_done: bool) -> None:
        """Remember that the ``done`` tensor just returned has ``any_done`` set elements.

        Backends that know it without reading the tensor (a simulator's Python bool) call
        this from ``_step``; :meth:`any_done` then answers without a device sync.
        """
        self._done_hint = (done, any_done)

    def _step_frames(
        self,
        tensordict: TensorDictBase,
        previous: TensorDictBase,
        frames: int,
        max_pool: Sequence[NestedKey] = (),
    ) -> TensorDictBase:
        """Optional: repeat an action for up to ``frames`` more steps (frame skipping).

        ``tensordict`` is the input of the step that returned ``previous`` (its action is
        repeated) and ``previous`` that step's output, not done. The steps stop early at a
        done. Returns the output of the last step taken, with each reward summed from
        ``previous`` on and the ``max_pool`` entries replaced by their elementwise maximum
        over the last two steps (``previous`` counting as one).

        :class:`~rlblocks.envs.FrameSkipTransform` calls it. The default calls
        :meth:`_step` in a loop; a backend may override it to take the steps without
        building a TensorDict for each (``GymWrapper`` does).
        """
        reward_keys = self.reward_keys
        totals = [previous.get(key) for key in reward_keys]
        before, current = previous, previous
        root = tensordict.exclude(NEXT)
        for _ in range(frames):
            if self.any_done(current.get(DONE)):
                break
            # The same action, from the state the last step reached.
            root.update(current)
            before, current = current, self._step(root)
            if not self.step_returns_done_flags:
                self._fill_done(current)
            for i, key in enumerate(reward_keys):
                totals[i] = totals[i] + current.get(key)
        if current is previous:
            return current
        for key, total in zip(reward_keys, totals):
            current.set(key, total)
        for key in max_pool:
            current.set(key, torch.maximum(before.get(key), current.get(key)))
        return current

    # ------------------------------------------------------------------ fast path
    def steppers(self) -> Sequence[Stepper] | None:
        """The env's optional fast path: steppers of its simulators, or ``None``.

        A backend returns one :class:`~rlblocks.envs.Stepper` per simulator (or per vector
        of simulators) in the row-major order of :attr:`batch_size`, stepping exactly the
        simulators behind ``_step``/``_reset`` (so a fast rollout and a later ``step``
        continue the same episodes). ``None`` (the default) means the env has no fast path.
        The result may be cached: it is asked for at every :meth:`fast_rollout`.
        """
        return None

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
        """The trajectory :meth:`rollout` would return from ``tensordict``, by a fast loop.

        The default runs numpy loops over :meth:`steppers` (no TensorDict per step). Envs
        built from others may override it: ``TransformedEnv`` applies its transforms to the
        base env's fast trajectory at once, ``ParallelEnv`` runs one rollout per worker.

        Args:
            max_steps: Number of steps.
            tensordict: Where to start: a reset's output, or the next input of a step
                (as ``step_and_maybe_reset`` returns it).
            policy: Called once per step on the current observation (a
                ``TensorDictModule`` declaring its ``in_keys``/``out_keys``); ``None`` takes
                uniformly random actions.
            break_when_any_done: As for :meth:`rollout`.
            episode_limit: Also truncate (and restart) episodes after this many steps, as
                ``StepCounter(episode_limit)`` around the env would.
            check: Validate the policy's actions against the action spec.

        Returns:
            The trajectory (batch size ``[*batch_size, T]``), or ``None`` when the env has
            no fast loop for these arguments (the caller then steps through TensorDicts).
        """
        steppers = self.steppers()
        if steppers is None:
            return None
        validate = None
        if check and policy is not None:
            keys = self._keys()
            name = type(self).__name__

            def validate(td: TensorDictBase) -> None:
                keys.check_actions(name, td)

        return stepper_rollout(
            self,
            steppers,
            max_steps,
            tensordict,
            policy=policy,
            break_when_any_done=break_when_any_done,
            episode_limit=episode_limit,
            validate=validate,
        )

    # ------------------------------------------------------------------ public API
    def reset(
        self,
        tensordict: TensorDictBase | None = None,
        *,
        seed: int | None = None,
        **kwargs: Any,
    ) -> TensorDictBase:
        """Start new episodes and return the first observation and done flags.

        Args:
            tensordict: Optional input. A ``"_reset"`` boolean mask of shape
                ``[*batch_size, 1]`` resets only those elements of a batched env. Other
                entries (e.g. a policy's recurrent state) are carried into the result.
            seed: Gymnasium's habit, the same for every env: ``reset(seed=s)`` is
                ``set_seed(s)`` followed by the reset. ``None`` (the default) does not
                reseed.
            **kwargs: Passed to the env's ``_reset`` (e.g. ``options`` for gymnasium).

        Returns:
            A new TensorDict of batch size :attr:`batch_size` with the observation keys and
            ``done``/``terminated``/``truncated``.

        Raises:
            EnvClosedError: The env was closed.
            BatchSizeError: ``tensordict`` has another batch size.
            ValueError: ``seed`` is not an int ``>= 0`` (nothing is seeded nor reset).
        """
        self._check_open("reset")
        if tensordict is not None:
            self._check_batch(tensordict, "reset")
        if seed is not None:
            # Here, not in each backend's _reset: one rule for every env, and wrappers
            # (batched, transformed) reach their sub-envs through set_seed.
            self.set_seed(seed)
        if tensordict is not None:
            mask = tensordict.get(RESET, None)
            if mask is not None and not bool(mask.any()):
                return tensordict.exclude(RESET, NEXT)  # nothing to reset
            if mask is None and NEXT in tensordict.keys():
                tensordict = tensordict.exclude(NEXT)
        out = self._reset(tensordict, **kwargs)
        self._fill_done(out, reset=True)
        if tensordict is not None:
            # Carry the input's other entries (also inside agent groups, e.g. a sum that
            # RewardSum keeps per agent); never write into the input's TensorDicts.
            drop = set(map(_as_tuple, (RESET, NEXT, *self._keys().action)))
            _carry(tensordict, out, drop, ())
        return out

    def step(self, tensordict: TensorDictBase, *, check: bool | None = None) -> TensorDictBase:
        """Apply the action in ``tensordict`` and write the result under ``"next"``.

        Args:
            tensordict: Holds the action (and state) keys; its batch size is
                :attr:`batch_size`.
            check: Validate the action against its spec; ``None`` uses
                :attr:`check_actions` (on by default).

        Returns:
            ``tensordict`` itself, with ``"next"`` holding the next observation, the reward
            and the done flags.

        Raises:
            InvalidActionError: The action has the wrong shape, dtype or values (when
                checking); the message names the key, the spec and what was given.
            MissingKeyError: An action key is missing.
            EnvClosedError: The env was closed.
        """
        if self._closed:
            self._check_open("step")
        if check if check is not None else self.check_actions:
            self._check_action(tensordict)
        try:
            next_td = self._step(tensordict)
        except InvalidActionError:
            raise
        except Exception:
            # Only on failure (so free per step): an action on another device fails deep in
            # the backend (Tensor.item(), numpy); name the key and both devices instead.
            self._keys().check_action_devices(type(self).__name__, tensordict)
            raise
        if not self.step_returns_done_flags:
            self._fill_done(next_td)
        fast_set(tensordict, NEXT, next_td)
        return tensordict

    def step_and_maybe_reset(
        self, tensordict: TensorDictBase, *, check: bool | None = None
    ) -> tuple[TensorDictBase, TensorDictBase]:
        """Step, then prepare the input of the next step, resetting what is done.

        Args:
            tensordict: As for :meth:`step`.
            check: As for :meth:`step`.

        Returns:
            ``(transition, next_input)``: the stepped ``tensordict`` (with ``"next"``), and a
            new TensorDict for the next step holding the next observation, or the first
            observation of a new episode where the episode ended (a partial reset for
            batched envs).

        Example:
            >>> td = env.reset()
            >>> for _ in range(1000):
            ...     transition, td = env.step_and_maybe_reset(policy(td))
        """
        tensordict = self.step(tensordict, check=check)
        return tensordict, self.maybe_reset(self.step_mdp(tensordict))

    def rollout(
        self,
        max_steps: int,
        policy: Policy | None = None,
        auto_reset: bool = True,
        break_when_any_done: bool = True,
        tensordict: TensorDictBase | None = None,
        *,
        check: bool | None = None,
    ) -> TensorDictBase:
        """Run the env for up to ``max_steps`` steps and return the whole trajectory.

        The output storage is allocated once for ``max_steps`` and written in place; no
        per-step TensorDict is kept. Envs with a fast path (:meth:`fast_rollout`) run it.

        Args:
            max_steps: Number of steps to run.
            policy: Maps a TensorDict holding the observation to one holding the action;
                ``None`` takes uniformly random actions from :attr:`action_spec`.
            auto_reset: Call :meth:`reset` first; otherwise ``tensordict`` is the start.
            break_when_any_done: Stop after the first step where any element is done.
                Otherwise finished episodes are reset (partially, for batched envs) and
                the rollout runs for exactly ``max_steps`` steps.
            tensordict: The starting TensorDict (required when ``auto_reset=False``).
            check: Validate the policy's actions against the action spec; ``None`` uses
                :attr:`check_actions`, as :meth:`step` does.

        Returns:
            A TensorDict of batch size ``[*batch_size, T]`` (time last, ``T <= max_steps``)
            with the root entries of each step and the transition under ``"next"``.

        Raises:
            ValueError: ``max_steps`` is not a positive int, or ``auto_reset=False`` without
                a ``tensordict``.
            InvalidActionError: With checking, the policy wrote an invalid action.
        """
        self._check_open("rollout")
        return run_rollout(
            self,
            max_steps,
            policy=policy,
            auto_reset=auto_reset,
            break_when_any_done=break_when_any_done,
            tensordict=tensordict,
            check=self.check_actions if check is None else check,
        )

    def rand_action(self, tensordict: TensorDictBase | None = None) -> TensorDictBase:
        """Write a uniformly random action (from :attr:`full_action_spec`) into ``tensordict``.

        Args:
            tensordict: Where to write; a new empty TensorDict when ``None``.

        Returns:
            ``tensordict`` (or the new one) holding the action keys.
        """
        if tensordict is None:
            tensordict = TensorDict(batch_size=self._batch_size, device=self._device)
        keys = self._keys_cache or self._keys()  # the cache first: one call less per step
        for key, sample in keys.action_samplers:
            fast_set(tensordict, key, sample())
        return tensordict

    def rand_step(self, tensordict: TensorDictBase | None = None) -> TensorDictBase:
        """Take one step with a random action: ``step(rand_action(tensordict))``."""
        return self.step(self.rand_action(tensordict))

    def set_seed(self, seed: int | None) -> int | None:
        """Seed the env's random generators; the next :meth:`reset` is reproducible.

        Args:
            seed: The seed, an int ``>= 0`` (numpy ints too); ``None`` draws fresh entropy.

        Returns:
            The seed to give to another env so that their seeds do not overlap
            (``seed`` plus the number of seeds this env consumed), or ``None``.

        Raises:
            ValueError: ``seed`` is not an int ``>= 0`` nor ``None``; the env is left as it
                was.
        """
        self._check_open("set_seed")
        # Checked before any backend stores it: a seed the backend rejects later (at the
        # next reset) would break every reset after it.
        seed = check_int(
            seed, "seed", f"{type(self).__name__}.set_seed()", minimum=0, allow=(None,)
        )
        self._set_seed(seed)
        return None if seed is None else seed + self._num_seeds()

    def _num_seeds(self) -> int:
        """How many consecutive seeds :meth:`set_seed` uses (one per sub-env)."""
        return max(1, self._batch_size.numel())

    def fake_tensordict(self) -> TensorDictBase:
        """Return a zero-filled TensorDict with the structure of a step's output.

        The root holds the observation, state, action and done entries; ``"next"`` holds the
        observation, reward and done entries. Useful to build storage or test a policy.
        """
        specs = self._specs
        td = specs["observation"].zero()
        td.update(specs["state"].zero())
        td.update(specs["done"].zero())
        td.update(specs["action"].zero())
        next_td = specs["observation"].zero()
        next_td.update(specs["reward"].zero())
        next_td.update(specs["done"].zero())
        td.set(NEXT, next_td)
        return td

    def close(self) -> None:
        """Free the env's resources. Idempotent; the env cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        self._close()

    def __getstate__(self) -> dict[str, Any]:
        # Caches rebuilt on use (the key cache holds per-spec closures, which do not pickle).
        return {**self.__dict__, "_keys_cache": None, "_done_hint": None}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(batch_size={list(self._batch_size)}, device={self._device}, "
            f"observation_keys={self._keys().observation}, action_keys={self._keys().action})"
        )

    # ------------------------------------------------------------------ helpers
    def _check_open(self, method: str) -> None:
        if self._closed:
            raise EnvClosedError(
                f"{type(self).__name__}.{method}() was called after close(); create a new env"
            )

    def _check_batch(self, tensordict: TensorDictBase, method: str) -> None:
        if self.batch_locked and tensordict.batch_size != self._batch_size:
            raise BatchSizeError(
                f"{type(self).__name__}.{method}() got a TensorDict of batch size "
                f"{list(tensordict.batch_size)}, but the env's batch_size is "
                f"{list(self._batch_size)}; pass the TensorDict returned by reset()/step()"
            )

    def _check_action(self, tensordict: TensorDictBase) -> None:
        """Validate the action entries of ``tensordict`` (cheap: one min/max per key)."""
        self._check_batch(tensordict, "step")
        self._keys().check_actions(type(self).__name__, tensordict)

    def _fill_done(self, td: TensorDictBase, reset: bool = False) -> None:
        """Add the flags ``_reset``/``_step`` left out: ``done = terminated | truncated``."""
        done = fast_get(td, DONE)
        terminated = fast_get(td, TERMINATED)
        truncated = fast_get(td, TRUNCATED)
        if done is not None and terminated is not None and truncated is not None:
            return
        if done is None and terminated is None and truncated is None:
            if not reset:
                raise MissingKeyError(
                    f"{type(self).__name__}._step must return 'done' or 'terminated' and "
                    f"'truncated'; it returned keys {list(td.keys())}"
                )
            zeros = torch.zeros((*self._batch_size, 1), dtype=torch.bool, device=self._device)
            td.set(DONE, zeros)
            td.set(TERMINATED, zeros.clone())
            td.set(TRUNCATED, zeros.clone())
            return
        ref = next(t for t in (done, terminated, truncated) if t is not None)
        if terminated is None:
            terminated = done if done is not None else torch.zeros_like(ref)
            td.set(TERMINATED, terminated)
        if truncated is None:
            truncated = torch.zeros_like(ref)
            td.set(TRUNCATED, truncated)
        if done is None:
            td.set(DONE, terminated | truncated)

    def any_done(self, done: torch.Tensor) -> bool:
        """Whether any element of ``done``, a done tensor this env returned, is set.

        Costs no device sync when the env recorded the answer as it produced the tensor
        (see :meth:`_record_done`); otherwise reads it.
        """
        hint = self._done_hint
        if hint is not None and hint[0] is done:
            return hint[1]
        return bool(done.any())

    def step_mdp(self, tensordict: TensorDictBase) -> TensorDictBase:
        """``step_mdp`` for this env's keys: the input of the step after ``tensordict``.

        ``"next"`` moves up, this env's action and reward entries are dropped, other root
        entries (e.g. a policy's recurrent state) are kept. Faster than the generic
        :func:`rlblocks.core.step_mdp` because the env knows its keys.

        Args:
            tensordict: A stepped TensorDict (holding ``"next"``).

        Returns:
            A new TensorDict; ``tensordict`` is not modified.
        """
        keys = self._keys_cache or self._keys()
        return _merge(fast_get(tensordict, NEXT), tensordict, keys.drop_next, keys.drop_root, ())

    def maybe_reset(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Reset the elements of ``tensordict`` (a step's next input) whose ``done`` is set.

        Args:
            tensordict: The output of :meth:`step_mdp` (or of a previous reset).

        Returns:
            ``tensordict`` itself when nothing is done, else the output of a (partial,
            for batched envs) :meth:`reset`.
        """
        done = fast_get(tensordict, DONE)
        if not self.any_done(done):
            return tensordict
        if not self._batch_size:
            return self.reset(tensordict.exclude(*self._keys().done))
        tensordict.set(RESET, done.reshape(*self._batch_size, 1))
        return self.reset(tensordict)


def _as_tuple(key: Any) -> tuple[str, ...]:
    return key if isinstance(key, tuple) else (key,)


def _carry(
    source: TensorDictBase, target: TensorDictBase, drop: set[Any], prefix: tuple[str, ...]
) -> None:
    """Copy the entries of ``source`` missing from ``target`` into it, recursing into
    sub-TensorDicts both hold, except the keys in ``drop`` (full key tuples from the root)."""
    for key in list(source.keys()):
        path = (*prefix, key)
        if path in drop:
            continue
        value = source.get(key)
        present = target.get(key, None)
        if present is None:
            if isinstance(value, TensorDictBase):
                inner = [
                    k[len(path) :] for k in drop if len(k) > len(path) and k[: len(path)] == path
                ]
                value = value.exclude(*inner) if inner else value.copy()
            target.set(key, value)
        elif isinstance(present, TensorDictBase) and isinstance(value, TensorDictBase):
            _carry(value, present, drop, path)


def _merge(
    primary: TensorDictBase,
    secondary: TensorDictBase | None,
    drop_primary: Mapping[tuple[str, ...], frozenset[str]],
    drop_secondary: Mapping[tuple[str, ...], frozenset[str]],
    prefix: tuple[str, ...],
) -> TensorDictBase:
    """A new TensorDict of ``primary``'s entries, then ``secondary``'s that it lacks, both
    without the names their ``drop`` maps list under ``prefix``; sub-TensorDicts that both
    hold are merged the same way (step_mdp: ``"next"`` over the root, group by group)."""
    skip = drop_primary.get(prefix, ())
    data = {}
    for key, value in top_items(primary):
        if key in skip:
            continue
        if isinstance(value, TensorDictBase):
            other = fast_get(secondary, key) if secondary is not None else None
            if not isinstance(other, TensorDictBase):
                other = None
            value = _merge(value, other, drop_primary, drop_secondary, (*prefix, key))
        data[key] = value
    if secondary is not None:
        skip = drop_secondary.get(prefix, ())
        for key, value in top_items(secondary):
            if key in data or key in skip:
                continue
            if isinstance(value, TensorDictBase):
                path = (*prefix, key)
                value = _merge(value, None, drop_secondary, drop_secondary, path)
            data[key] = value
    return new_tensordict(data, primary.batch_size, primary.device)
