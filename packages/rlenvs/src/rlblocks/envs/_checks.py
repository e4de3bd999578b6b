"""``check_env_specs``: verify that what an env returns matches what its specs declare."""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from rlblocks.core import DONE, NEXT, TERMINATED, TRUNCATED
from rlblocks.core.errors import SpecError
from rlblocks.core.specs import Composite
from rlblocks.envs._env_base import EnvBase
from rlblocks.envs.errors import EnvSpecError

__all__ = ["check_env_specs"]


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def _compare(
    env: EnvBase, td: TensorDictBase, spec: Composite, where: str, allowed: set[NestedKey]
) -> None:
    """Every key of ``spec`` is in ``td`` with a valid value of exactly the spec's shape."""
    name = type(env).__name__
    for key, leaf in spec.items(include_nested=True, leaves_only=True):
        value = td.get(key, None)
        if value is None:
            raise EnvSpecError(
                f"{name}: {where} returned no {key!r}, which the specs declare as {leaf!r}. "
                f"Fix: return it from the env, or remove it from the spec. Returned keys: "
                f"{sorted(map(str, td.keys(True, True)))}"
            )
        problem = None
        if not isinstance(value, torch.Tensor) or value.shape != leaf.shape:
            problem = f"expected shape {list(leaf.shape)}, got {_describe(value)}"
        else:
            try:
                leaf.assert_is_in(value, key)
            except SpecError as err:
                problem = str(err)
        if problem is not None:
            raise EnvSpecError(
                f"{name}: {where} returned {key!r} = {_describe(value)} that does not match "
                f"its spec {leaf!r}: {problem}. Fix the env's spec or what it returns."
            )
    extra = [
        k
        for k in td.keys(include_nested=True, leaves_only=True)
        if k not in spec and k not in allowed
    ]
    if extra:
        raise EnvSpecError(
            f"{name}: {where} returned {sorted(map(str, extra))}, which no spec declares. "
            f"Fix: add them to full_observation_spec (or the spec they belong to)."
        )


def _check_done(env: EnvBase, td: TensorDictBase, where: str) -> None:
    flags = [td.get(k, None) for k in (DONE, TERMINATED, TRUNCATED)]
    if any(f is None for f in flags):
        return
    done, terminated, truncated = flags
    if not torch.equal(done.bool(), terminated.bool() | truncated.bool()):
        raise EnvSpecError(
            f"{type(env).__name__}: {where} returned done != terminated | truncated "
            f"(done={done.tolist()}, terminated={terminated.tolist()}, "
            f"truncated={truncated.tolist()}); set done to terminated | truncated"
        )


def check_env_specs(env: EnvBase, *, steps: int = 3, seed: int | None = None) -> None:
    """Run an env for a few random steps and check every output against its specs.

    Checks that ``reset`` returns the observation, state and done entries, that each
    ``step`` returns the observation, reward and done entries under ``"next"``, that every
    value has exactly the spec's shape (batch dims included), dtype and range, that no
    undeclared entry appears, that ``done == terminated | truncated``, and that
    ``fake_tensordict()`` and ``rollout`` have the same structure as real steps.

    Args:
        env: The env to check (it is reset and stepped).
        steps: How many random steps to take.
        seed: Seed the env first, if given.

    Raises:
        EnvSpecError: Something returned does not match the specs; the message names the
            method, the key, the spec and the value.
    """
    if seed is not None:
        env.set_seed(seed)
    specs = {
        name: getattr(env, f"full_{name}_spec")
        for name in ("observation", "action", "reward", "done", "state")
    }
    root = specs["observation"].clone().update(specs["done"]).update(specs["state"])
    after_step = specs["observation"].clone().update(specs["reward"]).update(specs["done"])
    td = env.reset()
    _compare(env, td, root, "reset()", set())
    _check_done(env, td, "reset()")
    transition = td
    for i in range(steps):
        transition = env.step(env.rand_action(td), check=True)
        next_td = transition.get(NEXT)
        _compare(env, next_td, after_step, f"step() #{i}", set())
        _check_done(env, next_td, f"step() #{i}")
        td = env.maybe_reset(env.step_mdp(transition))
        _compare(env, td, root, f"the reset after step() #{i}", set(env.action_keys))
    fake = env.fake_tensordict()
    real_keys = set(transition.keys(True, True))
    fake_keys = set(fake.keys(True, True))
    if real_keys != fake_keys:
        raise EnvSpecError(
            f"{type(env).__name__}: fake_tensordict() has keys {sorted(map(str, fake_keys))} "
            f"but a real step has {sorted(map(str, real_keys))}; the specs are incomplete"
        )
    for key in fake.keys(True, True):
        a, b = fake.get(key), transition.get(key)
        if isinstance(a, torch.Tensor) and (a.shape != b.shape or a.dtype != b.dtype):
            raise EnvSpecError(
                f"{type(env).__name__}: fake_tensordict()[{key!r}] is {_describe(a)} but a "
                f"real step gives {_describe(b)}; fix the spec of {key!r}"
            )
    rollout = env.rollout(steps, break_when_any_done=False, check=True)
    expected = (*env.batch_size, steps)
    if tuple(rollout.batch_size) != expected:
        raise EnvSpecError(
            f"{type(env).__name__}: rollout({steps}, break_when_any_done=False) has batch size "
            f"{list(rollout.batch_size)}, expected {list(expected)}"
        )
    for key in (NEXT, DONE), (NEXT, TERMINATED), (NEXT, TRUNCATED):
        if rollout.get(key, None) is None:
            raise EnvSpecError(f"{type(env).__name__}: rollout() lacks {key!r}")
