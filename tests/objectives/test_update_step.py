"""make_update_step: the update against the hand-written loop, clipping, fallback, bad input.

The compiled path loss by loss is in test_compile.py; here a stand-in for ``torch.compile``
fails on purpose, so nothing is compiled and the file runs in seconds.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rlblocks.objectives import (
    ClipPPOLoss,
    KLPENPPOLoss,
    MissingInputError,
    ObjectiveConfigError,
    SACLoss,
    UpdateStep,
    make_update_step,
    total_loss,
)
from rlblocks.objectives.modules import TanhNormal


def ppo_loss(build):
    return ClipPPOLoss(build.gaussian_actor(), build.critic())


def ppo_batch(build, seed=0):
    td = build.batch(seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    td["sample_log_prob"] = torch.randn(6, generator=g)
    td["advantage"] = torch.randn(6, 1, generator=g)
    td["value_target"] = torch.randn(6, 1, generator=g)
    return td


def adam(loss):
    return torch.optim.Adam(loss.parameters(), lr=0.05)


def manual_step(loss, optimizer, batch, max_grad_norm=None):
    """The loop that make_update_step replaces, written out."""
    optimizer.zero_grad()
    out = loss(batch)
    total_loss(out).backward()
    norm = None
    if max_grad_norm is not None:
        norm = nn.utils.clip_grad_norm_(list(loss.parameters()), max_grad_norm)
    optimizer.step()
    return out, norm


def state(loss):
    return {k: v.clone() for k, v in loss.state_dict().items()}


def grads(loss):
    return [p.grad.clone() for p in loss.parameters()]


def assert_same(got, expected):
    assert set(got.keys()) == set(expected.keys())
    for key in expected.keys():
        torch.testing.assert_close(got[key], expected[key], msg=key)


def assert_same_list(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_update_matches_the_hand_written_loop(build):
    loss, reference = ppo_loss(build), ppo_loss(build)
    update = make_update_step(loss, adam(loss))
    optimizer = adam(reference)
    assert isinstance(update, UpdateStep) and not update.compiled
    for seed in range(3):
        out = update(ppo_batch(build, seed))
        expected, _ = manual_step(reference, optimizer, ppo_batch(build, seed))
        assert not any(v.requires_grad for v in out.values())
        assert "grad_norm" not in out.keys()
        assert_same(out, expected.detach())
        # Gradients of this batch only: the update zeroes them first.
        assert_same_list(grads(loss), grads(reference))
        assert_same(state(loss), state(reference))
    assert "ClipPPOLoss" in repr(update) and "compiled=False" in repr(update)


def test_off_policy_update_writes_priorities_into_the_batch(build):
    loss = SACLoss(build.gaussian_actor(TanhNormal), build.qvalue())
    batch = build.batch()
    make_update_step(loss, adam(loss))(batch)
    assert batch["td_error"].shape == (6,)


def test_terms_minimize_only_those_terms(build):
    """TD3's critic-only steps: the actor gets no gradient and is not stepped."""
    loss = SACLoss(build.gaussian_actor(TanhNormal), build.qvalue())
    actor_before = [p.clone() for p in loss.actor_network.parameters()]
    update = make_update_step(loss, adam(loss), terms=("loss_qvalue",))
    out = update(build.batch())
    assert {"loss_actor", "loss_qvalue"} <= set(out.keys())  # every term is reported
    assert all(p.grad is None for p in loss.actor_network.parameters())
    assert_same_list(list(loss.actor_network.parameters()), actor_before)
    missing = make_update_step(loss, adam(loss), terms=("loss_value",))
    with pytest.raises(ObjectiveConfigError, match=r"\['loss_value'\] are not in .*loss_qvalue"):
        missing(build.batch())


def test_clipping_equals_a_manual_clip(build):
    loss, reference = ppo_loss(build), ppo_loss(build)
    update = make_update_step(loss, adam(loss), max_grad_norm=0.05)
    optimizer = adam(reference)
    for seed in range(2):
        out = update(ppo_batch(build, seed))
        _, norm = manual_step(reference, optimizer, ppo_batch(build, seed), max_grad_norm=0.05)
        assert float(norm) > 0.05  # the clip changed the gradients
        torch.testing.assert_close(out["grad_norm"], norm)  # reported before clipping
        assert_same_list(grads(loss), grads(reference))
        assert_same(state(loss), state(reference))


def test_an_infinite_threshold_measures_without_clipping(build):
    loss = ppo_loss(build)
    out = make_update_step(loss, adam(loss), max_grad_norm=math.inf)(ppo_batch(build))
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads(loss)]))
    torch.testing.assert_close(out["grad_norm"], norm)


