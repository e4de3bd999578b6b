"""One update step of each rlblocks loss against the same step in plain torch, eager and
compiled, in the same run.

    python benchmarks/losses.py [--quick] [--repeat 10]

For DQN, DDPG, TD3, SAC, ClipPPOLoss (PPO), A2C, IQL and CQL, one update on a random batch
of 256 transitions: forward, total loss, backward, gradient clipping where the example
clips (PPO and A2C at 0.5; none elsewhere, on both sides alike), the Adam step, and the
target-network update where the algorithm has one (``SoftUpdate`` with tau 0.005; DQN's
``HardUpdate`` copies every 100 updates). Networks: 64x64 MLPs on CartPole-sized inputs
(observation 4, 2 actions) for PPO, A2C and DQN; 256x256 ReLU MLPs on Pendulum-sized inputs
(observation 3, one action in [-2, 2]) for the others. Hyper-parameters are the examples'
(Adam learning rates, TD3's noise, IQL's expectile 0.7 and temperature 3, PPO's fused Adam)
except the entropy weight of PPO and A2C: 0.01 (rlblocks' and CleanRL's default) where the
CartPole examples use 0, so that the entropy term is computed; CQL, which has no example,
is SAC's networks with ``CQLLoss``'s defaults (10 sampled actions of each kind per state).
Four variants:

- rlblocks eager: the loss module built as examples/*.py build it (``ProbabilisticActor``,
  ``ValueOperator``, ``QValueActor``, ``MLP``, ``TanhNormal``), run by
  ``make_update_step(loss, optimizer, max_grad_norm=..., compile=False)``, then the loss's
  ``SoftUpdate``/``HardUpdate``;
- rlblocks compiled: the same with ``compile=True`` (inductor): the loss with its total and
  backward, the clipping and ``optimizer.step()`` compiled, the target update eager;
- plain eager: the same formulas written by hand (benchmarks/_plain_losses.py) on plain
  tensors with ``nn.Sequential`` networks of the same sizes, loaded with the same weights,
  the same hyper-parameters and Adam settings; the same network calls in the same order,
  but only the loss terms (none of rlblocks' diagnostics, nor its write of the TD error
  into the batch for prioritized replay); targets updated by one ``torch._foreach_lerp_``;
- plain compiled: the plain forward (whose backward AOTAutograd compiles with it), the
  clipping and the optimizer step (as PyTorch's "Compiling the optimizer" recipe does it)
  each under ``torch.compile`` with the options ``make_update_step`` uses
  (``fullgraph=True``, ``isolate_recompiles=True``; ``fullgraph=False`` for the step).

First, rlblocks eager and plain eager compute the loss terms and gradients of one batch
from the same weights and the same seed (the sampling losses draw the same numbers in the
same order, so the check covers them whole) and the script prints whether they agree.
Then, at torch's default thread count and at 1 thread (inductor's CPU kernels are
specialized on it, so each variant is built and compiled afresh at each), each case gets
3 warm-up updates per variant (the compiled ones compile during them; "compile s" is their
wall time less 3 timed updates), then ``--repeat`` blocks in which each variant runs a few
updates in turn (the order rotating per block); the figure is the median over blocks of
the mean wall-clock time per update. Ratios: rlblocks / plain (eager, and compiled) and
eager / compiled (the compile speed-up of each side). Every figure is measured in this
run; no target is set. Compile times depend on inductor's caches: on disk from earlier
runs (a first run on a machine compiles much longer), and within the run (the rlblocks
variant compiles first; the plain one may reuse graphs and kernels it shares, e.g. the
optimizer step's), so compare them only loosely. A compile that fails or falls back to
eager is printed with its exception type in place of a number; the exit status is non-zero
only if a variant crashed.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from _plain_losses import (
    PlainA2C,
    PlainAlgorithm,
    PlainCQL,
    PlainDDPG,
    PlainDQN,
    PlainIQL,
    PlainPPO,
    PlainSAC,
    PlainTD3,
    PlainUpdate,
)
from _timing import thread_counts, threads_label, torch_threads
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import Tensor, nn
from torch._dynamo.utils import counters

from rlblocks.core.specs import Bounded, Categorical
from rlblocks.objectives import (
    A2CLoss,
    ClipPPOLoss,
    CQLLoss,
    DDPGLoss,
    DQNLoss,
    HardUpdate,
    IQLLoss,
    LossModule,
    SACLoss,
    SoftUpdate,
    TD3Loss,
    UpdateStep,
    make_update_step,
    total_loss,
)
from rlblocks.objectives.modules import (
    MLP,
    NormalParamExtractor,
    ProbabilisticActor,
    QValueActor,
    TanhDelta,
    TanhNormal,
    ValueOperator,
)

BATCH = 256
GAMMA, TAU = 0.99, 0.005
CARTPOLE_OBS, CARTPOLE_ACTIONS, SMALL = 4, 2, 64
PENDULUM_OBS, PENDULUM_ACT, HIGH, LARGE = 3, 1, 2.0, 256
PENDULUM_SPEC = Bounded(-HIGH, HIGH, shape=(PENDULUM_ACT,))
VARIANTS = ("rlblocks eager", "rlblocks compiled", "plain eager", "plain compiled")
COMPILE_KWARGS = {"fullgraph": True, "isolate_recompiles": True}


# -- the rlblocks side, built as examples/*.py build it ------------------------------------


@dataclass
class Built:
    """One build of a case: the rlblocks loss and its target updater, the MLPs inside it by
    name, and the plain algorithm loaded with the same weights."""

    loss: LossModule
    updater: SoftUpdate | HardUpdate | None
    nets: dict[str, nn.Module]
    plain: PlainAlgorithm
    extra: list[nn.Parameter] = field(default_factory=list)


def pendulum_mlp(n_in: int, n_out: int) -> MLP:
    return MLP(n_in, n_out, num_cells=[LARGE] * 2, activation_class=nn.ReLU)


def gaussian_actor() -> tuple[ProbabilisticActor, MLP]:
    net = pendulum_mlp(PENDULUM_OBS, 2 * PENDULUM_ACT)
    module = TensorDictModule(
        nn.Sequential(net, NormalParamExtractor()), ["observation"], ["loc", "scale"]
    )
    actor = ProbabilisticActor(
        module, ["loc", "scale"], distribution_class=TanhNormal, spec=PENDULUM_SPEC
    )
    return actor, net


def qvalue() -> ValueOperator:
    net = pendulum_mlp(PENDULUM_OBS + PENDULUM_ACT, 1)
    return ValueOperator(net, in_keys=["observation", "action"])


def qvalue_nets(loss: LossModule) -> dict[str, nn.Module]:
    return {f"qvalue{i}": q.module for i, q in enumerate(loss.qvalue_networks)}


def pendulum_kwargs() -> dict:
    sizes = [PENDULUM_OBS, LARGE, LARGE, PENDULUM_ACT]
    return {"sizes": sizes, "activation": nn.ReLU, "half": HIGH, "gamma": GAMMA, "tau": TAU}


def state(nets: dict[str, nn.Module], *names: str) -> list[dict[str, Tensor]]:
    return [nets[name].state_dict() for name in names]


def build_dqn() -> Built:
    net = MLP(CARTPOLE_OBS, CARTPOLE_ACTIONS, num_cells=[SMALL] * 2, activation_class=nn.ReLU)
    loss = DQNLoss(QValueActor(net, spec=Categorical(CARTPOLE_ACTIONS)), gamma=GAMMA)
    sizes = [CARTPOLE_OBS, SMALL, SMALL, CARTPOLE_ACTIONS]
    plain = PlainDQN(net.state_dict(), sizes=sizes, activation=nn.ReLU, gamma=GAMMA, period=100)
    return Built(loss, HardUpdate(loss, period=100), {"qvalue": net}, plain)


def deterministic_actor() -> tuple[nn.Module, ProbabilisticActor]:
    """``mu(s)`` as examples/ddpg.py and td3.py build it: the MLP and the actor around it."""
    net = pendulum_mlp(PENDULUM_OBS, PENDULUM_ACT)
    actor = ProbabilisticActor(
        TensorDictModule(net, ["observation"], ["param"]),
        in_keys=["param"],
        distribution_class=TanhDelta,
        spec=PENDULUM_SPEC,
    )
    return net, actor


def build_ddpg() -> Built:
    net, actor = deterministic_actor()
    loss = DDPGLoss(actor, qvalue(), gamma=GAMMA)
    nets = {"actor": net, "qvalue0": loss.value_network.module}
    plain = PlainDDPG(*state(nets, "actor", "qvalue0"), **pendulum_kwargs())
    return Built(loss, SoftUpdate(loss, tau=TAU), nets, plain)


def build_td3() -> Built:
    net, actor = deterministic_actor()
    # examples/td3.py: noise in units of the action range.
    noise = {"policy_noise": 0.2 * HIGH, "noise_clip": 0.5 * HIGH}
    loss = TD3Loss(actor, qvalue(), action_spec=PENDULUM_SPEC, gamma=GAMMA, **noise)
    nets = {"actor": net, **qvalue_nets(loss)}
    plain = PlainTD3(net.state_dict(), state(nets, "qvalue0", "qvalue1"), **noise,
                     **pendulum_kwargs())  # fmt: skip
    return Built(loss, SoftUpdate(loss, tau=TAU), nets, plain)


def build_sac() -> Built:
    actor, net = gaussian_actor()
    loss = SACLoss(actor, qvalue(), gamma=GAMMA)
    nets = {"actor": net, **qvalue_nets(loss)}
    plain = PlainSAC(net.state_dict(), state(nets, "qvalue0", "qvalue1"), **pendulum_kwargs())
    return Built(loss, SoftUpdate(loss, tau=TAU), nets, plain, [loss.log_alpha])


def build_cql() -> Built:
    actor, net = gaussian_actor()
    cql = {"num_random": 10, "min_q_weight": 1.0, "temperature": 1.0}
    loss = CQLLoss(actor, qvalue(), gamma=GAMMA, **cql)
    nets = {"actor": net, **qvalue_nets(loss)}
    plain = PlainCQL(net.state_dict(), state(nets, "qvalue0", "qvalue1"), **cql,
                     **pendulum_kwargs())  # fmt: skip
    return Built(loss, SoftUpdate(loss, tau=TAU), nets, plain, [loss.log_alpha])


def build_iql() -> Built:
    actor, net = gaussian_actor()
    value_net = pendulum_mlp(PENDULUM_OBS, 1)
    value = ValueOperator(value_net, in_keys=["observation"])
    iql = {"expectile": 0.7, "temperature": 3.0}  # examples/iql_offline.py
    loss = IQLLoss(actor, qvalue(), value, gamma=GAMMA, **iql)
    nets = {"actor": net, **qvalue_nets(loss), "value": value_net}
    plain = PlainIQL(net.state_dict(), state(nets, "qvalue0", "qvalue1"),
                     value_net.state_dict(), **iql, **pendulum_kwargs())  # fmt: skip
    return Built(loss, SoftUpdate(loss, tau=TAU), nets, plain)


def categorical_actor_critic() -> tuple[ProbabilisticActor, ValueOperator, MLP, MLP]:
    pi = MLP(CARTPOLE_OBS, CARTPOLE_ACTIONS, num_cells=[SMALL] * 2)
    actor = ProbabilisticActor(
        TensorDictModule(pi, ["observation"], ["logits"]),
        in_keys=["logits"],
        distribution_class=torch.distributions.Categorical,
        spec=Categorical(CARTPOLE_ACTIONS),
        return_log_prob=True,
    )
    v = MLP(CARTPOLE_OBS, 1, num_cells=[SMALL] * 2)
    return actor, ValueOperator(v, in_keys=["observation"]), pi, v


# entropy_coef 0.01 (rlblocks' default, CleanRL's), so that the entropy term is computed.
ON_POLICY = {"entropy_coef": 0.01, "critic_coef": 0.5}
ON_POLICY_PLAIN = {"sizes": [CARTPOLE_OBS, SMALL, SMALL, CARTPOLE_ACTIONS],
                   "activation": nn.Tanh, **ON_POLICY}  # fmt: skip


def build_ppo() -> Built:
    actor, critic, pi, v = categorical_actor_critic()
    loss = ClipPPOLoss(actor, critic, clip_epsilon=0.2, loss_critic_type="l2",
                       normalize_advantage=True, **ON_POLICY)  # fmt: skip
    plain = PlainPPO(pi.state_dict(), v.state_dict(), clip_epsilon=0.2, **ON_POLICY_PLAIN)
    return Built(loss, None, {"actor": pi, "critic": v}, plain)


def build_a2c() -> Built:
    actor, critic, pi, v = categorical_actor_critic()
    loss = A2CLoss(actor, critic, loss_critic_type="l2", **ON_POLICY)
    plain = PlainA2C(pi.state_dict(), v.state_dict(), **ON_POLICY_PLAIN)
    return Built(loss, None, {"actor": pi, "critic": v}, plain)


# -- batches ---------------------------------------------------------------------------------


def transitions(obs_dim: int, action: Tensor, g: torch.Generator) -> TensorDict:
    terminated = torch.rand(BATCH, 1, generator=g) < 0.05
    truncated = torch.rand(BATCH, 1, generator=g) < 0.05
    return TensorDict(
        {
            "observation": torch.randn(BATCH, obs_dim, generator=g),
            "action": action,
            "next": {
                "observation": torch.randn(BATCH, obs_dim, generator=g),
                "reward": torch.randn(BATCH, 1, generator=g),
                "done": terminated | truncated,
                "terminated": terminated,
            },
        },
        batch_size=[BATCH],
    )


def discrete_batch() -> TensorDict:
    g = torch.Generator().manual_seed(1)
    action = torch.randint(0, CARTPOLE_ACTIONS, (BATCH,), generator=g)
    return transitions(CARTPOLE_OBS, action, g)


def continuous_batch() -> TensorDict:
    g = torch.Generator().manual_seed(2)
    action = (torch.rand(BATCH, PENDULUM_ACT, generator=g) * 2 - 1) * 0.95 * HIGH
    return transitions(PENDULUM_OBS, action, g)


def on_policy_batch() -> TensorDict:
    """What examples/ppo.py's minibatches hold once the advantages are in."""
    g = torch.Generator().manual_seed(3)
    return TensorDict(
        observation=torch.randn(BATCH, CARTPOLE_OBS, generator=g),
        action=torch.randint(0, CARTPOLE_ACTIONS, (BATCH,), generator=g),
        sample_log_prob=math.log(0.5) + 0.1 * torch.randn(BATCH, generator=g),
        advantage=torch.randn(BATCH, 1, generator=g),
        value_target=torch.randn(BATCH, 1, generator=g),
        batch_size=[BATCH],
    )


