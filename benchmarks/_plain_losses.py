"""The update steps of ``losses.py`` written by hand on plain tensors (not a benchmark:
``run_all.py`` skips it).

Each class holds ``nn.Sequential`` networks loaded from the state dicts of the rlblocks
networks it mirrors, and computes in :meth:`losses` the same loss terms as the rlblocks
loss (same formulas, same defaults, same random draws in the same order, so that a fixed
seed gives the same values), under the same ``loss_*`` names, without the diagnostics.
Target networks are frozen copies updated in :meth:`update_targets` (Polyak averaging, or
a copy every ``period`` updates for DQN). A batch is a dict of tensors: ``obs``, ``act``,
``next_obs``, ``reward`` and ``terminated`` (``[batch, 1]``), plus ``old_log_prob``,
``advantage`` and ``value_target`` for the on-policy losses. :class:`PlainUpdate` runs one
update of such a class, eager or compiled.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Weights = Mapping[str, Tensor]  # a state dict
Batch = Mapping[str, Tensor]  # obs, act, next_obs, reward, terminated, ...
_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# NormalParamExtractor's default scale: softplus shifted to give 1.0 at 0, at least 0.01.
_SCALE_SHIFT = math.log(math.expm1(1.0 - 0.01))


def mlp(sizes: list[int], activation: type[nn.Module], weights: Weights) -> nn.Sequential:
    """``Linear, activation, ..., Linear`` through ``sizes``, loaded with ``weights``."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    net = nn.Sequential(*layers)
    net.load_state_dict(weights)  # strict: the architectures must agree
    return net


def frozen(net: nn.Module, x: Tensor) -> Tensor:
    """``net(x)`` with no gradient reaching ``net``'s parameters (but reaching ``x``)."""
    params = {name: p.detach() for name, p in net.named_parameters()}
    return torch.func.functional_call(net, params, (x,))


def td_target(b: Batch, next_value: Tensor, gamma: float) -> Tensor:
    return b["reward"] + gamma * (~b["terminated"]).to(next_value.dtype) * next_value


def squashed_gaussian(out: Tensor) -> tuple[Tensor, Tensor]:
    """``(loc, scale)`` from the actor's output (first half loc, second half scale)."""
    loc, pre_scale = out.chunk(2, -1)
    return loc, (F.softplus(pre_scale + _SCALE_SHIFT) + 0.01).clamp_min(1e-4)


def squashed_log_prob(u: Tensor, loc: Tensor, scale: Tensor, half: float) -> Tensor:
    """log-density of ``half * tanh(u)``, ``u ~ N(loc, scale)``, summed over the action dims."""
    z = (u - loc) / scale
    normal = -0.5 * z * z - scale.log() - _HALF_LOG_2PI
    log_det = 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))  # log(1 - tanh(u)^2), stably
    return (normal - log_det - math.log(half)).sum(-1)


def sample_squashed(actor: nn.Module, obs: Tensor, half: float) -> tuple[Tensor, Tensor]:
    """A reparameterized action of the tanh-Gaussian policy and its log-probability."""
    loc, scale = squashed_gaussian(actor(obs))
    u = loc + scale * torch.randn_like(loc)
    return half * torch.tanh(u), squashed_log_prob(u, loc, scale, half)


class PlainAlgorithm:
    """Networks, their targets, and the loss terms of one update."""

    def __init__(self) -> None:
        self.online: list[nn.Module] = []
        self.target: list[nn.Module] = []
        self.extra: list[nn.Parameter] = []

    def networks(self) -> dict[str, nn.Module]:
        """The trained networks by name (the names the benchmark pairs with rlblocks')."""
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter]:
        nets = self.networks().values()
        return [p for net in nets for p in net.parameters()] + self.extra

    def add_target(self, net: nn.Module) -> nn.Module:
        target = copy.deepcopy(net).requires_grad_(False)
        self.online.append(net)
        self.target.append(target)
        return target

    def finish(self, tau: float) -> None:
        self.tau = tau
        self._online = [p for net in self.online for p in net.parameters()]
        self._target = [p for net in self.target for p in net.parameters()]

    @torch.no_grad()
    def update_targets(self) -> None:
        torch._foreach_lerp_(self._target, self._online, self.tau)

    def losses(self, b: Batch) -> dict[str, Tensor]:
        raise NotImplementedError


