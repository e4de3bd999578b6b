"""compile_policy: collectors call the policy through torch.compile, eager after a failure."""

from __future__ import annotations

import warnings

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential

from rlblocks.collectors import CollectorConfigError, MultiSyncDataCollector, SyncDataCollector
from rlblocks.collectors._policy import CompiledPolicy, fast_policy_call
from rlblocks.envs import GymEnv


def greedy_policy(seed: int = 0) -> TensorDictSequential:
    """Q-values from a small MLP, then the best action: deterministic, so compiled and
    eager calls give the same actions."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    values = TensorDictModule(net, ["observation"], ["action_value"])
    return TensorDictSequential(values, TensorDictModule(_argmax, ["action_value"], ["action"]))


def _argmax(values: torch.Tensor) -> torch.Tensor:
    return values.argmax(-1)


def collect(policy, **kwargs) -> TensorDict:
    """Four batches of CartPole x 2 from seed 3 (the first by the step loop, the others by
    the env's numpy loop)."""
    env = GymEnv("CartPole-v1", num_envs=2)
    env.set_seed(3)
    with SyncDataCollector(env, policy, frames_per_batch=40, total_frames=160, **kwargs) as c:
        batch = torch.cat(list(c), -1)
    env.close()
    return batch


def assert_same(batch: TensorDict, expected: TensorDict, exact: bool = True) -> None:
    """The same entries; floats equal, or ``exact=False`` equal to float rounding (a
    compiler that fuses operations rounds differently)."""
    assert set(batch.keys(True, True)) == set(expected.keys(True, True))
    for key in expected.keys(True, True):
        got, want = batch[key], expected[key]
        if exact or not want.is_floating_point():
            assert torch.equal(got, want), key
        else:
            torch.testing.assert_close(got, want, msg=str(key))


def counting_backend(graphs: list):
    """A torch.compile backend that records each graph it is given and runs it as is."""

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    return backend


def failing_backend(graph_module, example_inputs):
    raise RuntimeError("no C++ compiler on this machine")


def test_a_compiled_policy_gives_the_batches_of_the_eager_one():
    eager = collect(greedy_policy())
    graphs: list = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        compiled = collect(greedy_policy(), compile_policy={"backend": counting_backend(graphs)})
    assert graphs  # the policy went through the compiler
    assert_same(compiled, eager)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_the_default_compiler_gives_the_same_batches():
    # inductor; where it cannot compile, the fallback gives the same batches too
    batch = collect(greedy_policy(), compile_policy=True)
    assert_same(batch, collect(greedy_policy()), exact=False)


def test_a_policy_that_fails_to_compile_runs_eager_after_one_warning():
    eager = collect(greedy_policy())
    with pytest.warns(UserWarning, match="compiling the policy failed .*no C\\+\\+ compiler") as w:
        batch = collect(greedy_policy(), compile_policy={"backend": failing_backend})
    assert len([x for x in w if "compiling the policy" in str(x.message)]) == 1
    assert_same(batch, eager)


def test_bad_input_raises_the_policy_error_and_keeps_compiling():
    compiled = CompiledPolicy(fast_policy_call(greedy_policy()), {"backend": "aot_eager"}, "test")
    assert compiled.in_keys == ["observation"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # (dynamo warns about its own tracing meanwhile)
        with pytest.raises(KeyError, match="observation"):
            compiled(TensorDict({"pixels": torch.zeros(3, 4)}, [3]))
        assert compiled.compiled
        out = compiled(TensorDict({"observation": torch.randn(3, 4)}, [3]))
    assert not [w for w in caught if "compiling the policy" in str(w.message)]
    assert torch.equal(out["action"], out["action_value"].argmax(-1))
    assert compiled.compiled


@pytest.mark.parametrize(
    ("compile_policy", "match"),
    [
        ("yes", "compile_policy must be True, False or a dict"),
        ({"fullgraf": True}, r"\['fullgraf'\], which torch.compile does not take"),
        ({"mode": "fastest"}, "torch.compile rejected compile_policy=.*fastest"),
        ({"backend": "no-such-backend"}, "torch.compile rejected compile_policy"),
    ],
)
@pytest.mark.parametrize("collector", [SyncDataCollector, MultiSyncDataCollector])
def test_bad_compile_policy_values_are_rejected(collector, compile_policy, match):
    envs = GymEnv("CartPole-v1") if collector is SyncDataCollector else [GymEnv] * 2
    with pytest.raises(CollectorConfigError, match=match):
        collector(envs, greedy_policy(), frames_per_batch=8, compile_policy=compile_policy)


def make_env() -> GymEnv:
    return GymEnv("CartPole-v1")


def test_workers_compile_their_policy():
    with MultiSyncDataCollector(
        [make_env, make_env],
        greedy_policy(),
        frames_per_batch=40,
        total_frames=80,
        compile_policy={"backend": "aot_eager"},
    ) as collector:
        batches = list(collector)
    assert [b.batch_size for b in batches] == [torch.Size([2, 20])] * 2
    for batch in batches:
        assert torch.equal(batch["action"], batch["action_value"].argmax(-1))