def plain_batch(td: TensorDict) -> dict[str, Tensor]:
    names = {
        "observation": "obs",
        "action": "act",
        ("next", "observation"): "next_obs",
        ("next", "reward"): "reward",
        ("next", "terminated"): "terminated",
        "sample_log_prob": "old_log_prob",
        "advantage": "advantage",
        "value_target": "value_target",
    }
    return {name: td.get(key) for key, name in names.items() if key in td.keys(True)}


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], Built]
    batch: Callable[[], TensorDict]
    adam: dict = field(default_factory=lambda: {"lr": 1e-3})
    max_grad_norm: float | None = None


CASES = [
    Case("DQN", build_dqn, discrete_batch),
    Case("DDPG", build_ddpg, continuous_batch),
    Case("TD3", build_td3, continuous_batch),
    Case("SAC", build_sac, continuous_batch),
    Case("PPO", build_ppo, on_policy_batch, {"lr": 2e-3, "eps": 1e-5, "fused": True}, 0.5),
    Case("A2C", build_a2c, on_policy_batch, {"lr": 2e-3}, 0.5),
    Case("IQL", build_iql, continuous_batch, {"lr": 3e-4}),
    Case("CQL", build_cql, continuous_batch, {"lr": 3e-4}),
]


def seeded_build(case: Case) -> Built:
    torch.manual_seed(0)
    return case.build()