class FailingCompile:
    """Stands in for ``torch.compile``: the part named ``failing`` raises at its first call.

    As inductor does when it cannot compile (no C++ compiler, an unsupported op): compiling
    is lazy and fails before the compiled code runs. The other parts run as they are.
    """

    def __init__(self, failing: str) -> None:
        self.failing = failing
        self.compiled: list[str] = []

    def __call__(self, fn, **kwargs):
        self.compiled.append(fn.__name__)
        # step() graph-breaks itself
        assert kwargs["fullgraph"] is (fn.__name__ != "_clip_and_step")

        def compiled(*args):
            if fn.__name__ == self.failing:
                raise RuntimeError("C++ compile error: no working compiler found")
            return fn(*args)

        return compiled


@pytest.mark.parametrize("part", ["_forward", "_clip_and_step"])
def test_a_failing_compile_falls_back_to_eager_with_one_warning(build, monkeypatch, part):
    fake = FailingCompile(part)
    monkeypatch.setattr(torch, "compile", fake)
    loss, reference = ppo_loss(build), ppo_loss(build)
    update = make_update_step(loss, adam(loss), max_grad_norm=0.05, compile=True)
    eager = make_update_step(reference, adam(reference), max_grad_norm=0.05)
    assert fake.compiled == ["_forward", "_clip_and_step"] and update.compiled
    with pytest.warns(UserWarning, match="ClipPPOLoss failed") as record:
        out = update(ppo_batch(build))
    assert len(record) == 1
    message = str(record[0].message)
    assert "(RuntimeError: C++ compile error: no working compiler found)" in message
    assert "it runs eager now" in message
    assert not update.compiled
    assert_same(out, eager(ppo_batch(build)))
    # Stepped exactly once: same parameters and Adam moments as one eager update.
    assert_same(state(loss), state(reference))
    assert [float(s["step"]) for s in update.optimizer.state.values()] == [1.0] * 4
    assert_same(update.optimizer.state_dict()["state"][0], eager.optimizer.state_dict()["state"][0])
    # Later calls run eager, silently (warnings are errors here).
    assert_same(update(ppo_batch(build, 1)), eager(ppo_batch(build, 1)))
    assert_same(state(loss), state(reference))


def test_bad_input_raises_the_loss_error_and_keeps_the_compiled_path(build, monkeypatch):
    monkeypatch.setattr(torch, "compile", FailingCompile("_forward"))
    loss = ppo_loss(build)
    update = make_update_step(loss, adam(loss), compile=True)
    before = state(loss)
    batch = ppo_batch(build)
    del batch["action"]
    with pytest.raises(MissingInputError, match="'action'"):
        update(batch)
    assert update.compiled  # not the compiler's fault: no warning, no fallback
    assert_same(state(loss), before)
    assert not update.optimizer.state


def test_optimizer_over_part_of_the_loss_steps_that_part(build):
    loss = ppo_loss(build)
    critic_before = [p.clone() for p in loss.critic_network.parameters()]
    actor_before = [p.clone() for p in loss.actor_network.parameters()]
    make_update_step(loss, torch.optim.SGD(loss.actor_network.parameters(), lr=0.1))(
        ppo_batch(build)
    )
    assert_same_list(list(loss.critic_network.parameters()), critic_before)
    assert all(not torch.equal(p, q) for p, q in zip(loss.actor_network.parameters(), actor_before))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_grad_norm": 0.0}, r"max_grad_norm must be a number > 0 .*got 0\.0"),
        ({"max_grad_norm": -1}, r"max_grad_norm must be a number > 0 .*got -1"),
        ({"max_grad_norm": math.nan}, r"max_grad_norm must be a number > 0 .*got nan"),
        ({"max_grad_norm": "0.5"}, r"max_grad_norm must be a number > 0 .*got '0\.5'"),
        ({"max_grad_norm": True}, r"max_grad_norm must be a number > 0 .*got True"),
        ({"compile": "yes"}, r"compile must be True, False or a dict .*got str 'yes'"),
        ({"compile": None}, r"compile must be True, False or a dict .*got NoneType None"),
        ({"compile": {"fullgraf": True}}, r"keys torch.compile does not take: \['fullgraf'\]"),
        ({"compile": {"backend": "no_such_backend"}}, r"torch.compile rejected .*no_such_backend"),
        ({"terms": ()}, r"terms must be a non-empty sequence .*got \(\)"),
        ({"terms": ["qvalue"]}, r"terms must be a non-empty sequence .*got \('qvalue',\)"),
    ],
)
def test_bad_arguments_are_named(build, kwargs, match):
    loss = ppo_loss(build)
    with pytest.raises(ObjectiveConfigError, match=match):
        make_update_step(loss, adam(loss), **kwargs)


