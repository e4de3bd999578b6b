"""Distributional Q-value policies (C51: Bellemare et al., 2017).

The network writes, for each action, a categorical distribution of the return over a fixed
``support`` of atoms ``z_0 < ... < z_{N-1}``: ``action_value`` holds log-probabilities
shaped ``[*batch, n_atoms, n_actions]`` (atoms before actions, as in TorchRL). The greedy
action maximizes the expected return ``sum_i p_i(s, a) z_i``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from tensordict.utils import NestedKey
from torch import nn

from rlblocks.core import OBSERVATION
from rlblocks.core.specs import TensorSpec
from rlblocks.objectives._keys import ACTION_VALUE
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules._actors import QValueActor, QValueModule, _as_td_module, _keys

__all__ = [
    "DistributionalQValueModule",
    "DistributionalQValueActor",
    "check_support",
    "expected_action_values",
]


def check_support(owner: str, support: torch.Tensor | Sequence[float] | None) -> torch.Tensor:
    """``support`` as a float tensor of evenly spaced, increasing atoms (at least 2).

    Raises:
        ObjectiveConfigError: ``support`` is missing, not 1-d, has fewer than 2 atoms, or is
            not evenly spaced and increasing; the message shows how to build one.
    """
    fix = "build it with torch.linspace(v_min, v_max, n_atoms), e.g. torch.linspace(-10, 10, 51)"
    if support is None:
        raise ObjectiveConfigError(f"{owner} needs the support of the return: {fix}")
    support = torch.as_tensor(support)
    if not support.is_floating_point():
        support = support.to(torch.get_default_dtype())
    if support.ndim != 1 or support.numel() < 2:
        raise ObjectiveConfigError(
            f"{owner}: the support must be a 1-d tensor of at least 2 atoms, got shape "
            f"{list(support.shape)}; {fix}"
        )
    gaps = support.diff()
    if bool((gaps <= 0).any()) or not torch.allclose(gaps, gaps.mean().expand_as(gaps)):
        raise ObjectiveConfigError(
            f"{owner}: the support must be evenly spaced and increasing (the categorical "
            f"projection of C51 assumes it), got {support.tolist()}; {fix}"
        )
    return support


def expected_action_values(log_probs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``Q(s, a) = sum_i exp(log_probs[..., i, a]) * support[i]``: ``[*batch, n_actions]``.

    Raises:
        ShapeMismatchError: ``log_probs`` does not have one row per atom at dim -2.
    """
    if log_probs.ndim < 2 or log_probs.shape[-2] != support.shape[0]:
        raise ShapeMismatchError(
            f"distributional action values have shape {list(log_probs.shape)} but the support "
            f"has {support.shape[0]} atoms; expected [*batch, {support.shape[0]}, n_actions] "
            f"(atoms before actions, e.g. MLP(out_features=({support.shape[0]}, n_actions)))"
        )
    return (log_probs.exp() * support.unsqueeze(-1)).sum(-2)


class DistributionalQValueModule(QValueModule):
    """Greedy action from per-action return distributions: the highest expected return.

    Reads ``action_value`` (log-probabilities ``[*batch, n_atoms, n_actions]``, a
    log-softmax over the atoms) and writes ``action``, ``action_value`` (unchanged) and
    ``chosen_action_value`` (the expected return of the greedy action, ``[*batch, 1]``).

    Args:
        action_space: ``"one_hot"`` or ``"categorical"`` (or the action spec, as
            :class:`QValueModule` takes it).
        support: The atoms ``z_i``: evenly spaced and increasing (``torch.linspace``).
        action_value_key: Where the log-probabilities are read.
        action_mask_key: Optional boolean mask of allowed actions (``[*batch, n_actions]``).
        out_keys: ``[action, action_value, chosen_action_value]`` keys.
        spec: The action spec (``OneHot`` or ``Categorical``), instead of ``action_space``.

    Raises:
        ObjectiveConfigError: No action space or spec, or an invalid support.

    Example:
        >>> module = DistributionalQValueModule("categorical", torch.linspace(-1, 1, 3))
        >>> log_p = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).log_softmax(-2)
        >>> module(TensorDict(action_value=log_p, batch_size=[]))["action"]
        tensor(1)
    """

    def __init__(
        self,
        action_space: str | TensorSpec | None = None,
        support: torch.Tensor | Sequence[float] | None = None,
        action_value_key: NestedKey = ACTION_VALUE,
        action_mask_key: NestedKey | None = None,
        out_keys: Sequence[NestedKey] | None = None,
        *,
        spec: TensorSpec | None = None,
    ) -> None:
        if isinstance(action_space, TensorSpec):  # rlblocks' QValueModule takes spec first
            spec, action_space = action_space, None
        super().__init__(
            spec,
            action_space,
            action_value_key=action_value_key,
            out_keys=out_keys,
            action_mask_key=action_mask_key,
        )
        self.register_buffer("support", check_support(type(self).__name__, support))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the action with the highest expected return, and that return."""
        log_probs = tensordict.get(self.action_value_key)
        return self._act(tensordict, expected_action_values(log_probs, self.support))


class _LogSoftmaxOverAtoms(nn.Module):
    """``x.log_softmax(-2)``: per-action distributions from ``[*batch, n_atoms, n_actions]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.log_softmax(-2)


