"""direct_call: tensordict.nn modules called without their per-call wrappers, same outputs."""

from __future__ import annotations

import contextlib

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    CompositeDistribution,
    ProbabilisticTensorDictModule,
    TensorDictModule,
    TensorDictSequential,
    set_interaction_type,
    set_skip_existing,
)

from rlblocks.core import ModuleOutputError
from rlblocks.core.fast_module import direct_call, keeps_plain_forward, module_call


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


# -- the sampler: ProbabilisticTensorDictModule -------------------------------------------


class _JointNormal(torch.distributions.Normal):
    """A Normal that scores its draws through ``rsample_and_log_prob``, offset by 1 so that
    a test sees which path wrote the log-probability."""

    def rsample_and_log_prob(self, sample_shape=()):
        value = self.rsample(sample_shape)
        return value, self.log_prob(value) + 1.0


def _sampler(distribution_class, in_keys, **kwargs):
    return ProbabilisticTensorDictModule(
        in_keys=in_keys,
        out_keys=["action"],
        distribution_class=distribution_class,
        default_interaction_type="random",
        **kwargs,
    )


def _params():
    return TensorDict(
        {"logits": torch.randn(5, 3), "loc": torch.randn(5, 2), "scale": torch.rand(5, 2) + 0.1},
        batch_size=[5],
    )


def _same_draws(make, td, *, direct):
    """A sampler's call and the direct call of a second one from ``make``, from the same
    generator state: equal entries, the same draws. ``direct``: whether the direct call
    must do without the sampler's ``forward``."""
    torch.manual_seed(1)
    expected = make()(td.clone())
    after_expected = torch.rand(3)
    sampler = make()
    call = direct_call(sampler)
    assert call is not None
    if direct:
        sampler.forward = lambda *args, **kwargs: pytest.fail("the sampler's forward ran")
    torch.manual_seed(1)
    got = call(td.clone())
    assert torch.equal(torch.rand(3), after_expected)  # the same number of draws
    assert set(got.keys(True, True)) == set(expected.keys(True, True))
    for key in expected.keys(True, True):
        assert torch.equal(got[key], expected[key]), key
    return got


@pytest.mark.parametrize("return_log_prob", [True, False])
@pytest.mark.parametrize(
    ("distribution_class", "in_keys"),
    [
        (torch.distributions.Categorical, ["logits"]),
        (torch.distributions.Normal, ["loc", "scale"]),
        (_JointNormal, ["loc", "scale"]),
    ],
)
def test_sampler_draws_what_its_call_draws(distribution_class, in_keys, return_log_prob):
    def make():
        return _sampler(distribution_class, in_keys, return_log_prob=return_log_prob)

    got = _same_draws(make, _params(), direct=True)
    assert ("action_log_prob" in got.keys()) is return_log_prob
    if distribution_class is _JointNormal and return_log_prob:  # the joint path scored it
        expected = make().get_dist(got).log_prob(got["action"]) + 1.0
        torch.testing.assert_close(got["action_log_prob"], expected)


@pytest.mark.parametrize("case", ["mode", "generator", "num_samples"])
def test_sampler_under_other_settings_gives_its_results(case):
    normal = (torch.distributions.Normal, ["loc", "scale"])

    def make():
        if case == "generator":  # a fresh one per sampler: both draw the same
            return _sampler(*normal, generator=torch.Generator().manual_seed(3))
        if case == "num_samples":
            return _sampler(*normal, num_samples=4)
        return _sampler(*normal, return_log_prob=True)

    with set_interaction_type("mode") if case == "mode" else contextlib.nullcontext():
        _same_draws(make, _params(), direct=False)


def test_sampler_honours_skip_existing_and_later_hooks():
    call_of = _sampler(torch.distributions.Normal, ["loc", "scale"])
    call = direct_call(call_of)
    td = _params().set("action", torch.zeros(5, 2))
    with set_skip_existing(True):
        assert torch.equal(call(td)["action"], torch.zeros(5, 2))  # kept, as the call keeps it
    seen = []
    call_of.register_forward_hook(lambda *args: seen.append(1))
    call(_params())
    assert seen == [1]


def test_sampler_of_a_composite_distribution_gives_its_results():
    def make():
        return ProbabilisticTensorDictModule(
            in_keys=["params"],
            out_keys=[("sample", "a"), ("sample", "b")],
            distribution_class=CompositeDistribution,
            distribution_kwargs={
                "distribution_map": {
                    ("sample", "a"): torch.distributions.Normal,
                    ("sample", "b"): torch.distributions.Categorical,
                }
            },
            default_interaction_type="random",
            return_log_prob=True,
        )

    params = TensorDict(
        {
            "params": {
                ("sample", "a"): {"loc": torch.zeros(5, 2), "scale": torch.ones(5, 2)},
                ("sample", "b"): {"logits": torch.zeros(5, 3)},
            }
        },
        batch_size=[5],
    )
    got = _same_draws(make, params, direct=False)
    assert ("sample", "b") in got.keys(True)


def test_sampler_with_a_missing_parameter_fails_as_its_call():
    sampler = _sampler(torch.distributions.Normal, ["loc", "scale"])
    td = TensorDict({"loc": torch.zeros(5, 2)}, batch_size=[5])
    with pytest.raises(ValueError, match="must all be instances") as expected:
        sampler(td.clone())
    with pytest.raises(ValueError, match="must all be instances") as got:
        direct_call(sampler)(td.clone())
    assert str(got.value) == str(expected.value)


# -- module_call ---------------------------------------------------------------------------


def test_module_call_gives_what_the_call_gives_and_honours_hooks_and_skip_existing():
    module = sequence()[0]
    td = data()
    assert torch.equal(module_call(module, td.clone())["logits"], module(td.clone())["logits"])
    with set_skip_existing(True):  # the output is there: kept, as the module's call keeps it
        kept = module_call(module, td.clone().set("logits", torch.zeros(3, 2)))
    assert torch.equal(kept["logits"], torch.zeros(3, 2))
    seen = []
    module.register_forward_hook(lambda *args: seen.append(1))
    module_call(module, td.clone())
    assert seen == [1]


def test_module_call_runs_a_subclass_forward_unless_declared_plain():
    class Doubling(TensorDictModule):
        def forward(self, tensordict):
            return super().forward(tensordict).apply(lambda x: 2 * x)

    @keeps_plain_forward
    class Declared(TensorDictModule):
        def forward(self, tensordict):
            return super().forward(tensordict)

    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 2)
    td = data()
    expected = linear(td["observation"])
    doubled = module_call(Doubling(linear, ["observation"], ["logits"]), td.clone())
    assert torch.equal(doubled["logits"], 2 * expected)
    declared = Declared(linear, ["observation"], ["logits"])
    declared.forward = lambda *args: pytest.fail("a declared class is read-call-written")
    assert torch.equal(module_call(declared, td.clone())["logits"], expected)
