"""World models (Dreamer's RSSM, observation encoders and decoders) and their TensorDict wrapper.

The recurrent state-space model of Hafner et al. (2019, PlaNet; 2020, Dreamer): a
deterministic path ``belief_t = GRU(belief_{t-1}, f(state_{t-1}, action_{t-1}))`` and a
stochastic latent ``state_t``, drawn from the *prior* ``p(state_t | belief_t)`` when
imagining and from the *posterior* ``q(state_t | belief_t, embed(obs_t))`` when observing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor, nn

from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules._networks import ConvNet

__all__ = [
    "RSSM",
    "ObsEncoder",
    "ObsDecoder",
    "WorldModel",
    "STATE",
    "BELIEF",
]

STATE = "state"
"""The stochastic latent ``[*batch, state_dim]``."""
BELIEF = "belief"
"""The deterministic (GRU) latent ``[*batch, belief_dim]``."""


class RSSM(nn.Module):
    """The recurrent state-space model: a GRU belief and a Gaussian latent state.

    Args:
        action_dim: Size of the (flat) action.
        embedding_dim: Size of an observation's embedding (the encoder's output).
        state_dim: Size of the stochastic latent (Dreamer: 30).
        belief_dim: Size of the GRU's hidden state (Dreamer: 200).
        hidden_dim: Width of the prior, posterior and input layers (Dreamer: 200).
        min_std: Lower bound of the latent's standard deviation (Dreamer: 0.1).

    Example:
        >>> rssm = RSSM(action_dim=1, embedding_dim=64, state_dim=8, belief_dim=32)
        >>> state, belief = rssm.initial_state(torch.Size([4]))
        >>> out = rssm.observe(torch.zeros(4, 10, 64), torch.zeros(4, 10, 1), state, belief)
        >>> out["posterior_mean"].shape
        torch.Size([4, 10, 8])
    """

    def __init__(
        self,
        action_dim: int,
        embedding_dim: int,
        *,
        state_dim: int = 30,
        belief_dim: int = 200,
        hidden_dim: int = 200,
        min_std: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (
            ("action_dim", action_dim),
            ("embedding_dim", embedding_dim),
            ("state_dim", state_dim),
            ("belief_dim", belief_dim),
            ("hidden_dim", hidden_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ObjectiveConfigError(f"RSSM: {name} must be an int >= 1, got {value!r}")
        self.action_dim, self.embedding_dim = action_dim, embedding_dim
        self.state_dim, self.belief_dim, self.min_std = state_dim, belief_dim, min_std
        self.input_layer = nn.Sequential(nn.Linear(state_dim + action_dim, hidden_dim), nn.ELU())
        self.cell = nn.GRUCell(hidden_dim, belief_dim)
        self.prior_net = nn.Sequential(
            nn.Linear(belief_dim, hidden_dim), nn.ELU(), nn.Linear(hidden_dim, 2 * state_dim)
        )
        self.posterior_net = nn.Sequential(
            nn.Linear(belief_dim + embedding_dim, hidden_dim),
            nn.ELU(),
            nn.Linear(hidden_dim, 2 * state_dim),
        )

    def initial_state(self, batch_shape: torch.Size, device: Any = None) -> tuple[Tensor, Tensor]:
        """Zero ``(state, belief)`` for ``batch_shape``: where every sequence starts."""
        device = device if device is not None else self.cell.weight_hh.device
        return (
            torch.zeros(*batch_shape, self.state_dim, device=device),
            torch.zeros(*batch_shape, self.belief_dim, device=device),
        )

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw_std = x.chunk(2, -1)
        return mean, F.softplus(raw_std) + self.min_std

    def _gaussian(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean, std = self._stats(x)
        return mean, std, mean + std * torch.randn_like(std)

    def prior(
        self, state: Tensor, belief: Tensor, action: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One imagined step: ``(prior_mean, prior_std, next_state, next_belief)``.

        The next state is a reparameterized sample, so gradients flow through it.
        """
        batch = belief.shape[:-1]
        inputs = self.input_layer(torch.cat([state, action.to(state.dtype)], -1))
        belief = self.cell(
            inputs.reshape(-1, inputs.shape[-1]), belief.reshape(-1, self.belief_dim)
        )
        belief = belief.reshape(*batch, self.belief_dim)
        mean, std, sample = self._gaussian(self.prior_net(belief))
        return mean, std, sample, belief

    def posterior(self, belief: Tensor, embedding: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The state given the belief and an observation: ``(mean, std, sample)``."""
        return self._gaussian(self.posterior_net(torch.cat([belief, embedding], -1)))

    def observe(
        self, embeddings: Tensor, actions: Tensor, state: Tensor, belief: Tensor
    ) -> dict[str, Tensor]:
        """Filter a sequence: prior and posterior at every step.

        Args:
            embeddings: ``[*batch, T, embedding_dim]``, the embeddings of the observations
                each action led to (``("next", obs)``).
            actions: ``[*batch, T, action_dim]``.
            state: The state before the first action, ``[*batch, state_dim]``.
            belief: The belief before the first action, ``[*batch, belief_dim]``.

        Returns:
            ``{"prior_mean", "prior_std", "posterior_mean", "posterior_std", "state",
            "belief"}``, each ``[*batch, T, dim]``: the latents after each action.
        """
        # The same math as prior() then posterior() at each step, with every term that
        # does not depend on the recurrence computed once for the whole sequence: the
        # action's and the embedding's parts of the two input layers, and the prior (a
        # function of the belief alone). The loop keeps the GRU step and what feeds it.
        batch = belief.shape[:-1]
        input_linear, posterior_linear = self.input_layer[0], self.posterior_net[0]
        action_part = F.linear(
            actions.to(state.dtype), input_linear.weight[:, self.state_dim :], input_linear.bias
        )
        embedding_part = F.linear(
            embeddings, posterior_linear.weight[:, self.belief_dim :], posterior_linear.bias
        )
        state_weight = input_linear.weight[:, : self.state_dim]
        belief_weight = posterior_linear.weight[:, : self.belief_dim]
        states, beliefs, means, stds = [], [], [], []
        for t in range(embeddings.shape[-2]):
            inputs = F.elu(F.linear(state, state_weight) + action_part[..., t, :])
            belief = self.cell(
                inputs.reshape(-1, inputs.shape[-1]), belief.reshape(-1, self.belief_dim)
            ).reshape(*batch, self.belief_dim)
            hidden = F.elu(F.linear(belief, belief_weight) + embedding_part[..., t, :])
            mean, std, state = self._gaussian(self.posterior_net[2](hidden))
            states.append(state)
            beliefs.append(belief)
            means.append(mean)
            stds.append(std)
        belief_seq = torch.stack(beliefs, -2)
        prior_mean, prior_std = self._stats(self.prior_net(belief_seq))  # no sample needed
        return {
            "prior_mean": prior_mean,
            "prior_std": prior_std,
            "posterior_mean": torch.stack(means, -2),
            "posterior_std": torch.stack(stds, -2),
            STATE: torch.stack(states, -2),
            BELIEF: belief_seq,
        }


_OBSERVE_KEYS = ("prior_mean", "prior_std", "posterior_mean", "posterior_std", STATE, BELIEF)


class ObsEncoder(nn.Module):
    """Dreamer's pixel encoder: 4 convolutions (kernel 4, stride 2, ELU), 64x64 -> 1024.

    Input ``[*batch, 3, 64, 64]`` floats, output ``[*batch, 32 * channels]``.

    Args:
        channels: Channels of the first layer, doubled at each next one (Dreamer: 32).
        in_channels: Image channels.
    """

    def __init__(self, channels: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.net = ConvNet(
            in_channels,
            num_cells=[channels, channels * 2, channels * 4, channels * 8],
            kernel_sizes=4,
            strides=2,
        )
        self.out_features = channels * 8 * 2 * 2

    def forward(self, pixels: Tensor) -> Tensor:
        return self.net(pixels)


class ObsDecoder(nn.Module):
    """Dreamer's pixel decoder: a linear layer, then 4 transposed convolutions to 64x64.

    Input ``[*batch, latent_dim]``, output ``[*batch, 3, 64, 64]`` (the mean of a unit
    Gaussian over pixels).

    Args:
        latent_dim: Size of the input (``state_dim + belief_dim``).
        channels: Channels of the last hidden layer, doubled towards the first.
        out_channels: Image channels.
    """

    def __init__(self, latent_dim: int, channels: int = 32, out_channels: int = 3) -> None:
        super().__init__()
        width = channels * 32
        self.width = width
        self.linear = nn.Linear(latent_dim, width)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(width, channels * 4, 5, stride=2),
            nn.ELU(),
            nn.ConvTranspose2d(channels * 4, channels * 2, 5, stride=2),
            nn.ELU(),
            nn.ConvTranspose2d(channels * 2, channels, 6, stride=2),
            nn.ELU(),
            nn.ConvTranspose2d(channels, out_channels, 6, stride=2),
        )

    def forward(self, latent: Tensor) -> Tensor:
        batch = latent.shape[:-1]
        x = self.linear(latent).reshape(-1, self.width, 1, 1)
        x = self.net(x)
        return x.reshape(*batch, *x.shape[1:])


class WorldModel(TensorDictModuleBase):
    """A Dreamer world model on TensorDicts: encoder, RSSM, decoder, reward (and continue) heads.

    **Observing** (``forward``): on a sequence batch ``[*batch, T]`` (e.g. from
    :class:`~rlblocks.buffers.SliceSampler`) holding the actions and the observations they
    led to (``("next", observation_key)``), filters the sequence from a zero latent and
    writes under ``"next"``: ``state``, ``belief``, the prior's and posterior's
    ``*_mean``/``*_std``, the reconstruction ``reco_<observation_key>``, ``reward_pred``
    and, with a continue head, ``continue_logit``. Sequences must not cross episode ends.

    **Imagining** (:meth:`imagine`): one prior step from ``(state, belief, action)``, with
    the predicted reward; :meth:`transition_module` wraps it as the model of a
    :class:`~rlblocks.envs.ModelBasedEnv`.

    Args:
        encoder: ``observation -> embedding`` (an :class:`ObsEncoder` for pixels, an MLP for
            vectors).
        rssm: The :class:`RSSM`.
        decoder: ``[state, belief] -> observation`` (an :class:`ObsDecoder`, or an MLP).
        reward_model: ``[state, belief] -> reward [*, 1]``.
        continue_model: ``[state, belief] -> logit [*, 1]`` of the episode going on (for
            tasks that terminate); ``None`` for tasks that do not (dm_control's).
        observation_key: The observation the encoder reads and the decoder rebuilds.
        action_key: The action.

    Example:
        >>> rssm = RSSM(action_dim=1, embedding_dim=32, state_dim=8, belief_dim=32)
        >>> model = WorldModel(MLP(3, 32), rssm, MLP(40, 3), MLP(40, 1))
        >>> out = model(batch)      # batch: [B, T] with "action", ("next", "observation")
        >>> out["next", "reco_observation"].shape == batch["next", "observation"].shape
        True
    """

    def __init__(
        self,
        encoder: nn.Module,
        rssm: RSSM,
        decoder: nn.Module,
        reward_model: nn.Module,
        continue_model: nn.Module | None = None,
        *,
        observation_key: str = "observation",
        action_key: str = "action",
    ) -> None:
        super().__init__()
        self.encoder, self.rssm, self.decoder = encoder, rssm, decoder
        self.reward_model, self.continue_model = reward_model, continue_model
        self.observation_key, self.action_key = observation_key, action_key
        self.reco_key = f"reco_{observation_key}"
        self.in_keys = [self.action_key, ("next", observation_key)]
        written = [*_OBSERVE_KEYS, self.reco_key, "reward_pred"]
        written += ["continue_logit"] if continue_model is not None else []
        self.out_keys = [("next", key) for key in written]

    @property
    def latent_dim(self) -> int:
        """``state_dim + belief_dim``: what the decoder and the heads read."""
        return self.rssm.state_dim + self.rssm.belief_dim

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if tensordict.batch_dims < 1:
            raise ShapeMismatchError(
                f"WorldModel: expected a sequence batch [*batch, T], got batch size "
                f"{list(tensordict.batch_size)}; sample sequences (e.g. with SliceSampler)"
            )
        action = tensordict.get(self.action_key)
        observation = tensordict.get(("next", self.observation_key))
        batch = tensordict.batch_size[:-1]
        state, belief = self.rssm.initial_state(batch, device=observation.device)
        embedding = self.encoder(observation)
        flat_action = action.reshape(*tensordict.batch_size, -1)
        latents = self.rssm.observe(embedding, flat_action, state, belief)
        features = torch.cat([latents[STATE], latents[BELIEF]], -1)
        nxt = tensordict.get("next")
        for key, value in latents.items():
            nxt.set(key, value)
        nxt.set(self.reco_key, self.decoder(features))
        nxt.set("reward_pred", self.reward_model(features))
        if self.continue_model is not None:
            nxt.set("continue_logit", self.continue_model(features))
        return tensordict

    def imagine(
        self, state: Tensor, belief: Tensor, action: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """One imagined step: ``(next_state, next_belief, reward, continue_logit or None)``."""
        _, _, state, belief = self.rssm.prior(state, belief, action.reshape(*belief.shape[:-1], -1))
        features = torch.cat([state, belief], -1)
        logit = self.continue_model(features) if self.continue_model is not None else None
        return state, belief, self.reward_model(features), logit

    def transition_module(self) -> _Transition:
        """A TensorDict module for :class:`~rlblocks.envs.ModelBasedEnv`: reads ``state``,
        ``belief`` and the action, writes them and ``reward`` under ``"next"`` (and, with a
        continue head, ``continue_logit``: imagination never ends an episode, the actor
        loss discounts by the continue probability instead)."""
        return _Transition(self)


class _Transition(TensorDictModuleBase):
    """The imagination step of a :class:`WorldModel` as a TensorDict module."""

    def __init__(self, world_model: WorldModel) -> None:
        super().__init__()
        self.world_model = world_model
        self.in_keys = [STATE, BELIEF, world_model.action_key]
        self.out_keys = [("next", STATE), ("next", BELIEF), ("next", "reward")]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        state, belief, reward, logit = self.world_model.imagine(
            tensordict.get(STATE),
            tensordict.get(BELIEF),
            tensordict.get(self.world_model.action_key),
        )
        nxt = TensorDict({STATE: state, BELIEF: belief, "reward": reward}, tensordict.batch_size)
        if logit is not None:
            nxt.set("continue_logit", logit)
        tensordict.set("next", nxt)
        return tensordict
