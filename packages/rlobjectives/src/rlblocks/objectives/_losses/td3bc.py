"""TD3+BC (Fujimoto & Gu, 2021): TD3 with a behavior-cloning term, for offline RL."""

from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor
from torch.nn import functional as F

from rlblocks.core.specs import TensorSpec
from rlblocks.objectives._checks import check_same_shape
from rlblocks.objectives._losses.ddpg import TD3Loss
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["TD3BCLoss"]


class TD3BCLoss(TD3Loss):
    """TD3+BC: TD3's critics and target smoothing, an actor kept near the data's actions.

    The critics learn as in :class:`TD3Loss`. With ``pi(s)`` the deterministic actor, ``a``
    the data's action and ``Q_1`` the first critic (frozen for this term):

    - ``lmbd = alpha / mean(|Q_1(s, pi(s))|)`` (detached): normalizes the Q term so that
      ``alpha`` weighs it against the BC term whatever the scale of the returns;
    - ``loss_actor = -lmbd * mean(Q_1(s, pi(s))) + mean((pi(s) - a)^2)``.

    The paper also normalizes the observations with the dataset's mean and std; that is a
    data transform, not part of the loss.

    The output holds TorchRL's entries: :class:`TD3Loss`'s (``loss_actor``, ``loss_qvalue``,
    ``pred_value``, ``target_value``, ``next_state_value``, ``state_action_value_actor``)
    plus the detached ``bc_loss`` and ``lmbd``.

    Args:
        actor_network: A deterministic ``Actor``.
        qvalue_network: A ``ValueOperator`` on ``observation`` and ``action``; the loss holds
            ``num_qvalue_nets`` re-initialized copies.
        action_spec: ``Bounded`` spec clamping the smoothed target action (default: the
            actor's spec).
        bounds: ``(low, high)`` in place of ``action_spec``.
        num_qvalue_nets: Number of critics.
        policy_noise: Std of the target-action noise.
        noise_clip: Bound of the target-action noise.
        alpha: Weight of the Q term against the BC term (``> 0``; the paper's 2.5).
        loss_function: ``"smooth_l1"``, ``"l2"`` or ``"l1"`` for the critics.
        delay_actor: Keep a target actor.
        delay_qvalue: Keep target critics.
        gamma: Discount.

    Raises:
        ObjectiveConfigError: ``alpha <= 0``, or an argument :class:`TD3Loss` refuses.

    Example:
        >>> loss = TD3BCLoss(actor, qvalue, action_spec=actor.spec, alpha=2.5)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> out = loss(offline_batch)  # the actor every other step, as in TD3
    """

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
        alpha: float = 2.5,
        loss_function: str = "smooth_l1",
        delay_actor: bool = True,
        delay_qvalue: bool = True,
        gamma: float = 0.99,
    ) -> None:
        if not alpha > 0:
            raise ObjectiveConfigError(
                f"TD3BCLoss: alpha must be > 0 (the weight of the Q term; the paper uses 2.5), "
                f"got {alpha!r}. For pure behavior cloning use BCLoss."
            )
        super().__init__(
            actor_network,
            qvalue_network,
            action_spec=action_spec,
            bounds=bounds,
            num_qvalue_nets=num_qvalue_nets,
            policy_noise=policy_noise,
            noise_clip=noise_clip,
            loss_function=loss_function,
            delay_actor=delay_actor,
            delay_qvalue=delay_qvalue,
            gamma=gamma,
        )
        self.alpha = float(alpha)

    def _actor_loss(
        self, tensordict: TensorDictBase, action: Tensor, q_actor: Tensor
    ) -> dict[str, Tensor]:
        data_action = tensordict.get(self._keys.action)
        check_same_shape("TD3BCLoss", "pi(s)", action, "the data's action", data_action)
        bc_loss = F.mse_loss(action, data_action)
        lmbd = self.alpha / q_actor.abs().mean().detach()
        return {
            "loss_actor": bc_loss - lmbd * q_actor.mean(),
            "bc_loss": bc_loss.detach(),
            "lmbd": lmbd,
        }
