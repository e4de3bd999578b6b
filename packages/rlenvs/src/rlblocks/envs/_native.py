"""Batched environments written in torch: :class:`PendulumEnv` and :class:`CartPoleEnv`.

They follow gymnasium's classic-control dynamics step for step (same constants, same
integrator, same reset distribution), but step ``N`` systems at once on any device and
keep the simulator state in the TensorDict (``"state"``, float64), so a model-based method
can set any state and step from it. Like gymnasium's unwrapped envs they never truncate;
add ``StepCounter(200)`` (Pendulum-v1) or ``StepCounter(500)`` (CartPole-v1) for the time
limits of the registered gymnasium versions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core import DONE, OBSERVATION, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.specs import Bounded, Categorical, Composite, Unbounded
from rlblocks.envs._env_base import EnvBase

__all__ = ["PendulumEnv", "CartPoleEnv"]

STATE = "state"


class _TorchEnv(EnvBase):
    """Shared machinery: a state in the TensorDict, a torch generator, partial resets."""

    state_size: int
    step_returns_done_flags = True

    def __init__(self, batch_size: Any, device: Any, check_actions: bool) -> None:
        super().__init__(batch_size=batch_size, device=device, check_actions=check_actions)
        self._generator = torch.Generator(device=self.device)
        self._generator.seed()

    def _state_spec_leaf(self) -> Unbounded:
        return Unbounded(
            shape=(*self.batch_size, self.state_size), dtype=torch.float64, device=self.device
        )

    def _declare_specs(self, observation: Bounded, action: Any) -> None:
        shape = self.batch_size
        self.full_observation_spec = Composite(
            {OBSERVATION: observation, STATE: self._state_spec_leaf()},
            shape=shape,
            device=self.device,
        )
        self.full_state_spec = Composite(
            {STATE: self._state_spec_leaf()}, shape=shape, device=self.device
        )
        self.action_spec = action
        self.reward_spec = Unbounded(shape=(*shape, 1), device=self.device)

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        """The env's own state outside its TensorDicts: the random generator's state.

        The physical state lives in the TensorDicts (``"state"``); with this, a restored env
        (:meth:`load_state_dict`) draws the same initial states as the saved one would.
        """
        return {"generator": self._generator.get_state()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the random generator saved by :meth:`state_dict`."""
        if "generator" not in state_dict:
            raise KeyError(
                f"{type(self).__name__}.load_state_dict: expected a dict from state_dict() with "
                f"a 'generator' entry, got keys {sorted(state_dict)}"
            )
        self._generator.set_state(torch.as_tensor(state_dict["generator"]).cpu())

    def _uniform(self, high: torch.Tensor) -> torch.Tensor:
        u = torch.rand(
            (*self.batch_size, high.shape[-1]),
            dtype=torch.float64,
            device=self.device,
            generator=self._generator,
        )
        return (2 * u - 1) * high

    def _sample_state(self) -> torch.Tensor:
        raise NotImplementedError

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        state = self._sample_state()
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        if mask is not None:
            old = tensordict.get(STATE, None)
            if old is not None:
                state = torch.where(mask.reshape(*self.batch_size, 1), state, old)
        flags = torch.zeros((*self.batch_size, 1), dtype=torch.bool, device=self.device)
        return TensorDict(
            {
                OBSERVATION: self._observe(state),
                STATE: state,
                DONE: flags,
                TERMINATED: flags.clone(),
                TRUNCATED: flags.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _output(
        self, state: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor
    ) -> TensorDictBase:
        return TensorDict(
            {
                OBSERVATION: self._observe(state),
                STATE: state,
                REWARD: reward.to(torch.float32).unsqueeze(-1),
                DONE: terminated.unsqueeze(-1),
                TERMINATED: terminated.unsqueeze(-1).clone(),
                TRUNCATED: torch.zeros_like(terminated).unsqueeze(-1),
            },
            batch_size=self.batch_size,
            device=self.device,
        )


class PendulumEnv(_TorchEnv):
    """Gymnasium's ``Pendulum-v1`` dynamics for ``batch_size`` pendulums, in torch.

    Observation ``[cos(theta), sin(theta), theta_dot]`` (float32); action: torque in
    ``[-2, 2]``, shape ``[*batch, 1]``; reward ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)``;
    ``"state"``: ``[theta, theta_dot]`` (float64).

    Args:
        batch_size: Number of pendulums (``[N]``, or ``[]`` for one).
        device: Where the tensors live.
        g: Gravity, as gymnasium's ``g`` argument.
        check_actions: Validate actions in ``step`` (see :class:`EnvBase`).

    Example:
        >>> env = PendulumEnv(batch_size=[64])
        >>> env.rollout(200).batch_size
        torch.Size([64, 200])
    """

    state_size = 2
    max_speed = 8.0
    max_torque = 2.0
    dt = 0.05
    m = 1.0
    length = 1.0

    def __init__(
        self,
        batch_size: Any = (),
        device: Any = None,
        g: float = 10.0,
        *,
        check_actions: bool = True,
    ) -> None:
        super().__init__(batch_size, device, check_actions)
        self.g = g
        shape = (*self.batch_size, 3)
        high = torch.tensor([1.0, 1.0, self.max_speed])
        self._declare_specs(
            observation=Bounded(-high.expand(shape), high.expand(shape), device=self.device),
            action=Bounded(
                -self.max_torque, self.max_torque, shape=(*self.batch_size, 1), device=self.device
            ),
        )
        self._reset_high = torch.tensor([math.pi, 1.0], dtype=torch.float64, device=self.device)

    def _sample_state(self) -> torch.Tensor:
        return self._uniform(self._reset_high)

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        th, thdot = state.unbind(-1)
        return torch.stack([th.cos(), th.sin(), thdot], -1).to(torch.float32)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        th, thdot = tensordict.get(STATE).unbind(-1)
        u = tensordict.get("action").clamp(-self.max_torque, self.max_torque)[..., 0]
        u = u.to(torch.float64)
        normalized = torch.remainder(th + math.pi, 2 * math.pi) - math.pi
        costs = normalized**2 + 0.1 * thdot**2 + 0.001 * u**2
        accel = 3 * self.g / (2 * self.length) * th.sin() + 3.0 / (self.m * self.length**2) * u
        new_thdot = (thdot + accel * self.dt).clamp(-self.max_speed, self.max_speed)
        new_th = th + new_thdot * self.dt
        state = torch.stack([new_th, new_thdot], -1)
        return self._output(state, -costs, torch.zeros_like(th, dtype=torch.bool))


class CartPoleEnv(_TorchEnv):
    """Gymnasium's ``CartPole-v1`` dynamics for ``batch_size`` carts, in torch.

    Observation ``[x, x_dot, theta, theta_dot]`` (float32); action: 0 (push left) or 1
    (push right), a ``Categorical(2)`` of shape ``[*batch]``; reward 1 per step;
    ``terminated`` when the pole falls past 12 degrees or the cart leaves ``[-2.4, 2.4]``.

    Args:
        batch_size: Number of carts (``[N]``, or ``[]`` for one).
        device: Where the tensors live.
        check_actions: Validate actions in ``step`` (see :class:`EnvBase`).

    Example:
        >>> env = CartPoleEnv(batch_size=[16])
        >>> td = env.rollout(500, break_when_any_done=False)
        >>> td["next", "terminated"].any()
        tensor(True)
    """

    state_size = 4
    gravity = 9.8
    masscart = 1.0
    masspole = 0.1
    length = 0.5  # half the pole's length, as in gymnasium
    force_mag = 10.0
    tau = 0.02
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def __init__(
        self, batch_size: Any = (), device: Any = None, *, check_actions: bool = True
    ) -> None:
        super().__init__(batch_size, device, check_actions)
        inf = float("inf")
        high = torch.tensor([self.x_threshold * 2, inf, self.theta_threshold_radians * 2, inf])
        shape = (*self.batch_size, 4)
        self._declare_specs(
            observation=Bounded(-high.expand(shape), high.expand(shape), device=self.device),
            action=Categorical(2, shape=self.batch_size, device=self.device),
        )
        self._reset_high = torch.full((4,), 0.05, dtype=torch.float64, device=self.device)

    def _sample_state(self) -> torch.Tensor:
        return self._uniform(self._reset_high)

    def _observe(self, state: torch.Tensor) -> torch.Tensor:
        return state.to(torch.float32)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        x, x_dot, theta, theta_dot = tensordict.get(STATE).unbind(-1)
        action = tensordict.get("action")
        force = torch.where(action == 1, self.force_mag, -self.force_mag).to(torch.float64)
        cos, sin = theta.cos(), theta.sin()
        total_mass = self.masspole + self.masscart
        polemass_length = self.masspole * self.length
        temp = (force + polemass_length * theta_dot**2 * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos**2 / total_mass)
        )
        x_acc = temp - polemass_length * theta_acc * cos / total_mass
        # Explicit Euler, gymnasium's default integrator.
        state = torch.stack(
            [
                x + self.tau * x_dot,
                x_dot + self.tau * x_acc,
                theta + self.tau * theta_dot,
                theta_dot + self.tau * theta_acc,
            ],
            -1,
        )
        x, theta = state[..., 0], state[..., 2]
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold_radians)
            | (theta > self.theta_threshold_radians)
        )
        return self._output(state, torch.ones_like(x), terminated)