# -- the same math -----------------------------------------------------------------------------


def check_same_math(case: Case) -> tuple[bool, str]:
    """``(agree, line)``: loss terms and gradients of rlblocks eager and plain eager."""
    built = seeded_build(case)
    td = case.batch()
    torch.manual_seed(7)
    out = built.loss(td.clone())
    total_loss(out).backward()
    torch.manual_seed(7)
    terms = built.plain.losses(plain_batch(td))
    sum(terms.values()).backward()
    rl_terms = sorted(k for k in out.keys() if k.startswith("loss_"))
    if rl_terms != sorted(terms):
        return False, f"different loss terms: rlblocks {rl_terms}, plain {sorted(terms)}"
    value_diff = max(float((out[k] - terms[k]).detach().abs()) for k in rl_terms)
    values_ok = all(torch.allclose(out[k], terms[k], rtol=1e-4, atol=1e-5) for k in rl_terms)
    pairs = [
        (p, q)
        for name, net in built.nets.items()
        for p, q in zip(net.parameters(), built.plain.networks()[name].parameters(), strict=True)
    ] + list(zip(built.extra, built.plain.extra, strict=True))
    grad_diff, grads_ok = 0.0, True
    with_grad = sum(p.grad is not None and bool(p.grad.any()) for p, _ in pairs)
    for p, q in pairs:
        gp = p.grad if p.grad is not None else torch.zeros_like(p)
        gq = q.grad if q.grad is not None else torch.zeros_like(q)
        grad_diff = max(grad_diff, float((gp - gq).abs().max()))
        grads_ok &= torch.allclose(gp, gq, rtol=1e-4, atol=1e-5)
    line = (
        f"same loss values: {'yes' if values_ok else 'no'} (max abs diff {value_diff:.1e}, "
        f"{', '.join(rl_terms)}); same gradients: {'yes' if grads_ok else 'no'} "
        f"(max abs diff {grad_diff:.1e}; {with_grad} of {len(pairs)} tensors get one)"
    )
    return values_ok and grads_ok, line


