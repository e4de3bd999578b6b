"""``ModelBasedEnv``: an environment whose step is a learned model.

Model-based methods (Dreamer, MBPO, PETS) roll policies out in a model of the dynamics
instead of the real env. Wrapping the model in an :class:`~rlblocks.envs.EnvBase` gives those
imagined rollouts everything a real env has: ``rollout``, ``step_and_maybe_reset``,
transforms (``TransformedEnv``), the collectors and ``check_env_specs``. The autograd graph
is kept, so a loss on imagined rewards backpropagates into the model and the policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import DONE, NEXT, RESET, TERMINATED, TRUNCATED
from rlblocks.core.fast_td import fast_get, new_tensordict
from rlblocks.core.specs import Composite, TensorSpec
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs._env_specs import Keys
from rlblocks.envs.errors import EnvSpecError, UnsupportedEnvOperationError

__all__ = ["ModelBasedEnv"]

WorldModel = Callable[[TensorDictBase], TensorDictBase]
ResetFn = Callable[[torch.Size], TensorDictBase]

# How each done flag of a step is made (see _StepPlan).
_FROM_MODEL, _FALSE, _COPY_TERMINATED = "model", "false", "copy"


def _as_size(batch_size: Any) -> torch.Size:
    return torch.Size([batch_size] if isinstance(batch_size, int) else list(batch_size))


def _fit_batch(spec: Composite, batch_size: torch.Size, what: str, owner: str) -> Composite:
    """``spec`` with batch shape ``batch_size``: as it is, or with leading dims added.

    Raises:
        EnvSpecError: The spec's batch shape is not the trailing dims of ``batch_size``.
    """
    shape = spec.shape
    if shape == batch_size:
        return spec
    n = len(shape)
    if n < len(batch_size) and batch_size[len(batch_size) - n :] == shape:
        return spec.expand(batch_size)
    raise EnvSpecError(
        f"{owner}: the {what} has batch shape {list(shape)}, which cannot be expanded to the "
        f"model env's batch_size {list(batch_size)} (specs only gain leading dims). Fix: "
        f"pass a spec of batch shape {list(batch_size)} or [] (unbatched), or build the model "
        f"env from an unbatched env"
    )


def _read(tensordict: TensorDictBase, key: NestedKey) -> Any:
    return fast_get(tensordict, key) if type(key) is str else tensordict.get(key, None)


def _keys_str(keys: list[NestedKey]) -> str:
    return ", ".join(repr(k) for k in keys)


class _StepPlan:
    """The keys a step reads from the model's output, resolved once per spec change."""

    __slots__ = ("done", "done_shapes", "flat", "keys", "observation", "reward")

    def __init__(self, keys: Keys, specs: dict[str, Composite]) -> None:
        self.keys = keys
        self.observation = list(keys.observation)
        self.reward = [(key, specs["reward"][key].shape) for key in keys.reward]
        parts = [(k,) if isinstance(k, str) else tuple(k) for k in keys.done]
        terminated = {p[:-1] for p in parts if p[-1] == TERMINATED}
        # done = terminated | truncated with truncated always False: a "done" beside a
        # "terminated" copies it; other flags come from the model when it writes them.
        self.done: list[tuple[NestedKey, str]] = []
        for key, p in zip(keys.done, parts):
            if p[-1] == TRUNCATED:
                how = _FALSE
            elif p[-1] == DONE and p[:-1] in terminated:
                how = _COPY_TERMINATED
            else:
                how = _FROM_MODEL
            self.done.append((key, how))
        # terminated first, so that "done" can copy it whatever the spec's key order.
        self.done.sort(key=lambda item: item[1] == _COPY_TERMINATED)
        self.done_shapes = {key: specs["done"][key].shape for key in keys.done}
        self.flat = all(type(k) is str for k in (*self.observation, *keys.reward, *keys.done))


