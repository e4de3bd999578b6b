"""export_policy to torch.export (.pt2): the file acts as policy(transforms(obs)), frozen.

The ONNX format is checked with onnxruntime in tests/envs/interop (the interop session).
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    NormalParamExtractor,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import distributions as D
from torch import nn

from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.envs import (
    CartPoleEnv,
    Compose,
    ExportError,
    ObservationNorm,
    PendulumEnv,
    TransformedEnv,
    VecNorm,
    export_policy,
)


def gaussian_policy():
    torch.manual_seed(0)
    net = TensorDictModule(
        nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2), NormalParamExtractor()),
        in_keys=["observation"],
        out_keys=["loc", "scale"],
    )
    head = ProbabilisticTensorDictModule(["loc", "scale"], ["action"], distribution_class=D.Normal)
    return ProbabilisticTensorDictSequential(net, head)


def normalized_pendulum():
    env = TransformedEnv(
        PendulumEnv(batch_size=[4]),
        Compose(ObservationNorm(loc=1.0, scale=2.0), VecNorm(decay=None)),
    )
    env.rollout(30)  # VecNorm's statistics move away from their start
    return env


def reference(policy, env, obs):
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        td = env.transform(TensorDict({"observation": obs}, batch_size=obs.shape[:1]))
        return policy(td)["action"]


def test_the_file_acts_as_the_policy_on_transformed_observations_at_any_batch_size(tmp_path):
    env, policy = normalized_pendulum(), gaussian_policy()
    path = export_policy(policy, env, tmp_path / "deploy" / "pi.pt2")
    deployed = torch.export.load(path).module()
    for batch in (1, 7):
        obs = torch.randn(batch, 3)
        (action,) = deployed(obs)  # the simulator's "state" is no input: nothing reads it
        torch.testing.assert_close(action, reference(policy, env, obs))
    assert policy.training  # the policy's mode is restored


def test_the_distributions_validation_setting_is_restored(tmp_path):
    from torch import distributions as torch_distributions

    env, policy = normalized_pendulum(), gaussian_policy()
    for setting in (False, True):
        torch_distributions.Distribution.set_default_validate_args(setting)
        export_policy(policy, env, tmp_path / "pi.pt2")
        raised = False
        try:
            torch_distributions.Bernoulli(probs=torch.tensor(2.0))
        except ValueError:
            raised = True
        assert raised is setting


def test_normalization_statistics_are_frozen_in(tmp_path):
    env, policy = normalized_pendulum(), gaussian_policy()
    obs = torch.randn(3, 3)
    before = reference(policy, env, obs)
    deployed = torch.export.load(export_policy(policy, env, tmp_path / "pi.pt2")).module()
    env.rollout(30)  # training goes on: the statistics change, the exported file does not
    assert not torch.allclose(reference(policy, env, obs), before)
    torch.testing.assert_close(deployed(obs)[0], before)


def test_a_policy_that_branches_on_data_is_refused_naming_why(tmp_path):
    class Branchy(nn.Module):
        def forward(self, observation):
            if observation.sum() > 0:  # Python control flow on a tensor's value
                return observation[..., :1]
            return -observation[..., :1]

    policy = TensorDictModule(Branchy(), in_keys=["observation"], out_keys=["action"])
    with pytest.raises(ExportError, match=r"\(TensorDictModule\).*branches in Python on tensor"):
        export_policy(policy, CartPoleEnv(), tmp_path / "pi.pt2")
    assert not (tmp_path / "pi.pt2").exists()


def test_a_policy_that_does_not_write_the_action_is_named(tmp_path):
    policy = TensorDictModule(nn.Linear(4, 2), in_keys=["observation"], out_keys=["logits"])
    with pytest.raises(ExportError, match=r"must write the env's actions \['action'\]"):
        export_policy(policy, CartPoleEnv(), tmp_path / "pi.pt2")


def test_an_unknown_format_is_named(tmp_path):
    with pytest.raises(ExportError, match=r"one of \['.onnx', '.pt2'\].*pi.pt'"):
        export_policy(gaussian_policy(), PendulumEnv(), tmp_path / "pi.pt")
