"""Deterministic actor-critic losses: DDPG (Lillicrap et al., 2016), TD3 (Fujimoto et al., 2018)."""

from __future__ import annotations

from typing import ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.specs import TensorSpec
from rlblocks.objectives._keys import STATE_ACTION_VALUE
from rlblocks.objectives._losses.base import check_distance, distance_loss, ensemble, network_output
from rlblocks.objectives._losses.off_policy import OFF_POLICY_KEYS, OffPolicyLoss, action_bounds
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["DDPGLoss", "TD3Loss", "given_bounds"]


def _mu(actor: TensorDictModuleBase, tensordict: TensorDictBase) -> TensorDictBase:
    """``actor(tensordict)`` acting deterministically: the ``mu(s)`` of the formulas.

    Whatever exploration type the training loop runs under: a sampling call would add
    exploration noise, and a ``Delta``-distributed actor sampled without ``rsample`` would
    cut the gradient that trains it.
    """
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        return actor(tensordict)


def given_bounds(
    owner: str, bounds: tuple[float | Tensor, float | Tensor] | None, spec: TensorSpec | None
) -> tuple[Tensor, Tensor] | None:
    """``bounds`` (a ``(low, high)`` pair, TorchRL's alternative to a spec) as tensors.

    Raises:
        ObjectiveConfigError: Both ``bounds`` and a spec are given, ``bounds`` is not a pair,
            or ``low > high``.
    """
    if bounds is None:
        return None
    if spec is not None:
        raise ObjectiveConfigError(
            f"{owner}: give action_spec or bounds, not both (got bounds={bounds!r} and "
            f"action_spec={spec!r})"
        )
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ObjectiveConfigError(
            f"{owner}: bounds must be a (low, high) pair, got {bounds!r}; e.g. bounds=(-1.0, 1.0)"
        )
    low, high = (torch.as_tensor(b, dtype=torch.get_default_dtype()) for b in bounds)
    if bool((low > high).any()):
        raise ObjectiveConfigError(f"{owner}: bounds must have low <= high, got {bounds!r}")
    return low, high


class DDPGLoss(OffPolicyLoss):
    """DDPG: a deterministic actor trained through a learned ``Q(s, a)``.

    - ``loss_value = mean(d(Q(s, a), r + gamma * (1 - terminated) * Q'(s', mu'(s'))))`` with
      the target critic ``Q'`` and target actor ``mu'``;
    - ``loss_actor = -mean(Q(s, mu(s)))``, with the critic's parameters frozen (no gradient
      reaches the critic from it).

    The output holds TorchRL's entries: the scalars ``loss_actor``, ``loss_value``,
    ``pred_value_max`` and ``target_value_max``, and per sample (``[*batch]``) ``pred_value``
    (``Q(s, a)``), ``target_value`` and ``td_error``. ``td_error`` is ``|Q(s, a) - target|``,
    the value written back into the batch for prioritized replay (TorchRL reports the squared
    error there).

    Args:
        actor_network: A deterministic ``Actor`` writing ``action``.
        value_network: A ``ValueOperator`` reading ``observation`` and ``action``, writing
            ``state_action_value``.
        loss_function: ``"l2"``, ``"l1"`` or ``"smooth_l1"``.
        delay_actor: Keep a target actor (``target_actor_network``).
        delay_value: Keep a target critic (``target_value_network``).
        gamma: Discount.

    Example:
        >>> loss = DDPGLoss(actor, qvalue)
        >>> updater = SoftUpdate(loss, tau=0.005)
    """

    default_keys: ClassVar = {**OFF_POLICY_KEYS, "state_action_value": STATE_ACTION_VALUE}

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        value_network: TensorDictModuleBase,
        *,
        loss_function: str = "l2",
        delay_actor: bool = False,
        delay_value: bool = True,
        gamma: float = 0.99,
    ) -> None:
        super().__init__(gamma=gamma)
        self.actor_network = actor_network
        self.value_network = value_network
        self.loss_function = check_distance("DDPGLoss", loss_function)
        self.delay_actor = delay_actor
        self.delay_value = delay_value
        if delay_actor:
            self._register_target("actor_network")
        if delay_value:
            self._register_target("value_network")

    def _required_keys(self, tensordict=None):
        return self._actor_critic_keys(self.actor_network, self.value_network, "value network")

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        key = self._keys.state_action_value
        pred = network_output(self.value_network, tensordict, key)
        with torch.no_grad():
            nxt = self._with_action(tensordict, None, nested=True)
            _mu(self._target("actor_network", self.delay_actor), nxt)
            next_value = self._target("value_network", self.delay_value)(nxt).get(key)
        target = self._bootstrap(tensordict, next_value)
        loss_value = distance_loss("DDPGLoss", pred, target, self.loss_function).mean()
        acting = _mu(self.actor_network, self._with_action(tensordict, None))
        q_actor = self._evaluate([self.value_network], acting, key, frozen=True)[0]
        td_error = self._write_priority(tensordict, [pred], target)
        pred_value = pred.detach().squeeze(-1)
        target_value = target.detach().squeeze(-1)
        return self._output(
            loss_actor=-q_actor.mean(),
            loss_value=loss_value,
            td_error=td_error,
            pred_value=pred_value,
            target_value=target_value,
            pred_value_max=pred_value.max(),
            target_value_max=target_value.max(),
        )


