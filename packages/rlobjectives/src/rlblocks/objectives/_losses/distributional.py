"""Distributional (C51) DQN loss (Bellemare et al., 2017), with the double-DQN target."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from rlblocks.core import NEXT
from rlblocks.objectives._checks import read_discount, read_flags
from rlblocks.objectives._keys import ACTION_VALUE
from rlblocks.objectives._losses.base import network_output, next_key
from rlblocks.objectives._losses.dqn import values_only
from rlblocks.objectives._losses.off_policy import (
    OFF_POLICY_KEYS,
    PRIORITY_WEIGHT,
    OffPolicyLoss,
)
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules._distributional import check_support, expected_action_values
from rlblocks.objectives.value import ValueEstimators, parse_value_estimator

__all__ = ["DistributionalDQNLoss", "categorical_projection", "chosen_action_atoms"]


def categorical_projection(atoms: Tensor, probs: Tensor, support: Tensor) -> Tensor:
    """Project the distribution with mass ``probs[..., j]`` at ``atoms[..., j]`` onto ``support``.

    C51's projection: each atom is clamped into ``[support[0], support[-1]]`` and its mass
    split between the two nearest atoms of ``support``, in proportion to how close it is to
    each (all of it to an atom it falls on). Vectorized over any leading dims.

    Args:
        atoms: Where the mass sits, ``[*batch, n_atoms]`` (e.g. ``r + gamma * z``).
        probs: The mass at each of them, ``[*batch, n_atoms]``.
        support: The evenly spaced, increasing atoms to project onto, ``[n_atoms]``.

    Returns:
        The projected probabilities, ``[*batch, n_atoms]`` (each row sums as ``probs``).
    """
    n = support.shape[0]
    v_min, v_max = support[0], support[-1]
    position = (atoms.clamp(v_min, v_max) - v_min) / ((v_max - v_min) / (n - 1))
    lower = position.floor().clamp(0, n - 1)
    upper_share = position - lower
    lower_index = lower.long()
    upper_index = (lower_index + 1).clamp(max=n - 1)
    out = torch.zeros_like(probs)
    out.scatter_add_(-1, lower_index, probs * (1 - upper_share))
    return out.scatter_add_(-1, upper_index, probs * upper_share)


def chosen_action_atoms(owner: str, values: Tensor, action: Tensor) -> Tensor:
    """The atoms of the taken actions: ``values [*batch, n_atoms, n]``, one-hot or index actions.

    Returns:
        ``[*batch, n_atoms]``.

    Raises:
        ShapeMismatchError: ``action`` is neither a one-hot ``[*batch, n]`` nor an index
            ``[*batch]`` / ``[*batch, 1]``.
    """
    batch, (n_atoms, n) = values.shape[:-2], values.shape[-2:]
    if n > 1 and action.shape == (*batch, n):
        index = action.long().argmax(-1)  # one-hot actions may be bool
    elif action.shape in (batch, (*batch, 1)):
        index = action.reshape(batch).long()
    else:
        raise ShapeMismatchError(
            f"{owner}: the action has shape {list(action.shape)} but the action values have "
            f"shape {list(values.shape)} ([*batch, n_atoms, n_actions]); expected a one-hot "
            f"action {[*batch, n]} or an index {list(batch)} / {[*batch, 1]}"
        )
    index = index.reshape(*batch, 1, 1).expand(*batch, n_atoms, 1)
    return values.gather(-1, index).squeeze(-1)


class DistributionalDQNLoss(OffPolicyLoss):
    """The C51 loss: cross-entropy between ``Z(s, a)`` and the projected ``r + gamma Z(s', a*)``.

    The network (a :class:`~rlblocks.objectives.modules.DistributionalQValueActor`) gives,
    for each action, log-probabilities over a fixed support of returns ``z_i``. The target
    moves the next state's distribution by the Bellman operator (``r + gamma * z_i``, just
    ``r`` after a termination; a truncation still bootstraps), projects it back onto the
    support (:func:`categorical_projection`), and the loss is the cross-entropy
    ``-sum_i m_i log p_i(s, a)`` averaged over the batch. The next action ``a*`` maximizes
    the expected return; with ``double_dqn=True`` (the default, as TorchRL's loss always
    does) the online network chooses it and the target network gives its distribution.

    On n-step transitions (``rlblocks.buffers.MultiStepTransform``), which carry
    ``steps_to_next_obs``, the support is discounted by ``gamma ** steps_to_next_obs``.
    The targets are always these one- or n-step ones: there is no value estimator to
    choose (``make_value_estimator`` accepts ``"td0"`` only).

    Args:
        value_network: A ``DistributionalQValueActor`` (writes ``action_value``,
            ``[*batch, n_atoms, n_actions]`` log-probabilities, and has a ``support``).
        gamma: Discount.
        delay_value: Keep a target network (updated by :class:`SoftUpdate`/
            :class:`HardUpdate`); ``False`` uses the online network without gradient.
        double_dqn: Choose the next action with the online network.

    Returns (per call): ``loss_qvalue`` (TorchRL names it ``"loss"``) and, per sample
    (``[*batch]``), ``pred_value`` (the expected ``Z(s, a)``) and ``target_value`` (the
    expected projected target). The batch gets ``td_error``: the cross-entropy per sample,
    the priority of prioritized replay (as in TorchRL and Rainbow); a batch that carries its
    importance weights (``"_weight"``, role ``priority_weight``) weights each sample's
    cross-entropy by them, as Rainbow does (TorchRL's averages uniformly).

    Raises:
        ObjectiveConfigError: The network has no valid ``support``.

    Example:
        >>> actor = DistributionalQValueActor(
        ...     MLP(4, (51, 2)), torch.linspace(-10, 10, 51), spec=Categorical(2)
        ... )
        >>> loss = DistributionalDQNLoss(actor, gamma=0.99)
        >>> total_loss(loss(batch)).backward()
    """

    default_keys: ClassVar = {
        **OFF_POLICY_KEYS,
        "action_value": ACTION_VALUE,
        "priority_weight": PRIORITY_WEIGHT,
    }
    default_value_estimator = None

    def __init__(
        self,
        value_network: TensorDictModuleBase,
        *,
        gamma: float = 0.99,
        delay_value: bool = True,
        double_dqn: bool = True,
    ) -> None:
        super().__init__(gamma=gamma)
        support = getattr(value_network, "support", None)
        if support is None:
            raise ObjectiveConfigError(
                f"DistributionalDQNLoss needs a network with a support of returns, e.g. "
                f"DistributionalQValueActor(net, torch.linspace(-10, 10, 51), spec=...); got "
                f"{type(value_network).__name__}, which has no 'support'"
            )
        check_support("DistributionalDQNLoss", support)
        self.value_network = value_network
        self.delay_value = delay_value
        self.double_dqn = double_dqn
        if delay_value:
            self._register_target("value_network")

    def make_value_estimator(
        self, value_type: ValueEstimators | str | None = None, **hyperparams: Any
    ) -> DistributionalDQNLoss:
        """Accept ``"td0"`` (the only target it has) and an optional new ``gamma``.

        Raises:
            ObjectiveConfigError: Another estimator, or a hyper-parameter other than gamma.
        """
        kind = parse_value_estimator(value_type or ValueEstimators.TD0)
        unknown = sorted(set(hyperparams) - {"gamma"})
        if kind is not ValueEstimators.TD0 or unknown:
            raise ObjectiveConfigError(
                f"DistributionalDQNLoss projects one-step (or n-step, with steps_to_next_obs) "
                f"targets onto its support: make_value_estimator takes 'td0' and gamma only, "
                f"got {kind.value!r} and {unknown or 'no other argument'}. For n-step "
                f"returns, write the batches with rlblocks.buffers.MultiStepTransform."
            )
        self.gamma = hyperparams.get("gamma", self.gamma)
        return self

    def _required_keys(self, tensordict=None):
        loss_keys = {"action": self._keys.action, **self._transition_keys()}
        return loss_keys, self._network_keys(self.value_network, "value network", nested=True)

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        owner = "DistributionalDQNLoss"
        key = self._keys.action_value
        support = self.value_network.support
        value_net = values_only(self.value_network)
        log_probs = network_output(value_net, tensordict, key)
        expected_action_values(log_probs, support)  # checks the atoms dim
        log_p = chosen_action_atoms(owner, log_probs, tensordict.get(self._keys.action))
        with torch.no_grad():
            target_net = values_only(self._target("value_network", self.delay_value))
            next_log_probs = network_output(target_net, tensordict.get(NEXT), key)
            chooser = next_log_probs
            if self.double_dqn:
                chooser = network_output(value_net, tensordict.get(NEXT), key)
            best = expected_action_values(chooser, support).argmax(-1)
            next_probs = chosen_action_atoms(owner, next_log_probs.exp(), best)
            target_probs = categorical_projection(
                self._target_atoms(tensordict, support), next_probs, support
            )
        cross_entropy = -(target_probs * log_p).sum(-1)
        with torch.no_grad():
            tensordict.set(self._keys.priority, cross_entropy.detach())
        return self._output(
            loss_qvalue=self._weighted_mean(tensordict, cross_entropy),
            pred_value=(log_p.detach().exp() * support).sum(-1),
            target_value=(target_probs * support).sum(-1),
        )

    def _target_atoms(self, tensordict: TensorDictBase, support: Tensor) -> Tensor:
        """``r + discount * (1 - terminated) * z``, ``[*batch, n_atoms]``."""
        owner = "DistributionalDQNLoss"
        reward_key = next_key(self._keys.reward)
        reward = tensordict.get(reward_key)
        expected = (*tensordict.batch_size, 1)
        if reward.shape != expected:
            raise ShapeMismatchError(
                f"{owner}: {reward_key} has shape {list(reward.shape)}, expected "
                f"{list(expected)} (one reward per sample with a trailing singleton dim); fix "
                f"the producer or reshape with reward.unsqueeze(-1)"
            )
        _, terminated = read_flags(
            owner,
            tensordict,
            next_key(self._keys.done),
            next_key(self._keys.terminated),
            reward_key,
            reward,
        )
        discount = read_discount(
            owner, tensordict, self.gamma, self._keys.steps_to_next_obs, reward_key, reward
        )
        return reward + discount * (~terminated.bool()).to(reward.dtype) * support
