"""export_policy to ONNX, run by onnxruntime: the same actions as the torch policy."""

from __future__ import annotations

import numpy as np
import onnxruntime
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
from rlblocks.envs import CartPoleEnv, PendulumEnv, TransformedEnv, VecNorm, export_policy


def torch_actions(policy, env, obs):
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        td = env.transform(TensorDict({"observation": obs}, batch_size=obs.shape[:1]))
        return policy(td)["action"]


def test_a_normalized_gaussian_policy_runs_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    env = TransformedEnv(PendulumEnv(batch_size=[8]), VecNorm(decay=None))
    env.rollout(40)
    net = TensorDictModule(
        nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 2), NormalParamExtractor()),
        in_keys=["observation"],
        out_keys=["loc", "scale"],
    )
    head = ProbabilisticTensorDictModule(["loc", "scale"], ["action"], distribution_class=D.Normal)
    policy = ProbabilisticTensorDictSequential(net, head)
    path = export_policy(policy, env, tmp_path / "pi.onnx")
    session = onnxruntime.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["observation"]
    assert [o.name for o in session.get_outputs()] == ["action"]
    for batch in (1, 5):
        obs = torch.randn(batch, 3)
        (action,) = session.run(None, {"observation": obs.numpy()})
        np.testing.assert_allclose(action, torch_actions(policy, env, obs), rtol=1e-5, atol=1e-5)


def test_a_greedy_discrete_policy_gives_the_same_integer_actions(tmp_path):
    torch.manual_seed(1)

    class Greedy(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))

        def forward(self, observation):
            return self.net(observation).argmax(-1)

    env = CartPoleEnv()
    policy = TensorDictModule(Greedy(), in_keys=["observation"], out_keys=["action"])
    path = export_policy(policy, env, tmp_path / "greedy.onnx")
    session = onnxruntime.InferenceSession(str(path))
    obs = torch.randn(64, 4)
    (action,) = session.run(None, {"observation": obs.numpy()})
    assert action.dtype == np.int64
    expected = policy(TensorDict(observation=obs, batch_size=[64]))["action"]
    np.testing.assert_array_equal(action, expected)
