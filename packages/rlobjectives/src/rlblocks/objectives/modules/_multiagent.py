"""Networks over a group of agents: :class:`MultiAgentMLP` and the mixers of QMIX and VDN.

Per-agent tensors are laid out ``[*batch, n_agents, features]`` (the agent dim right after
the batch dims, as under a group key of a multi-agent TensorDict). Every agent is computed
at once, in one batched matrix product per layer: there is no Python loop over agents.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor, nn

from rlblocks.core.utils import check_int
from rlblocks.objectives._keys import CHOSEN_ACTION_VALUE
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules._actors import _keys
from rlblocks.objectives.modules._networks import _cells

__all__ = ["MultiAgentMLP", "Mixer", "VDNMixer", "QMixer"]

_GROUP = "agents"
_STATE = "state"


class _AgentLinear(nn.Module):
    """``n_agents`` independent linear layers applied at once.

    ``weight[i]`` and ``bias[i]`` are agent ``i``'s, laid out as ``nn.Linear``'s
    (``[out, in]`` and ``[out]``). The input is ``[*batch, n_agents, in]``, or with
    ``shared_input=True`` ``[*batch, in]``: one input that every agent reads (the first
    layer of a centralised network).
    """

    def __init__(
        self,
        n_agents: int,
        in_features: int,
        out_features: int,
        *,
        shared_input: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.n_agents = n_agents
        self.in_features = in_features
        self.out_features = out_features
        self.shared_input = shared_input
        self.weight = nn.Parameter(torch.empty(n_agents, out_features, in_features, device=device))
        self.bias = nn.Parameter(torch.empty(n_agents, out_features, device=device))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw every agent's weights independently, as ``nn.Linear`` does for one layer."""
        # nn.Linear's default (kaiming_uniform with a=sqrt(5), and its bias rule) comes down
        # to U(-1/sqrt(in), 1/sqrt(in)) for every entry; each entry is drawn on its own, so
        # the agents' layers differ.
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``[*batch, n_agents, in]`` (or ``[*batch, in]``) -> ``[*batch, n_agents, out]``."""
        if self.shared_input:
            return torch.einsum("...i,noi->...no", x, self.weight) + self.bias
        return torch.einsum("...ni,noi->...no", x, self.weight) + self.bias

    def extra_repr(self) -> str:
        return (
            f"n_agents={self.n_agents}, in_features={self.in_features}, "
            f"out_features={self.out_features}, shared_input={self.shared_input}"
        )


class MultiAgentMLP(nn.Module):
    """An MLP for each agent of a group: ``[*batch, n_agents, in]`` -> ``[*batch, n_agents, out]``.

    The arguments and their meaning are TorchRL's.

    - ``share_params=True``: one set of weights for every agent (homogeneous agents);
      ``False``: each agent has its own weights, drawn independently.
    - ``centralized=True``: each agent's network reads every agent's input, concatenated
      (``n_agents * n_agent_inputs`` features); ``False``: each agent reads only its own.
      Centralised with shared weights is one network over all the inputs, so every agent
      gets the same output (a centralised critic).

    Args:
        n_agent_inputs: Input features per agent. Required (no lazy sizing).
        n_agent_outputs: Output features per agent.
        n_agents: Number of agents (the size of the agent dim, ``-2``).
        centralized: Let each agent read all agents' inputs.
        share_params: One network for all agents.
        depth: Number of hidden layers when ``num_cells`` is an int (default 3, as
            :class:`MLP`).
        num_cells: Hidden sizes: a list (one per layer) or an int repeated ``depth`` times
            (default 32, as :class:`MLP`).
        activation_class: Activation after each hidden layer.
        activation_kwargs: Keyword arguments of ``activation_class``.
        device: Device of the parameters.
        centralised: Older spelling of ``centralized`` (TorchRL accepts both).

    Raises:
        ObjectiveConfigError: A size is not a positive int, or ``centralized`` or
            ``share_params`` is missing.

    Example:
        >>> policy_net = MultiAgentMLP(
        ...     n_agent_inputs=18, n_agent_outputs=5, n_agents=3,
        ...     centralized=False, share_params=True, num_cells=[64, 64],
        ... )
        >>> policy_net(torch.randn(32, 3, 18)).shape
        torch.Size([32, 3, 5])
    """

    def __init__(
        self,
        n_agent_inputs: int | None,
        n_agent_outputs: int,
        n_agents: int,
        *,
        centralized: bool | None = None,
        share_params: bool | None = None,
        depth: int | None = None,
        num_cells: int | Sequence[int] | None = None,
        activation_class: type[nn.Module] = nn.Tanh,
        activation_kwargs: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        centralised: bool | None = None,
    ) -> None:
        super().__init__()
        owner = "MultiAgentMLP"
        if n_agent_inputs is None:
            raise ObjectiveConfigError(
                f"{owner}: n_agent_inputs=None (lazy sizing) is not supported; pass the "
                f"number of features of one agent's input, e.g. "
                f"n_agent_inputs=env.observation_spec['agents', 'observation'].shape[-1]"
            )
        self.n_agent_inputs = check_int(
            n_agent_inputs, "n_agent_inputs", owner, error=ObjectiveConfigError
        )
        self.n_agent_outputs = check_int(
            n_agent_outputs, "n_agent_outputs", owner, error=ObjectiveConfigError
        )
        self.n_agents = check_int(n_agents, "n_agents", owner, error=ObjectiveConfigError)
        self.centralized = _required_flag(owner, centralized, centralised)
        if share_params is None:
            raise ObjectiveConfigError(
                f"{owner}: share_params is required: True for one network shared by every "
                f"agent, False for one network per agent"
            )
        self.share_params = bool(share_params)
        cells = _cells(owner, num_cells, depth)
        in_size = self.n_agent_inputs * (self.n_agents if self.centralized else 1)
        sizes = [in_size, *cells, self.n_agent_outputs]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            if self.share_params:
                layers.append(nn.Linear(fan_in, fan_out, device=device))
            else:
                shared_input = self.centralized and i == 0
                layers.append(
                    _AgentLinear(
                        self.n_agents, fan_in, fan_out, shared_input=shared_input, device=device
                    )
                )
            if i < len(sizes) - 2:
                layers.append(activation_class(**(activation_kwargs or {})))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``[*batch, n_agents, n_agent_inputs]`` to ``[*batch, n_agents, n_agent_outputs]``.

        Raises:
            ShapeMismatchError: The input's last two dims are not
                ``(n_agents, n_agent_inputs)``.
        """
        expected = (self.n_agents, self.n_agent_inputs)
        if x.ndim < 2 or tuple(x.shape[-2:]) != expected:
            raise ShapeMismatchError(
                f"MultiAgentMLP(n_agents={self.n_agents}, n_agent_inputs="
                f"{self.n_agent_inputs}) expects inputs shaped [*batch, {expected[0]}, "
                f"{expected[1]}] (agent dim, then features), got {list(x.shape)}. Check that "
                f"the key read is the group's per-agent entry (e.g. ('agents', "
                f"'observation')) and that n_agents matches the group."
            )
        if self.centralized:
            x = x.flatten(-2)
        y = self.layers(x)
        if self.centralized and self.share_params:
            # One network over every input: the same output for each agent.
            y = y.unsqueeze(-2).expand(*y.shape[:-1], self.n_agents, self.n_agent_outputs)
        return y

    def extra_repr(self) -> str:
        return (
            f"n_agents={self.n_agents}, centralized={self.centralized}, "
            f"share_params={self.share_params}"
        )


