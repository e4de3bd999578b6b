"""RayCollector on a local Ray instance (``ray.init(num_cpus=2)``)."""

from __future__ import annotations

import time

import pytest
import ray
import torch
from tensordict.nn import TensorDictModule

from rlblocks.collectors import CollectorConfigError, CollectorWorkerError, RayCollector, Trainer
from rlblocks.envs import CartPoleEnv

TRAJ = ("collector", "traj_ids")


def assert_dead(actors, within: float = 30.0):
    # ray.kill is asynchronous: on a loaded machine a call made right after it may still be
    # served, so poll until the actor is gone (a kill that never happens still fails).
    deadline = time.monotonic() + within
    for actor in actors:
        while True:
            try:
                ray.get(actor.batch_size.remote(), timeout=10)
            except ray.exceptions.RayActorError:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"actor {actor} still answers {within} s after the shutdown")
            time.sleep(0.2)


@pytest.fixture(name="make")
def make_fixture():
    made = []

    def make(*args, **kwargs):
        collector = RayCollector(*args, **kwargs)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.shutdown()


def test_sync_batches_gather_every_actor(make):
    collector = make(
        [lambda: CartPoleEnv(batch_size=[2])] * 2, frames_per_batch=40, total_frames=80, sync=True
    )
    batches = list(collector)
    assert [b.batch_size for b in batches] == [torch.Size([2, 2, 10])] * 2
    assert collector.frames == 80
    ids = torch.stack([b[TRAJ] for b in batches])
    assert (ids[:, 0] % 2 == 0).all() and (ids[:, 1] % 2 == 1).all()


def test_async_batches_come_from_each_actor(make):
    collector = make([lambda: CartPoleEnv()] * 2, frames_per_batch=8, total_frames=64)
    batches = list(collector)
    assert len(batches) == 8 and all(b.batch_size == (8,) for b in batches)
    assert {int(b[TRAJ][0]) % 2 for b in batches} == {0, 1}


def test_weights_travel_through_the_object_store(kit, make):
    greedy = kit.Greedy(prefer=0, n_obs=4)
    policy = TensorDictModule(greedy, ["observation"], ["action"])
    collector = make([lambda: CartPoleEnv()] * 2, policy, frames_per_batch=8, sync=True)
    assert (collector.next()["action"] == 0).all()
    greedy.prefer(1)
    assert (collector.next()["action"] == 0).all()
    collector.update_policy_weights_()
    assert (collector.next()["action"] == 1).all()


def test_seed_and_state_dict(make):
    runs = []
    for _ in range(2):
        collector = make([lambda: CartPoleEnv()] * 2, frames_per_batch=8, sync=True)
        collector.set_seed(5)
        runs.append(collector.next())
        state = collector.state_dict()
        collector.shutdown()  # frees the actors' CPUs for the next collector
    assert (runs[0] == runs[1]).all()
    other = make([lambda: CartPoleEnv()] * 2, frames_per_batch=8, sync=True)
    other.load_state_dict(state)
    assert other.frames == 8


def test_a_failing_actor_raises_with_its_traceback(make):
    class Broken(CartPoleEnv):
        def _step(self, tensordict):
            raise RuntimeError("the simulator crashed on purpose")

    collector = make([lambda: CartPoleEnv(), Broken], frames_per_batch=4, sync=True)
    actors = collector.actors
    with pytest.raises(CollectorWorkerError, match="(?s)in _step.*crashed on purpose") as info:
        collector.next()
    assert "\x1b[" not in str(info.value)  # Ray's terminal colors are stripped
    assert collector.is_closed
    assert_dead(actors)


def test_shutdown_kills_the_actors_and_is_idempotent(make):
    collector = make([lambda: CartPoleEnv()] * 2, frames_per_batch=4)
    actors = collector.actors
    collector.next()
    collector.shutdown()
    collector.shutdown()
    assert collector.actors == []
    assert_dead(actors)


def test_actors_that_cannot_be_scheduled_raise_instead_of_waiting(make):
    with pytest.raises(CollectorWorkerError, match="did not start within"):
        make([lambda: CartPoleEnv()], frames_per_batch=4, remote_config={"num_cpus": 64},
             start_timeout=5)  # fmt: skip


@pytest.mark.parametrize("sync", [True, False])
def test_a_stuck_actor_raises_naming_it_instead_of_waiting_forever(make, sync):
    """Issue 20, item 8: ray.get/ray.wait on a batch used to wait without limit."""

    class Stuck(CartPoleEnv):
        def _step(self, tensordict):
            time.sleep(3600)

    collector = make([lambda: CartPoleEnv(), Stuck], frames_per_batch=4, sync=sync, timeout=2)
    actors = collector.actors
    start = time.monotonic()
    with pytest.raises(CollectorWorkerError, match=r"actor 1 sent nothing for 2\.\d s while "):
        for _ in collector:  # unsynced, actor 0 keeps delivering meanwhile
            pass
    assert time.monotonic() - start < 30
    assert collector.is_closed
    assert_dead(actors)


def test_the_timeout_is_validated():
    with pytest.raises(CollectorConfigError, match="timeout must be a positive number"):
        RayCollector([lambda: CartPoleEnv()], frames_per_batch=4, timeout=-1)


def wait_until_dead(actor, timeout: float = 60.0) -> None:
    """``ray.kill`` returns before the actor is gone: a call made meanwhile may still be
    answered. Wait until calls fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.batch_size.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            continue
        time.sleep(0.1)
    raise AssertionError(f"the killed actor still answers after {timeout} s")


def test_a_killed_actor_surfaces_in_the_driver(make):
    collector = make([lambda: CartPoleEnv()] * 2, frames_per_batch=4, sync=True)
    ray.kill(collector.actors[1])
    wait_until_dead(collector.actors[1])
    with pytest.raises(CollectorWorkerError, match="an actor failed"):
        collector.next()


def test_trainer_runs_on_a_ray_collector(make):
    net = torch.nn.Linear(4, 2)

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, batch):
            logits = self.net(batch["observation"])
            return {"loss_ce": torch.nn.functional.cross_entropy(logits, batch["action"])}

    policy = TensorDictModule(net, ["observation"], ["logits"])

    def act(td):
        td = policy(td)
        return td.set("action", td["logits"].argmax(-1))

    collector = make([lambda: CartPoleEnv()] * 2, act, frames_per_batch=16, total_frames=64)
    loss = Loss()
    trainer = Trainer(
        collector,
        loss,
        torch.optim.SGD(loss.parameters(), lr=0.1),
        batch_size=8,
        progress_bar=False,
    )
    trainer.train()
    assert trainer.frames == 64 and trainer.optim_steps == 4