class TD3Loss(OffPolicyLoss):
    """TD3: twin critics, target policy smoothing and a deterministic actor.

    - ``a' = clip(mu'(s') + clip(N(0, policy_noise), -noise_clip, noise_clip), low, high)``;
    - ``y = r + gamma * (1 - terminated) * min_i Q'_i(s', a')``;
    - ``loss_qvalue = sum_i mean(d(Q_i(s, a), y))``;
    - ``loss_actor = -mean(Q_0(s, mu(s)))`` with the critics frozen.

    Delaying the actor update (every other step in the paper) is up to the training loop:
    use only ``loss_qvalue`` on the other steps.

    The output holds TorchRL's entries: the scalars ``loss_actor`` and ``loss_qvalue``, per
    critic and sample (``[num_qvalue_nets, *batch]``) ``pred_value`` (``Q_i(s, a)``), per
    sample ``target_value`` and ``next_state_value`` (``min_i Q'_i(s', a')``), and
    ``state_action_value_actor``: ``Q_1(s, mu(s))`` of the critic the actor is trained
    through, shaped ``[1, *batch]`` (TorchRL evaluates every critic there; the others would
    cost a forward pass per update for a diagnostic). The batch gets ``td_error``, the
    largest ``|Q_i(s, a) - y|`` per sample.

    Args:
        actor_network: A deterministic ``Actor``.
        qvalue_network: A ``ValueOperator`` on ``observation`` and ``action``; the loss holds
            ``num_qvalue_nets`` re-initialized copies in ``qvalue_networks`` (the first is this
            module).
        action_spec: ``Bounded`` spec clamping the smoothed target action (default: the
            actor's spec; no clamping without bounds).
        bounds: ``(low, high)`` in place of ``action_spec`` (TorchRL's alternative).
        num_qvalue_nets: Number of critics.
        policy_noise: Std of the target-action noise.
        noise_clip: Bound of the target-action noise.
        loss_function: ``"l2"``, ``"l1"`` or ``"smooth_l1"``.
        delay_actor: Keep a target actor.
        delay_qvalue: Keep target critics.
        gamma: Discount.

    Example:
        >>> loss = TD3Loss(actor, qvalue, action_spec=Bounded(-1.0, 1.0, shape=(2,)))
    """

    default_keys: ClassVar = {**OFF_POLICY_KEYS, "state_action_value": STATE_ACTION_VALUE}

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        *,
        action_spec: TensorSpec | None = None,
        bounds: tuple[float | Tensor, float | Tensor] | None = None,
        num_qvalue_nets: int = 2,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        loss_function: str = "smooth_l1",
        delay_actor: bool = True,
        delay_qvalue: bool = True,
        gamma: float = 0.99,
    ) -> None:
        super().__init__(gamma=gamma)
        owner = type(self).__name__
        if policy_noise < 0 or noise_clip < 0:
            raise ObjectiveConfigError(
                f"{owner}: policy_noise and noise_clip must be >= 0, got {policy_noise}, "
                f"{noise_clip}"
            )
        self.actor_network = actor_network
        self.qvalue_networks = ensemble(owner, "qvalue_network", qvalue_network, num_qvalue_nets)
        self.loss_function = check_distance(owner, loss_function)
        self.policy_noise = policy_noise
        self.noise_clip = noise_clip
        self.delay_actor = delay_actor
        self.delay_qvalue = delay_qvalue
        self._bounds = given_bounds(owner, bounds, action_spec) or action_bounds(
            action_spec, actor_network
        )
        if delay_actor:
            self._register_target("actor_network")
        if delay_qvalue:
            self._register_target("qvalue_networks")

    def _required_keys(self, tensordict=None):
        return self._actor_critic_keys(
            self.actor_network, self.qvalue_networks[0], "qvalue network"
        )

    def _smoothed_next_action(self, tensordict: TensorDictBase) -> torch.Tensor:
        nxt = self._with_action(tensordict, None, nested=True)
        action = _mu(self._target("actor_network", self.delay_actor), nxt).get(self._keys.action)
        noise = (torch.randn_like(action) * self.policy_noise).clamp(
            -self.noise_clip, self.noise_clip
        )
        action = action + noise
        if self._bounds is not None:
            low, high = self._bounds
            action = action.clamp(low.to(action.device), high.to(action.device))
        return action

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        key = self._keys.state_action_value
        with torch.no_grad():
            next_action = self._smoothed_next_action(tensordict)
            nxt = self._with_action(tensordict, next_action, nested=True)
            targets = self._target("qvalue_networks", self.delay_qvalue)
            next_value = torch.stack(self._evaluate(targets, nxt, key, frozen=False)).amin(0)
        target = self._bootstrap(tensordict, next_value)
        preds = self._evaluate(self.qvalue_networks, tensordict, key, frozen=False)
        owner = type(self).__name__
        loss_qvalue = sum(distance_loss(owner, p, target, self.loss_function).mean() for p in preds)
        actor_terms = self._actor_terms(tensordict)
        self._write_priority(tensordict, preds, target)
        return self._output(
            **actor_terms,
            loss_qvalue=loss_qvalue,
            pred_value=torch.stack(preds).detach().squeeze(-1),
            target_value=target.detach().squeeze(-1),
            next_state_value=next_value.squeeze(-1),
        )

    def _actor_terms(self, tensordict: TensorDictBase) -> dict[str, Tensor]:
        """The actor's terms from ``mu(s)`` and ``Q_1(s, mu(s))``, the critic frozen."""
        acting = _mu(self.actor_network, self._with_action(tensordict, None))
        key = self._keys.state_action_value
        q_actor = self._evaluate(self.qvalue_networks[:1], acting, key, frozen=True)[0]
        return {
            **self._actor_loss(tensordict, acting.get(self._keys.action), q_actor),
            "state_action_value_actor": q_actor.detach().squeeze(-1).unsqueeze(0),
        }

    def _actor_loss(
        self, tensordict: TensorDictBase, action: Tensor, q_actor: Tensor
    ) -> dict[str, Tensor]:
        """``loss_actor = -mean(Q_1(s, mu(s)))`` (TD3+BC adds a behavior-cloning term)."""
        return {"loss_actor": -q_actor.mean()}