# -- the four steps ----------------------------------------------------------------------------


def rlblocks_step(
    update: UpdateStep, updater: SoftUpdate | HardUpdate | None, td: TensorDict
) -> Callable[[], object]:
    """The rlblocks update: ``update(td)``, then the target networks' update."""

    def step() -> object:
        out = update(td)
        if updater is not None:
            updater.step()
        return out

    return step


def variant_steps(case: Case) -> tuple[dict[str, Callable[[], object]], UpdateStep]:
    """The four update steps of ``case`` (each on its own copy of the networks) and the
    compiled rlblocks ``UpdateStep`` (to ask whether it fell back)."""
    steps: dict[str, Callable[[], object]] = {}
    td = case.batch()
    b = plain_batch(td)
    compiled_update: UpdateStep | None = None
    for compiled in (False, True):
        built = seeded_build(case)
        loss = built.loss
        optimizer = torch.optim.Adam(loss.parameters(), **case.adam)
        update = make_update_step(
            loss, optimizer, max_grad_norm=case.max_grad_norm, compile=compiled
        )
        kind = "compiled" if compiled else "eager"
        plain = PlainUpdate(built.plain, case.adam, case.max_grad_norm,
                            COMPILE_KWARGS if compiled else None)  # fmt: skip
        steps[f"rlblocks {kind}"] = rlblocks_step(update, built.updater, td.clone())
        steps[f"plain {kind}"] = lambda plain=plain: plain(b)
        if compiled:
            compiled_update = update
    assert compiled_update is not None
    return {name: steps[name] for name in VARIANTS}, compiled_update


