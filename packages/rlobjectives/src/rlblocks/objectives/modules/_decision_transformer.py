"""The Decision Transformer (Chen et al., 2021): a causal transformer over ``(R, s, a)`` tokens.

- :class:`DecisionTransformer`: embeds each step's return-to-go, state and action as three
  tokens ``(R_1, s_1, a_1, R_2, s_2, a_2, ...)``, adds a per-step position (or timestep)
  embedding, and runs a GPT-style causal transformer; it returns the hidden state of each
  state token, which has seen ``R_<=t``, ``s_<=t`` and ``a_<t`` but not ``a_t``.
- The actors that put an action head on it and the policy that acts online are in
  :mod:`._decision_transformer_actors`.

Everything is plain ``torch.nn`` (no ``transformers`` dependency). The configuration uses
TorchRL's field names (:class:`DTConfig`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rlblocks.core.utils import check_int
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError

__all__ = [
    "RETURN_TO_GO",
    "STEP_COUNT",
    "MASK",
    "per_step",
    "expand_mask",
    "init_weights",
    "DTConfig",
    "make_config",
    "DecisionTransformer",
]

RETURN_TO_GO = "return_to_go"
"""The return still to collect from a step on, ``[*batch, T, 1]`` (the datasets' key)."""
STEP_COUNT = "step_count"
"""The step of the episode, written by ``StepCounter`` (``[*batch, 1]``, int64)."""
MASK = ("collector", "mask")
"""True at the real steps of a padded slice or trajectory, ``[*batch, T]``."""

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "gelu_new": lambda: nn.GELU(approximate="tanh"),  # GPT-2's default
    "tanh": nn.Tanh,
}
_OWNER = "DecisionTransformer"
# Arguments that set other fields: context_length sets n_positions (3 tokens per step),
# dropout sets the three dropout probabilities.
_SHORTHANDS = ("context_length", "dropout")


@dataclass
class DTConfig:
    """The transformer's architecture (TorchRL's ``DecisionTransformer.DTConfig`` fields).

    Attributes:
        n_embd: Width of the tokens.
        n_layer: Number of transformer blocks.
        n_head: Attention heads (must divide ``n_embd``).
        n_inner: Hidden width of each block's MLP (``None``: ``4 * n_embd``).
        activation: ``"relu"``, ``"gelu"``, ``"gelu_new"`` (GPT-2's) or ``"tanh"``.
        n_positions: Longest token sequence, three tokens per step: the context holds at most
            ``n_positions // 3`` steps (:attr:`context_length`).
        resid_pdrop: Dropout after attention and MLP.
        attn_pdrop: Dropout on the attention weights.
        embd_pdrop: Dropout on the embedded tokens.
        max_ep_len: With a number, steps are told apart by their timestep in the episode (an
            embedding of ``max_ep_len`` entries, as in the paper) and the network needs
            timesteps; with ``None``, by their position in the context window.

    Example:
        >>> config = DTConfig(n_embd=128, n_positions=60)
        >>> config.context_length
        20
    """

    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_inner: int | None = 1024
    activation: str = "relu"
    n_positions: int = 1024
    resid_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    max_ep_len: int | None = None

    @property
    def context_length(self) -> int:
        """The most steps a call may hold (``n_positions // 3``)."""
        return self.n_positions // 3


def make_config(
    owner: str, config: DTConfig | Mapping[str, Any] | None, settings: Mapping[str, Any]
) -> DTConfig:
    """``config`` (a :class:`DTConfig`, a dict of its fields or ``None``) with ``settings``.

    ``settings`` are :class:`DTConfig` fields, plus ``context_length`` (steps; sets
    ``n_positions = 3 * context_length``) and ``dropout`` (sets the three dropouts).

    Raises:
        ObjectiveConfigError: An unknown or invalid setting, naming it and what is allowed.
    """
    if isinstance(config, DTConfig):
        merged = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        merged = dict(config)
    elif config is None:
        merged = {}
    else:
        raise ObjectiveConfigError(
            f"{owner}: the transformer config must be a DTConfig, a dict of its fields or "
            f"None, got {type(config).__name__}"
        )
    fields = [f.name for f in dataclasses.fields(DTConfig)]
    merged.update(settings)
    unknown = sorted(set(merged) - set(fields) - set(_SHORTHANDS))
    if unknown:
        raise ObjectiveConfigError(
            f"{owner}: unknown transformer setting(s) {unknown}; the settings are "
            f"{[*fields, *_SHORTHANDS]}"
        )
    if "context_length" in merged:
        if "n_positions" in settings and "context_length" in settings:
            raise ObjectiveConfigError(
                f"{owner}: give context_length (steps) or n_positions (3 tokens per step), "
                f"not both; got context_length={settings['context_length']!r} and "
                f"n_positions={settings['n_positions']!r}"
            )
        steps = merged.pop("context_length")
        merged["n_positions"] = 3 * check_int(
            steps, "context_length", owner, error=ObjectiveConfigError
        )
    if "dropout" in merged:
        p = merged.pop("dropout")
        merged.update(resid_pdrop=p, attn_pdrop=p, embd_pdrop=p)
    out = DTConfig(**merged)
    _check_config(owner, out)
    return out


