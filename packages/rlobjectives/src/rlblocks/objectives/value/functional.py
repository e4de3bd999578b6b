"""Vectorized return and advantage estimators on plain tensors.

Also importable from :mod:`rlblocks.objectives.value`; this module is at TorchRL's path
(``torchrl.objectives.value.functional``), and ``vec_td_lambda_return_estimate`` and
``vec_generalized_advantage_estimate`` are TorchRL's names for two of the functions.

All functions take tensors shaped ``[*batch, T, *features]`` (``time_dim=-2`` by default,
so ``[*batch, T, 1]`` for the usual scalar reward) holding consecutive steps, possibly of
several episodes. Two flags shape the recursion:

- ``terminated``: the episode ended in a terminal state; nothing is bootstrapped from the
  next state (its value is taken as zero).
- ``done`` (``terminated | truncated``): the episode ended for any reason; the recursion
  does not carry information across this step, but after a truncation the value of the
  next state is still bootstrapped.

The last step of the time axis is treated like a truncation: its return bootstraps from
``next_state_value``.

The backward recursions ``x_t = b_t + a_t * x_{t+1}`` are evaluated as chunked scans: a
discounted cumulative sum inside chunks of 32 steps (segments cut at episode ends) and the
same scan, recursively, over the chunk ends. There is no Python loop over time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rlblocks.objectives._checks import check_same_shape
from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError

__all__ = [
    "discounted_scan",
    "td0_return_estimate",
    "td0_advantage_estimate",
    "td1_return_estimate",
    "td_lambda_return_estimate",
    "vec_td_lambda_return_estimate",
    "generalized_advantage_estimate",
    "vec_generalized_advantage_estimate",
    "vtrace_advantage_estimate",
]

# Steps per chunk of the scan with a constant coefficient. Within a chunk the weights span
# coef**-32 .. 1, well inside float32's range for any discount used in practice.
_CHUNK = 32
# With a per-step coefficient (float64 weights) a chunk spans up to 16 * 34.5 nats.
_CHUNK_TENSOR = 16
# Coefficients at or below this are treated as exactly zero (a relative error under 1e-15).
_NEGLIGIBLE = 1e-15
# Keep the weights inside a chunk below e**69 ~ 1e30.
_MAX_LOG_WEIGHT = 69.0

Coef = float | Tensor


def discounted_scan(
    values: Tensor,
    coef: Coef,
    cut: Tensor,
    *,
    time_dim: int = -1,
    max_coef: float | None = None,
) -> Tensor:
    """Solve ``x_t = values_t + coef_t * (1 - cut_t) * x_{t+1}`` backwards in time, ``x_T = 0``.

    This is the kernel of every estimator here: discounted sums that restart where ``cut``
    is set.

    Args:
        values: The ``b_t`` terms, a floating tensor.
        coef: A float in ``[0, 1]``, or a tensor shaped like ``values`` (non-negative
            per-step factors, above 1 too).
        cut: Boolean tensor shaped like ``values``; where true, nothing from ``t + 1`` on is
            carried into ``x_t``.
        time_dim: The time dimension of ``values`` and ``cut``.
        max_coef: An upper bound of a tensor ``coef`` known beforehand (V-trace:
            ``gamma * c_thresh``). It picks the scan without reading ``coef``'s values, so
            the call compiles to one graph; without it the values are read (eager), or the
            scan safe for any factor is used (under ``torch.compile``).

    Returns:
        ``x``, shaped and typed like ``values``.
    """
    time_dim = time_dim % values.ndim
    if isinstance(coef, Tensor) and coef.ndim == 0:
        coef = float(coef)
    b = values.movedim(time_dim, -1)
    cut = cut.movedim(time_dim, -1)
    if isinstance(coef, Tensor):
        coef = coef.movedim(time_dim, -1)
    work = torch.promote_types(b.dtype, torch.float32)
    # The forward scan runs on the time-reversed sequence.
    b = b.flip(-1).to(work)
    cut = cut.flip(-1)
    if isinstance(coef, Tensor):
        coef = coef.flip(-1).to(torch.float64)
        # Factors above 1 (V-trace's gamma * c with c_thresh > 1) would make the chunk
        # weights below shrink and their differences cancel; double the span instead.
        if max_coef is not None:
            above_one = max_coef > 1.0
        elif torch.compiler.is_compiling():
            above_one = True  # reading the values would break the graph; this scan fits all
        else:
            above_one = bool((coef > 1.0).any())
        scan = _forward_scan_doubling if above_one else _forward_scan_tensor
        out = scan(b.to(torch.float64), coef, cut)
    else:
        out = _forward_scan_scalar(b, float(coef), cut)
    return out.flip(-1).to(values.dtype).movedim(-1, time_dim)


def _chunked(x: Tensor, chunk: int, pad_value: float | bool) -> Tensor:
    steps = x.shape[-1]
    n = -(-steps // chunk)
    if n * chunk != steps:
        x = torch.nn.functional.pad(x, (0, n * chunk - steps), value=pad_value)
    return x.reshape(*x.shape[:-1], n, chunk)


def _segmented_cumsum(weighted: Tensor, cut: Tensor) -> tuple[Tensor, Tensor]:
    """Cumulative sums over the last dim that restart at each ``cut``; also "no cut so far"."""
    chunk = weighted.shape[-1]
    total = torch.cumsum(weighted, -1)
    idx = torch.arange(chunk, device=weighted.device)
    # start[s]: the last cut at or before s (-1 if none); the segment sum subtracts the
    # running total just before it, held at index start of the zero-padded totals.
    start = torch.where(cut, idx, -1).cummax(-1).values
    before = torch.gather(torch.nn.functional.pad(total, (1, 0)), -1, start.clamp_min(0))
    return total - before, start < 0


def _forward_scan_scalar(b: Tensor, coef: float, cut: Tensor) -> Tensor:
    """``y_s = b_s + coef * (1 - cut_s) * y_{s-1}``, ``y_{-1} = 0``, for a constant coef."""
    if not 0.0 <= coef <= 1.0 or math.isnan(coef):
        raise ObjectiveConfigError(f"discounted_scan: coef must be in [0, 1], got {coef}")
    steps = b.shape[-1]
    if coef <= _NEGLIGIBLE or steps <= 1:
        return b.clone()
    chunk = _CHUNK if coef == 1.0 else min(_CHUNK, int(_MAX_LOG_WEIGHT / -math.log(coef)))
    if chunk < 2:  # coef**2 < 1e-30: nothing is carried further than one step
        chunk = 2
    bc = _chunked(b, chunk, 0.0)
    cc = _chunked(cut, chunk, False)
    k = torch.arange(1, chunk + 1, device=b.device, dtype=b.dtype)
    down = torch.pow(coef, k)  # coef**(s+1): weight of the carry into step s
    up = torch.pow(coef, -k)
    seg, no_cut = _segmented_cumsum(bc * up, cc)
    local = seg * down
    if bc.shape[-2] > 1:
        ends = _forward_scan_scalar(local[..., -1], coef**chunk, ~no_cut[..., -1])
        prev = torch.nn.functional.pad(ends[..., :-1], (1, 0)).unsqueeze(-1)
        local = local + torch.where(no_cut, down, 0.0) * prev
    return local.reshape(*b.shape[:-1], -1)[..., :steps]


def _forward_scan_tensor(b: Tensor, coef: Tensor, cut: Tensor) -> Tensor:
    """Like :func:`_forward_scan_scalar` with a per-step coefficient (float64 inputs)."""
    steps = b.shape[-1]
    cut = cut | (coef <= _NEGLIGIBLE)
    if steps <= 1:
        return b.clone()
    chunk = _CHUNK_TENSOR
    log_coef = torch.log(torch.where(cut, 1.0, coef).clamp_max(1.0))
    bc = _chunked(b, chunk, 0.0)
    cc = _chunked(cut, chunk, False)
    log_down = torch.cumsum(_chunked(log_coef, chunk, 0.0), -1)
    down = torch.exp(log_down)
    seg, no_cut = _segmented_cumsum(bc * torch.exp(-log_down), cc)
    local = seg * down
    if bc.shape[-2] > 1:
        ends = _forward_scan_tensor(local[..., -1], down[..., -1], ~no_cut[..., -1])
        prev = torch.nn.functional.pad(ends[..., :-1], (1, 0)).unsqueeze(-1)
        local = local + torch.where(no_cut, down, 0.0) * prev
    return local.reshape(*b.shape[:-1], -1)[..., :steps]


def _forward_scan_doubling(b: Tensor, coef: Tensor, cut: Tensor) -> Tensor:
    """Like :func:`_forward_scan_tensor` for any non-negative factors, in ``log2(T)`` steps.

    After the step with span ``k``, ``b_s`` holds the sum over ``s - k < j <= s`` and
    ``a_s`` the factor that carries ``y_{s-k}`` into ``y_s`` (zero across a cut).
    """
    steps = b.shape[-1]
    a = torch.where(cut, 0.0, coef)
    span = 1
    while span < steps:
        b = b + a * torch.nn.functional.pad(b[..., :-span], (span, 0))
        a = a * torch.nn.functional.pad(a[..., :-span], (span, 0))
        span *= 2
    return b


# -- validation --------------------------------------------------------------------------


def _check_inputs(owner: str, time_dim: int | None, **tensors: Tensor | None) -> int | None:
    """Check that the given tensors share one shape; return ``time_dim`` made non-negative."""
    given = {name: t for name, t in tensors.items() if t is not None}
    for name, t in given.items():
        if not isinstance(t, Tensor):
            raise ObjectiveConfigError(f"{owner}: {name} must be a tensor, got {type(t).__name__}")
    (first_name, first), *rest = given.items()
    for name, t in rest:
        check_same_shape(owner, first_name, first, name, t)
    if time_dim is None:
        return None
    if first.ndim == 0 or not -first.ndim <= time_dim < first.ndim:
        raise ShapeMismatchError(
            f"{owner}: time_dim={time_dim} is not a dim of inputs of shape {list(first.shape)}; "
            f"inputs are laid out [*batch, T, *features] with time_dim=-2 by default"
        )
    return time_dim % first.ndim


def _check_coef(owner: str, name: str, value: Coef, like: Tensor) -> Coef:
    if isinstance(value, Tensor):
        if value.ndim == 0:
            value = float(value)
        else:
            check_same_shape(owner, name, value, "reward", like)
            return value.to(like.device, like.dtype)
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ObjectiveConfigError(f"{owner}: {name} must be in [0, 1], got {value}")
    return value


def _prepare_lambda(
    owner: str,
    gamma: Coef,
    lmbda: Coef,
    time_dim: int,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None,
    **values: Tensor,
) -> tuple[int, Coef, Coef, Tensor, Tensor]:
    """Validate the inputs of a lambda-return; ``(time_dim, gamma, lmbda, done, terminated)``."""
    time_dim = _check_inputs(
        owner, time_dim, reward=reward, **values, done=done, terminated=terminated
    )
    gamma = _check_coef(owner, "gamma", gamma, reward)
    lmbda = _check_coef(owner, "lmbda", lmbda, reward)
    done = _flag(done)
    terminated = done if terminated is None else _flag(terminated)
    return time_dim, gamma, lmbda, done, terminated


def check_clip_threshold(owner: str, name: str, value: float | Tensor) -> float | Tensor:
    """Return ``value`` (a float, or a tensor as given) if it is a threshold ``> 0``.

    Raises:
        ObjectiveConfigError: Some value is ``<= 0`` or NaN.
    """
    if isinstance(value, Tensor) and value.ndim > 0:
        if not bool((value > 0).all()):
            raise ObjectiveConfigError(
                f"{owner}: {name} must be > 0 everywhere (it clips the importance weights "
                f"pi/mu from above; 1.0 in the IMPALA paper), got a tensor with minimum "
                f"{value.min().item()}"
            )
        return value
    number = float(value)
    if not number > 0:  # also catches NaN
        raise ObjectiveConfigError(
            f"{owner}: {name} must be > 0 (it clips the importance weights pi/mu from above; "
            f"1.0 in the IMPALA paper), got {number}"
        )
    return number


def _flag(x: Tensor) -> Tensor:
    return x if x.dtype == torch.bool else x.bool()


def _not(flag: Tensor, dtype: torch.dtype) -> Tensor:
    return (~flag).to(dtype)


# -- estimators --------------------------------------------------------------------------


def td0_return_estimate(
    gamma: Coef, next_state_value: Tensor, reward: Tensor, terminated: Tensor
) -> Tensor:
    """One-step TD target ``r_t + gamma * (1 - terminated_t) * V(s_{t+1})``.

    Args:
        gamma: Discount factor (float or tensor shaped like ``reward``).
        next_state_value: ``V(s_{t+1})``.
        reward: ``r_t``.
        terminated: Whether ``s_{t+1}`` is terminal.

    Returns:
        The target, shaped like ``reward``.

    Raises:
        ShapeMismatchError: The inputs differ in shape.
    """
    owner = "td0_return_estimate"
    _check_inputs(
        owner, None, reward=reward, next_state_value=next_state_value, terminated=terminated
    )
    gamma = _check_coef(owner, "gamma", gamma, reward)
    return reward + gamma * _not(_flag(terminated), reward.dtype) * next_state_value


def td0_advantage_estimate(
    gamma: Coef, state_value: Tensor, next_state_value: Tensor, reward: Tensor, terminated: Tensor
) -> Tensor:
    """One-step TD error ``r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)``."""
    check_same_shape("td0_advantage_estimate", "state_value", state_value, "reward", reward)
    return td0_return_estimate(gamma, next_state_value, reward, terminated) - state_value


def _check_rolling_gamma(owner: str, rolling_gamma: bool | None, gamma: Coef, lmbda: Coef) -> None:
    """Accept TorchRL's ``rolling_gamma`` where it means what the scans compute."""
    if rolling_gamma is None or rolling_gamma:
        return
    if isinstance(gamma, Tensor) or isinstance(lmbda, Tensor):
        raise ObjectiveConfigError(
            f"{owner}: rolling_gamma=False (each step's gamma and lmbda applied to all the "
            f"steps after it) is not supported with per-step gamma or lmbda tensors; here "
            f"each step's gamma discounts that step only, TorchRL's default. Pass "
            f"rolling_gamma=None (or True), or a constant gamma and lmbda, for which both "
            f"readings agree."
        )


