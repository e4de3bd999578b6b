"""The recurrent pipeline end to end: primer + InitTracker on the env, an LSTM policy stepping
frame by frame in a rollout, then the same LSTM over the stored sequences (as a loss runs it)
giving exactly the features the policy acted on."""

from __future__ import annotations

import pytest
import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from rlblocks.buffers import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer
from rlblocks.envs import CartPoleEnv, Compose, InitTracker, TensorDictPrimer, TransformedEnv
from rlblocks.objectives.errors import MissingInputError
from rlblocks.objectives.modules import LSTMModule


class Greedy(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 2)

    def forward(self, features):
        return self.head(features).argmax(-1)


def lstm_policy():
    torch.manual_seed(0)
    lstm = LSTMModule(4, 8, in_key="observation", out_key="features")
    head = TensorDictModule(Greedy(), in_keys=["features"], out_keys=["action"])
    return lstm, TensorDictSequential(lstm, head)


def test_stored_sequences_replay_the_features_the_policy_acted_on():
    lstm, policy = lstm_policy()
    env = TransformedEnv(
        CartPoleEnv(batch_size=[4]), Compose(InitTracker(), TensorDictPrimer(lstm.primer_specs()))
    )
    with torch.no_grad():
        trajectory = env.rollout(60, policy, break_when_any_done=False)  # episodes end inside
    assert trajectory["is_init"][:, 1:].any()  # resets happened mid-trajectory
    state = trajectory["recurrent_state_h"]
    assert (state[trajectory["is_init"].squeeze(-1)] == 0).all()  # fresh memory at each start
    assert (state[:, 1:] != 0).any()  # carried otherwise
    with torch.no_grad():
        replay = lstm.set_recurrent_mode(True)(trajectory.clone())
    torch.testing.assert_close(replay["features"], trajectory["features"])


def test_without_the_primer_the_policy_refuses_to_act():
    _, policy = lstm_policy()
    env = TransformedEnv(CartPoleEnv(batch_size=[2]), InitTracker())
    with pytest.raises(MissingInputError, match="primer_specs"):
        env.rollout(5, policy)


def test_slices_from_the_slice_sampler_replay_the_features_the_policy_acted_on():
    # The loss side of the pipeline: a replay buffer of single-env steps, slices of one
    # trajectory each (starting anywhere in it), the LSTM over each slice from the state
    # stored at its first step.
    lstm, policy = lstm_policy()
    env = TransformedEnv(
        CartPoleEnv(), Compose(InitTracker(), TensorDictPrimer(lstm.primer_specs()))
    )
    env.set_seed(1)  # a start with episodes of 12+ steps, whatever ran before in this process
    with torch.no_grad():
        trajectory = env.rollout(150, policy, break_when_any_done=False)
    assert trajectory["next", "done"].sum() >= 2  # several episodes
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(150), sampler=SliceSampler(slice_len=12), batch_size=96
    )
    buffer.extend(trajectory)
    slices = buffer.sample().reshape(8, 12)
    assert not slices["is_init"][:, 1:].any()  # each slice lies within one episode
    with torch.no_grad():
        replay = lstm.set_recurrent_mode(True)(slices.clone())
    torch.testing.assert_close(replay["features"], slices["features"])
