"""The rollout loop: preallocated trajectory storage written in place, one TensorDict out.

``EnvBase.rollout`` calls :func:`run_rollout`. An env with a fast path runs it
(``EnvBase.fast_rollout``, e.g. numpy loops over a gymnasium env's steppers, with random
actions or a ``TensorDictModule`` policy); otherwise the generic loop below steps through
TensorDicts and copies each step's leaves into storage allocated once for ``max_steps``.
Both use only the env's public API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from tensordict import TensorDict, TensorDictBase, is_non_tensor
from tensordict.utils import NestedKey

from rlblocks.core import DONE, NEXT
from rlblocks.core.fast_td import fast_get, set_sub_batch_dims, sub_batch_dims

if TYPE_CHECKING:
    from rlblocks.envs._env_base import EnvBase, Policy

__all__ = ["run_rollout", "TrajectoryStorage", "check_rollout_args"]


def check_rollout_args(
    env: EnvBase, max_steps: Any, policy: Any, auto_reset: bool, tensordict: Any
) -> None:
    """Validate ``rollout`` arguments with messages naming the fix."""
    name = type(env).__name__
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"{name}.rollout: max_steps must be a positive int, got {max_steps!r}")
    if policy is not None and not callable(policy):
        raise TypeError(
            f"{name}.rollout: policy must be callable (TensorDict -> TensorDict) or None, got "
            f"{type(policy).__name__}"
        )
    if not auto_reset and tensordict is None:
        raise ValueError(
            f"{name}.rollout: auto_reset=False needs the starting tensordict (e.g. the output "
            f"of env.reset() or the last step of a previous rollout)"
        )


class TrajectoryStorage:
    """Buffers of shape ``[*batch, T, *leaf]`` for every leaf of a step's TensorDict.

    Built from the first step (so a policy's extra outputs are recorded too) and filled
    one time index at a time; :meth:`result` wraps them in one TensorDict. Non-tensor
    leaves (strings, e.g. a text env's prompts) are kept per step and stacked at the end
    into a ``NonTensorStack`` of the same batch size.
    """

    def __init__(self, example: TensorDictBase, max_steps: int) -> None:
        self.batch_size = example.batch_size
        nb = len(self.batch_size)
        self.max_steps = max_steps
        self.device = example.device
        self.slots: list[tuple[NestedKey, torch.Tensor]] = []
        # The leaves by the sub-TensorDict holding them (read once per step with the fast
        # accessor), each with its buffer; the buffers' time dim is written through
        # ``select(dim, t)`` views, all copied by one ``_foreach_copy_`` call.
        groups: dict[tuple[str, ...], list[tuple[str, torch.Tensor]]] = {}
        self.non_tensor: dict[NestedKey, list[Any]] = {}
        # (items() yields non-tensor data as sub-TensorDicts, not as leaves)
        for key, value in example.items(include_nested=True):
            if is_non_tensor(value):
                self.non_tensor[key] = []
        for key, value in example.items(include_nested=True, leaves_only=True):
            if not isinstance(value, torch.Tensor):
                continue
            shape = (*value.shape[:nb], max_steps, *value.shape[nb:])
            buffer = torch.empty(shape, dtype=value.dtype, device=value.device)
            self.slots.append((key, buffer))
            parts = (key,) if isinstance(key, str) else tuple(key)
            groups.setdefault(parts[:-1], []).append((parts[-1], buffer))
        self._plan = list(groups.items())
        self._sub_batch = sub_batch_dims(example)  # agent groups keep their agent dim

    def write(self, t: int, tensordict: TensorDictBase) -> None:
        """Copy the leaves of ``tensordict`` to time index ``t``."""
        dim = len(self.batch_size)
        targets, values = [], []
        for parent, leaves in self._plan:
            sub: Any = tensordict
            for part in parent:
                sub = fast_get(sub, part)
                if sub is None:
                    break
            for name, buffer in leaves:
                value = fast_get(sub, name) if sub is not None else None
                if isinstance(value, torch.Tensor):
                    targets.append(buffer.select(dim, t))
                    values.append(value)
                elif value is not None:  # e.g. a Python number: broadcast into the slot
                    buffer.select(dim, t)[...] = value
                else:
                    key = (*parent, name) if parent else name
                    raise KeyError(
                        f"rollout: step {t} lacks the entry {key!r} present at step 0; the "
                        f"env and policy must write the same keys at every step"
                    )
        for key, recorded in self.non_tensor.items():
            recorded.append(tensordict.get(key))
        if torch.is_grad_enabled() and any(v.requires_grad for v in values):
            # A policy's outputs that require grad keep their graph in the trajectory, as
            # plain copies do; autograd's foreach copy would also mark the integer buffers.
            for target, value in zip(targets, values):
                target.copy_(value)
        else:
            torch._foreach_copy_(targets, values)

    def result(self, steps: int) -> TensorDictBase:
        """The recorded trajectory of ``steps`` steps, batch size ``[*batch, steps]``."""
        nb = len(self.batch_size)
        data: dict[NestedKey, torch.Tensor] = {}
        for key, buffer in self.slots:
            if steps < self.max_steps:
                # Compact: do not keep the storage of max_steps alive for a short rollout.
                buffer = buffer.narrow(nb, 0, steps).clone()
            data[key] = buffer
        out = TensorDict(data, batch_size=(*self.batch_size, steps), device=self.device)
        for key, recorded in self.non_tensor.items():
            out.set(key, torch.stack(recorded[:steps], dim=nb))
        return set_sub_batch_dims(out, self._sub_batch)


def run_rollout(
    env: EnvBase,
    max_steps: int,
    *,
    policy: Policy | None,
    auto_reset: bool,
    break_when_any_done: bool,
    tensordict: TensorDictBase | None,
    check: bool,
) -> TensorDictBase:
    """Implementation of :meth:`EnvBase.rollout` (see there for the arguments)."""
    check_rollout_args(env, max_steps, policy, auto_reset, tensordict)
    if auto_reset:
        td = env.reset(tensordict)
    else:
        # A step's output given as the start (``traj[-1]["next"]``) holds the reward of the
        # step before: an output, not an input of the next step (step_mdp drops it too).
        assert tensordict is not None
        td = tensordict.exclude(*env.reward_keys)
    check = check and policy is not None  # random actions come from the spec
    fast = env.fast_rollout(
        max_steps, td, policy=policy, break_when_any_done=break_when_any_done, check=check
    )
    if fast is not None:
        return fast
    storage: TrajectoryStorage | None = None
    steps = max_steps
    for t in range(max_steps):
        td = env.rand_action(td) if policy is None else policy(td)
        td = env.step(td, check=check)
        if storage is None:
            storage = TrajectoryStorage(td, max_steps)
        storage.write(t, td)
        if break_when_any_done:
            if env.any_done(fast_get(fast_get(td, NEXT), DONE)):
                steps = t + 1
                break
            td = env.step_mdp(td)
        elif t + 1 < max_steps:
            td = env.maybe_reset(env.step_mdp(td))
    assert storage is not None
    return storage.result(steps)