class PlainDQN(PlainAlgorithm):
    """``mean((Q(s, a) - (r + gamma * (1 - term) * max_a' Q'(s', a')))^2)``; a copy every
    ``period`` updates."""

    def __init__(
        self, qnet: Weights, *, sizes: list[int], activation: type[nn.Module], gamma: float,
        period: int,
    ) -> None:  # fmt: skip
        super().__init__()
        self.q = mlp(sizes, activation, qnet)
        self.q_target = self.add_target(self.q)
        self.gamma, self.period, self.count = gamma, period, 0
        self.finish(tau=1.0)

    def networks(self) -> dict[str, nn.Module]:
        return {"qvalue": self.q}

    def update_targets(self) -> None:
        self.count += 1
        if self.count % self.period == 0:
            with torch.no_grad():
                torch._foreach_copy_(self._target, self._online)

    def losses(self, b: Batch) -> dict[str, Tensor]:
        pred = self.q(b["obs"]).gather(-1, b["act"].unsqueeze(-1))
        with torch.no_grad():
            next_value = self.q_target(b["next_obs"]).max(-1, keepdim=True).values
        target = td_target(b, next_value, self.gamma)
        return {"loss_qvalue": F.mse_loss(pred, target)}


class PlainDDPG(PlainAlgorithm):
    """Critic toward ``r + gamma * (1 - term) * Q'(s', mu(s'))``; actor ``-mean(Q(s, mu(s)))``."""

    def __init__(
        self, actor: Weights, qvalue: Weights, *, sizes: list[int],
        activation: type[nn.Module], half: float, gamma: float, tau: float,
    ) -> None:  # fmt: skip
        super().__init__()
        obs, hidden, act = sizes[0], sizes[1:-1], sizes[-1]
        self.mu = mlp([obs, *hidden, act], activation, actor)
        self.q = mlp([obs + act, *hidden, 1], activation, qvalue)
        self.q_target = self.add_target(self.q)  # no target actor: rlblocks' default
        self.half, self.gamma = half, gamma
        self.finish(tau)

    def networks(self) -> dict[str, nn.Module]:
        return {"actor": self.mu, "qvalue0": self.q}

    def losses(self, b: Batch) -> dict[str, Tensor]:
        obs, next_obs = b["obs"], b["next_obs"]
        pred = self.q(torch.cat([obs, b["act"]], -1))
        with torch.no_grad():
            next_act = self.half * torch.tanh(self.mu(next_obs))
            next_value = self.q_target(torch.cat([next_obs, next_act], -1))
        target = td_target(b, next_value, self.gamma)
        act = self.half * torch.tanh(self.mu(obs))
        return {
            "loss_actor": -frozen(self.q, torch.cat([obs, act], -1)).mean(),
            "loss_value": F.mse_loss(pred, target),
        }


class PlainTD3(PlainAlgorithm):
    """Twin critics toward the smoothed target (smooth L1), actor through the first critic."""

    def __init__(
        self, actor: Weights, qvalues: list[Weights], *, sizes: list[int],
        activation: type[nn.Module], half: float, gamma: float, tau: float,
        policy_noise: float, noise_clip: float,
    ) -> None:  # fmt: skip
        super().__init__()
        obs, hidden, act = sizes[0], sizes[1:-1], sizes[-1]
        self.mu = mlp([obs, *hidden, act], activation, actor)
        self.qs = [mlp([obs + act, *hidden, 1], activation, w) for w in qvalues]
        self.mu_target = self.add_target(self.mu)
        self.q_targets = [self.add_target(q) for q in self.qs]
        self.half, self.gamma = half, gamma
        self.policy_noise, self.noise_clip = policy_noise, noise_clip
        self.finish(tau)

    def networks(self) -> dict[str, nn.Module]:
        return {"actor": self.mu, **{f"qvalue{i}": q for i, q in enumerate(self.qs)}}

    def losses(self, b: Batch) -> dict[str, Tensor]:
        obs, next_obs, act = b["obs"], b["next_obs"], b["act"]
        with torch.no_grad():
            next_act = self.half * torch.tanh(self.mu_target(next_obs))
            noise = (torch.randn_like(next_act) * self.policy_noise).clamp(
                -self.noise_clip, self.noise_clip
            )
            next_act = (next_act + noise).clamp(-self.half, self.half)
            next_in = torch.cat([next_obs, next_act], -1)
            next_value = torch.minimum(*(q(next_in) for q in self.q_targets))
        target = td_target(b, next_value, self.gamma)
        obs_act = torch.cat([obs, act], -1)
        loss_qvalue = sum(F.smooth_l1_loss(q(obs_act), target) for q in self.qs)
        new_act = self.half * torch.tanh(self.mu(obs))
        return {
            "loss_actor": -frozen(self.qs[0], torch.cat([obs, new_act], -1)).mean(),
            "loss_qvalue": loss_qvalue,
        }