def td_lambda_return_estimate(
    gamma: Coef,
    lmbda: Coef,
    next_state_value: Tensor,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None = None,
    rolling_gamma: bool | None = None,
    *,
    time_dim: int = -2,
) -> Tensor:
    """TD(lambda) returns, computed backwards over the time axis.

    ``G_t = r_t + gamma * (1 - terminated_t) * ((1 - lmbda) * V(s_{t+1}) + lmbda * G_{t+1})``,
    with ``G_{t+1}`` replaced by ``V(s_{t+1})`` after a truncation and at the last step.
    Also exported as ``vec_td_lambda_return_estimate``, TorchRL's name.

    Args:
        gamma: Discount factor, float or tensor shaped like ``reward``.
        lmbda: Trace decay in ``[0, 1]``, float or tensor shaped like ``reward``.
        next_state_value: ``V(s_{t+1})``, shaped ``[*batch, T, *features]``.
        reward: ``r_t``.
        done: ``terminated | truncated`` for each step.
        terminated: Terminal flags; ``None`` treats every ``done`` as a termination.
        rolling_gamma: TorchRL's flag: ``None``/``True`` (per-step ``gamma`` and ``lmbda``
            apply to their own step, as above); ``False`` only with constant ones.
        time_dim: The time dimension.

    Returns:
        ``G``, shaped like ``reward``.

    Raises:
        ShapeMismatchError: The inputs differ in shape, or ``time_dim`` is not a dim.
        ObjectiveConfigError: ``rolling_gamma=False`` with a per-step ``gamma`` or ``lmbda``.
    """
    time_dim, gamma, lmbda, done, terminated = _prepare_lambda(
        "td_lambda_return_estimate",
        gamma,
        lmbda,
        time_dim,
        reward,
        done,
        terminated,
        next_state_value=next_state_value,
    )
    _check_rolling_gamma("td_lambda_return_estimate", rolling_gamma, gamma, lmbda)
    # The end of the time axis cuts the recursion like a truncation.
    cut = done.clone()
    cut.select(time_dim, -1).fill_(True)
    keep = _not(cut, reward.dtype)
    bootstrap = gamma * _not(terminated, reward.dtype) * next_state_value
    values = reward + bootstrap * (1 - lmbda * keep)
    return discounted_scan(values, gamma * lmbda, cut, time_dim=time_dim)


