"""MultiAgentMLP, VDNMixer and QMixer: shapes, which inputs reach which agent, mixing."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn
from torch.nn import functional as F

from rlblocks.objectives.errors import ObjectiveConfigError, ShapeMismatchError
from rlblocks.objectives.modules import MultiAgentMLP, QMixer, VDNMixer

N, IN, OUT, CELLS = 3, 4, 2, 5
COMBOS = list(itertools.product([False, True], [False, True]))  # (centralized, share_params)


def make_mlp(centralized, share_params, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("num_cells", [CELLS])
    return MultiAgentMLP(IN, OUT, N, centralized=centralized, share_params=share_params, **kwargs)


def input_grads(net, x, agent):
    """Gradient of agent ``agent``'s outputs w.r.t. every agent's input: ``[n_agents]`` norms."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x)[..., agent, :].sum(), x)
    return grad.abs().flatten(0, -3).sum((0, -1))


@pytest.mark.parametrize(("centralized", "share_params"), COMBOS)
@pytest.mark.parametrize("batch", [(), (7,), (2, 7)])
def test_output_shape(centralized, share_params, batch):
    net = make_mlp(centralized, share_params)
    out = net(torch.randn(*batch, N, IN))
    assert out.shape == (*batch, N, OUT)


@pytest.mark.parametrize("share_params", [False, True])
def test_decentralised_agent_reads_only_its_own_input(share_params):
    net = make_mlp(False, share_params)
    x = torch.randn(6, N, IN)
    for agent in range(N):
        grads = input_grads(net, x, agent)
        assert grads[agent] > 0
        others = [i for i in range(N) if i != agent]
        assert torch.all(grads[others] == 0), grads
    # Perturbing agent 0's input changes agent 0's output only.
    moved = x.clone()
    moved[:, 0] += 1.0
    diff = (net(moved) - net(x)).abs().sum((0, -1))
    assert diff[0] > 0 and torch.all(diff[1:] == 0)


@pytest.mark.parametrize("share_params", [False, True])
def test_centralised_agent_reads_every_input(share_params):
    net = make_mlp(True, share_params)
    x = torch.randn(6, N, IN)
    for agent in range(N):
        assert torch.all(input_grads(net, x, agent) > 0)


def test_shared_decentralised_is_equivariant_to_agent_order():
    net = make_mlp(False, True)
    x = torch.randn(6, N, IN)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(net(x[:, perm]), net(x)[:, perm])
    # One network: identical inputs give identical outputs.
    same = x[:, :1].expand(6, N, IN)
    out = net(same)
    torch.testing.assert_close(out[:, 1], out[:, 0])


def test_centralised_shared_gives_every_agent_the_same_output():
    net = make_mlp(True, True)
    out = net(torch.randn(6, N, IN))
    for agent in range(1, N):
        torch.testing.assert_close(out[:, agent], out[:, 0])


@pytest.mark.parametrize("centralized", [False, True])
def test_per_agent_networks_differ(centralized):
    net = make_mlp(centralized, False)
    per_agent = [m for m in net.modules() if hasattr(m, "n_agents") and m is not net]
    assert per_agent
    for layer in per_agent:
        for i, j in itertools.combinations(range(N), 2):
            assert not torch.allclose(layer.weight[i], layer.weight[j])
            assert not torch.allclose(layer.bias[i], layer.bias[j])
    # Same input for every agent, different outputs.
    x = torch.randn(6, 1, IN).expand(6, N, IN)
    out = net(x)
    assert not torch.allclose(out[:, 0], out[:, 1])


@pytest.mark.parametrize("centralized", [False, True])
def test_per_agent_output_matches_a_separate_mlp_per_agent(centralized):
    net = make_mlp(centralized, False)
    first, _, last = net.layers
    x = torch.randn(6, N, IN)
    inputs = x.flatten(-2) if centralized else None
    for i in range(N):
        own = inputs if centralized else x[:, i]
        hidden = torch.tanh(F.linear(own, first.weight[i], first.bias[i]))
        expected = F.linear(hidden, last.weight[i], last.bias[i])
        torch.testing.assert_close(net(x)[:, i], expected)