def _check_config(owner: str, config: DTConfig) -> None:
    for name in ("n_embd", "n_layer", "n_head"):
        check_int(getattr(config, name), name, owner, error=ObjectiveConfigError)
    check_int(config.n_inner, "n_inner", owner, allow=(None,), error=ObjectiveConfigError)
    check_int(config.max_ep_len, "max_ep_len", owner, allow=(None,), error=ObjectiveConfigError)
    check_int(config.n_positions, "n_positions", owner, minimum=3, error=ObjectiveConfigError)
    if config.n_embd % config.n_head:
        raise ObjectiveConfigError(
            f"{owner}: n_head must divide n_embd, got n_embd={config.n_embd} and "
            f"n_head={config.n_head}"
        )
    if config.activation not in _ACTIVATIONS:
        raise ObjectiveConfigError(
            f"{owner}: activation must be one of {sorted(_ACTIVATIONS)}, got {config.activation!r}"
        )
    for name in ("resid_pdrop", "attn_pdrop", "embd_pdrop"):
        p = getattr(config, name)
        if not 0.0 <= p < 1.0:
            raise ObjectiveConfigError(f"{owner}: {name} must be in [0, 1), got {p!r}")


class _CausalSelfAttention(nn.Module):
    def __init__(self, config: DTConfig) -> None:
        super().__init__()
        width = config.n_embd
        self.n_head = config.n_head
        self.attn_pdrop = config.attn_pdrop
        self.query = nn.Linear(width, width)
        # No key bias: the softmax over keys cancels it. Its gradient would be an exact 0
        # computed with rounding noise, which Adam scales up into full-size steps.
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.proj = nn.Linear(width, width)
        self.resid_drop = nn.Dropout(config.resid_pdrop)

    def forward(self, x: Tensor, allowed: Tensor | None) -> Tensor:
        n, length, width = x.shape
        heads = [
            layer(x).view(n, length, self.n_head, width // self.n_head).transpose(1, 2)
            for layer in (self.query, self.key, self.value)
        ]
        p = self.attn_pdrop if self.training else 0.0
        if allowed is None:
            y = F.scaled_dot_product_attention(*heads, dropout_p=p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(*heads, attn_mask=allowed, dropout_p=p)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(n, length, width)))


class _Block(nn.Module):
    """A GPT-2 block: pre-LayerNorm causal self-attention, then a pre-LayerNorm MLP."""

    def __init__(self, config: DTConfig) -> None:
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = _CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(config.n_embd, inner),
            _ACTIVATIONS[config.activation](),
            nn.Linear(inner, config.n_embd),
            nn.Dropout(config.resid_pdrop),
        )

    def forward(self, x: Tensor, allowed: Tensor | None) -> Tensor:
        x = x + self.attn(self.ln_1(x), allowed)
        return x + self.mlp(self.ln_2(x))