class DistributionalQValueActor(QValueActor):
    """A network writing return distributions, followed by a greedy
    :class:`DistributionalQValueModule`; what :class:`DistributionalDQNLoss` trains.

    Args:
        module: Network mapping observations to ``[*batch, n_atoms, n_actions]`` (e.g.
            ``MLP(out_features=(n_atoms, n_actions))``), or a TensorDict module writing
            ``action_value_key``.
        support: The atoms: evenly spaced and increasing (``torch.linspace(v_min, v_max,
            n_atoms)``).
        in_keys: Keys the network reads (default ``["observation"]``).
        spec: Action spec (``OneHot`` or ``Categorical``).
        action_space: ``"one_hot"`` or ``"categorical"`` when no spec is given.
        action_value_key: Key of the per-action log-probabilities.
        action_mask_key: Optional mask of allowed actions.
        make_log_softmax: Apply a log-softmax over the atoms to the network's output (turn
            it off for a network that already does).

    Raises:
        ObjectiveConfigError: A TensorDict ``module`` does not write ``action_value_key``,
            or the support is invalid.

    Example:
        >>> actor = DistributionalQValueActor(
        ...     MLP(4, (51, 2)), torch.linspace(-10, 10, 51), spec=Categorical(2)
        ... )
        >>> actor(TensorDict(observation=torch.randn(8, 4), batch_size=[8]))["action"].shape
        torch.Size([8])
    """

    def __init__(
        self,
        module: nn.Module | Callable,
        support: torch.Tensor | Sequence[float],
        in_keys: NestedKey | Sequence[NestedKey] | None = None,
        spec: TensorSpec | None = None,
        *,
        action_space: str | None = None,
        action_value_key: NestedKey = ACTION_VALUE,
        action_mask_key: NestedKey | None = None,
        make_log_softmax: bool = True,
    ) -> None:
        if isinstance(module, TensorDictModuleBase) and action_value_key not in module.out_keys:
            raise ObjectiveConfigError(
                f"DistributionalQValueActor: the module writes {module.out_keys}, not "
                f"action_value_key={action_value_key!r}; set its out_keys or action_value_key"
            )
        net = _as_td_module(module, _keys(in_keys, [OBSERVATION]), [action_value_key])
        if make_log_softmax:
            log_softmax = TensorDictModule(
                _LogSoftmaxOverAtoms(), in_keys=[action_value_key], out_keys=[action_value_key]
            )
            net = TensorDictSequential(net, log_softmax)
        qmodule = DistributionalQValueModule(
            action_space,
            support,
            action_value_key=action_value_key,
            action_mask_key=action_mask_key,
            spec=spec,
        )
        TensorDictSequential.__init__(self, net, qmodule)
        self.spec = qmodule.spec
        self.action_space = qmodule.action_space
        self.action_value_key = action_value_key
        self.make_log_softmax = make_log_softmax

    @property
    def support(self) -> torch.Tensor:
        """The atoms of the return distributions."""
        return self[-1].support
