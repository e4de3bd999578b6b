"""Shared fixtures of the rlblocks-collectors tests: small envs, policies and stand-ins.

rlblocks-buffers and rlblocks-objectives are not dependencies of the collectors, so the
replay buffer, the loss module and the target updater used here are tiny stand-ins that
follow the same protocols.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.core import DONE, OBSERVATION, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.specs import Categorical, Composite, Unbounded
from rlblocks.envs import EnvBase


class WalkEnv(EnvBase):
    """A batched 1-D random walk whose whole state can be saved.

    The position is the observation (so it lives in the TensorDict); action 1 moves right,
    0 left, plus a random kick; the episode terminates at ``|x| >= 4``; reward ``-|x|``.
    Starting positions and kicks come from the env's own generator, saved by ``state_dict``.
    With ``fail_at`` the env raises on that step (counted over the env's life).
    """

    def __init__(self, batch_size=(), device=None, fail_at: int | None = None, seed: int = 0):
        super().__init__(batch_size=batch_size, device=device)
        shape = self.batch_size
        self.observation_spec = Composite(
            {OBSERVATION: Unbounded(shape=(*shape, 1))}, shape=shape, device=self.device
        )
        self.action_spec = Categorical(2, shape=shape, device=self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.fail_at = fail_at
        self.steps = 0

    def _rand(self, low: int, high: int) -> torch.Tensor:
        return torch.randint(
            low, high, (*self.batch_size, 1), generator=self.generator, device=self.device
        ).float()

    def _reset(self, tensordict):
        x = self._rand(-2, 3)
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        if mask is not None:
            x = torch.where(mask, x, tensordict.get(OBSERVATION))
        return TensorDict({OBSERVATION: x}, batch_size=self.batch_size, device=self.device)

    def _step(self, tensordict):
        self.steps += 1
        if self.fail_at is not None and self.steps >= self.fail_at:
            raise RuntimeError(f"WalkEnv broke down on purpose at step {self.steps}")
        move = tensordict.get("action").unsqueeze(-1).float() * 2 - 1
        x = tensordict.get(OBSERVATION) + move + self._rand(-1, 2)
        terminated = x.abs() >= 4
        return TensorDict(
            {
                OBSERVATION: x,
                REWARD: -x.abs(),
                DONE: terminated,
                TERMINATED: terminated.clone(),
                TRUNCATED: torch.zeros_like(terminated),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _set_seed(self, seed):
        self.generator.manual_seed(seed)

    def state_dict(self):
        return {"generator": self.generator.get_state(), "steps": self.steps}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self.steps = state["steps"]


class Policy(nn.Module):
    """Logits from a small MLP; samples under RANDOM exploration, argmax otherwise."""

    def __init__(self, n_obs: int = 1, n_act: int = 2, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_obs, hidden), nn.Tanh(), nn.Linear(hidden, n_act))

    def forward(self, observation: torch.Tensor):
        from rlblocks.core import ExplorationType, exploration_type

        logits = self.net(observation)
        if exploration_type() is ExplorationType.RANDOM:
            action = torch.distributions.Categorical(logits=logits).sample()
        else:
            action = logits.argmax(-1)
        return action, logits


def make_policy(n_obs: int = 1, n_act: int = 2, seed: int = 0) -> TensorDictModule:
    torch.manual_seed(seed)
    return TensorDictModule(Policy(n_obs, n_act), ["observation"], ["action", "logits"])


class Greedy(nn.Module):
    """Always picks action ``prefer`` (zero weights, a one-hot bias); ``prefer()`` changes it."""

    def __init__(self, prefer: int, n_obs: int = 1):
        super().__init__()
        self.linear = nn.Linear(n_obs, 2)
        self.prefer(prefer)

    def prefer(self, action: int) -> None:
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.eye(2)[action])

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.linear(observation).argmax(-1)


class ListBuffer:
    """The replay-buffer protocol on a Python list of frames (a test stand-in)."""

    def __init__(self, batch_size: int = 8):
        self.items: list[TensorDictBase] = []
        self.batch_size = batch_size

    def extend(self, data: TensorDictBase) -> None:
        self.items.extend(data.unbind(0))

    def sample(self, batch_size: int | None = None) -> TensorDictBase:
        n = batch_size or self.batch_size
        index = torch.randint(len(self.items), (n,)).tolist()
        return torch.stack([self.items[i] for i in index])

    def __len__(self) -> int:
        return len(self.items)

    def dumps(self, path) -> None:
        Path(path).mkdir(parents=True)
        torch.save([item.to_dict() for item in self.items], Path(path) / "items.pt")

    def loads(self, path) -> None:
        items = torch.load(Path(path) / "items.pt", weights_only=True)
        self.items = [TensorDict(item, batch_size=[]) for item in items]


class TinyLoss(nn.Module):
    """An actor-critic-shaped loss with a target value network (a test stand-in)."""

    def __init__(self, actor: TensorDictModule):
        super().__init__()
        self.actor = actor
        self.value = nn.Linear(1, 1)
        self.target_value = nn.Linear(1, 1)
        self.target_value.load_state_dict(self.value.state_dict())
        self.target_value.requires_grad_(False)

    def forward(self, batch: TensorDictBase) -> TensorDict:
        td = self.actor(batch.exclude("action", "logits").copy())
        logp = torch.log_softmax(td.get("logits"), -1)
        logp = logp.gather(-1, batch.get("action").long().unsqueeze(-1)).squeeze(-1)
        reward = batch.get(("next", "reward")).squeeze(-1)
        target = reward + 0.9 * self.target_value(batch.get(("next", "observation"))).squeeze(-1)
        value = self.value(batch.get("observation")).squeeze(-1)
        advantage = (target - value).detach()
        return TensorDict(
            {
                "loss_actor": -(logp * advantage).mean(),
                "loss_value": (target - value).pow(2).mean(),
                "advantage": advantage.mean(),
            },
            batch_size=[],
        )


class TargetUpdater:
    """Polyak-averages ``TinyLoss.value`` into its target (the updater protocol)."""

    def __init__(self, loss: TinyLoss, tau: float = 0.5):
        self.loss = loss
        self.tau = tau
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        with torch.no_grad():
            for target, source in zip(
                self.loss.target_value.parameters(), self.loss.value.parameters()
            ):
                target.lerp_(source, self.tau)


@pytest.fixture(name="kit")
def kit_fixture():
    """The helpers above, for test modules (which cannot import conftest)."""
    return SimpleNamespace(
        WalkEnv=WalkEnv,
        child_processes=child_processes,
        Policy=Policy,
        Greedy=Greedy,
        make_policy=make_policy,
        ListBuffer=ListBuffer,
        TinyLoss=TinyLoss,
        TargetUpdater=TargetUpdater,
    )


# Helper processes of Python's multiprocessing itself (started by the "spawn" and
# "forkserver" start methods, shared by everything in the interpreter, gone with it).
_STDLIB_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def child_processes() -> list[psutil.Process]:
    """This process's descendants, except multiprocessing's own helper processes."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(process.cmdline())
        except psutil.Error:
            cmdline = ""
        if not any(helper in cmdline for helper in _STDLIB_HELPERS):
            found.append(process)
    return found


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Kill (and report) child processes a test left behind, even when it failed."""
    before = {p.pid for p in child_processes()}
    yield
    leftovers = [p for p in child_processes() if p.pid not in before]
    for process in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    psutil.wait_procs(leftovers, timeout=10)
    alive = [p for p in leftovers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"child processes outlived the test: {alive}"
    assert not leftovers, f"the test left child processes behind: {leftovers}"
