"""ParallelEnv under faults: an interrupted parent, a stuck worker, a killed parent.

Issue 20, items 1, 8 and 9. Each scenario runs real worker processes and bounds how long
the parent may wait; none may leave a process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
import torch
from tensordict import TensorDict

from rlblocks.core.specs import Categorical, Composite, Unbounded
from rlblocks.envs import EnvBase, ParallelEnv, WorkerError


class CountingEnv(EnvBase):
    """The observation counts the steps since the last reset; a step takes ``delay`` s,
    or forever when ``hang``."""

    step_returns_done_flags = True

    def __init__(self, delay: float = 0.0, hang: bool = False) -> None:
        super().__init__(batch_size=())
        self.delay, self.hang, self.count = delay, hang, 0
        self.observation_spec = Composite({"observation": Unbounded(shape=(1,))}, shape=())
        self.action_spec = Categorical(2)
        self.reward_spec = Unbounded(shape=(1,))

    def _output(self, reward: float | None) -> TensorDict:
        flag = torch.zeros(1, dtype=torch.bool)
        data = {
            "observation": torch.full((1,), float(self.count)),
            "done": flag,
            "terminated": flag.clone(),
            "truncated": flag.clone(),
        }
        if reward is not None:
            data["reward"] = torch.zeros(1)
        return TensorDict(data, batch_size=())

    def _reset(self, tensordict, **kwargs):
        self.count = 0
        return self._output(None)

    def _step(self, tensordict):
        if self.hang:
            time.sleep(3600)
        time.sleep(self.delay)
        self.count += 1
        return self._output(0.0)

    def _set_seed(self, seed):
        pass


def action(env: EnvBase) -> TensorDict:
    return TensorDict({"action": torch.zeros(env.batch_size, dtype=torch.int64)}, env.batch_size)


def test_an_interrupted_step_does_not_shift_later_results():
    """Ctrl-C in the parent alone during a step (a notebook's "interrupt"): the workers
    finish that step, and the next step returns its own results, not the previous ones."""
    env = ParallelEnv(2, partial(CountingEnv, delay=0.4))
    # Python raises KeyboardInterrupt on SIGINT only if it started with SIGINT not ignored;
    # a test run started in the background of a non-interactive shell inherits SIG_IGN.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        env.reset()
        assert env.step(action(env))["next", "observation"].flatten().tolist() == [1, 1]
        main = threading.get_ident()
        timer = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT))
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            env.step(action(env))  # step 2, interrupted while the workers sleep
        timer.join()
        # Step 3 first collects step 2's answers, then returns step 3's observations.
        assert env.step(action(env))["next", "observation"].flatten().tolist() == [3, 3]
        assert env.step(action(env))["next", "observation"].flatten().tolist() == [4, 4]
    finally:
        signal.signal(signal.SIGINT, previous)
        env.close()


def test_a_stuck_worker_raises_naming_it_and_leaves_no_process(wait_gone):
    env = ParallelEnv(2, [CountingEnv, partial(CountingEnv, hang=True)], timeout=1.0)
    pids = env.worker_pids
    env.reset()
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker 1 \(pid \d+\) sent nothing for 1 s"):
        env.step(action(env))
    assert time.monotonic() - start < 10
    assert wait_gone(pids, 10) == []
    with pytest.raises(Exception, match="after close\\(\\) or a worker failure"):
        env.reset()


def test_the_timeout_is_validated():
    for bad in (0, -1.0, "10", True, float("inf")):
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            ParallelEnv(1, CountingEnv, timeout=bad)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_exit_when_the_parent_is_killed(method, tmp_path, wait_gone):
    """A SIGKILLed parent runs no cleanup: its workers must notice by themselves."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, signal, sys\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from test_parallel_env_faults import CountingEnv\n"
        "from rlblocks.envs import ParallelEnv\n"
        "if __name__ == '__main__':\n"
        f"    env = ParallelEnv(2, CountingEnv, mp_start_method={method!r})\n"
        "    env.rollout(3)\n"
        "    print(' '.join(map(str, env.worker_pids)), flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 2
    assert wait_gone(pids, 10) == []
