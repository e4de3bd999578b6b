"""``ParallelEnv``: sub-envs in worker processes, exchanging data through shared memory.

Each step, the parent copies the actions into a shared-memory TensorDict and sends one
byte to every worker; each worker steps its env, writes the results into its rows of the
shared output TensorDict and answers one byte. A worker whose episode ended resets its env
right away and leaves the new first observation in a shared reset buffer, so the partial
reset that follows costs no round trip.

Faults never hang the parent: a worker that raises sends its traceback, which the parent
raises as :class:`WorkerError`; a worker that dies closes its pipe, which the parent notices
at once. Either way all workers are shut down. ``close()`` is idempotent, returns within
about four seconds and leaves no child process (workers are terminated, then killed).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import traceback
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core import DONE, NEXT, RESET
from rlblocks.core.fast_td import new_tensordict
from rlblocks.core.utils import stop_processes
from rlblocks.envs._batched import SKIP, BatchedEnvBase, EnvCreator, env_factories
from rlblocks.envs._env_base import Policy
from rlblocks.envs.errors import EnvClosedError, WorkerError

__all__ = ["ParallelEnv"]

_OK = b"k"
_ERROR = b"E"
_STEP = b"s"
# Total time ``close`` may take: a polite "close", then terminate, then kill.
_JOIN_S, _TERMINATE_S, _KILL_S = 2.0, 1.0, 1.0


def _flat(td: TensorDictBase) -> dict[Any, torch.Tensor]:
    return dict(td.items(include_nested=True, leaves_only=True))


def _worker(
    index: int,
    creator: EnvCreator,
    conn: Any,
    shared: tuple[dict[Any, torch.Tensor], ...],
    torch_seed: int,
) -> None:
    """Worker loop: create the env, then serve commands until "close" or a closed pipe."""
    torch.set_num_threads(1)
    # Forked workers inherit the parent's generator: give each its own random actions.
    torch.manual_seed(torch_seed)
    shared_in, shared_out, shared_reset = shared
    try:
        env = creator()
    except BaseException:
        conn.send_bytes(_ERROR + traceback.format_exc().encode())
        return
    batch = env.batch_size
    rows_in = {k: t[index] for k, t in shared_in.items()}
    rows_out = {k: t[index] for k, t in shared_out.items()}
    rows_reset = {k: t[index] for k, t in shared_reset.items()}
    current: TensorDictBase | None = None

    def write(rows: dict[Any, torch.Tensor], td: TensorDictBase) -> None:
        for key, row in rows.items():
            row.copy_(td.get(key))

    def reset(mask: np.ndarray | None) -> TensorDictBase:
        nonlocal current
        if mask is None or current is None:
            out = env.reset()
        else:
            sub = current.copy()
            sub.set(RESET, torch.as_tensor(mask, device=env.device).reshape(*batch, 1))
            out = env.reset(sub)
        write(rows_reset, out)
        current = out
        return out

    conn.send_bytes(_OK)
    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            break  # the parent is gone
        try:
            if message == _STEP:
                td = TensorDict({k: v.clone() for k, v in rows_in.items()}, batch_size=batch)
                td = td.to(env.device) if env.device.type != "cpu" else td
                next_td = env.step(td, check=False).get(NEXT)
                write(rows_out, next_td)
                current = next_td
                done = next_td.get(DONE)
                if bool(done.any()):
                    # Reset now: the parent's partial reset then needs no round trip.
                    reset(done.reshape(-1).cpu().numpy() if batch else None)
                conn.send_bytes(_OK)
                continue
            command, arg = pickle.loads(message)
            if command == "reset":
                reset(arg)
                conn.send_bytes(_OK)
            elif command == "seed":
                if arg is not None:
                    torch.manual_seed(arg)
                conn.send_bytes(_OK + pickle.dumps(env.set_seed(arg)))
            elif command == "rollout":
                assert current is not None
                out = env.rollout(
                    arg, auto_reset=False, break_when_any_done=False, tensordict=current
                )
                # The env may have ended an episode on the last step: restart it as a step would.
                current = env.step_mdp(out[..., -1])
                done = current.get(DONE)
                if bool(done.any()):
                    reset(done.reshape(-1).cpu().numpy() if batch else None)
                else:
                    write(rows_reset, current)
                conn.send_bytes(_OK)
                conn.send(out.to("cpu"))
            elif command == "close":
                env.close()
                conn.send_bytes(_OK)
                break
            else:  # pragma: no cover - internal protocol
                raise RuntimeError(f"unknown command {command!r}")
        except BaseException:
            conn.send_bytes(_ERROR + traceback.format_exc().encode())
    conn.close()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is not responding"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _send_close(conn: Any) -> None:
    conn.send_bytes(pickle.dumps(("close", None)))


def _shutdown(processes: list[Any], conns: list[Any]) -> None:
    """Stop every worker within _JOIN_S + _TERMINATE_S + _KILL_S seconds; idempotent."""
    stop_processes(
        processes,
        conns,
        send_close=_send_close,
        grace_s=_JOIN_S,
        terminate_s=_TERMINATE_S,
        kill_s=_KILL_S,
    )


class ParallelEnv(BatchedEnvBase):
    """Run ``num_workers`` envs in worker processes, as one batched env.

    Args:
        num_workers: How many worker processes (one sub-env each).
        create_env_fn: Returns a sub-env; one callable for all, or one per worker. With the
            ``spawn``/``forkserver`` start methods it must be picklable (not a lambda).
        create_env_kwargs: Keyword arguments for ``create_env_fn``.
        mp_start_method: ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None`` picks
            ``"fork"`` where available (fast to start, accepts lambdas), else ``"spawn"``.
        device: Device of the batched env's tensors (default: the sub-envs').
        check_actions: Validate actions in ``step``.

    Raises:
        WorkerError: A worker failed to create its env, raised or died (now or later);
            the message holds the worker's traceback or exit status.

    Example:
        >>> env = ParallelEnv(2, lambda: GymEnv("CartPole-v1", num_envs=4))
        >>> env.batch_size
        torch.Size([2, 4])
        >>> td = env.rollout(100, break_when_any_done=False)
        >>> env.close()
    """

    def __init__(
        self,
        num_workers: int,
        create_env_fn: Any,
        create_env_kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        mp_start_method: str | None = None,
        device: Any = None,
        check_actions: bool = True,
    ) -> None:
        creators = env_factories(num_workers, create_env_fn, create_env_kwargs, "ParallelEnv")
        self._processes: list[Any] = []
        self._pids: list[int] = []
        self._conns: list[Any] = []
        # Sub-envs made by one factory share specs: build one to read them.
        metas = [creators[0].meta] * num_workers
        if any(
            c.create_env_fn is not creators[0].create_env_fn
            or c.create_env_kwargs != creators[0].create_env_kwargs
            for c in creators
        ):
            metas = [c.meta for c in creators]
        super().__init__(num_workers, metas, device, check_actions)
        self._closed = True  # until the workers are up
        zeros = self._shared_zeros
        self._shared_in = zeros(self.full_action_spec, self.full_state_spec)
        self._shared_out = zeros(
            self.full_observation_spec, self.full_reward_spec, self.full_done_spec
        )
        self._shared_reset = zeros(self.full_observation_spec, self.full_done_spec)
        self._current: TensorDictBase | None = None
        self._start(creators, mp_start_method)
        self._closed = False

    @staticmethod
    def _shared_zeros(*specs: Any) -> dict[Any, torch.Tensor]:
        out = {}
        for spec in specs:
            for key, value in _flat(spec.to("cpu").zero()).items():
                out[key] = value.share_memory_()
        return out

    def _start(self, creators: list[EnvCreator], method: str | None) -> None:
        import torch.multiprocessing as mp

        if method is None:
            method = (
                "fork" if "fork" in mp.get_all_start_methods() and os.name == "posix" else "spawn"
            )
        ctx = mp.get_context(method)
        shared = (self._shared_in, self._shared_out, self._shared_reset)
        torch_seeds = torch.randint(0, 2**62, (len(creators),)).tolist()
        for i, creator in enumerate(creators):
            parent_conn, child_conn = ctx.Pipe()
            process = ctx.Process(
                target=_worker,
                args=(i, creator, child_conn, shared, torch_seeds[i]),
                daemon=True,
                name=f"rlblocks-ParallelEnv-worker-{i}",
            )
            process.start()
            child_conn.close()  # so that the worker's death reads as EOF here
            self._processes.append(process)
            self._pids.append(process.pid)
            self._conns.append(parent_conn)
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._conns)
        self._wait(range(self.num_workers), "starting its env")

    # ------------------------------------------------------------------ protocol
    def _fail(self, index: int, what: str, detail: str, worker_traceback: str = "") -> None:
        self._closed = True
        self._finalizer()
        tail = f":\n{worker_traceback.rstrip()}\n" if worker_traceback else ". "
        raise WorkerError(
            f"ParallelEnv worker {index} (pid {self._pids[index]}) {detail} while {what}"
            f"{tail}All workers were shut down; create a new ParallelEnv after fixing the cause."
        )

    def _receive(self, index: int, what: str) -> bytes:
        conn = self._conns[index]
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            process = self._processes[index]
            process.join(1.0)
            self._fail(index, what, _describe_exit(process.exitcode))
        if message[:1] == _ERROR:
            self._fail(index, what, "raised", message[1:].decode())
        return message[1:]

    def _wait(self, indices: Any, what: str) -> list[bytes]:
        return [self._receive(i, what) for i in indices]

    def _send(self, index: int, command: str, arg: Any = None) -> None:
        try:
            self._conns[index].send_bytes(pickle.dumps((command, arg)))
        except (OSError, ValueError):
            self._receive(index, f"sending {command!r}")

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise EnvClosedError(
                f"ParallelEnv.{method}() was called after close() or a worker failure; "
                f"create a new ParallelEnv"
            )

    # ------------------------------------------------------------------ EnvBase API
    def _set_seed(self, seed: int | None) -> None:
        seeds = self._worker_seeds(seed)
        for i, sub_seed in enumerate(seeds):
            self._send(i, "seed", sub_seed)
        for reply in self._wait(range(self.num_workers), "seeding"):
            pickle.loads(reply)

    def _output(self, shared: dict[Any, torch.Tensor]) -> TensorDictBase:
        data = {k: v.clone() for k, v in shared.items()}
        return TensorDict(data, batch_size=self.batch_size, device=self.device)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        self._check_open("reset")
        if kwargs:
            raise TypeError(f"ParallelEnv.reset() takes no keyword arguments, got {kwargs}")
        plan = self._reset_workers(tensordict if self._current is not None else None)
        pending = self._pending_resets(tensordict) if self._current is not None else None
        to_wait = []
        for i, sub in enumerate(plan):
            if sub is SKIP or (pending is not None and pending[i]):
                continue  # not reset, or already reset by its worker after its last step
            mask = None if sub is None else sub.get(RESET).reshape(-1).cpu().numpy()
            self._send(i, "reset", mask)
            to_wait.append(i)
        self._wait(to_wait, "resetting")
        if self._current is None:
            out = self._output(self._shared_reset)
        else:
            # Keep the current values where nothing is reset, take the reset buffer elsewhere.
            mask = torch.zeros((*self.batch_size, 1), dtype=torch.bool)
            if tensordict is not None and tensordict.get(RESET, None) is not None:
                mask = tensordict.get(RESET).reshape(*self.batch_size, 1).cpu()
            else:
                mask.fill_(True)
            data = {}
            for key, buffer in self._shared_reset.items():
                current = self._current.get(key).cpu()
                m = mask.reshape(*mask.shape[:-1], *([1] * (buffer.ndim - mask.ndim + 1)))
                data[key] = torch.where(m, buffer, current)
            out = TensorDict(data, batch_size=self.batch_size, device=self.device)
        self._current = out.copy()
        # The fast rollout starts from a full reset only: the workers' own view of a partial
        # one is not the parent's.
        partial = tensordict is not None and tensordict.get(RESET, None) is not None
        self._last_reset = None if partial else out
        return out

    def _pending_resets(self, tensordict: TensorDictBase | None) -> list[bool] | None:
        """Workers whose masked elements were all reset by the worker after the last step."""
        assert self._current is not None
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        if mask is None:
            return None
        done = self._current.get(DONE).reshape(self.num_workers, -1).cpu()
        wanted = mask.reshape(self.num_workers, -1).cpu()
        return [bool((wanted[i] <= done[i]).all()) for i in range(self.num_workers)]

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._check_open("step")
        for key, buffer in self._shared_in.items():
            value = tensordict.get(key, None)
            if value is not None:
                buffer.copy_(value)
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):  # reported by the receive below
                conn.send_bytes(_STEP)
        self._wait(range(self.num_workers), "stepping")
        data = {k: v.clone() for k, v in self._shared_out.items()}
        if all(isinstance(k, str) for k in data) and self.device.type == "cpu":
            out = new_tensordict(data, self.batch_size, self.device)
        else:
            out = TensorDict(data, batch_size=self.batch_size, device=self.device)
        self._current = out.copy()
        self._last_reset = None
        return out

    def _close(self) -> None:
        self._finalizer()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (for monitoring)."""
        return list(self._pids)

    def fast_rollout(
        self,
        max_steps: int,
        tensordict: TensorDictBase,
        *,
        policy: Policy | None = None,
        break_when_any_done: bool = True,
        episode_limit: int | None = None,
        check: bool = False,
    ) -> TensorDictBase | None:
        # Random actions and no early stop: the workers' envs are independent, so each
        # worker runs its own (fast) rollout and the parent only stacks the results.
        # Only from the output of the last reset: the workers then hold exactly that state.
        if (
            policy is not None
            or break_when_any_done
            or episode_limit is not None
            or tensordict is not self.__dict__.get("_last_reset")
            or set(tensordict.keys(True, True)) - set(self._shared_reset)
        ):
            return None
        self._check_open("rollout")
        for i in range(self.num_workers):
            self._send(i, "rollout", max_steps)
        parts = []
        for i in range(self.num_workers):
            self._receive(i, "running a rollout")
            try:
                parts.append(self._conns[i].recv())
            except (EOFError, OSError):
                self._processes[i].join(1.0)
                self._fail(i, "sending its rollout", _describe_exit(self._processes[i].exitcode))
        out = torch.stack(parts, 0)
        self._current = self._output(self._shared_reset)
        self._last_reset = None
        return out if self.device.type == "cpu" else out.to(self.device)
