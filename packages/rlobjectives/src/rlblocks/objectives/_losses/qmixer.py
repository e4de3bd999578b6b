"""QMIX and VDN: value decomposition for a group of agents with a team reward."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import Tensor

from rlblocks.core import NEXT
from rlblocks.core.fast_td import shallow_copy
from rlblocks.core.specs import Categorical, OneHot, TensorSpec
from rlblocks.objectives._checks import fmt_key
from rlblocks.objectives._keys import ACTION_VALUE, CHOSEN_ACTION_VALUE
from rlblocks.objectives._losses.base import (
    RequiredKeys,
    check_distance,
    distance_loss,
    merge_network_keys,
    network_output,
    next_key,
)
from rlblocks.objectives._losses.dqn import greedy_values, select_action_values, values_only
from rlblocks.objectives._losses.off_policy import OFF_POLICY_KEYS, OffPolicyLoss
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules._actors import QValueModule

__all__ = ["QMixerLoss"]

_GROUP = "agents"
_ACTION_SPACES = {"one_hot": "one_hot", "one-hot": "one_hot", "categorical": "categorical"}


def _action_space(value: str | TensorSpec | None, greedy: QValueModule | None) -> str | None:
    """``"one_hot"``, ``"categorical"`` or ``None`` (told apart by shape at each call)."""
    if value is None:
        return None if greedy is None else greedy.action_space
    if isinstance(value, OneHot):
        return "one_hot"
    if isinstance(value, Categorical):
        return "categorical"
    if isinstance(value, str) and value in _ACTION_SPACES:
        return _ACTION_SPACES[value]
    raise ObjectiveConfigError(
        f"QMixerLoss: action_space must be 'one_hot', 'categorical', a OneHot or Categorical "
        f"spec, or None (read from the local value network, else told apart by shape), got "
        f"{value!r}"
    )


def _check_td_module(name: str, module: Any, example: str) -> None:
    if not (hasattr(module, "in_keys") and hasattr(module, "out_keys")):
        raise ObjectiveConfigError(
            f"QMixerLoss: the {name} must be a TensorDict module (with in_keys and out_keys), "
            f"got {type(module).__name__}. Wrap it, e.g. {example}"
        )


class QMixerLoss(OffPolicyLoss):
    """QMIX / VDN: train per-agent Q-networks through a mix of their values (DQN on the mix).

    Each agent's network gives ``Q_i(o_i, .)``; the values of the actions taken are mixed
    into a team value ``Q_tot = mixer(Q_1(a_1), ..., Q_n(a_n), s)`` (a :class:`QMixer` for
    QMIX, a :class:`VDNMixer` for VDN), trained towards the one-step target
    ``r + gamma * (1 - terminated) * mixer_target(max_a Q_target_i(o'_i, a), s')`` on the
    team reward ``r``. With ``delay_value=True`` both networks have frozen target copies
    (``target_local_value_network``, ``target_mixer_network``), updated by
    :class:`SoftUpdate`/:class:`HardUpdate`. A ``QValueModule`` with an ``action_mask_key``
    in the local network masks the next actions of the max.

    Keys (renamed with :meth:`set_keys`; defaults for a group named ``"agents"``):
    ``action`` ``("agents", "action")`` (``[*batch, n_agents]`` indices or
    ``[*batch, n_agents, n_actions]`` one-hot), ``action_value`` ``("agents", "action_value")``
    (written by the local network, ``[*batch, n_agents, n_actions]``), ``local_value``
    ``("agents", "chosen_action_value")`` (where the loss puts the per-agent values the mixer
    reads, ``[*batch, n_agents, 1]``), ``global_value`` ``"chosen_action_value"`` (what the
    mixer writes, ``[*batch, 1]``), the team ``reward`` and the ``done``/``terminated`` flags
    at the root (``[*batch, 1]``, read under ``"next"``) and ``priority`` ``"td_error"``.

    Args:
        local_value_network: The agents' Q-network: a TensorDict module writing
            ``action_value`` (e.g. a ``MultiAgentMLP`` in a ``TensorDictModule`` followed by
            a ``QValueModule``, or a ``QValueActor``).
        mixer_network: A TensorDict module reading ``local_value`` (and e.g. the state) and
            writing ``global_value``: :class:`QMixer`, :class:`VDNMixer`, or a wrapped
            module of your own.
        loss_function: ``"l2"``, ``"l1"`` or ``"smooth_l1"``.
        delay_value: Keep target copies of both networks.
        gamma: Discount.
        action_space: ``"one_hot"``, ``"categorical"``, or a ``OneHot``/``Categorical``
            spec; by default that of the local network's ``QValueModule``, else told apart
            by shape.

    Returns (per call): ``loss_qvalue`` and, per sample (``[*batch]``), the diagnostics
    ``pred_value`` (``Q_tot``) and ``target_value``. The batch gets ``td_error``
    (``|Q_tot - target|`` per sample) for prioritized replay. TorchRL's ``QMixerLoss``
    names its term ``"loss"``: read ``out["loss_qvalue"]`` (or ``total_loss(out)``).

    Raises:
        ObjectiveConfigError: A network is not a TensorDict module, or the mixer does not
            read ``local_value`` / write ``global_value``.

    Example:
        >>> net = TensorDictModule(
        ...     MultiAgentMLP(18, 5, n_agents=3, centralized=False, share_params=True),
        ...     in_keys=[("agents", "observation")], out_keys=[("agents", "action_value")],
        ... )
        >>> qnet = TensorDictSequential(net, QValueModule(
        ...     spec=Categorical(5), action_value_key=("agents", "action_value"),
        ...     out_keys=[("agents", "action"), ("agents", "action_value"),
        ...               ("agents", "chosen_action_value")],
        ... ))
        >>> loss = QMixerLoss(qnet, QMixer(state_shape=(32,), mixing_embed_dim=32, n_agents=3))
        >>> updater = SoftUpdate(loss, tau=0.005)
    """

    default_keys: ClassVar = {
        **OFF_POLICY_KEYS,
        "action": (_GROUP, "action"),
        "action_value": (_GROUP, ACTION_VALUE),
        "local_value": (_GROUP, CHOSEN_ACTION_VALUE),
        "global_value": CHOSEN_ACTION_VALUE,
    }

    def __init__(
        self,
        local_value_network: TensorDictModuleBase,
        mixer_network: TensorDictModuleBase,
        *,
        loss_function: str = "l2",
        delay_value: bool = True,
        gamma: float = 0.99,
        action_space: str | TensorSpec | None = None,
    ) -> None:
        super().__init__(gamma=gamma)
        _check_td_module(
            "local value network",
            local_value_network,
            "TensorDictModule(net, in_keys=[('agents', 'observation')], "
            "out_keys=[('agents', 'action_value')])",
        )
        _check_td_module(
            "mixer network",
            mixer_network,
            "TensorDictModule(mixer, in_keys=[('agents', 'chosen_action_value'), 'state'], "
            "out_keys=['chosen_action_value'])",
        )
        self.local_value_network = local_value_network
        self.mixer_network = mixer_network
        self.loss_function = check_distance("QMixerLoss", loss_function)
        self.delay_value = delay_value
        # The greedy head of the local network (a QValueActor's, or one in a sequence):
        # its action space, and its action mask, which the max over next actions obeys.
        greedy = next(
            (m for m in local_value_network.modules() if isinstance(m, QValueModule)), None
        )
        self.action_space = _action_space(action_space, greedy)
        self._action_mask_key: NestedKey | None = getattr(greedy, "action_mask_key", None)
        if delay_value:
            self._register_target("local_value_network")
            self._register_target("mixer_network")

    # -- keys -----------------------------------------------------------------------------

    def _check_mixer_keys(self) -> None:
        local, mixed = self._keys.local_value, self._keys.global_value
        mixer = self.mixer_network
        if local not in mixer.in_keys or mixed not in mixer.out_keys:
            raise ObjectiveConfigError(
                f"QMixerLoss: the mixer reads {mixer.in_keys} and writes {mixer.out_keys}, but "
                f"the loss gives it the agents' values at {fmt_key(local)} and reads the mixed "
                f"value at {fmt_key(mixed)}. Rename with loss.set_keys(local_value=..., "
                f"global_value=...) or change the mixer's in_keys/out_keys."
            )

    def _required_keys(self, tensordict: TensorDictBase | None = None) -> RequiredKeys:
        self._check_mixer_keys()
        loss_keys = {"action": self._keys.action, **self._transition_keys()}
        local = self._network_keys(self.local_value_network, "local value network", nested=True)
        # The loss writes the agents' values the mixer reads.
        written = {self._keys.local_value, next_key(self._keys.local_value)}
        mixer = {
            key: who
            for key, who in self._network_keys(
                self.mixer_network, "mixer network", nested=True
            ).items()
            if key not in written
        }
        return loss_keys, merge_network_keys(local, mixer)

    # -- calling --------------------------------------------------------------------------

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        keys = self._keys
        values = network_output(
            values_only(self.local_value_network), tensordict, keys.action_value
        )
        chosen = self._chosen_values(values, tensordict.get(keys.action))
        mixer_in = shallow_copy(tensordict)
        mixer_in.set(keys.local_value, chosen)
        pred = self.mixer_network(mixer_in).get(keys.global_value)
        self._check_team_value(tensordict, pred)
        with torch.no_grad():
            next_td = tensordict.get(NEXT).copy()
            local_target = values_only(self._target("local_value_network", self.delay_value))
            next_values = local_target(next_td).get(keys.action_value)
            mask = None if self._action_mask_key is None else next_td.get(self._action_mask_key)
            next_td.set(keys.local_value, greedy_values(next_values, mask=mask))
            mixer_target = self._target("mixer_network", self.delay_value)
            next_value = mixer_target(next_td).get(keys.global_value)
        target = self._bootstrap(tensordict, next_value)
        loss = distance_loss("QMixerLoss", pred, target, self.loss_function).mean()
        self._write_priority(tensordict, [pred], target)
        return self._output(
            loss_qvalue=loss,
            pred_value=pred.detach().squeeze(-1),
            target_value=target.detach().squeeze(-1),
        )

    def _chosen_values(self, values: Tensor, action: Tensor) -> Tensor:
        """``Q_i(a_i)`` ``[*batch, n_agents, 1]`` of each agent's taken action."""
        keys = self._keys
        per_agent = values.shape[:-1]  # [*batch, n_agents]
        index_shapes = (per_agent, (*per_agent, 1))
        agents_agree = tuple(action.shape[: len(per_agent)]) == tuple(per_agent)
        fits_space = {
            "one_hot": action.shape == values.shape,
            "categorical": action.shape in index_shapes,
            None: True,  # select_action_values tells them apart by shape
        }[self.action_space]
        if not (agents_agree and fits_space):
            expected = {
                "one_hot": f"{list(values.shape)} (one-hot)",
                "categorical": f"{list(per_agent)} or {[*per_agent, 1]} (indices)",
                None: f"{list(values.shape)} (one-hot) or {list(per_agent)} (indices)",
            }[self.action_space]
            raise ShapeMismatchError(
                f"QMixerLoss: the action {fmt_key(keys.action)} has shape "
                f"{list(action.shape)} but the action values {fmt_key(keys.action_value)} "
                f"have shape {list(values.shape)} ([*batch, n_agents, n_actions]); expected "
                f"the action shaped {expected}. Check that both keys are the same group's "
                f"and that the network was built for this many agents."
            )
        return select_action_values("QMixerLoss", values, action)

    def _check_team_value(self, tensordict: TensorDictBase, pred: Tensor) -> None:
        reward_key = next_key(self._keys.reward)
        reward = tensordict.get(reward_key)
        if reward.shape != pred.shape:
            raise ShapeMismatchError(
                f"QMixerLoss: the reward {fmt_key(reward_key)} has shape {list(reward.shape)} "
                f"but the mixed value {fmt_key(self._keys.global_value)} has shape "
                f"{list(pred.shape)}; QMIX and VDN train on one team reward per sample, "
                f"[*batch, 1], like the mixer's output. With per-agent rewards, sum them: "
                f"td['next', 'reward'] = td['next', 'agents', 'reward'].sum(-2)."
            )
