"""direct_call: tensordict.nn modules called without their per-call wrappers, same outputs."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential

from rlblocks.core import ModuleOutputError
from rlblocks.core.fast_module import direct_call


def data():
    return TensorDict({"observation": torch.randn(3, 4)}, batch_size=[3])


def sequence():
    torch.manual_seed(0)
    return TensorDictSequential(
        TensorDictModule(torch.nn.Linear(4, 2), ["observation"], ["logits"]),
        TensorDictModule(lambda logits: logits.argmax(-1), ["logits"], ["action"]),
    )


@pytest.mark.parametrize("make", [lambda: sequence()[0], sequence])
def test_plain_modules_give_what_their_call_gives(make):
    module = make()
    call = direct_call(module)
    assert call is not None
    td = data()
    assert (call(td.clone()) == module(td.clone())).all()


def test_other_modules_keep_their_call():
    hooked = sequence()
    hooked.register_forward_hook(lambda *args: None)
    selected = sequence().select_out_keys("action")
    for module in (hooked, selected, torch.nn.Linear(4, 2), lambda td: td):
        assert direct_call(module) is None


def test_hooks_registered_later_run():
    module = sequence()
    call = direct_call(module)
    calls = []
    module[0].register_forward_hook(lambda *args: calls.append(1))
    call(data())
    assert calls == [1]


def test_errors_name_the_module_and_the_fix():
    missing = TensorDictModule(torch.nn.Linear(4, 2), ["pixels"], ["logits"])
    with pytest.raises(KeyError, match="pixels"):
        direct_call(missing)(data())
    outputs = TensorDictModule(lambda o: (o, o), ["observation"], ["a", "b", "c"])
    with pytest.raises(ModuleOutputError, match="returned 2 outputs but .* 3 out_keys"):
        direct_call(outputs)(data())
