"""Multi-process collectors: batches, weights, seeds, state, faults and clean shutdown.

Every collector here is shut down by the test (and the autouse fixture of conftest kills
whatever a failing test left). Time bounds of the fault handling (raise within 5 s,
shutdown within 5 s) are checked with generous margins: they are correctness properties,
not speed measurements, and this machine may be loaded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest
import torch
from tensordict.nn import TensorDictModule, TensorDictSequential

from rlblocks.collectors import (
    CollectorClosedError,
    CollectorConfigError,
    CollectorWorkerError,
    MultiaSyncDataCollector,
    MultiSyncDataCollector,
)
from rlblocks.envs import CartPoleEnv, EnvCreator, GymEnv, ParallelEnv, SerialEnv

TRAJ = ("collector", "traj_ids")
GENEROUS_S = 30.0  # the bound under test is 5 s; this margin cannot flake on a busy box


def children(kit) -> set[int]:
    return {p.pid for p in kit.child_processes()}


def assert_gone(pids, timeout=GENEROUS_S):
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes still alive: {alive}"


@pytest.fixture(name="make")
def make_fixture():
    """Build collectors that are shut down at the end of the test, whatever happens."""
    made = []

    def make(cls, *args, **kwargs):
        collector = cls(*args, **kwargs)
        made.append(collector)
        return collector

    yield make
    for collector in made:
        collector.shutdown()


def test_multisync_stacks_one_batch_per_worker(kit, make):
    collector = make(
        MultiSyncDataCollector,
        [lambda: kit.WalkEnv(batch_size=[2])] * 2,
        frames_per_batch=40,
        total_frames=120,
    )
    batches = list(collector)
    assert [b.batch_size for b in batches] == [torch.Size([2, 2, 10])] * 3
    assert collector.frames == 120
    ids = torch.stack([b[TRAJ] for b in batches])
    # Worker i hands out ids congruent to i modulo the number of workers.
    assert (ids[:, 0] % 2 == 0).all() and (ids[:, 1] % 2 == 1).all()
    # Ids continue across batches like in a single collector.
    per_row = ids.permute(1, 2, 0, 3).reshape(4, -1)
    done = torch.stack([b["next", "done"][..., 0] for b in batches])
    done = done.permute(1, 2, 0, 3).reshape(4, -1)
    assert torch.equal(per_row[:, 1:] != per_row[:, :-1], done[:, :-1])


def test_multiasync_yields_worker_batches(kit, make):
    collector = make(
        MultiaSyncDataCollector,
        [lambda: kit.WalkEnv(batch_size=[2])] * 3,
        frames_per_batch=10,
        total_frames=300,  # enough batches that a worker descheduled for a while still shows
    )
    batches = list(collector)
    assert len(batches) == 30 and all(b.batch_size == (2, 5) for b in batches)
    workers = {int(b[TRAJ][0, 0]) % 3 for b in batches}
    assert workers == {0, 1, 2}


def test_policy_weights_reach_the_workers(kit, make):
    greedy = kit.Greedy(prefer=0)
    collector = make(
        MultiSyncDataCollector,
        [lambda: kit.WalkEnv(batch_size=[2])] * 2,
        TensorDictModule(greedy, ["observation"], ["action"]),
        frames_per_batch=8,
    )
    assert (collector.next()["action"] == 0).all()
    greedy.prefer(1)
    assert (collector.next()["action"] == 0).all()  # not published yet
    collector.update_policy_weights_()
    assert (collector.next()["action"] == 1).all()


def test_update_policy_weights_in_async_collector(kit, make):
    greedy = kit.Greedy(prefer=1)
    collector = make(
        MultiaSyncDataCollector,
        [lambda: kit.WalkEnv()] * 2,
        TensorDictModule(greedy, ["observation"], ["action"]),
        frames_per_batch=4,
    )
    assert (collector.next()["action"] == 1).all()
    greedy.prefer(0)
    collector.update_policy_weights_()
    # Only the other worker's batch, started before the update, may carry the old weights:
    # one batch at most, arriving whenever that worker finishes (first, second or third,
    # depending on which worker is faster); every batch asked for after it is new.
    actions = [collector.next()["action"] for _ in range(3)]
    old = [bool((a == 1).all()) for a in actions]
    assert all(stale or (a == 0).all() for stale, a in zip(old, actions))
    assert sum(old) <= 1, f"{sum(old)} of 3 batches after the update used the old weights"


def test_init_random_frames_in_workers(kit, make):
    policy = TensorDictModule(
        lambda obs: torch.ones(obs.shape[:-1], dtype=torch.int64), ["observation"], ["action"]
    )
    collector = make(
        MultiSyncDataCollector,
        [lambda: kit.WalkEnv(batch_size=[4])] * 2,
        policy,
        frames_per_batch=80,
        init_random_frames=80,
    )
    assert (collector.next()["action"] == 0).any()
    assert (collector.next()["action"] == 1).all()


def test_set_seed_makes_workers_reproducible_and_distinct(kit, make):
    runs = []
    for _ in range(2):
        collector = make(
            MultiSyncDataCollector, [lambda: kit.WalkEnv(batch_size=[2])] * 2, frames_per_batch=20
        )
        assert collector.set_seed(11) == 15
        runs.append(collector.next())
        collector.shutdown()
    assert (runs[0] == runs[1]).all()
    assert not torch.equal(runs[0]["action"][0], runs[0]["action"][1])


def test_state_dict_round_trip(kit, make):
    def build():
        return make(
            MultiSyncDataCollector, [lambda: kit.WalkEnv(batch_size=[2])] * 2, frames_per_batch=8
        )

    first = build()
    first.set_seed(3)
    first.next()
    state = first.state_dict()
    expected = first.next()
    second = build()
    second.load_state_dict(state)
    assert second.frames == 8
    got = second.next()
    # The workers' envs resume their episodes: same observations, same trajectory ids.
    assert torch.equal(got["observation"], expected["observation"])
    assert torch.equal(got[TRAJ], expected[TRAJ])
    with pytest.raises(CollectorConfigError, match="same list of env factories"):
        second.load_state_dict({**state, "workers": state["workers"][:1]})


def test_a_raising_env_surfaces_in_the_parent_with_its_traceback(kit, make):
    before = children(kit)
    collector = make(
        MultiSyncDataCollector,
        [lambda: kit.WalkEnv(), lambda: kit.WalkEnv(fail_at=15)],
        frames_per_batch=20,
    )
    pids = collector.worker_pids
    collector.next()
    start = time.monotonic()
    with pytest.raises(CollectorWorkerError) as info:
        collector.next()
    assert time.monotonic() - start < GENEROUS_S
    message = str(info.value)
    assert "worker 1" in message and "broke down on purpose at step 15" in message
    assert "Traceback" in message and "_step" in message
    assert collector.is_closed
    assert_gone(pids)
    assert children(kit) <= before


def test_an_env_failing_to_build_fails_the_constructor(kit):
    def broken():
        raise ValueError("no such simulator")

    before = children(kit)
    with pytest.raises(CollectorWorkerError, match="(?s)worker 1.*no such simulator"):
        MultiaSyncDataCollector([lambda: kit.WalkEnv(), broken], frames_per_batch=4)
    assert children(kit) <= before


@pytest.mark.parametrize("cls", [MultiSyncDataCollector, MultiaSyncDataCollector])
def test_a_killed_worker_surfaces_in_the_parent(kit, make, cls):
    collector = make(cls, [lambda: kit.WalkEnv()] * 2, frames_per_batch=4)
    collector.next()
    pids = collector.worker_pids
    os.kill(pids[0], signal.SIGKILL)
    start = time.monotonic()

    def collect_until_noticed():
        for _ in range(100):
            collector.next()

    with pytest.raises(CollectorWorkerError, match="worker 0 .*killed by signal SIGKILL"):
        collect_until_noticed()
    assert time.monotonic() - start < GENEROUS_S
    assert_gone(pids)


class _HangingEnv(CartPoleEnv):
    """Blocks forever in its step: a worker that never answers."""

    def _step(self, tensordict):
        time.sleep(3600)


def test_shutdown_is_bounded_idempotent_and_leaves_no_process(kit, make):
    before = children(kit)
    collector = make(MultiaSyncDataCollector, [_HangingEnv] * 2, frames_per_batch=2)
    pids = collector.worker_pids
    collector._request(collector._workers[0], False)  # worker 0 is now stuck collecting
    start = time.monotonic()
    collector.shutdown()
    assert time.monotonic() - start < GENEROUS_S
    collector.shutdown()
    assert collector.worker_pids == []
    assert_gone(pids, timeout=1)
    assert children(kit) <= before


@pytest.mark.parametrize("cls", [MultiSyncDataCollector, MultiaSyncDataCollector])
def test_shutdown_from_another_thread_wakes_a_waiting_next(kit, make, cls):
    """Issue 20, item 10: next() waiting for a worker leaves with CollectorClosedError as
    soon as another thread shuts the collector down (the scenario is in tests/faults)."""
    before = children(kit)
    collector = make(cls, [_HangingEnv], frames_per_batch=2, timeout=None)
    pids = collector.worker_pids
    raised = []

    def wait_for_a_batch():
        try:
            collector.next()
        except BaseException as err:
            raised.append(err)

    thread = threading.Thread(target=wait_for_a_batch)
    thread.start()
    thread.join(0.5)  # now waiting on the stuck worker
    assert thread.is_alive()
    start = time.monotonic()
    collector.shutdown()
    thread.join(GENEROUS_S)
    assert not thread.is_alive() and time.monotonic() - start < GENEROUS_S
    (err,) = raised
    assert isinstance(err, CollectorClosedError), repr(err)
    assert "shutdown() was called while this call was waiting for the workers" in str(err)
    assert_gone(pids, timeout=1)
    assert children(kit) <= before
    with pytest.raises(CollectorClosedError, match="after shutdown"):
        collector.set_seed(0)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_no_process_remains_after_an_error_in_the_training_loop(kit, error):
    before = children(kit)
    collector = MultiaSyncDataCollector([lambda: kit.WalkEnv()] * 2, frames_per_batch=50)
    pids = collector.worker_pids

    def training_loop():
        with collector:
            for _ in collector:
                raise error("interrupted while workers are collecting")

    with pytest.raises(error):
        training_loop()
    assert collector.is_closed
    assert_gone(pids, timeout=1)
    assert children(kit) <= before


def test_workers_do_not_outlive_a_killed_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal
            from rlblocks.envs import CartPoleEnv, EnvCreator, GymEnv, ParallelEnv, SerialEnv
            from rlblocks.collectors import MultiSyncDataCollector

            if __name__ == "__main__":
                collector = MultiSyncDataCollector([CartPoleEnv] * 2, frames_per_batch=4)
                collector.next()
                print(*collector.worker_pids, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    assert_gone(pids)


def test_spawn_start_method_with_picklable_factories(make):
    policy = TensorDictSequential(
        TensorDictModule(torch.nn.Linear(4, 2), ["observation"], ["logits"]),
        TensorDictModule(functools.partial(torch.argmax, dim=-1), ["logits"], ["action"]),
    )
    collector = make(
        MultiSyncDataCollector,
        [functools.partial(CartPoleEnv, batch_size=[2])],
        policy,
        frames_per_batch=8,
        mp_start_method="spawn",
    )
    batch = collector.next()
    assert batch.batch_size == (1, 2, 4) and "logits" in batch.keys()


def test_spawn_with_a_lambda_names_the_fix():
    with pytest.raises(CollectorConfigError, match="functools.partial"):
        MultiSyncDataCollector([lambda: CartPoleEnv()], frames_per_batch=2, mp_start_method="spawn")


@pytest.mark.parametrize(
    ("create_env_fn", "kwargs", "match"),
    [
        (CartPoleEnv, {}, "must be a list of env factories"),
        ([], {}, "is empty"),
        ([3], {}, r"create_env_fn\[0\] must be an env or a callable returning one, got int"),
        ([CartPoleEnv] * 2, {"frames_per_batch": 5}, "not a multiple of the 2 workers"),
        ([CartPoleEnv] * 2, {"device": ["cpu"]}, "device has 1 entries for 2 workers"),
        ([CartPoleEnv] * 2, {"storing_device": ("cpu",) * 3}, "storing_device has 3 entries"),
        ([CartPoleEnv], {"device": "nowhere"}, "device must be a torch.device, a str"),
        ([CartPoleEnv] * 2, {"device": ["cpu", 2.5]}, r"device\[1\] must be a torch.device"),
        ([CartPoleEnv], {"max_frames_per_traj": 0}, r"max_frames_per_traj must be a positive int"),
        ([CartPoleEnv], {"max_frames_per_traj": -2}, r"\(or None, -1\), got -2"),
        ([CartPoleEnv], {"timeout": 0}, "timeout must be a positive number of seconds or None"),
        ([CartPoleEnv], {"timeout": "10"}, r"timeout must be .*, got '10'"),
        ([CartPoleEnv], {"timeout": True}, r"timeout must be .*, got True"),
        ([CartPoleEnv], {"timeout": float("inf")}, r"or None \(wait forever\), got inf"),
    ],
)
def test_bad_arguments(create_env_fn, kwargs, match):
    kwargs.setdefault("frames_per_batch", 4)
    with pytest.raises(CollectorConfigError, match=match):
        MultiSyncDataCollector(create_env_fn, **kwargs)


@pytest.mark.parametrize("cls", [MultiSyncDataCollector, MultiaSyncDataCollector])
def test_timeout_default_is_finite_and_none_waits_forever(make, cls):
    """Issue 20, item 8 (the scenario of a stuck worker is in tests/faults)."""
    collector = make(cls, [CartPoleEnv], frames_per_batch=2, total_frames=4)
    assert collector.timeout == 600.0
    forever = make(cls, [CartPoleEnv], frames_per_batch=2, total_frames=4, timeout=None)
    assert forever.timeout is None
    assert [b.numel() for b in forever] == [2, 2]
    assert make(cls, [CartPoleEnv], frames_per_batch=2, timeout=np.float32(2)).timeout == 2.0


def test_envs_of_different_batch_sizes_are_rejected(kit):
    before = children(kit)
    with pytest.raises(CollectorConfigError, match="different batch sizes"):
        MultiSyncDataCollector(
            [CartPoleEnv, functools.partial(CartPoleEnv, batch_size=[2])], frames_per_batch=4
        )
    assert children(kit) <= before


# -- env instances, per-worker devices, no trajectory limit (TorchRL's conventions) ------------


@pytest.mark.parametrize("cls", [MultiSyncDataCollector, MultiaSyncDataCollector])
def test_env_instances_give_each_worker_its_own_copy(kit, make, cls):
    envs = [kit.WalkEnv(batch_size=[2], seed=0), kit.WalkEnv(batch_size=[2], seed=1)]
    collector = make(cls, envs, frames_per_batch=20, total_frames=80)
    batches = list(collector)
    assert sum(batch.numel() for batch in batches) == 80
    assert all(batch[TRAJ].min() >= 0 for batch in batches)
    collector.shutdown()
    # The workers stepped copies: the instances were neither stepped nor closed.
    assert all(env.steps == 0 and not env.is_closed for env in envs)


def test_an_env_running_processes_cannot_be_copied():
    env = ParallelEnv(1, CartPoleEnv)
    try:
        with pytest.raises(CollectorConfigError, match="running worker processes.*EnvCreator"):
            MultiSyncDataCollector([env], frames_per_batch=2)
    finally:
        env.close()
    with pytest.raises(CollectorConfigError, match=r"create_env_fn\[0\] is a closed env"):
        MultiSyncDataCollector([env], frames_per_batch=2)


def test_spawned_workers_get_pickled_env_instances(make):
    collector = make(
        MultiaSyncDataCollector,
        [CartPoleEnv(batch_size=[2])],
        frames_per_batch=8,
        mp_start_method="spawn",
    )
    assert collector.next().batch_size == (2, 4)


def test_an_env_instance_that_cannot_be_pickled_names_the_fix(kit):
    before = children(kit)
    env = CartPoleEnv()
    env.on_step = lambda td: td  # a lambda attribute: the env cannot be pickled
    with pytest.raises(CollectorConfigError, match="cannot be pickled.*EnvCreator"):
        MultiSyncDataCollector([env], frames_per_batch=4, mp_start_method="spawn")
    assert children(kit) <= before
    env.close()


def test_per_worker_devices(make):
    collector = make(
        MultiSyncDataCollector,
        [CartPoleEnv, CartPoleEnv],
        frames_per_batch=8,
        device=["cpu", torch.device("cpu")],
        storing_device=("cpu", "cpu"),
    )
    cpu = torch.device("cpu")
    assert collector.device == (cpu, cpu) and collector.storing_device == (cpu, cpu)
    assert collector.next().device == cpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_per_worker_storing_devices_on_several_devices_stack_on_the_cpu(make):
    collector = make(
        MultiSyncDataCollector,
        [CartPoleEnv, CartPoleEnv],
        frames_per_batch=8,
        storing_device=["cpu", "cuda"],
    )
    assert collector.storing_device == (torch.device("cpu"), torch.device("cuda:0"))
    assert collector.next().device == torch.device("cpu")


@pytest.mark.parametrize("limit", [None, -1])
def test_max_frames_per_traj_none_or_minus_one_means_no_limit(make, limit):
    collector = make(
        MultiSyncDataCollector, [CartPoleEnv], frames_per_batch=4, max_frames_per_traj=limit
    )
    assert collector.max_frames_per_traj is None
    assert "step_count" not in collector.next().keys()


@pytest.mark.parametrize("cls", [MultiSyncDataCollector, MultiaSyncDataCollector])
def test_torchrl_style_collector_over_serial_env_instances(cls):
    # from torchrl.collectors import MultiaSyncDataCollector, MultiSyncDataCollector
    # from torchrl.envs import EnvCreator, GymEnv, SerialEnv
    policy = TensorDictSequential(
        TensorDictModule(torch.nn.Linear(4, 2), in_keys=["observation"], out_keys=["logits"]),
        TensorDictModule(
            functools.partial(torch.argmax, dim=-1), in_keys=["logits"], out_keys=["action"]
        ),
    )
    collector = cls(
        create_env_fn=[
            SerialEnv(3, EnvCreator(lambda: GymEnv("CartPole-v1"))),
            SerialEnv(3, EnvCreator(lambda: GymEnv("CartPole-v1"))),
        ],
        policy=policy,
        frames_per_batch=60,
        total_frames=240,
        max_frames_per_traj=-1,
        device=["cpu", "cpu"],
    )
    frames = 0
    for data in collector:
        frames += data.numel()
        assert data["next", "reward"].shape == (*data.batch_size, 1)
        assert "step_count" not in data.keys()
    collector.shutdown()
    assert frames == 240
    expected = (2, 3, 10) if cls is MultiSyncDataCollector else (3, 20)
    assert data.batch_size == expected