def _required_flag(owner: str, centralized: bool | None, centralised: bool | None) -> bool:
    if centralized is not None and centralised is not None and centralized != centralised:
        raise ObjectiveConfigError(
            f"{owner}: got centralized={centralized} and centralised={centralised}; they are "
            f"the same argument, pass one"
        )
    flag = centralized if centralized is not None else centralised
    if flag is None:
        raise ObjectiveConfigError(
            f"{owner}: centralized is required: True to let each agent read every agent's "
            f"input (e.g. a centralised critic), False for its own input only"
        )
    return bool(flag)


class Mixer(TensorDictModuleBase):
    """Base of the mixers: per-agent values ``[*batch, n_agents, 1]`` -> ``[*batch, 1]``.

    A mixer is a TensorDict module (reads ``in_keys``, writes ``out_keys``) and also takes
    plain tensors: ``mixer(values)`` / ``mixer(values, state)`` or :meth:`mix`. So it can be
    wrapped in a ``TensorDictModule`` as in TorchRL, or used directly.

    Subclasses implement :meth:`_mix`.

    Args:
        n_agents: Number of agents mixed.
        in_keys: The per-agent chosen values first, then (for a mixer that reads one) the
            global state.
        out_keys: Where the mixed value goes.
        needs_state: Whether the mixer reads a global state.
    """

    def __init__(
        self,
        n_agents: int,
        in_keys: NestedKey | Sequence[NestedKey] | None,
        out_keys: NestedKey | Sequence[NestedKey] | None,
        *,
        needs_state: bool,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.n_agents = check_int(n_agents, "n_agents", owner, error=ObjectiveConfigError)
        default_in: list[NestedKey] = [(_GROUP, CHOSEN_ACTION_VALUE)]
        if needs_state:
            default_in.append(_STATE)
        self.in_keys = _keys(in_keys, default_in)
        self.out_keys = _keys(out_keys, [CHOSEN_ACTION_VALUE])
        n_in = 2 if needs_state else 1
        if len(self.in_keys) != n_in or len(self.out_keys) != 1:
            reads = "the agents' chosen values and the state" if needs_state else "the values"
            raise ObjectiveConfigError(
                f"{owner} reads {n_in} key(s) ({reads}) and writes 1, got in_keys="
                f"{self.in_keys} and out_keys={self.out_keys}; e.g. in_keys={default_in}, "
                f"out_keys=[{CHOSEN_ACTION_VALUE!r}]"
            )
        self.needs_state = needs_state

    def forward(
        self, tensordict: TensorDictBase | Tensor, state: Tensor | None = None
    ) -> TensorDictBase | Tensor:
        """Mix a TensorDict's ``in_keys`` into its ``out_keys``, or tensors (see :meth:`mix`)."""
        if isinstance(tensordict, TensorDictBase):
            inputs = [tensordict.get(key) for key in self.in_keys]
            tensordict.set(self.out_keys[0], self.mix(*inputs))
            return tensordict
        return self.mix(tensordict, state)

    def mix(self, chosen_action_value: Tensor, state: Tensor | None = None) -> Tensor:
        """Mix the agents' values into one.

        Args:
            chosen_action_value: ``[*batch, n_agents, 1]``, each agent's value of its action.
            state: The global state ``[*batch, *state_shape]`` (mixers that read one).

        Returns:
            ``[*batch, 1]``.

        Raises:
            ShapeMismatchError: ``chosen_action_value`` is not ``[*batch, n_agents, 1]``, or
                the state's shape does not fit.
        """
        owner = type(self).__name__
        if chosen_action_value.ndim < 2 or tuple(chosen_action_value.shape[-2:]) != (
            self.n_agents,
            1,
        ):
            raise ShapeMismatchError(
                f"{owner}(n_agents={self.n_agents}): the agents' values "
                f"(key {self.in_keys[0]!r}) must be shaped [*batch, {self.n_agents}, 1], "
                f"got {list(chosen_action_value.shape)}. Give one value per agent (the "
                f"agent dim before a trailing singleton dim), or fix n_agents."
            )
        if self.needs_state and state is None:
            raise ObjectiveConfigError(f"{owner} reads a global state: call mix(values, state)")
        return self._mix(chosen_action_value, state)

    def _mix(self, chosen_action_value: Tensor, state: Tensor | None) -> Tensor:
        raise NotImplementedError


class VDNMixer(Mixer):
    """Value-Decomposition Networks (Sunehag et al., 2017): ``Q_tot = sum_i Q_i``.

    Args:
        n_agents: Number of agents.
        device: Unused (VDN has no parameters); accepted as in TorchRL.
        in_keys: The agents' chosen values (default ``[("agents", "chosen_action_value")]``).
        out_keys: The mixed value (default ``["chosen_action_value"]``).

    Example:
        >>> vdn = VDNMixer(n_agents=3)
        >>> vdn(torch.ones(8, 3, 1)).shape
        torch.Size([8, 1])
        >>> td = vdn(TensorDict({("agents", "chosen_action_value"): torch.ones(8, 3, 1)}, [8]))
        >>> td["chosen_action_value"][0]
        tensor([3.])
    """

    def __init__(
        self,
        n_agents: int,
        device: torch.device | str | None = None,
        *,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        super().__init__(n_agents, in_keys, out_keys, needs_state=False)

    def _mix(self, chosen_action_value: Tensor, state: Tensor | None) -> Tensor:
        return chosen_action_value.sum(-2)


class QMixer(Mixer):
    """QMIX (Rashid et al., 2018): a monotonic mix whose weights depend on the global state.

    Hypernetworks map the state ``s`` to the weights of a two-layer mixing network; the
    weights pass through ``abs``, so ``Q_tot`` never decreases when an agent's ``Q_i``
    grows (the per-agent greedy actions are then greedy for ``Q_tot``)::

        hidden = elu(Q @ |W1(s)| + b1(s))                     # [*batch, 1, embed]
        Q_tot  = hidden @ |W2(s)| + V(s)                      # [*batch, 1]

    ``W1``, ``b1`` and ``W2`` are linear maps of ``s``; ``V`` is a two-layer network
    (ReLU hidden layer).

    Args:
        state_shape: Shape of the global state, without batch dims (flattened inside).
        mixing_embed_dim: Width of the mixing network's hidden layer.
        n_agents: Number of agents.
        device: Device of the parameters.
        in_keys: The agents' chosen values, then the state (default
            ``[("agents", "chosen_action_value"), "state"]``).
        out_keys: The mixed value (default ``["chosen_action_value"]``).

    Example:
        >>> qmix = QMixer(state_shape=(16,), mixing_embed_dim=32, n_agents=3)
        >>> qmix(torch.randn(8, 3, 1), torch.randn(8, 16)).shape
        torch.Size([8, 1])
    """

    def __init__(
        self,
        state_shape: int | Sequence[int] | torch.Size,
        mixing_embed_dim: int,
        n_agents: int,
        device: torch.device | str | None = None,
        *,
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        out_keys: NestedKey | Sequence[NestedKey] | None = None,
    ) -> None:
        super().__init__(n_agents, in_keys, out_keys, needs_state=True)
        shape = (state_shape,) if isinstance(state_shape, int) else tuple(state_shape)
        if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
            raise ObjectiveConfigError(
                f"QMixer: state_shape must be a non-empty tuple of positive ints (the state "
                f"without batch dims), got {state_shape!r}"
            )
        self.state_shape = torch.Size(shape)
        self.state_dim = int(self.state_shape.numel())
        self.embed_dim = check_int(
            mixing_embed_dim, "mixing_embed_dim", "QMixer", error=ObjectiveConfigError
        )
        embed, n = self.embed_dim, self.n_agents
        self.hyper_w_1 = nn.Linear(self.state_dim, embed * n, device=device)
        self.hyper_b_1 = nn.Linear(self.state_dim, embed, device=device)
        self.hyper_w_final = nn.Linear(self.state_dim, embed, device=device)
        self.V = nn.Sequential(
            nn.Linear(self.state_dim, embed, device=device),
            nn.ReLU(),
            nn.Linear(embed, 1, device=device),
        )

    def _mix(self, chosen_action_value: Tensor, state: Tensor | None) -> Tensor:
        assert state is not None  # checked by mix()
        batch = chosen_action_value.shape[:-2]
        if tuple(state.shape) != (*batch, *self.state_shape):
            raise ShapeMismatchError(
                f"QMixer(state_shape={tuple(self.state_shape)}): the state "
                f"(key {self.in_keys[1]!r}) has shape {list(state.shape)} but the agents' "
                f"values have shape {list(chosen_action_value.shape)}; expected the state "
                f"shaped {[*batch, *self.state_shape]} (the values' batch dims, then "
                f"state_shape). Pass the global state, not a per-agent entry, or fix "
                f"state_shape."
            )
        s = state.reshape(*batch, self.state_dim).to(chosen_action_value.dtype)
        q = chosen_action_value.transpose(-1, -2)  # [*batch, 1, n_agents]
        w_1 = self.hyper_w_1(s).abs().reshape(*batch, self.n_agents, self.embed_dim)
        b_1 = self.hyper_b_1(s).unsqueeze(-2)  # [*batch, 1, embed]
        hidden = nn.functional.elu(q @ w_1 + b_1)
        w_final = self.hyper_w_final(s).abs().unsqueeze(-1)  # [*batch, embed, 1]
        return (hidden @ w_final).squeeze(-1) + self.V(s)

    def extra_repr(self) -> str:
        return (
            f"state_shape={tuple(self.state_shape)}, mixing_embed_dim={self.embed_dim}, "
            f"n_agents={self.n_agents}"
        )