class PlainSAC(PlainAlgorithm):
    """Twin soft critics (smooth L1), a tanh-Gaussian actor and a learned temperature."""

    def __init__(
        self, actor: Weights, qvalues: list[Weights], *, sizes: list[int],
        activation: type[nn.Module], half: float, gamma: float, tau: float,
    ) -> None:  # fmt: skip
        super().__init__()
        obs, hidden, act = sizes[0], sizes[1:-1], sizes[-1]
        self.pi = mlp([obs, *hidden, 2 * act], activation, actor)
        self.qs = [mlp([obs + act, *hidden, 1], activation, w) for w in qvalues]
        self.q_targets = [self.add_target(q) for q in self.qs]
        self.log_alpha = nn.Parameter(torch.zeros(()))  # alpha_init = 1
        self.extra = [self.log_alpha]
        self.target_entropy = -float(act)
        self.half, self.gamma = half, gamma
        self.finish(tau)

    def networks(self) -> dict[str, nn.Module]:
        return {"actor": self.pi, **{f"qvalue{i}": q for i, q in enumerate(self.qs)}}

    def next_value(self, b: Batch, alpha: Tensor) -> Tensor:
        with torch.no_grad():
            next_obs = b["next_obs"]
            next_act, next_log_prob = sample_squashed(self.pi, next_obs, self.half)
            next_in = torch.cat([next_obs, next_act], -1)
            min_q = torch.minimum(*(q(next_in) for q in self.q_targets))
            return min_q - alpha * next_log_prob.unsqueeze(-1)

    def actor_terms(self, b: Batch, alpha: Tensor) -> dict[str, Tensor]:
        obs = b["obs"]
        act, log_prob = sample_squashed(self.pi, obs, self.half)
        obs_act = torch.cat([obs, act], -1)
        min_q = torch.minimum(*(frozen(q, obs_act) for q in self.qs))
        return {
            "loss_actor": (alpha * log_prob.unsqueeze(-1) - min_q).mean(),
            "loss_alpha": -(self.log_alpha * (log_prob + self.target_entropy).detach()).mean(),
        }

    def losses(self, b: Batch) -> dict[str, Tensor]:
        alpha = self.log_alpha.detach().exp()
        target = td_target(b, self.next_value(b, alpha), self.gamma)
        obs_act = torch.cat([b["obs"], b["act"]], -1)
        loss_qvalue = sum(F.smooth_l1_loss(q(obs_act), target) for q in self.qs)
        return {"loss_qvalue": loss_qvalue, **self.actor_terms(b, alpha)}


