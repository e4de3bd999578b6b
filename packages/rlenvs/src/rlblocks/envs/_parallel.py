"""``ParallelEnv``: sub-envs in worker processes, exchanging data through shared memory.

Each step, the parent copies the actions into a shared-memory TensorDict and writes one
byte to every worker's pipe; each worker steps its env (through the env's steppers when it
has them: numpy views of the shared memory, no TensorDict), writes the results into its
rows of the shared output and answers one byte. One raw byte each way is all a step costs
in system calls; other commands follow a command byte as framed messages. A worker whose
episode ended resets its env right away and leaves the new first observation in a shared
reset buffer, so the partial reset that follows costs no round trip.

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
import socket
import struct
import traceback
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core import DONE, NEXT, RESET, REWARD, TERMINATED, TRUNCATED
from rlblocks.core.fast_td import fast_get, new_tensordict
from rlblocks.core.utils import check_timeout, stop_processes
from rlblocks.envs._batched import BatchedEnvBase, EnvCreator, env_factories
from rlblocks.envs._env_base import Policy
from rlblocks.envs._numpy_rollout import StepperRows
from rlblocks.envs.errors import EnvClosedError, WorkerError

__all__ = ["ParallelEnv"]

# One byte opens every message: a step, or a command / reply whose body follows framed.
_STEP = b"s"
_COMMAND = b"c"
_OK = b"k"
_PAYLOAD = b"p"
_ERROR = b"E"
# Total time ``close`` may take: a polite "close", then terminate, then kill.
_JOIN_S, _TERMINATE_S, _KILL_S = 2.0, 1.0, 1.0


def _flat(td: TensorDictBase) -> dict[Any, torch.Tensor]:
    return dict(td.items(include_nested=True, leaves_only=True))


def _row_views(
    rows: dict[Any, torch.Tensor], batch: torch.Size, flat_keys: set[Any]
) -> dict[Any, np.ndarray]:
    """Numpy views of a worker's rows in shared memory, with the env's batch flattened:
    ``[rows, *leaf]``, or ``[rows]`` for the ``[*batch, 1]`` reward and flags."""
    n = max(1, batch.numel())
    out = {}
    for key, tensor in rows.items():
        leaf = tensor.shape[len(batch) :]
        out[key] = (
            tensor.numpy().reshape(n) if key in flat_keys else tensor.numpy().reshape(n, *leaf)
        )
    return out


def _worker(
    index: int,
    creator: EnvCreator,
    conn: Any,
    shared: tuple[dict[Any, torch.Tensor], ...],
    torch_seed: int,
    inherited_fds: tuple[int, ...] = (),
) -> None:
    """Worker loop: create the env, then serve commands until "close" or a closed pipe.

    An env with steppers (and no state entries) is stepped through them, on numpy views of
    the shared memory: no TensorDict per step. Otherwise each step goes through
    ``env.step``. Either way an episode that ends is restarted right away, its first
    observation left in the shared reset buffer, so the parent's partial reset that follows
    costs no round trip.
    """
    # A forked worker holds copies of the parent's ends of the pipes: while it does, the
    # parent's death would not close them and the worker would wait forever. Without them,
    # the death reads as end-of-file below and the worker leaves.
    for fd in inherited_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    torch.set_num_threads(1)
    # Forked workers inherit the parent's generator: give each its own random actions.
    torch.manual_seed(torch_seed)
    shared_in, shared_out, shared_reset = shared
    try:
        env = creator()
    except BaseException:
        _reply(conn, _ERROR, traceback.format_exc().encode())
        return
    batch = env.batch_size
    rows_in = {k: t[index] for k, t in shared_in.items()}
    rows_out = {k: t[index] for k, t in shared_out.items()}
    rows_reset = {k: t[index] for k, t in shared_reset.items()}
    current: TensorDictBase | None = None
    stepper_rows = None
    steppers = env.steppers() if env.device.type == "cpu" and not env.state_keys else None
    if steppers is not None:
        flat = {REWARD, DONE, TERMINATED, TRUNCATED}
        candidate = StepperRows(
            env, steppers, _row_views(rows_in, batch, flat), _row_views(rows_out, batch, flat)
        )
        if candidate.usable:
            stepper_rows = candidate
            obs_keys = set(env.observation_keys)
            reset_views = {
                k: v for k, v in _row_views(rows_reset, batch, flat).items() if k in obs_keys
            }

    flat = all(isinstance(k, str) for k in (*rows_in, *rows_out))  # the fast accessors apply
    on_cpu = env.device.type == "cpu"

    def write(rows: dict[Any, torch.Tensor], td: TensorDictBase) -> None:
        for key, row in rows.items():
            row.copy_(fast_get(td, key) if flat else td.get(key))

    def reset(mask: np.ndarray | None) -> None:
        """Start new episodes (in the elements of ``mask``); results in the reset buffer."""
        nonlocal current
        if mask is not None and batch and stepper_rows is not None:
            stepper_rows.reset(mask, reset_views)
            current = None  # not kept in this mode; the parent holds the other rows
            return
        if mask is None or current is None or not batch:
            out = env.reset()  # a whole reset: pending seeds apply
        else:
            sub = current.copy()
            sub.set(RESET, torch.as_tensor(mask, device=env.device).reshape(*batch, 1))
            out = env.reset(sub)
        write(rows_reset, out)
        current = out

    fd = conn.fileno()
    os.write(fd, _OK)
    while True:
        try:
            kind = os.read(fd, 1)
            message = conn.recv_bytes() if kind == _COMMAND else None
        except (EOFError, OSError):
            break  # the parent is gone
        if not kind:
            break  # the parent is gone
        try:
            if kind == _STEP:
                if stepper_rows is not None:
                    done = stepper_rows.step()
                    if done.any():
                        reset(done.copy())
                    os.write(fd, _OK)
                    continue
                inputs = {k: v.clone() for k, v in rows_in.items()}
                if flat and on_cpu:
                    td = new_tensordict(inputs, batch, env.device)
                else:
                    td = TensorDict(inputs, batch_size=batch).to(env.device)
                next_td = fast_get(env.step(td, check=False), NEXT)
                write(rows_out, next_td)
                current = next_td
                done = fast_get(next_td, DONE)
                if env.any_done(done):
                    reset(done.reshape(-1).cpu().numpy() if batch else None)
                os.write(fd, _OK)
                continue
            command, arg = pickle.loads(message)
            if command == "reset":
                reset(arg)
                os.write(fd, _OK)
            elif command == "seed":
                if arg is not None:
                    torch.manual_seed(arg)
                _reply(conn, _PAYLOAD, pickle.dumps(env.set_seed(arg)))
            elif command == "rollout":
                # The parent asks only right after a full reset: ``current`` is its output.
                assert current is not None
                out = env.rollout(
                    arg, auto_reset=False, break_when_any_done=False, tensordict=current
                )
                # The env may have ended an episode on the last step: restart it as a step would.
                current = env.step_mdp(out[..., -1])
                write(rows_reset, current)
                done = current.get(DONE)
                if bool(done.any()):
                    reset(done.reshape(-1).cpu().numpy() if batch else None)
                _reply(conn, _PAYLOAD, pickle.dumps(out.to("cpu")))
            elif command == "close":
                env.close()
                os.write(fd, _OK)
                break
            else:  # pragma: no cover - internal protocol
                raise RuntimeError(f"unknown command {command!r}")
        except BaseException:
            _reply(conn, _ERROR, traceback.format_exc().encode())
    conn.close()


def _reply(conn: Any, kind: bytes, body: bytes) -> None:
    """A reply byte, then its body as a framed message."""
    os.write(conn.fileno(), kind)
    conn.send_bytes(body)


def _command(conn: Any, command: str, arg: Any) -> None:
    """The command byte, then the pickled command as a framed message."""
    os.write(conn.fileno(), _COMMAND)
    conn.send_bytes(pickle.dumps((command, arg)))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is not responding"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


#: Default of ``ParallelEnv(timeout=)``: generous (an env's creation may load a simulator),
#: but finite, so a stuck worker surfaces as an error instead of a hang.
DEFAULT_TIMEOUT_S = 120.0


def _set_receive_timeout(conn: Any, timeout: float | None) -> None:
    """Make reads of ``conn`` fail after ``timeout`` s of silence (the pipe is a socket
    pair): no extra system call per message, unlike a ``select`` before each read."""
    if timeout is None:
        return
    seconds = int(timeout)
    micro = int((timeout - seconds) * 1e6)
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:  # the dup shares the socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, micro))


def _send_close(conn: Any) -> None:
    _command(conn, "close", None)


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
        timeout: Seconds to wait for any worker's answer (to a step, a reset, a whole
            worker rollout, its env's creation) before giving up on it; ``None`` waits
            forever.

    Raises:
        WorkerError: A worker failed to create its env, raised, died or stayed silent
            for ``timeout`` seconds (now or later); the message holds the worker's
            traceback or exit status. All workers are then shut down.

    Workers exit when the parent process dies, even if it is killed. A call interrupted in
    the parent (``KeyboardInterrupt``) leaves the env usable: the next call first collects
    the interrupted answers, so it never returns an earlier step's results.

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
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        creators = env_factories(num_workers, create_env_fn, create_env_kwargs, "ParallelEnv")
        self.timeout = check_timeout(timeout, "timeout", "ParallelEnv")
        # Workers whose reply to the last message is not read yet: a step interrupted in
        # the parent (Ctrl-C in a notebook) leaves them, and the next call reads them first.
        self._unread: set[int] = set()
        self._processes: list[Any] = []
        self._pids: list[int] = []
        self._conns: list[Any] = []
        self._fds: list[int] = []  # the pipes' file descriptors, for the one-byte step messages
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
        # The current root values of the keys a reset returns (merged by partial resets).
        self._current: dict[Any, torch.Tensor] | None = None
        self._flat_cpu_out = self.device.type == "cpu" and all(
            isinstance(k, str) for k in self._shared_out
        )
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
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._conns)
        for i, creator in enumerate(creators):
            parent_conn, child_conn = ctx.Pipe()
            _set_receive_timeout(parent_conn, self.timeout)
            # With fork the child inherits every parent end made so far, its own included.
            inherited = (*self._fds, parent_conn.fileno()) if method == "fork" else ()
            process = ctx.Process(
                target=_worker,
                args=(i, creator, child_conn, shared, torch_seeds[i], inherited),
                daemon=True,
                name=f"rlblocks-ParallelEnv-worker-{i}",
            )
            process.start()
            child_conn.close()  # so that the worker's death reads as EOF here
            self._processes.append(process)
            self._pids.append(process.pid)
            self._conns.append(parent_conn)
            self._fds.append(parent_conn.fileno())
            self._unread.add(i)  # its "ready"
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
        """Worker ``index``'s reply: ``b""`` for OK, the body of a reply with one."""
        conn = self._conns[index]
        try:
            kind = os.read(self._fds[index], 1)
        except BlockingIOError:  # the receive timeout of the pipe ran out
            self._fail(index, what, f"sent nothing for {self.timeout:g} s (is it stuck?)")
        except (EOFError, OSError, ValueError):
            kind = b""
        if kind in (_PAYLOAD, _ERROR):
            try:
                body = conn.recv_bytes()
            except BaseException:
                # Half a message read (an interrupt, a worker dying mid-reply): the pipe
                # can no longer be trusted.
                self._closed = True
                self._finalizer()
                raise
        else:
            body = b""
        if not kind:  # the worker's end of the pipe closed: it died
            process = self._processes[index]
            process.join(1.0)
            self._fail(index, what, _describe_exit(process.exitcode))
        self._unread.discard(index)
        if kind == _ERROR:
            self._fail(index, what, "raised", body.decode())
        return body

    def _read_unread(self) -> None:
        """Collect the answers a call interrupted in the parent left unread (every call
        that talks to the workers starts with this)."""
        for index in sorted(self._unread):
            self._receive(index, "finishing a call that was interrupted")

    def _wait(self, indices: Any, what: str) -> list[bytes]:
        return [self._receive(i, what) for i in indices]

    def _send(self, index: int, command: str, arg: Any = None) -> None:
        try:
            _command(self._conns[index], command, arg)
            self._unread.add(index)
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
        if self._unread:
            self._read_unread()
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
        if self._unread:
            self._read_unread()
        mask = tensordict.get(RESET, None) if tensordict is not None else None
        workers = self.num_workers
        if mask is None or self._current is None:
            for i in range(workers):
                self._send(i, "reset", None)
            self._wait(range(workers), "resetting")
            out = self._output(self._shared_reset)
        else:
            wanted = mask.reshape(workers, -1).cpu()
            # Each worker restarted the episodes that ended at its last step (their done
            # flags are still set here): only the other masked elements need a message.
            restarted = self._current[DONE].reshape(workers, -1).cpu()
            extra = wanted & ~restarted
            todo = extra.any(1).nonzero().flatten().tolist()
            for i in todo:
                self._send(i, "reset", extra[i].numpy() if self.sub_batch_size else None)
            self._wait(todo, "resetting")
            # The reset buffer where masked, the current values elsewhere.
            wanted = wanted.reshape(*self.batch_size, 1)
            data = {}
            for key, buffer in self._shared_reset.items():
                current = self._current[key].cpu()
                where = wanted.reshape(*self.batch_size, *([1] * (buffer.ndim - wanted.ndim + 1)))
                data[key] = torch.where(where, buffer, current)
            out = TensorDict(data, batch_size=self.batch_size, device=self.device)
        self._current = {key: out.get(key) for key in self._shared_reset}
        # The fast rollout starts from a full reset only: the workers' own view of a partial
        # one is not the parent's.
        self._last_reset = None if mask is not None else out
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        # (EnvBase.step checked that the env is open.)
        for key, buffer in self._shared_in.items():
            value = tensordict.get(key, None)
            if value is not None:
                buffer.copy_(value)
        if self._unread:
            self._read_unread()
        unread = self._unread
        for index, fd in enumerate(self._fds):
            with contextlib.suppress(OSError):  # reported by the receive below
                os.write(fd, _STEP)
                unread.add(index)
        for i in range(self.num_workers):
            self._receive(i, "stepping")
        data = {k: v.clone() for k, v in self._shared_out.items()}
        # What the next partial reset merges with (the same tensors as the output's).
        self._current = data
        self._last_reset = None
        if self._flat_cpu_out:
            return new_tensordict(dict(data), self.batch_size, self.device)
        return TensorDict(data, batch_size=self.batch_size, device=self.device)

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
        if self._unread:
            self._read_unread()
        for i in range(self.num_workers):
            self._send(i, "rollout", max_steps)
        parts = []
        for i in range(self.num_workers):
            parts.append(pickle.loads(self._receive(i, "running a rollout")))
        out = torch.stack(parts, 0)
        self._current = {k: v.clone() for k, v in self._shared_reset.items()}
        self._last_reset = None
        return out if self.device.type == "cpu" else out.to(self.device)
