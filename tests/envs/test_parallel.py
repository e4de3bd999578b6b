"""ParallelEnv: workers, shared memory, seeding, partial resets, and faults never hanging."""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import time

import psutil
import pytest
import torch
from tensordict import TensorDict

from rlblocks.envs import (
    CartPoleEnv,
    EnvClosedError,
    GymEnv,
    ParallelEnv,
    SerialEnv,
    WorkerError,
    check_env_specs,
)


def _is_worker(process: psutil.Process) -> bool:
    try:
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # multiprocessing's own resource tracker (started by spawn) outlives every pool.
        return "resource_tracker" not in " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        return False


def no_child_left():
    """No worker of ours is alive: checked in multiprocessing's and the OS's tables."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        live = [p for p in psutil.Process().children(recursive=True) if _is_worker(p)]
        if not multiprocessing.active_children() and not live:
            return True
        time.sleep(0.05)
    return False


class FailingEnv(CartPoleEnv):
    """Raises on the third step."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def _step(self, tensordict):
        self.steps += 1
        if self.steps == 3:
            raise RuntimeError("the simulator exploded")
        return super()._step(tensordict)


PARENT_PID = os.getpid()


class SlowCloseEnv(CartPoleEnv):
    """Hangs in close() inside a worker (the parent builds one too, to read the specs)."""

    def _close(self):
        if os.getpid() != PARENT_PID:
            time.sleep(60)


@pytest.fixture
def parallel():
    envs = []

    def make(*args, **kwargs):
        env = ParallelEnv(*args, **kwargs)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()
    assert no_child_left()


def test_batch_size_specs_and_checks(parallel):
    env = parallel(2, lambda: GymEnv("CartPole-v1", num_envs=3))
    assert env.batch_size == (2, 3) and len(env.worker_pids) == 2
    assert env.action_spec.shape == (2, 3)
    check_env_specs(env, steps=4, seed=0)


def test_results_equal_a_serial_env(parallel):
    par = parallel(3, lambda: GymEnv("CartPole-v1"))
    ser = SerialEnv(3, lambda: GymEnv("CartPole-v1"))
    par.set_seed(5)
    ser.set_seed(5)
    actions = torch.randint(0, 2, (3, 40))
    tds = []
    for env in (par, ser):
        td, out = env.reset(), []
        for t in range(40):
            transition, td = env.step_and_maybe_reset(td.set("action", actions[:, t]))
            out.append(transition)
        tds.append(torch.stack(out, -1))
    assert tds[0]["next", "done"].any()
    for key in tds[0].keys(True, True):
        assert torch.equal(tds[0][key], tds[1][key]), key
    ser.close()


def test_random_rollouts(parallel):
    env = parallel(2, lambda: GymEnv("CartPole-v1", num_envs=2))
    env.set_seed(1)
    torch.manual_seed(1)
    td = env.rollout(100, break_when_any_done=False)  # each worker runs its own loop
    assert td.batch_size == (2, 2, 100) and td["next", "done"].any()
    assert not torch.equal(td["action"][0], td["action"][1])  # workers draw their own
    short = env.rollout(100)  # lockstep, stops at the first end
    assert short["next", "done"][..., -1, 0].any() and not short["next", "done"][..., :-1, 0].any()
    # Seeded worker rollouts are reproducible.
    env.set_seed(3)
    a = env.rollout(20, break_when_any_done=False)
    env.set_seed(3)
    b = env.rollout(20, break_when_any_done=False)
    assert torch.equal(a["next", "observation"], b["next", "observation"])


def test_partial_reset(parallel):
    env = parallel(3, lambda: CartPoleEnv(batch_size=[2]))
    td = env.reset()
    for _ in range(3):
        td = env.step_and_maybe_reset(env.rand_action(td))[1]
    mask = torch.tensor([[True, False], [False, False], [False, True]]).unsqueeze(-1)
    out = env.reset(td.clone().set("_reset", mask))
    changed = (out["state"] != td["state"]).any(-1)
    assert changed.tolist() == [[True, False], [False, False], [False, True]]


def test_worker_exception_surfaces_with_traceback(parallel):
    env = parallel(2, FailingEnv)
    td = env.reset()
    start = time.monotonic()
    td = env.step_and_maybe_reset(env.rand_action(td))[1]
    td = env.step_and_maybe_reset(env.rand_action(td))[1]
    with pytest.raises(WorkerError, match="(?s)worker 0.*raised.*RuntimeError: the simulator"):
        env.step_and_maybe_reset(env.rand_action(td))
    assert time.monotonic() - start < 5
    assert no_child_left()
    with pytest.raises(EnvClosedError, match="worker failure"):
        env.rand_step(td)
    env.close()  # still fine


def test_dead_worker_is_reported_within_five_seconds(parallel):
    env = parallel(2, CartPoleEnv)
    td = env.reset()
    os.kill(env.worker_pids[1], signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerError, match="worker 1 .*killed by signal SIGKILL"):
        env.rand_step(td)
    assert time.monotonic() - start < 5
    assert no_child_left()


def test_failing_constructor_is_reported(parallel):
    def broken_in_workers():
        if os.getpid() != PARENT_PID:
            raise ValueError("no such simulator")
        return CartPoleEnv()  # the parent builds one to read the specs

    start = time.monotonic()
    with pytest.raises(WorkerError, match="(?s)starting its env.*ValueError: no such simulator"):
        ParallelEnv(2, broken_in_workers, mp_start_method="fork")
    assert time.monotonic() - start < 5
    assert no_child_left()


def test_close_is_idempotent_bounded_and_leaves_no_child(parallel):
    env = ParallelEnv(2, SlowCloseEnv)
    env.reset()
    start = time.monotonic()
    env.close()
    assert time.monotonic() - start < 5
    env.close()
    assert no_child_left()
    with pytest.raises(EnvClosedError):
        env.reset()


def test_spawn_start_method_with_a_picklable_factory(parallel):
    env = parallel(2, functools.partial(GymEnv, "CartPole-v1"), mp_start_method="spawn")
    td = env.rand_step(env.reset())
    assert td["next", "observation"].shape == (2, 4)


def test_garbage_collected_env_stops_its_workers():
    env = ParallelEnv(2, CartPoleEnv)
    pids = env.worker_pids
    del env
    import gc

    gc.collect()
    assert no_child_left()
    assert not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
    )


def test_inputs_beyond_the_action_reach_the_workers(parallel):
    env = parallel(2, CartPoleEnv)
    state = torch.zeros(2, 4, dtype=torch.float64)
    td = TensorDict({"state": state, "action": torch.ones(2, dtype=torch.int64)}, [2])
    out = env.step(td)
    assert out["next", "state"][:, 1].gt(0).all()  # pushed right from rest
