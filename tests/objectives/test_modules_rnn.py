"""LSTMModule and GRUModule: state in the TensorDict, resets, sequence mode."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules import GRUModule, LSTMModule

MODULES = [LSTMModule, GRUModule]


def build(cls, seed=0):
    torch.manual_seed(seed)
    return cls(3, 5, 2, in_key="x", out_key="y")


@pytest.mark.parametrize("cls", MODULES)
def test_step_mode_matches_the_torch_module(cls):
    module = build(cls)
    x = torch.randn(4, 3)
    td = module(TensorDict(x=x, batch_size=[4]))
    expected, _ = module.rnn(x.unsqueeze(1))
    torch.testing.assert_close(td["y"], expected.squeeze(1))
    for key in module.state_keys:
        assert td["next", key].shape == (4, 2, 5)
    # Feeding the state back continues the sequence.
    second = TensorDict(x=x, batch_size=[4])
    for key in module.state_keys:
        second[key] = td["next", key]
    module(second)
    expected, _ = module.rnn(torch.stack([x, x], 1))
    torch.testing.assert_close(second["y"], expected[:, 1])


@pytest.mark.parametrize("cls", MODULES)
def test_is_init_resets_the_state(cls):
    module = build(cls)
    x = torch.randn(2, 3)
    td = TensorDict(x=x, is_init=torch.tensor([[True], [False]]), batch_size=[2])
    for key in module.state_keys:
        td[key] = torch.ones(2, 2, 5)
    module(td)
    fresh = module(TensorDict(x=x, batch_size=[2]))["y"]
    torch.testing.assert_close(td["y"][0], fresh[0])
    assert not torch.allclose(td["y"][1], fresh[1])


@pytest.mark.parametrize("cls", MODULES)
def test_recurrent_mode_equals_step_by_step_with_resets(cls):
    module = build(cls)
    batch, steps = 4, 9
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, steps, 3, generator=g)
    is_init = torch.rand(batch, steps, 1, generator=g) < 0.25
    is_init[0, 3] = True  # at least one episode starts mid-sequence
    td = TensorDict(x=x[:, 0], batch_size=[batch])
    outputs = []
    for t in range(steps):
        td["x"], td["is_init"] = x[:, t], is_init[:, t]
        module(td)
        outputs.append(td["y"])
        for key in module.state_keys:
            td[key] = td["next", key]
    sequence = module.set_recurrent_mode(True)
    assert sequence.rnn is module.rnn and not module.recurrent_mode
    out = sequence(TensorDict(x=x, is_init=is_init, batch_size=[batch, steps]))
    torch.testing.assert_close(out["y"], torch.stack(outputs, 1))
    key = module.state_keys[0]
    torch.testing.assert_close(out["next", key][:, -1], td["next", key])
    # Without resets inside the sequences, one call to the RNN gives the same.
    no_reset = torch.zeros_like(is_init)
    out2 = sequence(TensorDict(x=x, is_init=no_reset, batch_size=[batch, steps]))
    expected, _ = module.rnn(x)
    torch.testing.assert_close(out2["y"], expected)


def test_keys_and_bad_input():
    lstm = LSTMModule(3, 5, in_key="x", out_key="y")
    assert lstm.in_keys == ["x", "recurrent_state_h", "recurrent_state_c", "is_init"]
    assert lstm.out_keys == ["y", ("next", "recurrent_state_h"), ("next", "recurrent_state_c")]
    td = TensorDict(x=torch.zeros(2, 3), recurrent_state_h=torch.zeros(2, 5), batch_size=[2])
    with pytest.raises(ShapeMismatchError, match=r"\[2, 5\]"):
        lstm(td)
    with pytest.raises(ObjectiveConfigError, match="batch_first"):
        GRUModule(in_key="x", out_key="y", module=nn.GRU(3, 5))
    gru = GRUModule(in_key="x", out_key="y", module=nn.GRU(3, 5, batch_first=True))
    assert gru.state_keys == ["recurrent_state"]
    with pytest.raises(ShapeMismatchError, match="sequences"):
        gru.set_recurrent_mode()(TensorDict(x=torch.zeros(3), batch_size=[]))
