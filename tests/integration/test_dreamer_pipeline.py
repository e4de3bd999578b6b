"""Dreamer end to end: real transitions in a replay buffer, slices from the slice sampler,
the world model trained on them, imagination in a ModelBasedEnv built from the real env's
specs, and the actor and value losses on the imagined rollouts."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from rlblocks.buffers import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer
from rlblocks.collectors import SyncDataCollector
from rlblocks.core.specs import Composite, Unbounded
from rlblocks.envs import (
    InvalidActionError,
    ModelBasedEnv,
    PendulumEnv,
    StepCounter,
    TransformedEnv,
)
from rlblocks.objectives import (
    DreamerActorLoss,
    DreamerModelLoss,
    DreamerValueLoss,
    ShapeMismatchError,
    total_loss,
)
from rlblocks.objectives.modules import (
    MLP,
    RSSM,
    NormalParamExtractor,
    ProbabilisticActor,
    TanhNormal,
    WorldModel,
)

STATE, BELIEF, SLICE, SLICES = 8, 32, 10, 6


def latent_modules(action_spec):
    latent = STATE + BELIEF
    features = TensorDictModule(
        lambda s, b: torch.cat([s, b], -1), in_keys=["state", "belief"], out_keys=["features"]
    )
    actor = ProbabilisticActor(
        TensorDictModule(
            nn.Sequential(MLP(latent, 2, num_cells=[32]), NormalParamExtractor()),
            in_keys=["features"],
            out_keys=["loc", "scale"],
        ),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": action_spec.low, "high": action_spec.high},
    )
    value = TensorDictModule(MLP(latent, 1, num_cells=[32]), ["features"], ["state_value"])
    return TensorDictSequential(features, actor), TensorDictSequential(features, value)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    real = PendulumEnv(batch_size=[4])
    real.set_seed(0)
    trajectory = real.rollout(50, break_when_any_done=False)
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(400),
        sampler=SliceSampler(slice_len=SLICE),
        batch_size=SLICE * SLICES,
    )
    buffer.extend(trajectory.reshape(-1))
    rssm = RSSM(1, 32, state_dim=STATE, belief_dim=BELIEF, hidden_dim=32)
    world_model = WorldModel(MLP(3, 32), rssm, MLP(STATE + BELIEF, 3), MLP(STATE + BELIEF, 1))
    # The specs of one real env, expanded to the number of imagined trajectories.
    imagination = ModelBasedEnv.from_env(
        PendulumEnv(),
        world_model.transition_module(),
        observation_spec=Composite(
            state=Unbounded(shape=(STATE,)), belief=Unbounded(shape=(BELIEF,))
        ),
        batch_size=[SLICE * SLICES],
    )
    return real, buffer, world_model, imagination


def test_a_dreamer_iteration_trains_every_part(setup):
    _real, buffer, world_model, imagination = setup
    actor, value = latent_modules(PendulumEnv().action_spec)
    model_loss = DreamerModelLoss(world_model)
    actor_loss = DreamerActorLoss(actor, value, imagination, imagination_horizon=5)
    value_loss = DreamerValueLoss(value)
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (world_model, actor, value)]
    before = [p.detach().clone() for p in (*actor.parameters(), *value.parameters())]
    for _ in range(3):
        batch = buffer.sample().reshape(SLICES, SLICE)
        model_out = model_loss(batch)
        optimizers[0].zero_grad()
        total_loss(model_out).backward()
        optimizers[0].step()
        # The latents the model inferred (detached) start the imagination.
        actor_out = actor_loss(model_out["posterior"])
        optimizers[1].zero_grad()
        actor_out["loss_actor"].backward()
        optimizers[1].step()
        value_out = value_loss(actor_out["imagined"])
        optimizers[2].zero_grad()
        value_out["loss_value"].backward()
        optimizers[2].step()
    assert actor_out["imagined"].batch_size == (SLICE * SLICES, 5)
    after = [p.detach() for p in (*actor.parameters(), *value.parameters())]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    # imagined actions stay within the real env's bounds
    assert torch.isfinite(value_out["loss_value"])


def test_the_imagination_env_checks_actions_against_the_real_spec(setup):
    _real, buffer, world_model, imagination = setup
    start = world_model(buffer.sample().reshape(SLICES, SLICE))["next"]
    td = start.select("state", "belief").reshape(-1).detach()
    td.set("action", torch.full((SLICE * SLICES, 1), 5.0))  # Pendulum's torque is within +-2
    with pytest.raises(InvalidActionError):
        imagination.step(td)


def test_slices_shorter_than_the_horizon_are_refused(setup):
    _real, buffer, world_model, imagination = setup
    actor, value = latent_modules(PendulumEnv().action_spec)
    loss = DreamerActorLoss(actor, value, imagination, imagination_horizon=15)
    with torch.no_grad():
        latents = world_model(buffer.sample().reshape(SLICES, SLICE))
    with pytest.raises(ShapeMismatchError, match=r"has 10 steps .* imagination_horizon is 15"):
        loss(latents)


def test_a_collector_collects_imagined_episodes(setup):
    # The model env as any env: StepCounter ends imagined episodes of 5 steps, the
    # collector resets them through reset_fn (zero latents) and batches [envs, time].
    _, _, world_model, _ = setup
    actor, _ = latent_modules(PendulumEnv().action_spec)

    def zero_latents(batch_size):
        state, belief = world_model.rssm.initial_state(batch_size)
        return TensorDict({"state": state, "belief": belief}, batch_size)

    env = TransformedEnv(
        ModelBasedEnv.from_env(
            PendulumEnv(),
            world_model.transition_module(),
            observation_spec=Composite(
                state=Unbounded(shape=(STATE,)), belief=Unbounded(shape=(BELIEF,))
            ),
            batch_size=[3],
            reset_fn=zero_latents,
        ),
        StepCounter(5),
    )
    with SyncDataCollector(env, actor, frames_per_batch=30, total_frames=60) as collector:
        batches = list(collector)
    assert [b.batch_size for b in batches] == [torch.Size([3, 10])] * 2
    for batch in batches:
        assert batch["next", "truncated"].sum() == 3 * 2  # two episodes of 5 in each row
        assert (batch["action"].abs() <= 2).all()  # the actor's TanhNormal keeps +-2
        # each row restarts from the zero latent after its truncation
        restarted = batch["belief"][:, 5]
        assert (restarted == 0).all()
