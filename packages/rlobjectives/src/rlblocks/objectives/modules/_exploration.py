"""Exploration wrappers that perturb the action of a policy under ``ExplorationType.RANDOM``.

Each is a TensorDict module placed after the policy
(``TensorDictSequential(policy, EGreedyModule(spec))``). Outside ``RANDOM`` (for example
inside ``set_exploration_type(ExplorationType.DETERMINISTIC)`` during evaluation) they
leave the action untouched. ``step(frames)`` anneals the noise level.
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from rlblocks.core import ACTION, IS_INIT, ExplorationType, exploration_type
from rlblocks.core.specs import Composite, TensorSpec
from rlblocks.objectives.errors import ObjectiveConfigError

__all__ = ["EGreedyModule", "AdditiveGaussianModule", "OrnsteinUhlenbeckProcessModule"]


class _AnnealedExploration(TensorDictModuleBase):
    """Shared by the exploration modules: the spec, the action key and linear annealing."""

    def __init__(
        self,
        spec: TensorSpec,
        start: float,
        end: float,
        annealing_num_steps: int,
        action_key: NestedKey,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if isinstance(spec, Composite):
            spec = spec.get(action_key)
        if not isinstance(spec, TensorSpec):
            raise ObjectiveConfigError(f"{owner} needs the action spec, got {spec!r}")
        if annealing_num_steps <= 0:
            raise ObjectiveConfigError(
                f"{owner}: annealing_num_steps must be > 0, got {annealing_num_steps}"
            )
        self.spec = spec
        self.action_key = action_key
        self.in_keys = [action_key]
        self.out_keys = [action_key]
        self.annealing_num_steps = annealing_num_steps
        self._start, self._end = float(start), float(end)
        # The current level is a buffer so that it is saved and restored with the module.
        self.register_buffer("_level", torch.tensor(float(start)))

    def step(self, frames: int = 1) -> None:
        """Anneal the noise level linearly towards its end value by ``frames`` steps."""
        level = float(self._level) - (self._start - self._end) * frames / self.annealing_num_steps
        low, high = sorted((self._start, self._end))
        self._level.fill_(min(max(level, low), high))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Perturb the action, only under ``ExplorationType.RANDOM``; see the class doc."""
        if exploration_type() is not ExplorationType.RANDOM:
            return tensordict
        action = tensordict.get(self.action_key)
        tensordict.set(self.action_key, self._perturb(tensordict, action))
        return tensordict

    def _perturb(self, tensordict: TensorDictBase, action: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _batch_shape(self, action: torch.Tensor) -> torch.Size:
        return action.shape[: action.ndim - self.spec.ndim]


class EGreedyModule(_AnnealedExploration):
    """With probability ``eps``, replace the action by a uniformly random one from ``spec``.

    Args:
        spec: The action spec (``Categorical``, ``OneHot``, ``Bounded``...).
        eps_init: Initial ``eps``.
        eps_end: Final ``eps``.
        annealing_num_steps: Number of ``step()`` frames to go from ``eps_init`` to
            ``eps_end``.
        action_key: Key of the action.
        action_mask_key: Optional boolean mask ``[*batch, n]`` of allowed actions; random
            actions are drawn among them (``Categorical``/``OneHot`` specs).

    Example:
        >>> policy = TensorDictSequential(QValueActor(net, spec=spec), EGreedyModule(spec))
        >>> policy.module[1].step(100)  # after collecting 100 frames
    """

    def __init__(
        self,
        spec: TensorSpec,
        eps_init: float = 1.0,
        eps_end: float = 0.1,
        annealing_num_steps: int = 1000,
        *,
        action_key: NestedKey = ACTION,
        action_mask_key: NestedKey | None = None,
    ) -> None:
        if not (0.0 <= eps_init <= 1.0 and 0.0 <= eps_end <= 1.0):
            raise ObjectiveConfigError(
                f"EGreedyModule: eps_init and eps_end must be in [0, 1], got {eps_init}, {eps_end}"
            )
        super().__init__(spec, eps_init, eps_end, annealing_num_steps, action_key)
        self.action_mask_key = action_mask_key
        if action_mask_key is not None:
            self.in_keys = [action_key, action_mask_key]

    @property
    def eps(self) -> float:
        """The current exploration probability."""
        return float(self._level)

    def _perturb(self, tensordict: TensorDictBase, action: torch.Tensor) -> torch.Tensor:
        batch = self._batch_shape(action)
        explore = torch.rand(batch, device=action.device) < self._level
        if self.action_mask_key is not None:
            random_action = self._masked_random(tensordict.get(self.action_mask_key), action)
        else:
            random_action = self.spec.rand(batch).to(action.device)
        explore = explore.reshape(*batch, *([1] * self.spec.ndim))
        return torch.where(explore, random_action, action)

    def _masked_random(self, mask: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        n = getattr(self.spec, "n", None)
        if n is None:
            raise ObjectiveConfigError(
                f"EGreedyModule: action_mask_key needs a Categorical or OneHot spec, "
                f"got {self.spec}"
            )
        flat = mask.reshape(-1, n).float()
        idx = torch.multinomial(flat, 1).reshape(mask.shape[:-1])
        if action.shape == mask.shape:  # one-hot actions
            return torch.nn.functional.one_hot(idx, n).to(action.dtype)
        return idx.reshape(action.shape).to(action.dtype)


class AdditiveGaussianModule(_AnnealedExploration):
    """Add ``sigma * Normal(mean, std)`` noise to a continuous action.

    Args:
        spec: The action spec; with ``safe=True`` noisy actions are projected into it.
        sigma_init: Initial noise scale.
        sigma_end: Final noise scale.
        annealing_num_steps: Frames to anneal ``sigma`` over (see ``step()``).
        mean: Mean of the base noise.
        std: Standard deviation of the base noise.
        action_key: Key of the action.
        safe: Project the noisy action into ``spec``.

    Example:
        >>> policy = TensorDictSequential(actor, AdditiveGaussianModule(spec, sigma_init=0.2))
    """

    def __init__(
        self,
        spec: TensorSpec,
        sigma_init: float = 1.0,
        sigma_end: float = 0.1,
        annealing_num_steps: int = 1000,
        *,
        mean: float = 0.0,
        std: float = 1.0,
        action_key: NestedKey = ACTION,
        safe: bool = True,
    ) -> None:
        super().__init__(spec, sigma_init, sigma_end, annealing_num_steps, action_key)
        self.mean = mean
        self.std = std
        self.safe = safe

    @property
    def sigma(self) -> float:
        """The current noise scale."""
        return float(self._level)

    def _perturb(self, tensordict: TensorDictBase, action: torch.Tensor) -> torch.Tensor:
        noise = (torch.randn_like(action) * self.std + self.mean) * self._level
        noisy = action + noise
        return self.spec.project(noisy) if self.safe else noisy


class OrnsteinUhlenbeckProcessModule(_AnnealedExploration):
    """Add temporally correlated Ornstein-Uhlenbeck noise (DDPG) to a continuous action.

    ``x_{k+1} = x_k + theta * (mu - x_k) * dt + sigma_k * sqrt(dt) * N(0, 1)``; the action
    gets ``eps * x``. The noise state lives in the TensorDict (``noise_key`` and
    ``steps_key`` at the root, carried to the next step by ``step_mdp``) and restarts from
    ``x0`` where ``is_init`` is set or when it is absent.

    Args:
        spec: The action spec; with ``safe=True`` noisy actions are projected into it.
        eps_init: Initial multiplier of the noise.
        eps_end: Final multiplier.
        annealing_num_steps: Frames to anneal ``eps`` over (see ``step()``).
        theta: Mean-reversion rate.
        mu: Long-run mean.
        sigma: Noise scale.
        dt: Time step.
        x0: Initial noise value.
        sigma_min: If set, ``sigma`` decreases linearly to it over ``n_steps_annealing``
            steps of each episode.
        n_steps_annealing: See ``sigma_min``.
        action_key: Key of the action.
        is_init_key: Key of the episode-start flag.
        noise_key: Where the noise state is kept.
        steps_key: Where the per-episode step count is kept.
        safe: Project the noisy action into ``spec``.

    Example:
        >>> policy = TensorDictSequential(actor, OrnsteinUhlenbeckProcessModule(spec))
    """

    def __init__(
        self,
        spec: TensorSpec,
        eps_init: float = 1.0,
        eps_end: float = 0.1,
        annealing_num_steps: int = 1000,
        *,
        theta: float = 0.15,
        mu: float = 0.0,
        sigma: float = 0.2,
        dt: float = 1e-2,
        x0: float = 0.0,
        sigma_min: float | None = None,
        n_steps_annealing: int = 1000,
        action_key: NestedKey = ACTION,
        is_init_key: NestedKey = IS_INIT,
        noise_key: NestedKey = "_ou_prev_noise",
        steps_key: NestedKey = "_ou_steps",
        safe: bool = True,
    ) -> None:
        super().__init__(spec, eps_init, eps_end, annealing_num_steps, action_key)
        self.theta, self.mu, self.sigma, self.dt, self.x0 = theta, mu, sigma, dt, x0
        self.sigma_min = sigma_min
        self.n_steps_annealing = n_steps_annealing
        self.is_init_key, self.noise_key, self.steps_key = is_init_key, noise_key, steps_key
        self.safe = safe
        self.in_keys = [action_key, is_init_key, noise_key, steps_key]
        self.out_keys = [action_key, noise_key, steps_key]
        self.optional_in_keys = [is_init_key, noise_key, steps_key]

    @property
    def eps(self) -> float:
        """The current noise multiplier."""
        return float(self._level)

    def _current_sigma(self, steps: torch.Tensor) -> torch.Tensor | float:
        if self.sigma_min is None:
            return self.sigma
        slope = (self.sigma_min - self.sigma) / self.n_steps_annealing
        return torch.clamp(slope * steps + self.sigma, min=self.sigma_min)

    def _perturb(self, tensordict: TensorDictBase, action: torch.Tensor) -> torch.Tensor:
        batch = self._batch_shape(action)
        prev = tensordict.get(self.noise_key, None)
        steps = tensordict.get(self.steps_key, None)
        fresh = torch.full_like(action, self.x0)
        if prev is None or steps is None:
            prev, steps = fresh, torch.zeros(*batch, 1, dtype=torch.long, device=action.device)
        is_init = tensordict.get(self.is_init_key, None)
        if is_init is not None:
            reset = is_init.reshape(*batch, *([1] * self.spec.ndim))
            prev = torch.where(reset, fresh, prev)
            steps = torch.where(is_init.reshape(*batch, 1), 0, steps)
        sigma = self._current_sigma(steps.reshape(*batch, *([1] * self.spec.ndim)))
        noise = (
            prev
            + self.theta * (self.mu - prev) * self.dt
            + sigma * math.sqrt(self.dt) * torch.randn_like(action)
        )
        tensordict.set(self.noise_key, noise)
        tensordict.set(self.steps_key, steps + 1)
        noisy = action + self._level * noise
        return self.spec.project(noisy) if self.safe else noisy
