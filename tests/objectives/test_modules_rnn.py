"""LSTMModule and GRUModule: state in the TensorDict, resets, sequence mode."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn

from rlblocks.objectives.errors import MissingInputError, ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules import GRUModule, LSTMModule

MODULES = [LSTMModule, GRUModule]


def build(cls, seed=0):
    torch.manual_seed(seed)
    return cls(3, 5, 2, in_key="x", out_key="y")


def with_zero_states(module, td):
    """What the module's primer writes at reset: zero states."""
    for key in module.state_keys:
        td[key] = torch.zeros(*td.batch_size, 2, 5)
    return td


@pytest.mark.parametrize("cls", MODULES)
def test_step_mode_matches_the_torch_module(cls):
    module = build(cls)
    x = torch.randn(4, 3)
    td = module(with_zero_states(module, TensorDict(x=x, batch_size=[4])))
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
    fresh = module(with_zero_states(module, TensorDict(x=x, batch_size=[2])))["y"]
    torch.testing.assert_close(td["y"][0], fresh[0])
    assert not torch.allclose(td["y"][1], fresh[1])


def sequences(module, x, is_init, **entries):
    td = TensorDict(x=x, is_init=is_init, batch_size=x.shape[:2], **entries)
    return with_zero_states(module, td)


@pytest.mark.parametrize("cls", MODULES)
def test_recurrent_mode_equals_step_by_step_with_resets(cls):
    module = build(cls)
    batch, steps = 4, 9
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, steps, 3, generator=g)
    is_init = torch.rand(batch, steps, 1, generator=g) < 0.25
    is_init[0, 3] = True  # at least one episode starts mid-sequence
    td = with_zero_states(module, TensorDict(x=x[:, 0], batch_size=[batch]))
    outputs = []
    for t in range(steps):
        td["x"], td["is_init"] = x[:, t], is_init[:, t]
        module(td)
        outputs.append(td["y"])
        for key in module.state_keys:
            td[key] = td["next", key]
    sequence = module.set_recurrent_mode(True)
    assert sequence.rnn is module.rnn and not module.recurrent_mode
    out = sequence(sequences(module, x, is_init))
    torch.testing.assert_close(out["y"], torch.stack(outputs, 1))
    key = module.state_keys[0]
    torch.testing.assert_close(out["next", key][:, -1], td["next", key])
    # Without resets inside the sequences, one call to the RNN gives the same.
    no_reset = torch.zeros_like(is_init)
    out2 = sequence(sequences(module, x, no_reset))
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


@pytest.mark.parametrize("recurrent", [False, True])
def test_a_missing_state_is_an_error_not_a_silent_reset(recurrent):
    module = build(LSTMModule).set_recurrent_mode(recurrent)
    shape = [2, 4] if recurrent else [2]
    td = TensorDict(x=torch.zeros(*shape, 3), is_init=torch.zeros(*shape, 1, dtype=torch.bool),
                    batch_size=shape)  # fmt: skip
    expected = r"LSTMModule: the input has no 'recurrent_state_h'.*TensorDictPrimer\(module"
    with pytest.raises(MissingInputError, match=expected):
        module(td)


def test_sequences_without_is_init_are_refused():
    module = build(GRUModule).set_recurrent_mode(True)
    td = with_zero_states(module, TensorDict(x=torch.zeros(2, 4, 3), batch_size=[2, 4]))
    with pytest.raises(MissingInputError, match="needs 'is_init'.*InitTracker"):
        module(td)


@pytest.mark.parametrize("cls", MODULES)
def test_primer_specs_describe_the_states(cls):
    module = build(cls)
    specs = module.primer_specs()
    assert sorted(specs.keys()) == sorted(module.state_keys)
    assert all(specs[key].shape == (2, 5) for key in module.state_keys)
    # TorchRL's spelling says what to write instead.
    with pytest.raises(ObjectiveConfigError, match=r"TensorDictPrimer\(module.primer_specs\(\)\)"):
        module.make_tensordict_primer()


@pytest.mark.parametrize("cls", MODULES)
def test_padded_steps_are_skipped(cls):
    """split_trajs pads episodes at the end: padded rows give the unpadded rows' outputs,
    zeros where padded, and the state after each row's last real step."""
    module = build(cls)
    sequence = module.set_recurrent_mode(True)
    x = torch.randn(3, 6, 3)
    lengths = [6, 2, 4]
    mask = torch.arange(6).expand(3, 6) < torch.tensor(lengths)[:, None]
    is_init = torch.zeros(3, 6, 1, dtype=torch.bool)
    is_init[0, 3] = True  # and an episode start inside the first row
    out = sequence(
        sequences(module, x, is_init, collector=TensorDict(mask=mask, batch_size=[3, 6]))
    )
    for row, length in enumerate(lengths):
        alone = sequence(
            sequences(module, x[row : row + 1, :length], is_init[row : row + 1, :length])
        )
        torch.testing.assert_close(out["y"][row, :length], alone["y"][0])
        assert (out["y"][row, length:] == 0).all()
        key = module.state_keys[0]
        torch.testing.assert_close(out["next", key][row, -1], alone["next", key][0, -1])


@pytest.mark.parametrize("cls", MODULES)
def test_burn_in_warms_the_state_without_gradient(cls):
    module = build(cls)
    x = torch.randn(4, 8, 3)
    is_init = torch.zeros(4, 8, 1, dtype=torch.bool)
    is_init[1, 2] = True  # an episode start inside the burn-in
    full = module.set_recurrent_mode(True)(sequences(module, x, is_init))
    burned = module.set_recurrent_mode(True, burn_in=3)(sequences(module, x, is_init))
    torch.testing.assert_close(burned["y"], full["y"])  # the same computation...
    params = list(module.parameters())
    head = torch.autograd.grad(
        burned["y"][:, :3].sum(), params, allow_unused=True, retain_graph=True
    )
    tail = torch.autograd.grad(burned["y"][:, 3:].sum(), params, allow_unused=True)
    # ...but the first 3 steps carry no gradient; the others do.
    assert all(g is None or (g == 0).all() for g in head)
    assert any(g is not None and (g != 0).any() for g in tail)
    with pytest.raises(ObjectiveConfigError, match="burn_in must be an int >= 0, got -1"):
        module.set_recurrent_mode(True, burn_in=-1)