def td1_return_estimate(
    gamma: Coef,
    next_state_value: Tensor,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None = None,
    rolling_gamma: bool | None = None,
    *,
    time_dim: int = -2,
) -> Tensor:
    """Discounted returns to the end of each episode (TD(1)), bootstrapped after truncation.

    Same arguments as :func:`td_lambda_return_estimate` with ``lmbda = 1``.
    """
    return td_lambda_return_estimate(
        gamma, 1.0, next_state_value, reward, done, terminated, rolling_gamma, time_dim=time_dim
    )


def generalized_advantage_estimate(
    gamma: Coef,
    lmbda: Coef,
    state_value: Tensor,
    next_state_value: Tensor,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None = None,
    *,
    time_dim: int = -2,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al., 2016).

    ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)`` and
    ``A_t = delta_t + gamma * lmbda * (1 - done_t) * A_{t+1}``. Also exported as
    ``vec_generalized_advantage_estimate``, TorchRL's name.

    Args:
        gamma: Discount factor, float or tensor shaped like ``reward``.
        lmbda: GAE lambda in ``[0, 1]``, float or tensor shaped like ``reward``.
        state_value: ``V(s_t)``, shaped ``[*batch, T, *features]``.
        next_state_value: ``V(s_{t+1})``.
        reward: ``r_t``.
        done: ``terminated | truncated``.
        terminated: Terminal flags; ``None`` treats every ``done`` as a termination.
        time_dim: The time dimension.

    Returns:
        ``(advantage, value_target)`` with ``value_target = advantage + state_value``.

    Raises:
        ShapeMismatchError: The inputs differ in shape, or ``time_dim`` is not a dim.

    Example:
        >>> adv, target = generalized_advantage_estimate(
        ...     0.99, 0.95, value, next_value, reward, done, terminated
        ... )
    """
    time_dim, gamma, lmbda, done, terminated = _prepare_lambda(
        "generalized_advantage_estimate",
        gamma,
        lmbda,
        time_dim,
        reward,
        done,
        terminated,
        state_value=state_value,
        next_state_value=next_state_value,
    )
    delta = reward + gamma * _not(terminated, reward.dtype) * next_state_value - state_value
    advantage = discounted_scan(delta, gamma * lmbda, done, time_dim=time_dim)
    return advantage, advantage + state_value


def vtrace_advantage_estimate(
    gamma: Coef,
    log_pi: Tensor,
    log_mu: Tensor,
    state_value: Tensor,
    next_state_value: Tensor,
    reward: Tensor,
    done: Tensor,
    terminated: Tensor | None = None,
    rho_thresh: float | Tensor = 1.0,
    c_thresh: float | Tensor = 1.0,
    time_dim: int = -2,
) -> tuple[Tensor, Tensor]:
    """V-trace off-policy targets and advantages (Espeholt et al., 2018, IMPALA).

    With importance weights ``pi(a_t|s_t) / mu(a_t|s_t)`` of the target policy ``pi``
    against the behaviour policy ``mu`` that collected the data, clipped into
    ``rho_t = min(rho_thresh, pi/mu)`` and ``c_t = min(c_thresh, pi/mu)``:

    - ``delta_t = rho_t * (r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t))``
    - ``v_t = V(s_t) + delta_t + gamma * c_t * (1 - done_t) * (v_{t+1} - V(s_{t+1}))``
    - ``A_t = rho_t * (r_t + gamma * (1 - terminated_t) * v_{t+1} - V(s_t))``, where
      ``v_{t+1}`` is ``V(s_{t+1})`` after a truncation and at the last step.

    Traces stop at every episode end; nothing is bootstrapped after a termination. TorchRL's
    name and arguments.

    Args:
        gamma: Discount factor, float or tensor shaped like ``reward``.
        log_pi: ``log pi(a_t|s_t)``, the policy being learned.
        log_mu: ``log mu(a_t|s_t)``, the policy that collected the data
            (``sample_log_prob``).
        state_value: ``V(s_t)``, shaped ``[*batch, T, *features]``.
        next_state_value: ``V(s_{t+1})``.
        reward: ``r_t``.
        done: ``terminated | truncated``.
        terminated: Terminal flags; ``None`` treats every ``done`` as a termination.
        rho_thresh: ``rho``-bar, the clip of the weights in ``delta`` and ``A`` (> 0).
        c_thresh: ``c``-bar, the clip of the trace weights (> 0).
        time_dim: The time dimension.

    Returns:
        ``(advantage, value_target)``: ``A_t`` and ``v_t``.

    Raises:
        ShapeMismatchError: The inputs differ in shape, or ``time_dim`` is not a dim.
        ObjectiveConfigError: A threshold is ``<= 0`` or ``gamma`` is outside ``[0, 1]``.

    Example:
        >>> adv, target = vtrace_advantage_estimate(
        ...     0.99, log_pi, sample_log_prob, value, next_value, reward, done, terminated
        ... )
    """
    owner = "vtrace_advantage_estimate"
    time_dim, gamma, _, done, terminated = _prepare_lambda(
        owner,
        gamma,
        1.0,
        time_dim,
        reward,
        done,
        terminated,
        log_pi=log_pi,
        log_mu=log_mu,
        state_value=state_value,
        next_state_value=next_state_value,
    )
    ratio = torch.exp(log_pi - log_mu)
    rho = _clip(ratio, _check_threshold(owner, "rho_thresh", rho_thresh, reward))
    c = _clip(ratio, _check_threshold(owner, "c_thresh", c_thresh, reward))
    discount = gamma * _not(terminated, reward.dtype)
    delta = rho * (reward + discount * next_state_value - state_value)
    # The scan needs a per-step factor even for a float gamma: c changes at each step.
    c_bar = c_thresh if isinstance(c_thresh, float | int) else None
    bound = float(gamma) * c_bar if isinstance(gamma, float | int) and c_bar is not None else None
    vs_minus_v = discounted_scan(delta, gamma * c, done, time_dim=time_dim, max_coef=bound)
    value_target = state_value + vs_minus_v
    steps = reward.shape[time_dim]
    last = next_state_value.narrow(time_dim, steps - 1, 1)
    following = torch.cat([value_target.narrow(time_dim, 1, steps - 1), last], time_dim)
    following = torch.where(done, next_state_value, following)
    advantage = rho * (reward + discount * following - state_value)
    return advantage, value_target


def _check_threshold(owner: str, name: str, value: float | Tensor, like: Tensor) -> float | Tensor:
    value = check_clip_threshold(owner, name, value)
    if isinstance(value, Tensor):
        check_same_shape(owner, name, value, "reward", like)
        return value.to(like.device, like.dtype)
    return value


def _clip(ratio: Tensor, thresh: float | Tensor) -> Tensor:
    if isinstance(thresh, Tensor):
        return torch.minimum(ratio, thresh)
    return ratio.clamp_max(thresh)


# TorchRL's names of the same functions: TorchRL keeps a loop version under the plain names,
# and code written for it imports the vectorized one as ``vec_*``. Here both are vectorized.
vec_td_lambda_return_estimate = td_lambda_return_estimate
vec_generalized_advantage_estimate = generalized_advantage_estimate
