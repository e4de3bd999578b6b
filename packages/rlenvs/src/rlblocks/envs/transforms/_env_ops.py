"""Transforms that change how the env runs or what it carries: :class:`NoopResetEnv`,
:class:`FireResetEnv`, :class:`FrameSkipTransform`, :class:`EndOfLifeTransform`,
:class:`InitTracker` and :class:`TensorDictPrimer`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey, unravel_key

from rlblocks.core import DONE, IS_INIT, NEXT, RESET, step_mdp
from rlblocks.core.specs import Binary, Composite, TensorSpec
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs.errors import TransformError, UnsupportedEnvOperationError
from rlblocks.envs.transforms._base import Transform, as_key_list
from rlblocks.envs.transforms._common import (
    key_parts,
    positive_int,
    reset_mask,
    strip_batch,
    trajectory_starts,
    where_reset,
)

__all__ = [
    "NoopResetEnv",
    "FireResetEnv",
    "FrameSkipTransform",
    "EndOfLifeTransform",
    "InitTracker",
    "TensorDictPrimer",
]


def _parent_of(transform: Transform) -> EnvBase:
    parent = transform.parent
    if parent is None:
        name = type(transform).__name__
        raise TransformError(
            f"{name} steps the env it wraps, so it only works inside a TransformedEnv: "
            f"TransformedEnv(env, {name}(...))"
        )
    return parent


class _ResetSteps(Transform):
    """Take some steps after every reset of the wrapped env (no-ops, FIRE presses).

    Subclasses give the actions through :meth:`_actions`. If an episode ends during these
    steps it is reset and the steps go on. In a batched env only full resets are
    supported: stepping the wrapped env moves every element.
    """

    #: The error for an env with several action keys (formatted with ``keys``).
    _several_keys_message: ClassVar[str]

    def _actions(self, parent: EnvBase) -> list[Any]:
        raise NotImplementedError

    def _act(self, parent: EnvBase, tensordict: TensorDictBase, action: Any) -> TensorDictBase:
        if action is None:
            return parent.rand_action(tensordict)
        keys = parent.action_keys
        if len(keys) != 1:
            raise TransformError(self._several_keys_message.format(keys=keys))
        spec = parent.full_action_spec[keys[0]]
        value = torch.as_tensor(action, dtype=spec.dtype, device=spec.device)
        return tensordict.set(keys[0], value.expand(spec.shape).clone())

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        parent = _parent_of(self)
        batched = parent.batch_size.numel() > 1
        mask = reset_mask(tensordict)
        name = type(self).__name__
        if batched and mask is not None and not bool(mask.all()):
            raise UnsupportedEnvOperationError(
                f"{name} cannot take its steps for only some elements of a batched env "
                f"(stepping it moves every element); put {name} inside each sub-env: "
                f"SerialEnv(n, lambda: TransformedEnv(make_env(), {name}(...)))"
            )
        td = tensordict_reset
        reward_keys, action_keys = parent.reward_keys, parent.action_keys
        for action in self._actions(parent):
            td = parent.step(self._act(parent, td, action), check=False)
            td = step_mdp(td, reward_keys=reward_keys, action_keys=action_keys)
            done = td.get(DONE)
            if bool(done.any()):
                if batched:
                    td.set(RESET, done.reshape(*parent.batch_size, 1))
                td = parent.reset(td)
        return td


class NoopResetEnv(_ResetSteps):
    """Take a number of no-op steps after every reset (Atari's random starts).

    After the wrapped env resets, ``noops`` steps are taken (a number drawn uniformly in
    ``[1, noops]`` with ``random=True``), with random actions (TorchRL's behaviour) or
    ``noop_action``. If an episode ends during the no-ops it is reset and the no-ops go on,
    so that episode starts with fewer of them.

    In a batched env every element takes the same number of no-ops, and only full resets
    are supported: stepping the wrapped env moves every element, so no-ops for the elements
    of a partial reset would also move the others. For per-element no-ops put the
    transform inside each sub-env, e.g. ``SerialEnv(n, lambda: TransformedEnv(make(),
    NoopResetEnv(30)))``.

    Args:
        noops: (Maximum) number of no-op steps.
        random: Draw the number of no-ops in ``[1, noops]`` at each reset.
        noop_action: The action taken at each no-op (e.g. ``0``, Atari's NOOP); ``None``
            takes random actions.

    Raises:
        TransformError: ``noops`` is not a positive int, the transform is not in a
            TransformedEnv, or ``noop_action`` is given for an env with several action keys.
        UnsupportedEnvOperationError: A batched env is partially reset.

    Example:
        >>> env = TransformedEnv(GymEnv("ALE/Pong-v5"), NoopResetEnv(30, noop_action=0))
    """

    _several_keys_message = (
        "NoopResetEnv: noop_action is one action, but the env has action keys {keys}; use "
        "noop_action=None for random no-ops"
    )

    def __init__(self, noops: int = 30, random: bool = True, *, noop_action: Any = None) -> None:
        super().__init__()
        self.noops = positive_int(noops, "NoopResetEnv", "noops")
        self.random = random
        self.noop_action = noop_action

    def _actions(self, parent: EnvBase) -> list[Any]:
        count = int(torch.randint(1, self.noops + 1, ())) if self.random else self.noops
        return [self.noop_action] * count

    def extra_repr(self) -> str:
        return f"noops={self.noops}, random={self.random}, noop_action={self.noop_action}"


class FireResetEnv(_ResetSteps):
    """Press FIRE after every reset, for Atari games that wait for it to start.

    After the wrapped env resets, the ``actions`` are taken in turn (by default FIRE, then
    action 2, as the Atari wrappers of OpenAI Baselines and Stable-Baselines3 do). If an
    episode ends during them it is reset and they go on. Batched envs: see
    :class:`NoopResetEnv`.

    Args:
        actions: The actions taken after each reset (ALE's FIRE is ``1``).

    Raises:
        TransformError: ``actions`` is empty, the transform is not in a TransformedEnv, or
            the env has several action keys.
        UnsupportedEnvOperationError: A batched env is partially reset.

    Example:
        >>> env = TransformedEnv(GymEnv("ALE/Breakout-v5"), FireResetEnv())
    """

    _several_keys_message = (
        "FireResetEnv: each of its actions is one value of one action key, but the env has "
        "action keys {keys}"
    )

    def __init__(self, actions: Sequence[Any] = (1, 2)) -> None:
        super().__init__()
        if isinstance(actions, (str, bytes)) or not isinstance(actions, Sequence) or not actions:
            raise TransformError(
                f"FireResetEnv: actions must be a non-empty sequence of actions, e.g. (1, 2), "
                f"got {actions!r}"
            )
        self.actions = list(actions)

    def _actions(self, parent: EnvBase) -> list[Any]:
        return self.actions

    def extra_repr(self) -> str:
        return f"actions={self.actions}"


class FrameSkipTransform(Transform):
    """Repeat each action ``frame_skip`` times, summing the rewards.

    The repeats stop early when an episode ends: the step returns the observation and
    flags of the last frame taken and the sum of the rewards up to it. In a batched env
    the repeats stop for every element as soon as any element is done, so no env is
    stepped past the end of its episode.

    With ``max_pool``, the named observation entries hold the elementwise maximum of the
    last two frames taken (Atari's remedy for sprites drawn only every other frame).

    Args:
        frame_skip: Number of frames per step.
        max_pool: Observation entries to max-pool over the last two frames.

    Raises:
        TransformError: ``frame_skip`` is not a positive int, the transform is not in a
            TransformedEnv, or a ``max_pool`` entry is not an observation of the env.

    Example:
        >>> env = TransformedEnv(PendulumEnv(), FrameSkipTransform(4))
        >>> td = env.rand_step(env.reset())
    """

    def __init__(
        self, frame_skip: int = 1, *, max_pool: NestedKey | Sequence[NestedKey] | None = None
    ) -> None:
        super().__init__()
        self.frame_skip = positive_int(frame_skip, "FrameSkipTransform", "frame_skip")
        self.max_pool = as_key_list(max_pool)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        observed = {unravel_key(k) for k in observation_spec.keys(True, True)}
        missing = [k for k in self.max_pool if unravel_key(k) not in observed]
        if missing:
            raise TransformError(
                f"FrameSkipTransform: max_pool entries {missing} are not observations of the "
                f"env; it has {sorted(map(str, observed))}"
            )
        return observation_spec

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        if self.frame_skip == 1:
            return next_tensordict
        parent = _parent_of(self)
        if parent.any_done(next_tensordict.get(DONE)):
            return next_tensordict
        # The env takes the other frames: a backend may do it without TensorDicts per frame.
        return parent._step_frames(tensordict, next_tensordict, self.frame_skip - 1, self.max_pool)

    def extra_repr(self) -> str:
        pooled = f", max_pool={self.max_pool}" if self.max_pool else ""
        return f"frame_skip={self.frame_skip}{pooled}"


class EndOfLifeTransform(Transform):
    """Flag the steps where a life is lost (Atari's ``lives`` counter drops), or the game ends.

    Reads the lives counter ``lives_key`` (e.g. ALE's ``info["lives"]``, copied into the
    TensorDict by ``GymEnv(..., info_keys=["lives"])``) of the previous and the new
    observation and writes ``eol_key`` (bool, ``[*batch, 1]``): ``True`` when the counter
    dropped or the episode is done. The env is not reset at a lost life; a loss or value
    estimator treats it as the end of the trajectory through its keys, e.g.
    ``loss.set_keys(done="end-of-life", terminated="end-of-life")`` (the agent then values
    each life on its own, as the "episodic life" wrappers of other libraries do).

    Args:
        eol_key: Where to write the flag.
        lives_key: The lives counter, an observation entry.
        done_key: The done flag that also ends a life.
        eol_attribute: TorchRL's way to the lives (an attribute of the gym env); rlblocks
            raises, saying what to write instead.

    Raises:
        TransformError: The env has no ``lives_key`` observation; ``eol_attribute`` given.

    Example:
        >>> env = TransformedEnv(GymEnv("ALE/Breakout-v5", info_keys=["lives"]),
        ...                      EndOfLifeTransform())
        >>> env.rand_step(env.reset())["next", "end-of-life"].shape
        torch.Size([1])
    """

    def __init__(
        self,
        eol_key: NestedKey = "end-of-life",
        lives_key: NestedKey = "lives",
        done_key: NestedKey = DONE,
        eol_attribute: str | None = None,
    ) -> None:
        if eol_attribute is not None:
            raise TransformError(
                f"EndOfLifeTransform reads the lives from the TensorDict, not from an env "
                f"attribute (got eol_attribute={eol_attribute!r}, TorchRL's argument): create "
                f"the env with GymEnv(..., info_keys=['lives']) and drop eol_attribute"
            )
        super().__init__()
        self.eol_key = eol_key
        self.lives_key = lives_key
        self.done_key = done_key

    def _flag(self, like: torch.Tensor, value: bool) -> torch.Tensor:
        return torch.full(like.shape, value, dtype=torch.bool, device=like.device)

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        done = tensordict_reset.get(self.done_key)
        return tensordict_reset.set(self.eol_key, self._flag(done, False))

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        lives = tensordict.get(self.lives_key, None)
        done = next_tensordict.get(self.done_key)
        if lives is None:  # a step from a TensorDict without the counter: only done counts
            return next_tensordict.set(self.eol_key, done.clone())
        lost = torch.lt(next_tensordict.get(self.lives_key), lives).reshape(done.shape)
        return next_tensordict.set(self.eol_key, lost.logical_or_(done))

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        if self.lives_key not in observation_spec.keys(True, True):
            raise TransformError(
                f"EndOfLifeTransform: the env has no {self.lives_key!r} observation to read "
                f"the lives from; for ALE games create it with GymEnv(..., "
                f"info_keys=['lives']); observations: "
                f"{sorted(map(str, observation_spec.keys(True, True)))}"
            )
        shape = (*observation_spec.shape, 1)
        observation_spec[self.eol_key] = Binary(
            shape=shape, dtype=torch.bool, device=observation_spec.device
        )
        return observation_spec

    def extra_repr(self) -> str:
        return f"eol_key={self.eol_key!r}, lives_key={self.lives_key!r}"


class InitTracker(Transform):
    """Mark the first step of each episode with an ``is_init`` flag (read by RNNs).

    Writes ``init_key`` (bool, ``[*batch, 1]``): ``True`` after a reset (for the elements
    a partial reset restarts), ``False`` after every step. On a plain TensorDict that lacks
    the flag, the last batch dim is time: the flag is set on the first step and after every
    ``("next", "done")``; ``"next"`` flags are ``False``.

    Args:
        init_key: Where to write the flag.

    Example:
        >>> env = TransformedEnv(PendulumEnv(batch_size=[4]), InitTracker())
        >>> env.reset()["is_init"].all()
        tensor(True)
    """

    def __init__(self, init_key: NestedKey = IS_INIT) -> None:
        super().__init__()
        self.init_key = init_key

    def _flags(self, tensordict: TensorDictBase, value: bool) -> torch.Tensor:
        shape = (*tensordict.batch_size, 1)
        return torch.full(shape, value, dtype=torch.bool, device=tensordict.device)

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        mask = reset_mask(tensordict)
        flags = self._flags(tensordict_reset, True)
        if mask is not None:
            flags = mask.reshape(flags.shape).to(torch.bool)
        return tensordict_reset.set(self.init_key, flags)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict.set(self.init_key, self._flags(next_tensordict, False))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Add the flags to a plain TensorDict that lacks them (time = last batch dim)."""
        if tensordict.get(self.init_key, None) is None:
            if tensordict.batch_dims:
                flags = trajectory_starts(tensordict, DONE).unsqueeze(-1)
            else:
                flags = self._flags(tensordict, True)
            tensordict.set(self.init_key, flags)
        next_td = tensordict.get(NEXT, None)
        if isinstance(next_td, TensorDictBase) and next_td.get(self.init_key, None) is None:
            next_td.set(self.init_key, self._flags(next_td, False))
        return tensordict

    def _call_trajectory(
        self, trajectory: TensorDictBase, start: TensorDictBase | None = None
    ) -> TensorDictBase:
        # A rollout from a reset: flags from the done flags give what stepping would have.
        return self.forward(trajectory)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        observation_spec[self.init_key] = Binary(
            shape=(*observation_spec.shape, 1), dtype=torch.bool, device=observation_spec.device
        )
        return observation_spec

    def extra_repr(self) -> str:
        return f"init_key={self.init_key!r}"


class TensorDictPrimer(Transform):
    """Add entries that the env does not produce, e.g. the hidden state of a recurrent policy.

    Each primer is declared by a spec. Its entry is filled at reset (with ``default_value``,
    or random values from the spec with ``random=True``; a partial reset refills only the
    elements it resets) and carried through steps: the value the policy wrote under
    ``("next", key)`` if any, else the current one. The primers are added to the
    observation spec and to the state spec (they are inputs of the next step).

    Args:
        primers: A mapping (or Composite) from keys to specs; more can be given as keyword
            arguments. Specs are given without the env's batch dims (see ``expand_specs``).
        random: Fill with ``spec.rand()`` instead of ``default_value``.
        default_value: The fill value, one number or a mapping from keys to numbers.
        expand_specs: ``True``: prepend the env's batch dims to every spec; ``None``:
            prepend them unless a spec's shape already starts with them (the leaves of a
            Composite with an empty shape, such as an RNN module's ``primer_specs()``,
            always get them); ``False``: specs already have the batch dims.
        **kwargs: More ``key=spec`` primers.

    Raises:
        TransformError: No primer is given, a primer is not a spec, or (``expand_specs=False``)
            a spec lacks the batch dims.

    Example:
        >>> primer = TensorDictPrimer(recurrent_state=Unbounded(shape=(1, 64)))
        >>> env = TransformedEnv(PendulumEnv(batch_size=[8]), primer)
        >>> env.reset()["recurrent_state"].shape
        torch.Size([8, 1, 64])
    """

    def __init__(
        self,
        primers: Mapping[NestedKey, TensorSpec] | Composite | None = None,
        random: bool = False,
        default_value: float | Mapping[NestedKey, float] = 0.0,
        expand_specs: bool | None = None,
        **kwargs: TensorSpec,
    ) -> None:
        super().__init__()
        entries: list[tuple[NestedKey, Any]] = []
        # A Composite says which dims are batch dims: with an empty shape (e.g. an RNN
        # module's primer_specs()), its leaves have none, whatever the env's batch size.
        self._unbatched: set[NestedKey] = set()
        if isinstance(primers, Composite):
            leaves = primers.items(include_nested=True, leaves_only=True)
            entries += leaves
            if not primers.shape:
                self._unbatched.update(key for key, _ in leaves)
        elif primers is not None:
            entries += list(primers.items())
        entries += list(kwargs.items())
        if not entries:
            raise TransformError(
                "TensorDictPrimer: give at least one primer, e.g. "
                "TensorDictPrimer(hidden=Unbounded(shape=(1, 64)))"
            )
        for key, spec in entries:
            if not isinstance(spec, TensorSpec) or isinstance(spec, Composite):
                raise TransformError(
                    f"TensorDictPrimer: the primer {key!r} must be a leaf spec (e.g. "
                    f"Unbounded(shape=(1, 64))), got {spec!r}"
                )
        self.primers: dict[NestedKey, TensorSpec] = dict(entries)
        self.random = random
        self.default_value = default_value
        self.expand_specs = expand_specs
        self._batch_size: torch.Size | None = None  # the env's, once its specs were seen
        self._spec_cache: dict[tuple[Any, ...], TensorSpec] = {}

    # ------------------------------------------------------------------ values
    def _given_batch_ndim(self, key: NestedKey) -> int:
        """How many of the env's batch dims the primer's spec was given with."""
        env_batch, shape = self._batch_size, self.primers[key].shape
        if self.expand_specs is None and (env_batch is None or key in self._unbatched):
            return 0
        if self.expand_specs is True:
            return 0
        if env_batch is None:
            raise TransformError(
                "TensorDictPrimer(expand_specs=False) has not seen an env's batch size yet; "
                "use it inside a TransformedEnv"
            )
        n = len(env_batch)
        starts = shape[:n] == env_batch
        if self.expand_specs is False and not starts:
            raise TransformError(
                f"TensorDictPrimer: the primer {key!r} has shape {list(shape)}, which does not "
                f"start with the env's batch size {list(env_batch)} (expand_specs=False); give "
                f"specs with the batch dims, or let them be expanded"
            )
        return n if n and starts else 0

    def _full_spec(self, key: NestedKey, batch: torch.Size, device: torch.device) -> TensorSpec:
        """The primer's spec with ``batch`` leading dims (the env's or a TensorDict's)."""
        cache_key = (key, tuple(batch), device)
        spec = self._spec_cache.get(cache_key)
        if spec is None:
            spec = strip_batch(self.primers[key], self._given_batch_ndim(key)).to(device)
            if len(batch):
                spec = spec.expand(*batch, *spec.shape)
            self._spec_cache[cache_key] = spec
        return spec

    def _fill(self, key: NestedKey, spec: TensorSpec) -> torch.Tensor:
        if self.random:
            return spec.rand()
        value = self.default_value
        if isinstance(value, Mapping):
            value = value.get(key, 0.0)
        return torch.full(spec.shape, value, dtype=spec.dtype, device=spec.device)

    def _reset(
        self, tensordict: TensorDictBase | None, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        mask = reset_mask(tensordict)
        batch, device = tensordict_reset.batch_size, tensordict_reset.device
        self._learn_batch_size(batch)  # a reset's output has the env's batch size
        for key in self.primers:
            new = self._fill(key, self._full_spec(key, batch, device))
            # The reset's output carries the current values of the elements not reset.
            tensordict_reset.set(key, where_reset(mask, new, tensordict_reset.get(key, None)))
        return tensordict_reset

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        for key in self.primers:
            if next_tensordict.get(key, None) is not None:
                continue
            value = tensordict.get((NEXT, *key_parts(key)), None)
            if value is None:
                value = tensordict.get(key, None)
            if value is None:
                spec = self._full_spec(key, next_tensordict.batch_size, next_tensordict.device)
                value = self._fill(key, spec)
            next_tensordict.set(key, value)
        return next_tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Fill the primers a plain TensorDict lacks (root and ``"next"``) with defaults."""
        levels = [tensordict]
        next_td = tensordict.get(NEXT, None)
        if isinstance(next_td, TensorDictBase):
            levels.append(next_td)
        for level in levels:
            for key in self.primers:
                if level.get(key, None) is None:
                    spec = self._full_spec(key, level.batch_size, level.device)
                    level.set(key, self._fill(key, spec))
        return tensordict

    # ------------------------------------------------------------------ specs
    def _learn_batch_size(self, batch_size: torch.Size) -> None:
        """Record the env's batch size (it tells which primer shapes include it)."""
        if batch_size != self._batch_size:
            self._batch_size = batch_size
            self._spec_cache.clear()

    def _add_primers(self, spec: Composite) -> Composite:
        self._learn_batch_size(spec.shape)
        for key in self.primers:
            spec[key] = self._full_spec(key, spec.shape, spec.device)
        return spec

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        return self._add_primers(observation_spec)

    def transform_state_spec(self, state_spec: Composite) -> Composite:
        return self._add_primers(state_spec)

    def extra_repr(self) -> str:
        return f"primers={list(self.primers)}, random={self.random}"