def test_bad_optimizer_or_loss_is_named(build):
    loss = ppo_loss(build)
    with pytest.raises(ObjectiveConfigError, match="must be a torch.optim.Optimizer, got list"):
        make_update_step(loss, list(loss.parameters()))
    with pytest.raises(ObjectiveConfigError, match="loss_module must be a loss .*got function"):
        make_update_step(total_loss, adam(loss))
    stranger = nn.Linear(2, 2)
    optimizer = torch.optim.Adam([*loss.parameters(), *stranger.parameters()])
    with pytest.raises(
        ObjectiveConfigError,
        match=r"2 of the 6 parameters the optimizer steps are not parameters of the ClipPPOLoss "
        r"\(shapes \[2, 2\], \[2\]\)",
    ):
        make_update_step(loss, optimizer)


def test_a_batch_that_is_not_a_tensordict_is_named(build):
    loss = ppo_loss(build)
    update = make_update_step(loss, adam(loss))
    with pytest.raises(ObjectiveConfigError, match="takes a TensorDict batch, got dict"):
        update(dict(ppo_batch(build).items()))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_real_compile_failure_falls_back(build):
    def backend(graph, example_inputs):
        raise RuntimeError("this backend fails on purpose")

    torch._dynamo.reset()
    loss, reference = ppo_loss(build), ppo_loss(build)
    update = make_update_step(loss, adam(loss), compile={"backend": backend})
    with pytest.warns(UserWarning, match="ClipPPOLoss failed .*fails on purpose") as record:
        out = update(ppo_batch(build))
    torch._dynamo.reset()
    assert len(record) == 1 and not update.compiled
    assert_same(out, make_update_step(reference, adam(reference))(ppo_batch(build)))
    assert_same(state(loss), state(reference))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_failing_backward_compile_falls_back_before_the_loss_changed_anything(build):
    # AOTAutograd would compile the backward at the first backward(), after the loss ran
    # (and KLPENPPOLoss adapted its beta): the update has it compiled with the forward.
    from torch._dynamo.backends.common import aot_autograd

    def failing(graph, example_inputs):
        raise RuntimeError("the backward graph fails on purpose")

    def make():
        return KLPENPPOLoss(build.gaussian_actor(), build.critic())

    def batch():
        td = ppo_batch(build)
        td["loc"], td["scale"] = torch.zeros(6, 2), torch.ones(6, 2)
        return td

    torch._dynamo.reset()
    loss, reference = make(), make()
    backend = aot_autograd(fw_compiler=lambda graph, example_inputs: graph, bw_compiler=failing)
    make()(batch())  # kl_divergence looked up eagerly first, as KLPENPPOLoss's doc says
    update = make_update_step(loss, adam(loss), compile={"backend": backend})
    with pytest.warns(UserWarning, match="KLPENPPOLoss failed .*backward graph fails on purpose"):
        out = update(batch())
    torch._dynamo.reset()
    assert_same(out, make_update_step(reference, adam(reference))(batch()))
    assert float(loss.beta) == float(reference.beta) != 1.0  # adapted once, not twice
    assert_same(state(loss), state(reference))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_a_step_body_that_fails_to_compile_after_the_compiled_clip_ran(build):
    # The clip is the graph before step()'s own graph break; here it compiles and runs,
    # then the optimizer's body fails to compile. The eager rerun clips again (gradients
    # already within the norm stay as they are) and steps once: the eager update's state.
    def backend(graph, example_inputs):
        if any("addcdiv" in str(node.target) for node in graph.graph.nodes):
            raise RuntimeError("the optimizer body fails on purpose")
        compiled.append(graph)
        return graph.forward

    compiled = []

    torch._dynamo.reset()
    loss, reference = ppo_loss(build), ppo_loss(build)
    max_norm = 1e-3  # small enough that the first clip changes the gradients
    update = make_update_step(
        loss, adam(loss), max_grad_norm=max_norm, compile={"backend": backend}
    )
    with pytest.warns(UserWarning, match="ClipPPOLoss failed .*optimizer body fails on purpose"):
        out = update(ppo_batch(build))
    torch._dynamo.reset()
    expected = make_update_step(reference, adam(reference), max_grad_norm=max_norm)(
        ppo_batch(build)
    )
    assert not update.compiled
    # The loss's graph and the clip's ran compiled before the body failed.
    assert any("foreach_norm" in str(n.target) for g in compiled for n in g.graph.nodes)
    assert_same(state(loss), state(reference))
    # On this one call the norm is read after the first clip: the threshold, not the
    # pre-clip norm the eager update reports.
    assert float(expected["grad_norm"]) > max_norm
    torch.testing.assert_close(float(out["grad_norm"]), max_norm, rtol=1e-4, atol=0)
    assert_same(out.exclude("grad_norm"), expected.exclude("grad_norm"))
