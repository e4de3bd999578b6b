"""CrossQ (Bhatt et al., 2024): batch-normalized critics, no target networks."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from rlblocks.objectives._losses.batched_sac import BatchedSACLoss
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["CrossQLoss"]


class CrossQLoss(BatchedSACLoss):
    """CrossQ: SAC without target networks, its critics batch-normalized on ``(s, a)`` and
    ``(s', a')`` together.

    With ``a' ~ pi(s')`` (no gradient) and the ``N`` critics run as one batched ensemble:

    - the critics evaluate the concatenated batch ``[(s, a_data); (s', a')]`` in one forward
      pass, in train mode, so that their batch normalization sees (and its running
      statistics track) both halves; the first half gives ``Q_i(s, a_data)``, the second
      ``Q_i(s', a')``, detached for the target:
      ``y = r + gamma * (1 - terminated) * (min_i Q_i(s', a') - alpha * log pi(a'|s'))``;
    - ``loss_qvalue = sum_i mean(d(Q_i(s, a_data), y))``;
    - ``loss_actor = mean(alpha * log pi(a|s) - min_i Q_i(s, a))``, ``a ~ pi(s)``, the
      critics frozen and in eval mode (normalized with their running statistics, updated
      by the pass above);
    - ``loss_alpha = -mean(log_alpha * (log pi(a|s) + target_entropy))``.

    The batch is flattened for the joint pass, so critics built with ``nn.BatchNorm1d``
    work too, whatever the batch shape.

    **The critic.** CrossQ's critics put batch renormalization between each hidden layer and
    its activation, and are wider than SAC's (the paper: 2048 units, ReLU; the momentum
    0.01 and a warm-up of 100k updates)::

        qvalue = ValueOperator(
            MLP(obs_dim + act_dim, 1, num_cells=[2048, 2048], activation_class=nn.ReLU,
                norm_class=BatchRenorm1d, norm_kwargs={"warmup_steps": 100_000}),
            in_keys=["observation", "action"],
        )

    The paper's actor (256 units) may be batch-normalized too; Adam with ``betas=(0.5,
    0.999)`` and a learning rate of ``1e-3`` are its optimizer settings.

    **Delayed actor.** CrossQ updates the actor (and the temperature) every third critic
    update (``policy_delay=3``). As for :class:`TD3Loss`, that is the training loop's: on the
    other steps minimize ``loss_qvalue`` only (``make_update_step(..., terms=
    ("loss_qvalue",))``).

    The output holds ``loss_actor``, ``loss_qvalue``, ``loss_alpha``, ``alpha`` and
    ``entropy``; the batch gets ``td_error``, the largest ``|Q_i(s, a) - y|`` per sample.

    Args:
        actor_network: A ``ProbabilisticActor`` (e.g. with :class:`TanhNormal`).
        qvalue_network: A ``ValueOperator`` on ``observation`` and ``action``, normalized
            as above; the loss holds ``num_qvalue_nets`` re-initialized copies, stacked, in
            ``qvalue_networks``.
        num_qvalue_nets: Number of critics.
        **kwargs: The other arguments of :class:`SACLoss` but ``delay_qvalue``:
            ``loss_function``, ``alpha_init``, ``min_alpha``, ``max_alpha``, ``fixed_alpha``,
            ``target_entropy``, ``action_spec`` and ``gamma``.

    Raises:
        ObjectiveConfigError: ``delay_qvalue`` is given (CrossQ has no target networks).

    Example:
        >>> loss = CrossQLoss(actor, qvalue, num_qvalue_nets=2)
        >>> critic_step = make_update_step(loss, optim, terms=("loss_qvalue",))
        >>> full_step = make_update_step(loss, optim)
        >>> for step in range(1, n_updates + 1):
        ...     (full_step if step % 3 == 0 else critic_step)(buffer.sample())
    """

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        qvalue_network: TensorDictModuleBase,
        *,
        num_qvalue_nets: int = 2,
        **kwargs: Any,
    ) -> None:
        if "delay_qvalue" in kwargs:
            raise ObjectiveConfigError(
                f"CrossQLoss: CrossQ has no target networks, so it takes no delay_qvalue "
                f"(got delay_qvalue={kwargs['delay_qvalue']!r}); for target critics use "
                f"SACLoss"
            )
        super().__init__(
            actor_network,
            qvalue_network,
            num_qvalue_nets=num_qvalue_nets,
            delay_qvalue=False,
            **kwargs,
        )

    def _joint_values(self, tensordict: TensorDictBase, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """``Q_i(s, a_data)`` and the soft value of ``s'``, from one pass over both."""
        with torch.no_grad():
            nxt = tensordict.get("next")
            next_action, next_log_prob = self._sample(nxt)
        keys = self.qvalue_networks.in_keys
        current = tensordict.select(*keys).reshape(-1)
        following = self._with_action(tensordict, next_action, nested=True).select(*keys)
        joint = torch.cat([current, following.reshape(-1)], 0)
        values = self._critic_values(self.qvalue_networks, joint, frozen=False)
        half = current.batch_size[0]
        shape = (values.shape[0], *tensordict.batch_size, *values.shape[2:])
        preds = values[:, :half].reshape(shape)
        next_q = values[:, half:].detach().reshape(shape).amin(0)
        return preds, self._soft_value(next_q, next_log_prob, nxt.batch_dims, alpha)

    def _actor_q(self, tensordict: TensorDictBase) -> Tensor:
        """``min_i Q_i(s, a)``, the critics frozen and normalized by their running stats."""
        critics = self.qvalue_networks
        return self._critic_values(critics, tensordict, frozen=True, training=False).amin(0)

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        alpha = self.alpha
        preds, next_value = self._joint_values(tensordict, alpha)
        target = self._bootstrap(tensordict, next_value)
        loss_qvalue = self._critic_loss(preds, target)
        terms = self._actor_terms(tensordict, alpha)
        self._write_priority(tensordict, preds, target)
        return self._output(loss_qvalue=loss_qvalue, alpha=alpha, **terms)