class PlainCQL(PlainSAC):
    """SAC with CQL(H)'s penalty over ``num_random`` uniform, current-policy and next-policy
    actions per state, and the deterministic backup (no entropy in the target)."""

    def __init__(
        self, actor: Weights, qvalues: list[Weights], *, num_random: int, min_q_weight: float,
        temperature: float, **kw: Any,
    ) -> None:  # fmt: skip
        super().__init__(actor, qvalues, **kw)
        self.num_random, self.min_q_weight, self.temperature = num_random, min_q_weight, temperature

    def next_value(self, b: Batch, alpha: Tensor) -> Tensor:
        with torch.no_grad():
            next_obs = b["next_obs"]
            next_act, _ = sample_squashed(self.pi, next_obs, self.half)
            next_in = torch.cat([next_obs, next_act], -1)
            return torch.minimum(*(q(next_in) for q in self.q_targets))

    def penalty(self, b: Batch, preds: list[Tensor]) -> Tensor:
        n, (batch, act_dim) = self.num_random, b["act"].shape
        obs = b["obs"].expand(n, *b["obs"].shape)
        with torch.no_grad():
            uniform = -self.half + 2 * self.half * torch.rand(n, batch, act_dim)
            log_uniform = -act_dim * math.log(2 * self.half)
            current, current_lp = sample_squashed(self.pi, obs, self.half)
            following, following_lp = sample_squashed(
                self.pi, b["next_obs"].expand(n, *b["next_obs"].shape), self.half
            )
        candidates = [(uniform, log_uniform), (current, current_lp.unsqueeze(-1)),
                      (following, following_lp.unsqueeze(-1))]  # fmt: skip
        total = 0.0
        for q, pred in zip(self.qs, preds):
            scores = [q(torch.cat([obs, a], -1)) - log_q for a, log_q in candidates]
            t = self.temperature
            lse = torch.logsumexp(torch.cat(scores, 0) / t, 0) * t
            total = total + self.min_q_weight * (lse.mean() - pred.mean())
        return total

    def losses(self, b: Batch) -> dict[str, Tensor]:
        alpha = self.log_alpha.detach().exp()
        target = td_target(b, self.next_value(b, alpha), self.gamma)
        obs_act = torch.cat([b["obs"], b["act"]], -1)
        preds = [q(obs_act) for q in self.qs]
        loss_qvalue = sum(F.smooth_l1_loss(p, target) for p in preds)
        loss_cql = self.penalty(b, preds)
        return {"loss_qvalue": loss_qvalue, "loss_cql": loss_cql, **self.actor_terms(b, alpha)}


class PlainIQL(PlainAlgorithm):
    """Expectile value regression, twin critics toward ``r + gamma * V(s')`` (smooth L1), and
    advantage-weighted regression of the tanh-Gaussian actor on the data's actions."""

    def __init__(
        self, actor: Weights, qvalues: list[Weights], value: Weights, *, sizes: list[int],
        activation: type[nn.Module], half: float, gamma: float, tau: float, expectile: float,
        temperature: float,
    ) -> None:  # fmt: skip
        super().__init__()
        obs, hidden, act = sizes[0], sizes[1:-1], sizes[-1]
        self.pi = mlp([obs, *hidden, 2 * act], activation, actor)
        self.qs = [mlp([obs + act, *hidden, 1], activation, w) for w in qvalues]
        self.v = mlp([obs, *hidden, 1], activation, value)
        self.q_targets = [self.add_target(q) for q in self.qs]
        self.half, self.gamma = half, gamma
        self.expectile, self.temperature = expectile, temperature
        self.finish(tau)

    def networks(self) -> dict[str, nn.Module]:
        return {
            "actor": self.pi,
            **{f"qvalue{i}": q for i, q in enumerate(self.qs)},
            "value": self.v,
        }

    def losses(self, b: Batch) -> dict[str, Tensor]:
        obs, act = b["obs"], b["act"]
        obs_act = torch.cat([obs, act], -1)
        with torch.no_grad():
            q_target = torch.minimum(*(q(obs_act) for q in self.q_targets))
            next_value = self.v(b["next_obs"])
        value = self.v(obs)
        diff = q_target - value
        weight = (self.expectile - (diff < 0).to(diff.dtype)).abs()
        target = td_target(b, next_value, self.gamma)
        loss_qvalue = sum(F.smooth_l1_loss(q(obs_act), target) for q in self.qs)
        loc, scale = squashed_gaussian(self.pi(obs))
        limit = 1.0 - torch.finfo(act.dtype).eps
        u = torch.atanh((act / self.half).clamp(-limit, limit))
        log_prob = squashed_log_prob(u, loc, scale, self.half).unsqueeze(-1)
        with torch.no_grad():
            exp_adv = torch.exp(diff * self.temperature).clamp(max=100.0)
        return {
            "loss_actor": -(exp_adv * log_prob).mean(),
            "loss_qvalue": loss_qvalue,
            "loss_value": (weight * diff.pow(2)).mean(),
        }


