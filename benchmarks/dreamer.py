"""Dreamer's hot paths, eager against compiled: the world-model update and imagination.

    python benchmarks/dreamer.py [--batch 16] [--seq-len 50] [--horizon 15] [--repeat 5]

Target (issue 18): the compiled world-model update is >= 1.5x as fast as the eager one.

- **World-model update**: ``DreamerModelLoss`` on a ``[batch, seq-len]`` sequence batch
  (a 30-dim stochastic state as Dreamer's; a 100-dim GRU belief and 100-wide layers, half
  of Dreamer's 200, the size a CPU run uses; ``--belief 200 --hidden 200`` for the paper's;
  a 5-dim vector observation, as dm_control's cartpole from states), its backward, gradient
  clipping and an Adam step, through ``make_update_step``: ``compile=False`` against
  ``compile=True`` (the whole update compiled by inductor, the filter's loop over the
  sequence unrolled into one graph). Both sides do the same work on the same batch; the
  compiled side's compile time (its warm-up) is printed apart.
- **Imagination** (information): ``horizon`` steps from ``batch x seq-len`` start states in a
  ``ModelBasedEnv`` driven by a TanhNormal actor, and the actor loss's backward through
  them, with the world model and the actor eager against the same with both under
  ``torch.compile`` (the env's loop stays eager).

Every figure is measured at torch's default thread count and at one thread: the median of
``--repeat`` interleaved rounds of ``--updates`` updates each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _timing import Target, missed_targets, thread_counts, threads_label, torch_threads
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from rlblocks.core.specs import Bounded, Composite, Unbounded
from rlblocks.envs import ModelBasedEnv
from rlblocks.objectives import DreamerActorLoss, DreamerModelLoss, make_update_step
from rlblocks.objectives.modules import (
    MLP,
    RSSM,
    NormalParamExtractor,
    ProbabilisticActor,
    TanhNormal,
    WorldModel,
)

OBS, ACT, STATE = 5, 1, 30
BELIEF = HIDDEN = 100  # set from the command line
UPDATE_TARGET = Target(1.5, at_least=True, note="compiled update >= 1.5x eager")


def world_model() -> WorldModel:
    latent = STATE + BELIEF
    return WorldModel(
        MLP(OBS, HIDDEN, num_cells=[HIDDEN]),
        RSSM(ACT, HIDDEN, state_dim=STATE, belief_dim=BELIEF, hidden_dim=HIDDEN),
        MLP(latent, OBS, num_cells=[HIDDEN, HIDDEN]),
        MLP(latent, 1, num_cells=[HIDDEN, HIDDEN]),
    )


def sequence_batch(batch: int, steps: int) -> TensorDict:
    return TensorDict(
        {
            "action": torch.rand(batch, steps, ACT) * 2 - 1,
            ("next", "observation"): torch.randn(batch, steps, OBS),
            ("next", "reward"): torch.randn(batch, steps, 1),
        },
        [batch, steps],
    )


def actor_module(compiled: bool = False) -> TensorDictSequential:
    net = nn.Sequential(
        MLP(STATE + BELIEF, 2 * ACT, num_cells=[HIDDEN] * 2), NormalParamExtractor()
    )
    features = TensorDictModule(
        lambda s, b: torch.cat([s, b], -1), in_keys=["state", "belief"], out_keys=["features"]
    )
    actor = ProbabilisticActor(
        TensorDictModule(
            torch.compile(net) if compiled else net, in_keys=["features"], out_keys=["loc", "scale"]
        ),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
    )
    return TensorDictSequential(features, actor)


def value_module() -> TensorDictSequential:
    features = TensorDictModule(
        lambda s, b: torch.cat([s, b], -1), in_keys=["state", "belief"], out_keys=["features"]
    )
    value = TensorDictModule(
        MLP(STATE + BELIEF, 1, num_cells=[HIDDEN] * 2), ["features"], ["state_value"]
    )
    return TensorDictSequential(features, value)


def timed_rounds(sides: dict[str, callable], updates: int, repeat: int) -> dict[str, float]:
    """Median seconds per update of each side, over interleaved rounds."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeat):
        for name, run in sides.items():
            start = time.perf_counter()
            for _ in range(updates):
                run()
            times[name].append((time.perf_counter() - start) / updates)
    return {name: statistics.median(values) for name, values in times.items()}