@dataclass
class Row:
    ms: dict[str, float] = field(default_factory=dict)
    compile_s: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    graphs_while_timed: int = 0


def fallback_reason(caught: list[warnings.WarningMessage]) -> str:
    for w in caught:
        match = re.search(r"failed \((\w+):", str(w.message))
        if match:
            return match.group(1)
    return "unknown"


def measure(case: Case, repeat: int, warmup: int, block_s: float) -> Row:
    """Warm up (compiling) and time the four variants of ``case`` at this thread count."""
    row = Row()
    steps, compiled_update = variant_steps(case)
    live: dict[str, Callable[[], object]] = {}
    estimate: dict[str, float] = {}
    for name, fn in steps.items():
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                for _ in range(warmup):
                    fn()
            except Exception as error:
                if "compiled" not in name:
                    raise
                row.failed[name] = f"compile failed ({type(error).__name__})"
                continue
        elapsed = time.perf_counter() - start
        if name == "rlblocks compiled" and not compiled_update.compiled:
            row.failed[name] = f"fell back to eager ({fallback_reason(caught)})"
            continue
        start = time.perf_counter()
        fn()
        estimate[name] = time.perf_counter() - start
        if "compiled" in name:
            row.compile_s[name] = max(0.0, elapsed - warmup * estimate[name])
        live[name] = fn
    calls = {name: max(1, min(200, round(block_s / t))) for name, t in estimate.items()}
    times: dict[str, list[float]] = {name: [] for name in live}
    names = list(live)
    graphs = counters["stats"]["unique_graphs"]
    for block in range(repeat):
        shift = block % len(names)
        for name in names[shift:] + names[:shift]:
            fn, n = live[name], calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - start) / n)
    if "rlblocks compiled" in live and not compiled_update.compiled:
        row.failed["rlblocks compiled"] = "fell back to eager during timing"
        live.pop("rlblocks compiled")
    row.graphs_while_timed = counters["stats"]["unique_graphs"] - graphs
    row.ms = {name: 1e3 * statistics.median(times[name]) for name in live}
    return row