class PlainA2C(PlainAlgorithm):
    """``-mean(log pi(a|s) * A) - c_H * H + c_V * mean((V(s) - target)^2)``, categorical pi."""

    def __init__(
        self, actor: Weights, critic: Weights, *, sizes: list[int],
        activation: type[nn.Module], entropy_coef: float, critic_coef: float,
    ) -> None:  # fmt: skip
        super().__init__()
        obs, hidden, act = sizes[0], sizes[1:-1], sizes[-1]
        self.pi = mlp([obs, *hidden, act], activation, actor)
        self.v = mlp([obs, *hidden, 1], activation, critic)
        self.entropy_coef, self.critic_coef = entropy_coef, critic_coef
        self.finish(tau=1.0)

    def networks(self) -> dict[str, nn.Module]:
        return {"actor": self.pi, "critic": self.v}

    def update_targets(self) -> None:  # no target network
        pass

    def policy(self, b: Batch) -> tuple[Tensor, Tensor]:
        log_pi = self.pi(b["obs"]).log_softmax(-1)
        entropy = -(log_pi.exp() * log_pi).sum(-1).mean()
        return log_pi.gather(-1, b["act"].unsqueeze(-1)), entropy

    def critic_terms(self, b: Batch, entropy: Tensor) -> dict[str, Tensor]:
        return {
            "loss_entropy": -self.entropy_coef * entropy,
            "loss_critic": self.critic_coef * F.mse_loss(self.v(b["obs"]), b["value_target"]),
        }

    def losses(self, b: Batch) -> dict[str, Tensor]:
        log_prob, entropy = self.policy(b)
        pg_loss = -(log_prob * b["advantage"]).mean()
        return {"loss_objective": pg_loss, **self.critic_terms(b, entropy)}


class PlainPPO(PlainA2C):
    """The clipped surrogate with the advantage normalized over the batch, plus A2C's
    entropy and value terms."""

    def __init__(self, actor: Weights, critic: Weights, *, clip_epsilon: float, **kw: Any) -> None:
        super().__init__(actor, critic, **kw)
        self.clip_epsilon = clip_epsilon

    def losses(self, b: Batch) -> dict[str, Tensor]:
        log_prob, entropy = self.policy(b)
        std, mean = torch.std_mean(b["advantage"])
        adv = (b["advantage"] - mean) / std.clamp_min(1e-8)
        ratio = (log_prob - b["old_log_prob"].unsqueeze(-1)).exp()
        eps = self.clip_epsilon
        pg_loss = -torch.minimum(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean()
        return {"loss_objective": pg_loss, **self.critic_terms(b, entropy)}


class PlainUpdate:
    """One hand-written update: zero_grad, losses, backward, clipping, Adam step, targets.

    With ``compile_kwargs`` (``torch.compile``'s arguments), the same two parts as
    ``make_update_step`` are compiled: the losses with their sum (AOTAutograd compiles the
    backward with them), and the clipping with ``optimizer.step()`` (as PyTorch's "Compiling
    the optimizer" recipe does, without ``fullgraph``: ``step()`` graph-breaks on purpose).
    """

    def __init__(
        self,
        algo: PlainAlgorithm,
        adam: Mapping[str, Any],
        max_grad_norm: float | None,
        compile_kwargs: Mapping[str, Any] | None,
    ) -> None:
        self.algo = algo
        self.params = algo.parameters()
        self.optimizer = torch.optim.Adam(self.params, **adam)
        self.max_grad_norm = max_grad_norm
        self.forward, self.step = self._forward, self._clip_and_step
        if compile_kwargs is not None:
            self.forward = torch.compile(self._forward, **compile_kwargs)
            self.step = torch.compile(self._clip_and_step, **{**compile_kwargs, "fullgraph": False})

    def _forward(self, b: Batch) -> tuple[dict[str, Tensor], Tensor]:
        terms = self.algo.losses(b)
        return terms, sum(terms.values())

    def _clip_and_step(self) -> None:
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
        self.optimizer.step()

    def __call__(self, b: Batch) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        terms, total = self.forward(b)
        total.backward()
        self.step()
        self.algo.update_targets()
        return {k: v.detach() for k, v in terms.items()}