def test_per_agent_init_follows_nn_linear():
    # Wide layers so that the empirical spread is close to the uniform's.
    torch.manual_seed(0)
    net = MultiAgentMLP(64, 64, 4, centralized=False, share_params=False, num_cells=[64])
    for layer in net.layers:
        if not hasattr(layer, "weight"):
            continue
        bound = 1 / math.sqrt(layer.weight.shape[-1])
        for tensor in (layer.weight, layer.bias):
            assert tensor.abs().max() <= bound
            assert tensor.abs().max() > 0.9 * bound
            # U(-b, b) has standard deviation b / sqrt(3).
            assert abs(tensor.std().item() - bound / math.sqrt(3)) < 0.15 * bound


@pytest.mark.parametrize(("centralized", "share_params"), COMBOS)
def test_parameter_count(centralized, share_params):
    net = make_mlp(centralized, share_params)
    first_in = IN * N if centralized else IN
    one_net = (first_in * CELLS + CELLS) + (CELLS * OUT + OUT)
    expected = one_net if share_params else N * one_net
    assert sum(p.numel() for p in net.parameters()) == expected


def test_depth_and_num_cells_follow_mlp():
    net = MultiAgentMLP(IN, OUT, N, centralized=False, share_params=True, depth=2, num_cells=7)
    linears = [m for m in net.layers if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [7, 7, OUT]
    default = MultiAgentMLP(IN, OUT, N, centralized=False, share_params=True)
    assert [m.out_features for m in default.layers if isinstance(m, nn.Linear)] == [32] * 3 + [OUT]


def test_centralised_is_accepted_as_the_older_spelling():
    torch.manual_seed(0)
    old = MultiAgentMLP(IN, OUT, N, centralised=True, share_params=False)
    assert old.centralized is True
    with pytest.raises(ObjectiveConfigError, match="same argument"):
        MultiAgentMLP(IN, OUT, N, centralized=True, centralised=False, share_params=False)


def test_compiled_matches_eager():
    net = make_mlp(True, False)
    x = torch.randn(6, N, IN)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), net(x))


@pytest.mark.parametrize(
    ("shape", "given"),
    [((6, N + 1, IN), r"\[6, 4, 4\]"), ((6, N, IN + 1), r"\[6, 3, 5\]"), ((IN,), r"\[4\]")],
)
def test_wrong_input_shape_names_expected_and_given(shape, given):
    net = make_mlp(False, False)
    with pytest.raises(ShapeMismatchError, match=r"\[\*batch, 3, 4\].*" + given):
        net(torch.randn(*shape))


def test_config_errors():
    with pytest.raises(ObjectiveConfigError, match="n_agent_inputs"):
        MultiAgentMLP(None, OUT, N, centralized=False, share_params=False)
    with pytest.raises(ObjectiveConfigError, match="centralized is required"):
        MultiAgentMLP(IN, OUT, N, share_params=False)
    with pytest.raises(ObjectiveConfigError, match="share_params is required"):
        MultiAgentMLP(IN, OUT, N, centralized=False)
    with pytest.raises(ObjectiveConfigError, match="n_agents"):
        MultiAgentMLP(IN, OUT, 0, centralized=False, share_params=False)


# -- mixers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [(), (5,), (2, 5)])
def test_vdn_sums_the_agents_values(batch):
    values = torch.randn(*batch, N, 1)
    vdn = VDNMixer(n_agents=N)
    expected = sum(values[..., i, :] for i in range(N))
    torch.testing.assert_close(vdn(values), expected)
    torch.testing.assert_close(vdn.mix(values), expected)
    td = vdn(TensorDict({("agents", "chosen_action_value"): values}, batch))
    torch.testing.assert_close(td["chosen_action_value"], expected)
    assert list(vdn.parameters()) == []


def qmix_by_hand(mixer, values, state):
    """QMIX's formula, one sample at a time (Rashid et al., 2018, eq. in section 4)."""
    out = []
    for q, s in zip(values, state):  # q [n, 1], s [state]
        w_1 = mixer.hyper_w_1(s).abs().view(N, -1)  # [n, embed]
        b_1 = mixer.hyper_b_1(s)
        hidden = F.elu(q.view(1, N) @ w_1 + b_1)  # [1, embed]
        w_2 = mixer.hyper_w_final(s).abs().view(-1, 1)
        out.append((hidden @ w_2).view(1) + mixer.V(s))
    return torch.stack(out)