class ModelBasedEnv(EnvBase):
    """An environment whose dynamics are a learned model (a world model).

    ``step`` calls the world model once and returns what it predicts, so a model env works
    wherever a real env does: ``rollout``, ``step_and_maybe_reset``, ``TransformedEnv``
    (add ``StepCounter(H)`` for an imagination horizon), the collectors and
    ``check_env_specs``. The autograd graph is kept through every step: imagined rewards
    and states backpropagate into the model's parameters, the actions and the policy, as
    Dreamer's actor loss needs.

    **The world model contract.** The model is called on a TensorDict (a shallow copy of
    the step's input, so the caller's TensorDict is never written into) that holds the
    current observation keys (the keys of ``observation_spec``: ``"observation"``, or a
    latent ``"state"``/``"belief"``) and the action keys. It returns a TensorDict (the same
    one or a new one) holding, under ``"next"``:

    * every observation key: the predicted next observation (or latent state);
    * ``"reward"``, of shape ``[*batch_size, 1]`` (every key of the reward spec);
    * optionally ``"terminated"``, a bool ``[*batch_size, 1]``; missing means ``False``.

    ``truncated`` is always ``False`` and ``done == terminated``: a model has no time limit
    of its own, add ``StepCounter`` for one. A ``TensorDictModule`` with
    ``out_keys=[("next", "observation"), ("next", "reward")]`` fits the contract as it is.

    **Start states.** ``reset(td)`` with a ``td`` holding every observation key starts from
    those values, as they are (their graph is kept): the usual start of imagination, latent
    states inferred from real data. Otherwise ``reset_fn(batch_size)`` returns them (a
    TensorDict of batch size ``batch_size`` with the observation keys); it also provides the
    new start states of a partial reset (the rows of a ``"_reset"`` mask), which
    ``StepCounter`` and ``rollout(break_when_any_done=False)`` ask for.

    **Seeding.** The env draws nothing at random itself, so ``set_seed`` changes nothing;
    reproducible start states are ``reset_fn``'s job (and a stochastic model's).

    Args:
        world_model: The dynamics, a ``TensorDictModuleBase`` or any callable TensorDict ->
            TensorDict following the contract above.
        observation_spec: Spec of the observation (or latent state) keys, with batch shape
            ``batch_size`` or ``[]`` (then expanded to ``batch_size``).
        action_spec: Spec of the action: a leaf (stored under ``"action"``; its shape
            starts with ``batch_size``) or a Composite (batch shape ``batch_size`` or
            ``[]``).
        reward_spec: Spec of the reward, as ``action_spec``; default: ``Unbounded`` of
            shape ``[*batch_size, 1]`` under ``"reward"``.
        batch_size: Batch dims of the env (``[N]`` for N imagined trajectories).
        device: Device of the tensors the env reads and writes.
        reset_fn: ``reset_fn(batch_size) -> TensorDict`` of start states; ``None`` means
            start states must come with every ``reset(td)``.
        check_actions: Validate actions in ``step`` and ``rollout`` against
            ``action_spec`` (see :class:`~rlblocks.envs.EnvBase`).

    Raises:
        TypeError: ``world_model`` or ``reset_fn`` is not callable.
        EnvSpecError: A spec is not a spec, or its batch shape fits neither ``batch_size``
            nor ``[]``.

    Example:
        >>> from tensordict.nn import TensorDictModule
        >>> model = TensorDictModule(
        ...     dynamics,  # nn.Module: (observation, action) -> (next observation, reward)
        ...     in_keys=["observation", "action"],
        ...     out_keys=[("next", "observation"), ("next", "reward")],
        ... )
        >>> env = ModelBasedEnv.from_env(PendulumEnv(), model, batch_size=[256])
        >>> start = replay_buffer.sample(256).select("observation", "state")
        >>> imagined = env.rollout(15, actor, auto_reset=True, tensordict=start)
        >>> actor_loss = -imagined["next", "reward"].sum(-2).mean()  # backprop to actor
    """

    def __init__(
        self,
        world_model: WorldModel,
        *,
        observation_spec: Composite,
        action_spec: TensorSpec | Composite,
        reward_spec: TensorSpec | Composite | None = None,
        batch_size: Any = (),
        device: Any = None,
        reset_fn: ResetFn | None = None,
        check_actions: bool = True,
    ) -> None:
        name = type(self).__name__
        if not callable(world_model):
            raise TypeError(
                f"{name}: world_model must be callable (TensorDict -> TensorDict), e.g. a "
                f"TensorDictModule; got {type(world_model).__name__}"
            )
        if reset_fn is not None and not callable(reset_fn):
            raise TypeError(
                f"{name}: reset_fn must be callable (batch_size -> TensorDict of start "
                f"states) or None; got {type(reset_fn).__name__}"
            )
        super().__init__(device=device, batch_size=batch_size, check_actions=check_actions)
        self.world_model = world_model
        self.reset_fn = reset_fn
        self.full_observation_spec = self._as_composite("observation_spec", observation_spec)
        self.full_action_spec = self._as_composite("action_spec", action_spec, "action")
        if reward_spec is not None:
            self.full_reward_spec = self._as_composite("reward_spec", reward_spec, "reward")
        self._plan: _StepPlan | None = None

    @classmethod
    def from_env(
        cls,
        env: EnvBase,
        world_model: WorldModel,
        *,
        observation_spec: Composite | None = None,
        batch_size: Any = None,
        reset_fn: ResetFn | None = None,
        check_actions: bool = True,
    ) -> ModelBasedEnv:
        """A model env with the action, reward and done specs of a real env.

        The observation spec is the env's too unless ``observation_spec`` is given (a
        latent model). The real env's specs are expanded to ``batch_size`` (leading dims
        added), so an unbatched env gives the specs of a model env of any batch size. The
        real env's ``state_spec`` is not copied: the model's inputs are its observations.

        Args:
            env: The real env whose specs the model env takes (it is not stepped).
            world_model: The dynamics (see the class docstring for the contract).
            observation_spec: Spec of a latent state, instead of the env's observations.
            batch_size: Batch dims of the model env; default: the env's.
            reset_fn: See the class docstring.
            check_actions: Validate actions against the env's action spec.

        Returns:
            A new :class:`ModelBasedEnv` on the env's device.

        Raises:
            TypeError: ``env`` is not an ``EnvBase``.
            EnvSpecError: The env's batch_size is not the trailing dims of ``batch_size``.

        Example:
            >>> env = ModelBasedEnv.from_env(PendulumEnv(), model, batch_size=[64])
            >>> env.action_spec.high  # the real env's bounds, for 64 rows
        """
        if not isinstance(env, EnvBase):
            raise TypeError(
                f"{cls.__name__}.from_env: env must be an rlblocks EnvBase (the real env "
                f"whose specs the model env takes), got {type(env).__name__}"
            )
        batch = env.batch_size if batch_size is None else _as_size(batch_size)
        owner = f"{cls.__name__}.from_env"

        def fit(spec: Composite, what: str) -> Composite:
            return _fit_batch(spec, batch, f"{type(env).__name__}'s {what}", owner).clone()

        model_env = cls(
            world_model,
            observation_spec=(
                fit(env.full_observation_spec, "full_observation_spec")
                if observation_spec is None
                else observation_spec
            ),
            action_spec=fit(env.full_action_spec, "full_action_spec"),
            reward_spec=fit(env.full_reward_spec, "full_reward_spec"),
            batch_size=batch,
            device=env.device,
            reset_fn=reset_fn,
            check_actions=check_actions,
        )
        model_env.full_done_spec = fit(env.full_done_spec, "full_done_spec")
        return model_env

    # ------------------------------------------------------------------ EnvBase backend
    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        keys = self.observation_keys
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        given = (
            [] if tensordict is None else [k for k in keys if tensordict.get(k, None) is not None]
        )
        if mask is None and len(given) == len(keys):
            # Start states given (e.g. inferred from real data): used as they are, graph kept.
            assert tensordict is not None
            return self._new_td({k: tensordict.get(k) for k in keys})
        if self.reset_fn is None:
            missing = [k for k in keys if k not in given]
            what = (
                "a partial reset (a '_reset' mask) needs new start states for the masked rows"
                if mask is not None
                else f"reset() got no start states for {_keys_str(missing)}"
            )
            raise UnsupportedEnvOperationError(
                f"{type(self).__name__}: {what}, and the env has no reset_fn. Fix: pass the "
                f"start states, env.reset(TensorDict({{{_keys_str(keys)}: ...}}, "
                f"batch_size={list(self.batch_size)})), or give the env a "
                f"reset_fn(batch_size) -> TensorDict of start states"
            )
        start = self._call_reset_fn()
        if mask is None:
            return self._new_td({k: start.get(k) for k in keys})
        assert tensordict is not None
        nb = len(self.batch_size)
        mask = mask.reshape(self.batch_size)
        out = {}
        for key in keys:
            new, old = start.get(key), tensordict.get(key, None)
            if old is not None:
                # Only the masked rows start over; the others keep their values (and graph).
                row_mask = mask.reshape(*self.batch_size, *([1] * (new.dim() - nb)))
                new = torch.where(row_mask, new, old)
            out[key] = new
        return self._new_td(out)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        plan = self._step_plan()
        # A shallow copy: the model may write into its input without touching the caller's;
        # a stale "next" (a re-stepped TensorDict) must not pass for the model's output.
        if fast_get(tensordict, NEXT) is None:
            model_input = tensordict.copy()
        else:
            model_input = tensordict.exclude(NEXT)
        out = self.world_model(model_input)
        predicted = fast_get(out, NEXT) if isinstance(out, TensorDictBase) else None
        if not isinstance(predicted, TensorDictBase):
            raise self._missing_error(out, plan.observation + [k for k, _ in plan.reward])
        data: dict[NestedKey, Any] = {}
        missing = []
        for key in plan.observation:
            value = _read(predicted, key)
            if value is None:
                missing.append(key)
            data[key] = value
        for key, shape in plan.reward:
            value = _read(predicted, key)
            if value is None:
                missing.append(key)
            elif value.shape != shape:
                raise EnvSpecError(
                    f"{type(self).__name__}: the world model wrote ('next', {key!r}) of shape "
                    f"{list(value.shape)}, but the reward spec's shape is {list(shape)}. Fix: "
                    f"have the model write rewards of shape {list(shape)} (e.g. "
                    f"reward.unsqueeze(-1))"
                )
            data[key] = value
        if missing:
            raise self._missing_error(out, missing)
        self._add_done_flags(plan, predicted, data)
        if plan.flat:
            return new_tensordict(data, self._batch_size, self._device)
        result = TensorDict(batch_size=self._batch_size, device=self._device)
        for key, value in data.items():
            result.set(key, value)
        return result

    def _set_seed(self, seed: int | None) -> None:
        # Nothing random here: seeding the start states is the reset_fn's job.
        pass

    # ------------------------------------------------------------------ helpers
    def _as_composite(self, what: str, spec: Any, leaf_key: str | None = None) -> Composite:
        """A constructor's spec argument as a Composite of batch shape ``batch_size``."""
        name = type(self).__name__
        if isinstance(spec, Composite):
            return _fit_batch(spec, self.batch_size, what, name)
        if leaf_key is None or not isinstance(spec, TensorSpec):
            wanted = "a Composite" if leaf_key is None else "a TensorSpec or a Composite"
            raise EnvSpecError(
                f"{name}: {what} must be {wanted} from rlblocks.core.specs, got "
                f"{type(spec).__name__}"
            )
        nb = len(self.batch_size)
        if spec.shape[:nb] != self.batch_size:
            raise EnvSpecError(
                f"{name}: {what} has shape {list(spec.shape)}, which does not start with the "
                f"env's batch_size {list(self.batch_size)}. Fix: include the batch dims, "
                f"spec.expand({[*self.batch_size, *spec.shape]}), or pass an unbatched "
                f"Composite({{{leaf_key!r}: spec}})"
            )
        return Composite({leaf_key: spec}, shape=self.batch_size, device=self.device)

    def _step_plan(self) -> _StepPlan:
        keys = self._keys()
        plan = self._plan
        if plan is None or plan.keys is not keys:  # the specs changed: resolve again
            plan = self._plan = _StepPlan(keys, self._specs)
        return plan

    def _add_done_flags(
        self, plan: _StepPlan, predicted: TensorDictBase, data: dict[NestedKey, Any]
    ) -> None:
        any_terminated = False
        for key, how in plan.done:
            shape = plan.done_shapes[key]
            value = None
            if how == _FROM_MODEL:
                value = _read(predicted, key)
                if value is not None:
                    if value.dtype != torch.bool or value.shape != shape:
                        raise EnvSpecError(
                            f"{type(self).__name__}: the world model wrote ('next', {key!r}) "
                            f"as a {value.dtype} tensor of shape {list(value.shape)}, but "
                            f"the done spec wants bool of shape {list(shape)}. Fix: write "
                            f"a bool tensor (e.g. logits > 0) of that shape"
                        )
                    any_terminated = True
            elif how == _COPY_TERMINATED:
                parts = (key,) if isinstance(key, str) else tuple(key)
                sibling = (*parts[:-1], TERMINATED)
                value = data.get(sibling[0] if len(sibling) == 1 else sibling)
                if value is not None:
                    # A copy: transforms may update one flag in place.
                    value = value.clone()
            if value is None:
                value = torch.zeros(shape, dtype=torch.bool, device=self._device)
            data[key] = value
        if not any_terminated and DONE in data:
            # Nothing can be done: rollouts ask any_done() without reading the tensor.
            self._record_done(data[DONE], False)

    def _call_reset_fn(self) -> TensorDictBase:
        assert self.reset_fn is not None
        start = self.reset_fn(self.batch_size)
        name = type(self).__name__
        if not isinstance(start, TensorDictBase) or start.batch_size != self.batch_size:
            got = (
                f"a TensorDict of batch size {list(start.batch_size)}"
                if isinstance(start, TensorDictBase)
                else f"a {type(start).__name__}"
            )
            raise EnvSpecError(
                f"{name}: reset_fn({list(self.batch_size)}) returned {got}; it must return "
                f"a TensorDict of batch size {list(self.batch_size)} holding the start states"
            )
        missing = [k for k in self.observation_keys if start.get(k, None) is None]
        if missing:
            raise EnvSpecError(
                f"{name}: reset_fn returned no {_keys_str(missing)}; it must return every "
                f"observation key ({_keys_str(self.observation_keys)}). Returned keys: "
                f"{sorted(map(str, start.keys(True, True)))}"
            )
        return start

    def _missing_error(self, out: Any, missing: list[NestedKey]) -> EnvSpecError:
        if isinstance(out, TensorDictBase):
            got = f"keys {sorted(map(str, out.keys(True, True)))}"
        else:
            got = f"a {type(out).__name__}, not a TensorDict"
        wanted = [(NEXT, *((k,) if isinstance(k, str) else k)) for k in missing]
        return EnvSpecError(
            f"{type(self).__name__}: the world model's output lacks {_keys_str(wanted)}; it "
            f"returned {got}. Fix: the model must return a TensorDict holding, under "
            f"'next', the next observation keys ({_keys_str(self.observation_keys)}) and "
            f"the reward ({_keys_str(self.reward_keys)}), e.g. a TensorDictModule with "
            f"out_keys=[('next', 'observation'), ('next', 'reward')]"
        )

    def _new_td(self, data: dict[NestedKey, Any]) -> TensorDictBase:
        result = TensorDict(batch_size=self._batch_size, device=self._device)
        for key, value in data.items():
            result.set(key, value)
        return result
