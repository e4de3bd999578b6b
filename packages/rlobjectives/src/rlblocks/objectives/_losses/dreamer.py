"""Dreamer (Hafner et al., 2020): a world-model loss, and actor and value losses on imagined
rollouts."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torch import Tensor

from rlblocks.core import ACTION, REWARD, TERMINATED
from rlblocks.objectives._keys import STATE_VALUE
from rlblocks.objectives._losses.base import (
    LossModule,
    check_distance,
    distance_loss,
    frozen_call,
    network_output,
    next_key,
    reduce_to_batch,
    sample_with_log_prob,
)
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules._world_models import BELIEF, STATE, WorldModel

__all__ = ["DreamerActorLoss", "DreamerModelLoss", "DreamerValueLoss", "LAMBDA_TARGET"]

LAMBDA_TARGET = "lambda_target"
"""The lambda-return of an imagined state: the actor's objective, the value's target."""
_WEIGHT = "discount_weight"
_LOG_PROB = "_imagined_log_prob"  # the actor's log-probability of its imagined actions


class _Imagination(Protocol):
    """What the actor loss needs of a model-based env (a ``ModelBasedEnv``)."""

    def rollout(self, max_steps: int, policy: Any = ..., **kwargs: Any) -> TensorDictBase: ...


def _gaussian_kl(mean_q: Tensor, std_q: Tensor, mean_p: Tensor, std_p: Tensor) -> Tensor:
    """``KL(N(mean_q, std_q) || N(mean_p, std_p))`` per dimension."""
    var_ratio = (std_q / std_p).square()
    return 0.5 * (var_ratio + ((mean_q - mean_p) / std_p).square() - 1 - var_ratio.log())


class DreamerModelLoss(LossModule):
    """The world model's loss: reconstruction, reward and KL(posterior || prior), free nats.

    On a sequence batch ``[*batch, T]`` (e.g. from ``SliceSampler``), the world model
    filters the sequence and the loss sums

    - ``loss_reco = lambda_reco * mean(0.5 * sum_dims (reco - obs)^2)`` (a unit Gaussian's
      negative log-likelihood, up to a constant, summed over the observation's dims);
    - ``loss_reward = lambda_reward * mean(0.5 * (reward_pred - reward)^2)``;
    - ``loss_kl = lambda_kl * max(mean(sum_dims KL(q || p)), free_nats)``: below
      ``free_nats`` the KL gets no gradient, so the posterior keeps information;
    - with a continue head, ``loss_continue`` (binary cross-entropy of not terminating).

    The output also holds ``"posterior"``: the latents the model inferred for the batch,
    ``("next", "state")`` and ``("next", "belief")`` of batch size ``[*batch, T]``,
    detached. They are where :class:`DreamerActorLoss` starts imagining, so the world
    model need not filter the batch a second time.

    Args:
        world_model: A :class:`~rlblocks.objectives.modules.WorldModel`.
        lambda_kl: Weight of the KL term.
        lambda_reco: Weight of the reconstruction term.
        lambda_reward: Weight of the reward term.
        lambda_continue: Weight of the continue term.
        free_nats: The KL's floor (Dreamer: 3).

    Raises:
        ObjectiveConfigError: A weight or ``free_nats`` is negative.

    Example:
        >>> loss = DreamerModelLoss(world_model)
        >>> out = loss(buffer.sample())   # [B, T] slices
        >>> total_loss(out).backward()
        >>> actor_out = actor_loss(out["posterior"])
    """

    default_keys: ClassVar = {"reward": REWARD, "terminated": TERMINATED, "done": "done"}

    def __init__(
        self,
        world_model: WorldModel,
        *,
        lambda_kl: float = 1.0,
        lambda_reco: float = 1.0,
        lambda_reward: float = 1.0,
        lambda_continue: float = 1.0,
        free_nats: float = 3.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("lambda_kl", lambda_kl),
            ("lambda_reco", lambda_reco),
            ("lambda_reward", lambda_reward),
            ("lambda_continue", lambda_continue),
            ("free_nats", free_nats),
        ):
            if value < 0:
                raise ObjectiveConfigError(f"DreamerModelLoss: {name} must be >= 0, got {value}")
        self.world_model = world_model
        self.lambda_kl, self.lambda_reco = lambda_kl, lambda_reco
        self.lambda_reward, self.lambda_continue = lambda_reward, lambda_continue
        self.free_nats = free_nats

    def _required_keys(self, tensordict: TensorDictBase | None = None) -> tuple[Any, Any]:
        transition = self._transition_keys()
        own = {"reward": transition["reward"]}
        if self.world_model.continue_model is not None:
            own["terminated"] = transition["terminated"]
        return own, self._network_keys(self.world_model, "world model")

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        owner = type(self).__name__
        model = self.world_model
        out = network_output(model, tensordict, "next")
        transition = self._transition_keys()
        batch_dims = tensordict.batch_dims
        kl = _gaussian_kl(
            out.get("posterior_mean"),
            out.get("posterior_std"),
            out.get("prior_mean"),
            out.get("prior_std"),
        ).sum(-1)
        kl_mean = kl.mean()
        observation = out.get(model.observation_key)
        reco = out.get(model.reco_key)
        if reco.shape != observation.shape:
            raise ShapeMismatchError(
                f"{owner}: the decoder rebuilt {model.observation_key!r} with shape "
                f"{list(reco.shape)} but the observation has shape {list(observation.shape)}; "
                f"the decoder must output the observation's shape"
            )
        reco_error = 0.5 * (reco - observation).square()
        reco_error = reco_error.sum(tuple(range(batch_dims, reco_error.ndim))).mean()
        reward = tensordict.get(transition["reward"])
        reward_error = 0.5 * distance_loss(owner, out.get("reward_pred"), reward, "l2").mean()
        terms = {
            "loss_kl": self.lambda_kl * kl_mean.clamp_min(self.free_nats),
            "loss_reco": self.lambda_reco * reco_error,
            "loss_reward": self.lambda_reward * reward_error,
            "kl": kl_mean.detach(),
        }
        if model.continue_model is not None:
            alive = 1.0 - tensordict.get(transition["terminated"]).to(reward.dtype)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(
                out.get("continue_logit"), alive
            )
            terms["loss_continue"] = self.lambda_continue * bce
        result = self._output(**terms)
        posterior = out.select(STATE, BELIEF).detach()
        result.set("posterior", posterior.empty().set("next", posterior))
        return result


class DreamerActorLoss(LossModule):
    """The actor's loss: maximize lambda-returns of rollouts imagined in the world model.

    The latents the model loss inferred for a sequence batch (``("next", "state")``,
    ``("next", "belief")``, detached) start ``imagination_horizon``-step rollouts in the
    model-based env with the actor, whose actions are reparameterized samples: the
    gradient of the returns flows back through the learned dynamics into the actor. As in
    Dreamer, the actor reads each imagined state detached, so that gradient reaches it
    through its actions only. With rewards ``r_t`` and values ``v_t`` of the imagined
    states (from ``value_network``, its parameters frozen here), ``R_t = r_t + gamma c_t
    ((1 - lambda) v_{t+1} + lambda R_{t+1})`` with ``R_H = v_H``, and ``loss_actor =
    -mean(w_t R_t)`` with ``w_t = prod_{k<t} gamma c_k``. ``c_t`` is the continue
    probability where the imagined steps carry ``("next", "continue_logit")`` (a world
    model with a continue head, in an env whose observation spec lists the key), else 1.

    With ``entropy_coef > 0`` the loss adds ``loss_entropy = -entropy_coef * mean(w_t H_t)``,
    ``H_t = -log pi(a_t | s_t)`` of the imagined actions (DreamerV2's actor entropy; the
    actor is then sampled through its ``get_dist``). It keeps a tanh-squashed actor from
    saturating at its bounds, where the returns' gradient vanishes: the log-density of a
    squashed sample grows without bound there.

    The output also holds ``"imagined"``, the imagined states with their ``lambda_target``
    (detached), which is what :class:`DreamerValueLoss` trains on.

    Args:
        actor_network: Reads ``state`` and ``belief``, writes the action (a
            ``ProbabilisticActor`` with ``TanhNormal``: its samples are reparameterized).
        value_network: Reads ``state`` and ``belief``, writes ``state_value``.
        model_based_env: The env imagination runs in, e.g.
            ``ModelBasedEnv(world_model.transition_module(), ...)`` with the real env's
            action spec; its batch size must be the number of start states (batch x time of
            the sequence batches) unless it is not batch-locked.
        imagination_horizon: Steps imagined from each start state (Dreamer: 15).
        gamma: Discount.
        lmbda: Lambda of the returns.
        entropy_coef: Weight of the actor's entropy bonus (Dreamer: 0; DreamerV2: 1e-4).

    Raises:
        ObjectiveConfigError: A bad horizon, ``gamma``, ``lmbda`` or ``entropy_coef``, or
            ``entropy_coef > 0`` with an actor that has no ``get_dist``.

    Example:
        >>> actor_loss = DreamerActorLoss(actor, value, model_env, imagination_horizon=15)
        >>> out = actor_loss(model_out["posterior"])  # DreamerModelLoss's output
        >>> value_out = DreamerValueLoss(value)(out["imagined"])
    """

    default_keys: ClassVar = {"value": STATE_VALUE, "action": ACTION}

    def __init__(
        self,
        actor_network: TensorDictModuleBase,
        value_network: TensorDictModuleBase,
        model_based_env: _Imagination,
        *,
        imagination_horizon: int = 15,
        gamma: float = 0.99,
        lmbda: float = 0.95,
        entropy_coef: float = 0.0,
    ) -> None:
        owner = type(self).__name__
        if isinstance(imagination_horizon, bool) or not isinstance(imagination_horizon, int):
            raise ObjectiveConfigError(f"{owner}: imagination_horizon must be an int")
        if imagination_horizon < 1:
            raise ObjectiveConfigError(
                f"{owner}: imagination_horizon must be >= 1, got {imagination_horizon}"
            )
        if not (0 <= gamma <= 1 and 0 <= lmbda <= 1):
            raise ObjectiveConfigError(
                f"{owner}: gamma and lmbda must be in [0, 1], got {gamma} and {lmbda}"
            )
        if not entropy_coef >= 0:
            raise ObjectiveConfigError(f"{owner}: entropy_coef must be >= 0, got {entropy_coef}")
        if entropy_coef and not callable(getattr(actor_network, "get_dist", None)):
            raise ObjectiveConfigError(
                f"{owner}: entropy_coef={entropy_coef} needs the actions' log-probabilities, "
                f"so an actor with get_dist (a ProbabilisticActor); "
                f"{type(actor_network).__name__} has none"
            )
        super().__init__(gamma=gamma, lmbda=lmbda)
        self.entropy_coef = entropy_coef
        self.actor_network, self.value_network = actor_network, value_network
        # Not a submodule: the env holds the world model, which the model loss trains.
        self.__dict__["model_based_env"] = model_based_env
        self.imagination_horizon = imagination_horizon

    def _required_keys(self, tensordict: TensorDictBase | None = None) -> tuple[Any, Any]:
        return {}, {next_key(STATE): "world model", next_key(BELIEF): "world model"}

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        owner = type(self).__name__
        length = tensordict.batch_size[-1] if tensordict.batch_dims else 0
        if length < self.imagination_horizon:
            raise ShapeMismatchError(
                f"{owner}: the sequence batch has {length} steps (batch size "
                f"{list(tensordict.batch_size)}, keys ('next', 'state') and ('next', "
                f"'belief')) but imagination_horizon is {self.imagination_horizon}; sample "
                f"slices of at least {self.imagination_horizon} steps or shorten the horizon"
            )
        start = tensordict.get("next").select(STATE, BELIEF).reshape(-1).detach()
        imagined = self.model_based_env.rollout(
            self.imagination_horizon,
            self._act_on_detached,
            auto_reset=False,
            tensordict=start,
            break_when_any_done=False,
        )
        nxt = imagined.get("next")
        value = frozen_call(self.value_network, nxt.select(STATE, BELIEF)).get(self._keys.value)
        reward = nxt.get(REWARD)
        logit = nxt.get("continue_logit", None)
        discount = self.gamma * (
            torch.sigmoid(logit) if logit is not None else torch.ones_like(reward)
        )
        returns = self._lambda_returns(reward, value, discount)
        # w_t = prod_{k<t} discount_k: later imagined steps count less (and after a likely
        # termination, hardly at all).
        weight = torch.cat([torch.ones_like(discount[:, :1]), discount[:, :-1]], 1)
        weight = weight.cumprod(1).detach()
        targets = nxt.select(STATE, BELIEF).detach()
        targets.set(LAMBDA_TARGET, returns.detach())
        targets.set(_WEIGHT, weight)
        terms = {
            "loss_actor": -(weight * returns).mean(),
            "imagined_return": returns.detach().mean(),
            "imagined_reward": reward.detach().mean(),
        }
        if self.entropy_coef:
            entropy = -imagined.get(_LOG_PROB).unsqueeze(-1)
            terms["loss_entropy"] = -self.entropy_coef * (weight * entropy).mean()
            terms["entropy"] = entropy.detach().mean()
        out = self._output(**terms)
        out.set("imagined", targets)
        return out

    def _act_on_detached(self, tensordict: TensorDictBase) -> TensorDictBase:
        """The actor on the imagined state with its graph cut (Dreamer's stop-gradient):
        the returns reach the actor through its actions, not back through its input into
        the dynamics of earlier steps."""
        if not self.entropy_coef:
            action = self.actor_network(tensordict.detach()).get(self._keys.action)
            return tensordict.set(self._keys.action, action)
        dist = self.actor_network.get_dist(tensordict.detach())
        action, log_prob = sample_with_log_prob(dist)
        tensordict.set(_LOG_PROB, reduce_to_batch(log_prob, tensordict.batch_dims))
        return tensordict.set(self._keys.action, action)

    def _lambda_returns(self, reward: Tensor, value: Tensor, discount: Tensor) -> Tensor:
        """``R_t = r_t + d_t ((1 - lambda) v_{t+1} + lambda R_{t+1})`` backwards, time dim 1.

        ``value[:, t]`` is the value of the state after step ``t``: the bootstrap of step
        ``t`` is ``value[:, t]`` itself, and the last return bootstraps from it alone.
        """
        horizon = reward.shape[1]
        returns = [reward[:, -1] + discount[:, -1] * value[:, -1]]
        for t in range(horizon - 2, -1, -1):
            mixed = (1 - self.lmbda) * value[:, t] + self.lmbda * returns[-1]
            returns.append(reward[:, t] + discount[:, t] * mixed)
        return torch.stack(returns[::-1], 1)


class DreamerValueLoss(LossModule):
    """The value's loss: regress ``V(state, belief)`` on the imagined lambda-returns.

    ``loss_value = mean(w_t * 0.5 * (V - lambda_target)^2)`` (``l2``; ``loss_function``
    picks another distance) over the imagined states that :class:`DreamerActorLoss`
    returns under ``"imagined"`` (detached: the value does not train the dynamics).

    Args:
        value_network: Reads ``state`` and ``belief``, writes ``state_value``.
        loss_function: ``"l2"`` (the default), ``"l1"`` or ``"smooth_l1"``.

    Example:
        >>> out = DreamerValueLoss(value)(actor_out["imagined"])
    """

    default_keys: ClassVar = {"value": STATE_VALUE, "lambda_target": LAMBDA_TARGET}

    def __init__(self, value_network: TensorDictModuleBase, *, loss_function: str = "l2") -> None:
        super().__init__()
        self.value_network = value_network
        self.loss_function = check_distance(type(self).__name__, loss_function)

    def _required_keys(self, tensordict: TensorDictBase | None = None) -> tuple[Any, Any]:
        return {"lambda_target": self._keys.lambda_target}, self._network_keys(
            self.value_network, "value network"
        )

    def _loss(self, tensordict: TensorDictBase) -> TensorDictBase:
        value = network_output(self.value_network, tensordict, self._keys.value)
        target = tensordict.get(self._keys.lambda_target)
        error = distance_loss(type(self).__name__, value, target, self.loss_function)
        if self.loss_function == "l2":
            error = 0.5 * error
        weight = tensordict.get(_WEIGHT, None)
        if weight is not None:
            error = error * weight
        return self._output(loss_value=error.mean(), value=value.detach().mean())
