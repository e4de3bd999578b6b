"""The Decision Transformer's actors and the policy that acts online with them.

- :class:`DTActor` (deterministic, ``tanh``-bounded) and :class:`OnlineDTActor` (a Gaussian's
  ``loc`` and ``scale``) put an action head on a
  :class:`~rlblocks.objectives.modules.DecisionTransformer`.
- :class:`DecisionTransformerPolicy` acts online from a rolling window of the last steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor, nn

from rlblocks.core import ACTION, OBSERVATION
from rlblocks.core.utils import check_int
from rlblocks.objectives._keys import TensorKeys
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules._decision_transformer import (
    MASK,
    RETURN_TO_GO,
    STEP_COUNT,
    DecisionTransformer,
    DTConfig,
    expand_mask,
    init_weights,
)

__all__ = ["DTActor", "OnlineDTActor", "DecisionTransformerPolicy"]


class _DTHead(nn.Module):
    """Shared by the actors: the transformer (TorchRL's actor config by default) and the
    call; subclasses add their heads in ``_build`` and map hidden states in ``_act``."""

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        transformer_config: DTConfig | Mapping[str, Any] | None = None,
        *,
        device: torch.device | str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        if transformer_config is None:
            transformer_config = self.default_config()
        self.transformer = DecisionTransformer(
            state_dim, action_dim, transformer_config, device=device, **settings
        )
        self._build(self.transformer.action_dim, device)

    @classmethod
    def default_config(cls) -> DTConfig:
        """TorchRL's default for its DT actors (512 wide, 4 layers, 4 heads)."""
        return DTConfig(n_embd=512, n_layer=4, n_head=4, n_inner=2048)

    def _linear(self, size: int, device: torch.device | str | None) -> nn.Linear:
        layer = nn.Linear(self.transformer.hidden_size, size, device=device)
        init_weights(layer)
        return layer

    def _build(self, action_dim: int, device: torch.device | str | None) -> None:
        raise NotImplementedError

    def _act(self, hidden: Tensor) -> Any:
        raise NotImplementedError

    def forward(
        self,
        observation: Tensor,
        action: Tensor,
        return_to_go: Tensor,
        timestep: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Any:
        """The policy's output at every step (see the class); the inputs are
        :class:`DecisionTransformer`'s."""
        return self._act(
            self.transformer(observation, action, return_to_go, timestep, attention_mask)
        )


class DTActor(_DTHead):
    """The Decision Transformer's policy: ``a_t = tanh(W h(s_t))``, deterministic.

    Called with :class:`DecisionTransformer`'s inputs, it returns the action predicted at
    every step, ``[*batch, T, action_dim]``. Train it with
    :class:`~rlblocks.objectives.DecisionTransformerLoss`; act online with
    :class:`DecisionTransformerPolicy`. Wrap it for TensorDicts with ``Actor(dt_actor,
    in_keys=["observation", "action", "return_to_go"])``, or a ``TensorDictModule`` with
    ``in_keys={..., "attention_mask": ("collector", "mask")}`` for padded data (and
    ``"timestep": "step_count"`` with ``max_ep_len``).

    TorchRL's ``DTActor`` returns the pre-``tanh`` value, which its recipes squash with a
    ``TanhDelta``: pass ``tanh=False`` when wrapping this one the same way.

    Args:
        state_dim: Size of the observation.
        action_dim: Size of the action.
        transformer_config: A :class:`DTConfig` or dict (default :meth:`default_config`).
        device: Device of the parameters.
        tanh: Squash the action into ``[-1, 1]``.
        **settings: :class:`DTConfig` fields overriding ``transformer_config``, plus
            ``context_length`` and ``dropout`` (see :class:`DecisionTransformer`).

    Example:
        >>> actor = DTActor(4, 2, n_embd=32, n_inner=64, n_layer=1, n_head=2, context_length=8)
        >>> actor(torch.randn(5, 8, 4), torch.randn(5, 8, 2), torch.randn(5, 8, 1)).shape
        torch.Size([5, 8, 2])
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        transformer_config: DTConfig | Mapping[str, Any] | None = None,
        *,
        device: torch.device | str | None = None,
        tanh: bool = True,
        **settings: Any,
    ) -> None:
        super().__init__(state_dim, action_dim, transformer_config, device=device, **settings)
        self.tanh = tanh

    def _build(self, action_dim: int, device: torch.device | str | None) -> None:
        self.action_layer = self._linear(action_dim, device)

    def _act(self, hidden: Tensor) -> Tensor:
        out = self.action_layer(hidden)
        return torch.tanh(out) if self.tanh else out


class OnlineDTActor(_DTHead):
    """The Online Decision Transformer's policy: a Gaussian's ``loc`` and ``scale`` per step.

    Called with :class:`DecisionTransformer`'s inputs, it returns ``(loc, scale)``, each
    ``[*batch, T, action_dim]``; ``scale = exp(log_std)`` with ``log_std`` squashed into
    ``[log_std_min, log_std_max] = [-5, 2]``. Use it with ``ProbabilisticActor(...,
    distribution_class=TanhNormal)`` (after a ``TensorDictModule`` writing ``["loc",
    "scale"]``) and train it with :class:`~rlblocks.objectives.OnlineDTLoss`.

    Args: as :class:`DTActor`, without ``tanh`` (the distribution squashes).

    Example:
        >>> actor = OnlineDTActor(4, 2, n_embd=32, n_inner=64, n_layer=1, n_head=2)
        >>> loc, scale = actor(torch.randn(5, 8, 4), torch.randn(5, 8, 2), torch.randn(5, 8, 1))
    """

    log_std_min: float = -5.0
    log_std_max: float = 2.0

    def _build(self, action_dim: int, device: torch.device | str | None) -> None:
        self.action_layer_mean = self._linear(action_dim, device)
        self.action_layer_logstd = self._linear(action_dim, device)

    def _act(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        squashed = torch.tanh(self.action_layer_logstd(hidden))
        half_range = 0.5 * (self.log_std_max - self.log_std_min)
        log_std = self.log_std_min + half_range * (squashed + 1.0)
        return self.action_layer_mean(hidden), log_std.exp()


class DecisionTransformerPolicy(TensorDictModuleBase):
    """Act online with a Decision Transformer actor from a rolling window of the last steps.

    Each call appends the new observation, the current return-to-go target and the step's
    timestep to a window of the last ``context_length`` steps (left-padded with zeros,
    ``("collector", "mask")`` false there), runs the actor on the window and writes its
    prediction for the newest step at ``action``. :meth:`observe` then lowers the target by
    the reward received (``target <- target - reward_scale * reward``) and, given the done
    flags, starts a fresh window for the episodes that ended. The window lives in the module
    (one per env of a batch); :meth:`reset` clears it.

    TorchRL's ``DecisionTransformerInferenceWrapper`` instead masks a window built by env
    transforms (``CatFrames`` + ``TargetReturn``); this one keeps the window itself.

    Args:
        actor: A TensorDict module reading the window (``observation``, ``action``,
            ``return_to_go`` and optionally ``step_count``/``("collector", "mask")``,
            ``[*batch, K, ...]``) and writing ``action`` ``[*batch, K, action_dim]``, e.g.
            ``Actor(DTActor(...), in_keys=[...])``.
        target_return: The return to aim for, in the units of the ``return_to_go`` the
            actor was trained on.
        context_length: Steps in the window (default: the transformer's).
        action_dim: Size of the action (default: the transformer's).
        reward_scale: Factor from env rewards to ``return_to_go`` units.

    Raises:
        ObjectiveConfigError: ``context_length``/``action_dim`` are not given and ``actor``
            holds no :class:`DecisionTransformer`, or the window is longer than it allows.

    Example:
        >>> policy = DecisionTransformerPolicy(actor, target_return=3.6, reward_scale=0.001)
        >>> td = env.reset()
        >>> for _ in range(1000):
        ...     td = env.step(policy(td))
        ...     policy.observe(td["next", "reward"], td["next", "done"])
        ...     td = step_mdp(td)
    """

    default_keys: ClassVar[Mapping[str, NestedKey]] = {
        "observation": OBSERVATION,
        "action": ACTION,
        "return_to_go": RETURN_TO_GO,
        "timestep": STEP_COUNT,
        "mask": MASK,
    }

    def __init__(
        self,
        actor: nn.Module,
        *,
        target_return: float,
        context_length: int | None = None,
        action_dim: int | None = None,
        reward_scale: float = 1.0,
    ) -> None:
        super().__init__()
        owner = "DecisionTransformerPolicy"
        self.actor = actor
        model = next((m for m in actor.modules() if isinstance(m, DecisionTransformer)), None)
        if model is None and (context_length is None or action_dim is None):
            raise ObjectiveConfigError(
                f"{owner}: the actor holds no DecisionTransformer to read the window length "
                f"and action size from; pass context_length=... and action_dim=..."
            )
        if context_length is None:
            context_length = model.context_length
        self.context_length = check_int(
            context_length, "context_length", owner, error=ObjectiveConfigError
        )
        if model is not None and context_length > model.context_length:
            raise ObjectiveConfigError(
                f"{owner}: context_length={context_length} but the actor's transformer holds at "
                f"most {model.context_length} steps; pass context_length <= "
                f"{model.context_length}"
            )
        self.action_dim = check_int(
            model.action_dim if action_dim is None else action_dim,
            "action_dim",
            owner,
            error=ObjectiveConfigError,
        )
        self.target_return = float(target_return)
        self.reward_scale = float(reward_scale)
        self._keys = TensorKeys(owner, self.default_keys)
        self._set_io_keys()
        self._window: TensorDictBase | None = None
        self._return: Tensor | None = None
        self._timestep: Tensor | None = None

    @property
    def tensor_keys(self) -> TensorKeys:
        """The keys read and written, by role (see :meth:`set_tensor_keys`)."""
        return self._keys

    def set_tensor_keys(self, **keys: NestedKey) -> DecisionTransformerPolicy:
        """Rename keys by role, e.g. ``set_tensor_keys(observation="obs")`` (TorchRL's name).

        The roles are ``observation``, ``action``, ``return_to_go``, ``timestep`` and
        ``mask``. The window is cleared.

        Returns:
            ``self``.
        """
        self._keys.update(**keys)
        self._set_io_keys()
        self.reset()
        return self

    def _set_io_keys(self) -> None:
        self.in_keys = [self._keys.observation]
        self.out_keys = [self._keys.action]

    def reset(self, done: Tensor | None = None) -> None:
        """Clear the window: of every env (``done=None``) or of those where ``done`` is True."""
        if done is None or self._window is None:
            self._window = self._return = self._timestep = None
            return
        batch = self._return.shape[:-1]
        if done.dtype != torch.bool or done.numel() != batch.numel():
            raise ShapeMismatchError(
                f"DecisionTransformerPolicy.reset: done must be a bool tensor with one flag per "
                f"env ({list(batch)} or {[*batch, 1]}), got dtype {done.dtype} and shape "
                f"{list(done.shape)}"
            )
        rows = done.reshape(batch)
        self._window = self._window.apply(lambda x: x.masked_fill(expand_mask(rows, x), 0))
        self._return = self._return.masked_fill(rows.unsqueeze(-1), self.target_return)
        self._timestep = self._timestep.masked_fill(rows.unsqueeze(-1), 0)

    def _start(self, observation: Tensor) -> None:
        batch = observation.shape[:-1]
        window = (*batch, self.context_length)
        k = self._keys
        self._window = TensorDict(
            {
                k.observation: observation.new_zeros(*window, observation.shape[-1]),
                k.action: observation.new_zeros(*window, self.action_dim),
                k.return_to_go: observation.new_zeros(*window, 1),
                k.timestep: torch.zeros(*window, 1, dtype=torch.long, device=observation.device),
                k.mask: torch.zeros(window, dtype=torch.bool, device=observation.device),
            },
            batch_size=window,
        )
        self._return = observation.new_full((*batch, 1), self.target_return)
        self._timestep = torch.zeros(*batch, 1, dtype=torch.long, device=observation.device)

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the action for ``tensordict``'s observation (``[*batch, obs_dim]``)."""
        k = self._keys
        observation = tensordict.get(k.observation)
        batch = observation.shape[:-1]
        if self._window is None or self._window.batch_size[:-1] != batch:
            self._start(observation)
        step = TensorDict(
            {
                k.observation: observation,
                k.action: observation.new_zeros(*batch, self.action_dim),
                k.return_to_go: self._return,
                k.timestep: self._timestep,
                k.mask: torch.ones(batch, dtype=torch.bool, device=observation.device),
            },
            batch_size=batch,
        )
        self._window = torch.cat([self._window[..., 1:], step.unsqueeze(-1)], dim=-1)
        predicted = self.actor(self._window.copy()).get(k.action)[..., -1, :]
        self._window.get(k.action)[..., -1, :] = predicted
        tensordict.set(k.action, predicted)
        return tensordict

    def observe(self, reward: Tensor, done: Tensor | None = None) -> None:
        """Account for the reward of the last action; reset the windows of ended episodes.

        Args:
            reward: ``[*batch, 1]`` or ``[*batch]`` (e.g. ``td["next", "reward"]``).
            done: Optional ``[*batch, 1]`` flags (e.g. ``td["next", "done"]``).

        Raises:
            ObjectiveConfigError: Called before the policy acted.
            ShapeMismatchError: ``reward`` or ``done`` does not hold one entry per env.
        """
        if self._return is None:
            raise ObjectiveConfigError(
                "DecisionTransformerPolicy.observe: call the policy on an observation first"
            )
        if reward.numel() != self._return.numel():
            raise ShapeMismatchError(
                f"DecisionTransformerPolicy.observe: reward has shape {list(reward.shape)}; "
                f"expected one per env, {list(self._return.shape)}"
            )
        self._return = self._return - self.reward_scale * reward.reshape(self._return.shape)
        self._timestep = self._timestep + 1
        if done is not None:
            self.reset(done)