def init_weights(module: nn.Module) -> None:
    """GPT-2's initialization: weights ~ N(0, 0.02), zero biases (LayerNorms stay at 1, 0)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Embedding)):
            nn.init.normal_(layer.weight, std=0.02)
        if isinstance(layer, nn.Linear) and layer.bias is not None:
            nn.init.zeros_(layer.bias)


class DecisionTransformer(nn.Module):
    """A GPT-style causal transformer over interleaved ``(R_t, s_t, a_t)`` tokens.

    Each modality has its own linear embedding; the three tokens of a step share a step
    embedding (the step's position in the window, or its timestep in the episode when the
    config has ``max_ep_len``), then a LayerNorm, the causal blocks and a final LayerNorm.
    The output is the hidden state of each *state* token: the prediction for ``a_t`` sees
    ``R_<=t``, ``s_<=t``, ``a_<t`` and nothing later.

    With an ``attention_mask`` (True at real steps, e.g. ``("collector", "mask")``), the
    inputs at padding steps are replaced by zeros, no token attends to a padding step and
    positions count from the first real step, so a left-padded window embeds like an
    unpadded one.

    Args:
        state_dim: Size of the observation.
        action_dim: Size of the action.
        config: A :class:`DTConfig`, a dict of its fields or ``None`` (the defaults).
        device: Device of the parameters.
        **settings: :class:`DTConfig` fields overriding ``config``, plus ``context_length``
            (steps, sets ``n_positions``) and ``dropout`` (sets the three dropouts).

    Raises:
        ObjectiveConfigError: An invalid size or setting.

    Example:
        >>> model = DecisionTransformer(4, 2, n_embd=32, n_head=2, n_layer=1, context_length=10)
        >>> hidden = model(torch.randn(3, 10, 4), torch.randn(3, 10, 2), torch.randn(3, 10, 1))
        >>> hidden.shape
        torch.Size([3, 10, 32])
    """

    DTConfig = DTConfig  # TorchRL spells it DecisionTransformer.DTConfig

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        config: DTConfig | Mapping[str, Any] | None = None,
        *,
        device: torch.device | str | None = None,
        **settings: Any,
    ) -> None:
        super().__init__()
        owner = _OWNER
        self.state_dim = check_int(state_dim, "state_dim", owner, error=ObjectiveConfigError)
        self.action_dim = check_int(action_dim, "action_dim", owner, error=ObjectiveConfigError)
        self.config = config = make_config(owner, config, settings)
        width = self.hidden_size = config.n_embd
        self.embed_return = nn.Linear(1, width)
        self.embed_state = nn.Linear(self.state_dim, width)
        self.embed_action = nn.Linear(self.action_dim, width)
        steps = config.context_length if config.max_ep_len is None else config.max_ep_len
        self.embed_step = nn.Embedding(steps, width)
        self.embed_ln = nn.LayerNorm(width)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(width)
        init_weights(self)
        if device is not None:
            self.to(device)

    @classmethod
    def default_config(cls) -> DTConfig:
        """The default :class:`DTConfig`."""
        return DTConfig()

    @property
    def context_length(self) -> int:
        """The most steps a call may hold."""
        return self.config.context_length

    def forward(
        self,
        observation: Tensor,
        action: Tensor,
        return_to_go: Tensor,
        timestep: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """The hidden state of each step's state token.

        Args:
            observation: ``[*batch, T, state_dim]``, ``T <= context_length``.
            action: ``[*batch, T, action_dim]`` (the action at step ``t`` is not seen by the
                output at ``t``).
            return_to_go: ``[*batch, T, 1]``.
            timestep: The step in the episode, ``[*batch, T]`` or ``[*batch, T, 1]``
                integers in ``[0, max_ep_len)``; needed exactly when the config has
                ``max_ep_len``.
            attention_mask: True at real steps, ``[*batch, T]`` or ``[*batch, T, 1]``.

        Returns:
            ``[*batch, T, n_embd]``.

        Raises:
            ObjectiveConfigError: An input has the wrong size, length or dtype.
            ShapeMismatchError: The inputs disagree in their ``[*batch, T]`` dims.
        """
        steps = self._check(observation, action, return_to_go)
        batch, length = observation.shape[:-2], observation.shape[-2]
        obs, act, rtg = (
            x.reshape(-1, length, x.shape[-1]) for x in (observation, action, return_to_go)
        )
        n = obs.shape[0]
        mask = per_step(_OWNER, "attention_mask", attention_mask, steps, torch.bool)
        if mask is not None:
            mask = mask.reshape(n, length)
            # Whatever padding holds (NaN too) must not reach the real steps, even through
            # an attention weight of 0.
            real = mask.unsqueeze(-1)
            obs, act, rtg = (torch.where(real, x, 0.0) for x in (obs, act, rtg))
        step = self._step_embedding(timestep, mask, steps, n, obs.device)
        tokens = torch.stack(
            (
                self.embed_return(rtg) + step,
                self.embed_state(obs) + step,
                self.embed_action(act) + step,
            ),
            dim=2,
        )
        x = self.drop(self.embed_ln(tokens.reshape(n, 3 * length, self.hidden_size)))
        allowed = None if mask is None else _allowed(mask)
        for block in self.blocks:
            x = block(x, allowed)
        x = self.ln_f(x).reshape(n, length, 3, self.hidden_size)[:, :, 1]
        return x.reshape(*batch, length, self.hidden_size)

    def _check(self, observation: Tensor, action: Tensor, return_to_go: Tensor) -> torch.Size:
        """``[*batch, T]`` of the inputs, after checking their sizes against the config."""
        owner = _OWNER
        if observation.ndim < 2 or observation.shape[-1] != self.state_dim:
            raise ObjectiveConfigError(
                f"{owner}: observation has shape {list(observation.shape)}; expected "
                f"[*batch, T, {self.state_dim}] (state_dim={self.state_dim}, a time dim T "
                f"before the features)"
            )
        steps = observation.shape[:-1]
        if steps[-1] > self.context_length:
            raise ObjectiveConfigError(
                f"{owner}: the context holds {steps[-1]} steps (observation shape "
                f"{list(observation.shape)}) but at most context_length="
                f"{self.context_length} are allowed; pass the last {self.context_length} "
                f"steps, or build the model with a larger context_length (n_positions)"
            )
        for name, x, size in (
            ("action", action, self.action_dim),
            ("return_to_go", return_to_go, 1),
        ):
            if x.shape != (*steps, size):
                raise ShapeMismatchError(
                    f"{owner}: {name} has shape {list(x.shape)} but observation has shape "
                    f"{list(observation.shape)}; expected {name} shaped {[*steps, size]}"
                )
        return steps

    def _step_embedding(
        self,
        timestep: Tensor | None,
        mask: Tensor | None,
        steps: torch.Size,
        n: int,
        device: torch.device,
    ) -> Tensor:
        """The embedding shared by the three tokens of each step, ``[n, T, n_embd]`` (or
        ``[T, n_embd]``, broadcast, for unpadded positions)."""
        owner = _OWNER
        max_ep_len = self.config.max_ep_len
        if (timestep is None) != (max_ep_len is None):
            raise ObjectiveConfigError(
                f"{owner}: timesteps are embedded exactly when the config has max_ep_len; "
                f"got max_ep_len={max_ep_len} and "
                f"{'no timestep' if timestep is None else 'a timestep'}. Pass timesteps (e.g. "
                f"the 'step_count' key) to a model with max_ep_len, or build the model with "
                f"max_ep_len=<longest episode> to use them"
            )
        if timestep is not None:
            timestep = per_step(_OWNER, "timestep", timestep, steps)
            if timestep.dtype.is_floating_point or timestep.dtype == torch.bool:
                raise ObjectiveConfigError(
                    f"{owner}: timestep must hold integers, got dtype {timestep.dtype}"
                )
            # A data-dependent check: skipped while compiling (it would break the graph).
            if not torch.compiler.is_compiling() and timestep.numel():
                low, high = int(timestep.min()), int(timestep.max())
                if low < 0 or high >= max_ep_len:
                    raise ObjectiveConfigError(
                        f"{owner}: timesteps must be in [0, max_ep_len={max_ep_len}), got "
                        f"values in [{low}, {high}]; build the model with a larger max_ep_len"
                    )
            return self.embed_step(timestep.reshape(n, -1))
        if mask is None:
            return self.embed_step(torch.arange(steps[-1], device=device))
        return self.embed_step((mask.long().cumsum(-1) - 1).clamp(min=0))


def per_step(
    owner: str,
    name: str,
    x: Tensor | None,
    steps: torch.Size,
    dtype: torch.dtype | None = None,
    fix: str = "",
) -> Tensor | None:
    """``x`` (a mask or timesteps) as ``[*steps]``, dropping a trailing singleton dim.

    Raises:
        ShapeMismatchError: ``x`` is shaped neither ``[*steps]`` nor ``[*steps, 1]``.
        ObjectiveConfigError: ``x`` does not have ``dtype`` (when given).
    """
    if x is None:
        return None
    if x.shape == (*steps, 1):
        x = x.squeeze(-1)
    if x.shape != steps:
        raise ShapeMismatchError(
            f"{owner}: {name} has shape {list(x.shape)}; expected {list(steps)} or "
            f"{[*steps, 1]} (one entry per step){fix}"
        )
    if dtype is not None and x.dtype != dtype:
        raise ObjectiveConfigError(f"{owner}: {name} must have dtype {dtype}, got {x.dtype}")
    return x


def expand_mask(mask: Tensor, like: Tensor) -> Tensor:
    """``mask`` ``[*steps]`` expanded over the trailing dims of ``like`` ``[*steps, ...]``."""
    return mask.reshape(*mask.shape, *(1,) * (like.ndim - mask.ndim)).expand_as(like)


def _allowed(mask: Tensor) -> Tensor:
    """``[n, 1, 3T, 3T]``: causal, no attention to padding steps, every token to itself."""
    tokens = mask.repeat_interleave(3, dim=-1)
    length = tokens.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    # A padding token still attends to itself: no row is empty (which would give NaN).
    itself = torch.eye(length, dtype=torch.bool, device=mask.device)
    return (causal & (tokens[:, None, :] | itself)).unsqueeze(1)