def world_model_sides(batch: TensorDict) -> tuple[dict[str, callable], float]:
    """The eager and compiled updates (each with its own model and optimizer, equal at the
    start); returns them and the compiled side's warm-up seconds."""
    torch.manual_seed(0)
    models = [world_model(), world_model()]
    models[1].load_state_dict(models[0].state_dict())
    updates = []
    for model, compiled in zip(models, (False, True)):
        optimizer = torch.optim.Adam(model.parameters(), lr=6e-4)
        updates.append(
            make_update_step(
                DreamerModelLoss(model), optimizer, max_grad_norm=100.0, compile=compiled
            )
        )
    updates[0](batch)
    start = time.perf_counter()
    updates[1](batch)
    updates[1](batch)
    warmup = time.perf_counter() - start
    if not updates[1].compiled:
        print("the compiled update fell back to eager: the figure below is eager vs eager")
    return {"eager": lambda: updates[0](batch), "compiled": lambda: updates[1](batch)}, warmup


def imagination_sides(batch: TensorDict, horizon: int) -> dict[str, callable]:
    """The actor loss's imagination and backward, with the world model's imagined step and
    the actor's network eager, and both compiled (tensors in, tensors out: the TensorDict
    plumbing and the env's loop stay eager)."""
    sides = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        torch.manual_seed(0)
        model, actor, value = world_model(), actor_module(compiled), value_module()
        with torch.no_grad():
            latents = model(batch.clone())
        if compiled:
            model.imagine = torch.compile(model.imagine)
        env = ModelBasedEnv(
            model.transition_module(),
            observation_spec=Composite(
                state=Unbounded(shape=(STATE,)), belief=Unbounded(shape=(BELIEF,))
            ),
            action_spec=Composite(action=Bounded(-1.0, 1.0, shape=(ACT,))),
            batch_size=[batch.numel()],
            check_actions=False,
        )
        loss = DreamerActorLoss(actor, value, env, imagination_horizon=horizon)

        def run(loss: DreamerActorLoss = loss, actor: nn.Module = actor, latents=latents) -> None:
            actor.zero_grad(set_to_none=True)
            loss(latents)["loss_actor"].backward()

        run()  # warm-up (compiles)
        sides[name] = run
    return sides


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="sequences per batch")
    parser.add_argument("--seq-len", type=int, default=50, help="steps per sequence")
    parser.add_argument("--horizon", type=int, default=15, help="imagined steps")
    parser.add_argument("--belief", type=int, default=100, help="GRU belief size")
    parser.add_argument("--hidden", type=int, default=100, help="width of the layers")
    parser.add_argument("--updates", type=int, default=10, help="updates per round")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    global BELIEF, HIDDEN
    BELIEF, HIDDEN = args.belief, args.hidden
    batch = sequence_batch(args.batch, args.seq_len)
    print(
        f"Dreamer, batch {args.batch} x {args.seq_len} steps, state {STATE}, belief {BELIEF}, "
        f"hidden {HIDDEN}, horizon {args.horizon}; torch {torch.__version__}"
    )
    results: dict[str, tuple[float, Target]] = {}
    for threads in thread_counts():
        with torch_threads(threads):
            print(f"-- {threads_label(threads)}")
            sides, warmup = world_model_sides(batch)
            times = timed_rounds(sides, args.updates, args.repeat)
            ratio = times["eager"] / times["compiled"]
            print(
                f"world-model update: eager {times['eager'] * 1e3:.1f} ms, compiled "
                f"{times['compiled'] * 1e3:.1f} ms (compiling took {warmup:.0f} s): "
                f"{ratio:.2f}x   target {UPDATE_TARGET}",
                flush=True,
            )
            results[f"update@{threads}"] = (ratio, UPDATE_TARGET)
            times = timed_rounds(imagination_sides(batch, args.horizon), args.updates, args.repeat)
            print(
                f"imagination + actor backward: eager {times['eager'] * 1e3:.1f} ms, compiled "
                f"models {times['compiled'] * 1e3:.1f} ms: "
                f"{times['eager'] / times['compiled']:.2f}x   (information)",
                flush=True,
            )
    print(missed_targets(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