# -- the table -------------------------------------------------------------------------------


def cell(row: Row, name: str) -> str:
    if name in row.failed:
        return row.failed[name]
    return f"{row.ms[name]:.2f} ms"


def ratio(row: Row, num: str, den: str) -> str:
    if num in row.ms and den in row.ms:
        return f"{row.ms[num] / row.ms[den]:.2f}x"
    return "-"


def print_table(rows: dict[str, Row], threads: int) -> None:
    print(f"\nms per update step, {BATCH} transitions, {threads_label(threads)}")
    header = (
        f"{'loss':<6}{'rl eager':>11}{'plain eager':>13}{'rl/plain':>10} |"
        f"{'rl compiled':>13}{'plain compiled':>16}{'rl/plain':>10} |"
        f"{'rl eager/comp':>15}{'plain eager/comp':>18} |{'compile s rl, plain':>21}"
    )
    print(header)
    for name, row in rows.items():
        compile_s = " / ".join(
            f"{row.compile_s[v]:.1f}" if v in row.compile_s else "-"
            for v in ("rlblocks compiled", "plain compiled")
        )
        print(
            f"{name:<6}{cell(row, 'rlblocks eager'):>11}{cell(row, 'plain eager'):>13}"
            f"{ratio(row, 'rlblocks eager', 'plain eager'):>10} |"
            f"{cell(row, 'rlblocks compiled'):>13}{cell(row, 'plain compiled'):>16}"
            f"{ratio(row, 'rlblocks compiled', 'plain compiled'):>10} |"
            f"{ratio(row, 'rlblocks eager', 'rlblocks compiled'):>15}"
            f"{ratio(row, 'plain eager', 'plain compiled'):>18} |{compile_s:>21}",
            flush=True,
        )
    for name, row in rows.items():
        if row.graphs_while_timed:
            print(f"{name}: torch.compile made {row.graphs_while_timed} graphs while timed "
                  f"(its figures include that)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=None, help="timed blocks (default 10)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 3 short blocks")
    args = parser.parse_args()
    repeat = args.repeat or (3 if args.quick else 10)
    block_s = 0.02 if args.quick else 0.05  # per variant and block: a few to 50 updates
    warmup = 3  # the compiled rlblocks forward recompiles once at the second call

    print("rlblocks eager against plain eager: one batch, the same weights, the same seed")
    agree = True
    for case in CASES:
        ok, line = check_same_math(case)
        agree &= ok
        print(f"{case.name:<6}{line}", flush=True)

    crashed = False
    for threads in thread_counts():
        rows: dict[str, Row] = {}
        with torch_threads(threads):
            for case in CASES:
                try:
                    rows[case.name] = measure(case, repeat, warmup, block_s)
                except Exception as error:  # an eager variant crashed
                    crashed = True
                    print(f"{case.name}: crashed ({type(error).__name__}: {error})", flush=True)
        print_table(rows, threads)
    print(
        "\nrl/plain: time of the rlblocks step over the plain one; eager/comp: the compile "
        "speed-up; compile s: wall time of the 3 warm-up updates of each compiled variant "
        "less 3 timed updates"
    )
    if not agree:
        print("the math differs for some loss: its figures compare different work")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