def make_qmixer(seed=0, state_shape=(6,)):
    torch.manual_seed(seed)
    return QMixer(state_shape=state_shape, mixing_embed_dim=8, n_agents=N)


def test_qmixer_matches_the_formula_and_reads_the_state():
    mixer = make_qmixer()
    values, state = torch.randn(5, N, 1), torch.randn(5, 6)
    torch.testing.assert_close(mixer(values, state), qmix_by_hand(mixer, values, state))
    assert not torch.allclose(mixer(values, state), mixer(values, state + 1.0))


@pytest.mark.parametrize("batch", [(), (5,), (2, 5)])
def test_qmixer_shapes_and_multidim_state(batch):
    mixer = make_qmixer(state_shape=(2, 3))
    values = torch.randn(*batch, N, 1)
    state = torch.randn(*batch, 2, 3)
    assert mixer(values, state).shape == (*batch, 1)
    flat = make_qmixer(state_shape=(6,))
    flat.load_state_dict(mixer.state_dict())
    torch.testing.assert_close(mixer(values, state), flat(values, state.flatten(-2)))


def test_qmixer_is_monotonic_in_every_agent_value():
    mixer = make_qmixer()
    torch.manual_seed(1)
    values = (3 * torch.randn(64, N, 1)).requires_grad_(True)
    state = 3 * torch.randn(64, 6)
    (grad,) = torch.autograd.grad(mixer(values, state).sum(), values)
    assert torch.all(grad >= 0)
    assert torch.any(grad > 0)


def test_mixers_as_tensordict_modules():
    mixer = make_qmixer()
    values, state = torch.randn(5, N, 1), torch.randn(5, 6)
    expected = mixer(values, state)
    td = TensorDict({("agents", "chosen_action_value"): values, "state": state}, [5])
    torch.testing.assert_close(mixer(td.clone())["chosen_action_value"], expected)
    # TorchRL's way: the mixer wrapped in a TensorDictModule with the keys.
    wrapped = TensorDictModule(
        mixer, in_keys=[("agents", "chosen_action_value"), "state"], out_keys=["q_tot"]
    )
    torch.testing.assert_close(wrapped(td.clone())["q_tot"], expected)
    # Keys of another group.
    team = VDNMixer(N, in_keys=[("team", "q")], out_keys=["q_team"])
    out = team(TensorDict({("team", "q"): values}, [5]))
    torch.testing.assert_close(out["q_team"], values.sum(-2))
    assert team.in_keys == [("team", "q")] and team.out_keys == ["q_team"]


def test_qmixer_compiles():
    mixer = make_qmixer()
    values, state = torch.randn(5, N, 1), torch.randn(5, 6)
    compiled = torch.compile(mixer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(values, state), mixer(values, state))


def test_mixer_errors():
    mixer = make_qmixer()
    with pytest.raises(ShapeMismatchError, match=r"\[\*batch, 3, 1\], got \[5, 2, 1\]"):
        mixer(torch.randn(5, 2, 1), torch.randn(5, 6))
    with pytest.raises(ShapeMismatchError, match=r"\[\*batch, 3, 1\], got \[5, 3\]"):
        VDNMixer(N)(torch.randn(5, 3))
    with pytest.raises(ShapeMismatchError, match=r"state.*\[5, 3, 6\].*expected.*\[5, 6\]"):
        mixer(torch.randn(5, N, 1), torch.randn(5, N, 6))  # a per-agent entry, not the state
    with pytest.raises(ObjectiveConfigError, match="mix\\(values, state\\)"):
        mixer(torch.randn(5, N, 1))
    with pytest.raises(ObjectiveConfigError, match="state_shape"):
        QMixer(state_shape=(), mixing_embed_dim=8, n_agents=N)
    with pytest.raises(ObjectiveConfigError, match="reads 2 key"):
        QMixer(state_shape=(6,), mixing_embed_dim=8, n_agents=N, in_keys=["q"])
    with pytest.raises(ObjectiveConfigError, match="n_agents"):
        VDNMixer(0)
