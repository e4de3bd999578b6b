"""check_env_specs: passes on correct envs, names key, spec and value on broken ones."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.specs import Unbounded
from rlblocks.envs import EnvSpecError, check_env_specs


def test_correct_env_passes(counting_env_cls):
    check_env_specs(counting_env_cls(batch_size=[2]), steps=6, seed=0)


def test_wrong_dtype_is_named(counting_env_cls):
    env = counting_env_cls()
    env.full_observation_spec["observation"] = Unbounded(shape=(1,), dtype=torch.float32)
    with pytest.raises(EnvSpecError, match=r"reset\(\) returned 'observation'.*dtype torch\.int64"):
        check_env_specs(env)


def test_missing_key_is_named(counting_env_cls):
    env = counting_env_cls()
    env.full_observation_spec["velocity"] = Unbounded(shape=(1,))
    with pytest.raises(EnvSpecError, match="returned no 'velocity'"):
        check_env_specs(env)


def test_undeclared_key_is_named(counting_env_cls):
    class Chatty(counting_env_cls):
        def _step(self, tensordict):
            return super()._step(tensordict).set("debug", torch.zeros(1))

    with pytest.raises(EnvSpecError, match=r"step\(\) #0 returned \['debug'\], which no spec"):
        check_env_specs(Chatty())


def test_wrong_shape_is_named(counting_env_cls):
    class Squeezed(counting_env_cls):
        def _step(self, tensordict):
            out = super()._step(tensordict)
            return out.set("reward", out["reward"].reshape(()))

    with pytest.raises(EnvSpecError, match=r"'reward'.*expected shape \[1\]"):
        check_env_specs(Squeezed())


def test_inconsistent_done_is_reported(counting_env_cls):
    class Confused(counting_env_cls):
        def _step(self, tensordict):
            out = super()._step(tensordict)
            out.set("done", torch.ones(1, dtype=torch.bool))
            out.set("truncated", torch.zeros(1, dtype=torch.bool))
            return out

    with pytest.raises(EnvSpecError, match=r"done != terminated \| truncated"):
        check_env_specs(Confused(limit=100))


def test_reset_output_checked_against_specs(counting_env_cls):
    class BadReset(counting_env_cls):
        def _reset(self, tensordict, **kwargs):
            return TensorDict({"observation": torch.zeros(2, dtype=torch.int64)}, [])

    with pytest.raises(EnvSpecError, match=r"reset\(\) returned 'observation'.*shape \[1\]"):
        check_env_specs(BadReset())
