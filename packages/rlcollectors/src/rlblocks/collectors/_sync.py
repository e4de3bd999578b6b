"""``SyncDataCollector``: collect batches from one (batched) env in the calling process.

The hot loop is ``policy -> env.step_and_maybe_reset`` once per time step, keeping a
reference to each step's TensorDict; the batch is built once at the end with a single
``torch.stack`` (one copy per leaf for the whole batch, not one per step), then trajectory
ids are computed for the whole batch at once. No per-step validation runs after the first
step of the collector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn

from rlblocks.collectors._base import (
    DataCollectorBase,
    EnvFactory,
    check_device,
    check_traj_limit,
    make_env,
)
from rlblocks.collectors._policy import (
    CompiledPolicy,
    as_weights,
    check_compile_policy,
    check_policy,
    fast_policy_call,
    place_policy,
    policy_weights,
)
from rlblocks.collectors._trajectories import TRAJ_IDS, TrajectoryIds
from rlblocks.collectors.errors import CollectorConfigError, CollectorError
from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.envs import EnvBase, StepCounter, TransformedEnv

__all__ = ["SyncDataCollector", "env_chain", "env_resumable"]

# An env's numpy loop (``fast_rollout``) sets up buffers, a trajectory writer and the
# batch's TensorDict per call (~0.3 ms), and saves a few tens of microseconds per step
# over the step loop. A batch of fewer steps per env than this has too few steps to pay
# the setup back (Pendulum-v1, one env, a TanhNormal MLP policy: per frame, 473 us
# numpy loop vs 275 us step loop at 1 step a batch, on par at 8, 139 vs 159 at 16).
MIN_NUMPY_LOOP_STEPS = 8


def env_chain(env: EnvBase) -> list[EnvBase]:
    """``env`` and the envs it wraps, outermost first (a chain of ``TransformedEnv``)."""
    chain = [env]
    while isinstance(chain[-1], TransformedEnv):
        chain.append(chain[-1].base_env)
    return chain


def env_resumable(env: EnvBase) -> bool:
    """Whether the innermost env can save and restore its state (``state_dict`` protocol).

    ``TransformedEnv.state_dict`` holds only its transforms, so it does not count.
    """
    base = env_chain(env)[-1]
    return callable(getattr(base, "state_dict", None)) and callable(
        getattr(base, "load_state_dict", None)
    )


def _storage_ptr(value: torch.Tensor) -> int:
    return value.untyped_storage().data_ptr()


def _reuses_buffers(steps: list[TensorDictBase]) -> bool:
    """Whether an entry of two different steps lives in the same memory (a reused buffer)."""
    for key in steps[0].keys(include_nested=True, leaves_only=True):
        seen: set[int] = set()
        for step in steps:
            value = step.get(key)
            if not isinstance(value, torch.Tensor) or value.numel() == 0:
                continue
            ptr = _storage_ptr(value)
            if ptr in seen:
                return True
            seen.add(ptr)
    return False


class SyncDataCollector(DataCollectorBase):
    """Collect batches of transitions from one (batched) environment in this process.

    Iterating yields TensorDicts of ``frames_per_batch`` frames, shaped ``[*env.batch_size,
    T]`` with ``T = frames_per_batch / env.batch_size.numel()``, holding what the env and
    the policy wrote at each step (root entries, and the transition under ``"next"``) plus
    ``("collector", "traj_ids")``: the id of the trajectory each frame belongs to, unique over
    the collector's life. Episodes run across batches: the env is not reset between
    batches unless ``reset_at_each_iter``.

    Args:
        create_env_fn: A callable returning an rlblocks env, or an env. An env created by
            the collector is closed by :meth:`shutdown`; one passed in is left open.
        policy: A callable ``TensorDict -> TensorDict`` writing the action (typically a
            ``tensordict.nn.TensorDictModule``); ``None`` takes uniformly random actions
            from the env's action spec.
        frames_per_batch: Frames per batch; a multiple of the env's number of sub-envs.
        total_frames: Stop after this many frames (rounded up to whole batches); ``-1``
            runs forever.
        max_frames_per_traj: Truncate episodes after this many steps (adds a
            ``StepCounter``, whose ``"step_count"`` entry appears in the batches);
            ``None`` or ``-1`` (TorchRL's spelling) set no limit.
        init_random_frames: Take random actions until this many frames were collected
            (the policy still runs, so its other outputs are recorded and every batch has
            the same entries).
        reset_at_each_iter: Reset the env at the start of every batch.
        split_trajs: Yield ``[num_trajectories, max_length]`` batches, zero-padded, with
            ``("collector", "mask")`` marking real frames.
        postproc: Applied to each batch (after splitting) before it is yielded.
        exploration_type: Exploration mode the policy runs under (``RANDOM`` by default:
            stochastic policies sample).
        device: Device the policy runs on. Inputs are moved there and actions back to the
            env's device; a policy whose weights live elsewhere is copied there (see
            :meth:`update_policy_weights_`). ``None``: the env's device, no copy.
        storing_device: Device of the yielded batches (default: ``device``, else the env's).
        replay_buffer: If given, batches are written to it with ``extend`` (one element
            per frame, or per trajectory with ``split_trajs``) and iteration yields
            ``None``.
        compile_policy: Call the policy through ``torch.compile``: ``True`` for its
            defaults, or a dict of its keyword arguments (``{"mode": "reduce-overhead"}``,
            ``{"backend": "aot_eager"}``...). Compiling happens at the first step; if it
            fails, the policy runs eager after one ``UserWarning``. On CPU a small MLP policy
            gains little (DQN's CartPole policy, MLP 256x256: 47 -> 46 us a step) for about
            2 s of compiling; it pays for larger networks and on GPU. A stochastic policy
            compiled with inductor draws other random numbers than eager (same
            distribution).

    Raises:
        CollectorConfigError: An argument is invalid; the message names the fix.

    Example:
        >>> collector = SyncDataCollector(
        ...     lambda: GymEnv("CartPole-v1", num_envs=8), policy,
        ...     frames_per_batch=1024, total_frames=100_000,
        ... )
        >>> for batch in collector:
        ...     batch.batch_size  # torch.Size([8, 128])
        ...     collector.update_policy_weights_()
        >>> collector.shutdown()
    """

    def __init__(
        self,
        create_env_fn: EnvFactory | EnvBase,
        policy: Callable[[TensorDictBase], TensorDictBase] | None = None,
        *,
        frames_per_batch: int,
        total_frames: int = -1,
        max_frames_per_traj: int | None = None,
        init_random_frames: int = 0,
        reset_at_each_iter: bool = False,
        split_trajs: bool = False,
        postproc: Callable[[TensorDictBase], TensorDictBase] | None = None,
        exploration_type: ExplorationType = ExplorationType.RANDOM,
        device: Any = None,
        storing_device: Any = None,
        replay_buffer: Any = None,
        compile_policy: bool | Mapping[str, Any] = False,
    ) -> None:
        owner = type(self).__name__
        compile_options = check_compile_policy(owner, compile_policy)
        super().__init__(
            frames_per_batch=frames_per_batch,
            total_frames=total_frames,
            init_random_frames=init_random_frames,
            split_trajs=split_trajs,
            postproc=postproc,
            exploration_type=exploration_type,
            replay_buffer=replay_buffer,
        )
        check_policy(owner, policy)
        max_frames_per_traj = check_traj_limit(owner, max_frames_per_traj)
        storing_device = check_device(owner, "storing_device", storing_device)
        env, self._owns_env = make_env(owner, create_env_fn)
        try:
            self.device = check_device(owner, "device", device)
            n_envs = max(1, env.batch_size.numel())
            if frames_per_batch % n_envs:
                low = frames_per_batch // n_envs * n_envs
                raise CollectorConfigError(
                    f"{owner}: frames_per_batch={frames_per_batch} is not a multiple of the "
                    f"env's {n_envs} sub-envs (batch_size={list(env.batch_size)}). Fix: use "
                    f"frames_per_batch={low or n_envs} or {low + n_envs}."
                )
        except BaseException:
            if self._owns_env:
                env.close()
            raise
        if max_frames_per_traj is not None:
            env = TransformedEnv(env, StepCounter(max_steps=max_frames_per_traj))
        self.env = env
        self.max_frames_per_traj = max_frames_per_traj
        self.reset_at_each_iter = bool(reset_at_each_iter)
        self.steps_per_batch = frames_per_batch // n_envs
        self.storing_device = storing_device or self.device or env.device
        self._move_for_policy = self.device is not None and self.device != env.device
        self.policy, self._source_policy = place_policy(policy, self.device)
        self._policy_call = fast_policy_call(self.policy) if self.policy is not None else None
        if self._policy_call is not None and compile_options is not None:
            self._policy_call = CompiledPolicy(self._policy_call, compile_options, owner)
        self._traj = TrajectoryIds(env.batch_size, self.storing_device)
        self._carry: TensorDictBase | None = None  # the input of the next step
        self._checked = False  # the first step validates the policy's action
        self._copy_steps: bool | None = None  # decided on the first batch

    # ------------------------------------------------------------------ collection
    def _collect(self) -> TensorDictBase:
        return self._collect_batch(random=self._random_phase())

    def _collect_batch(self, random: bool) -> TensorDictBase:
        """One raw batch (with trajectory ids); ``random`` takes random actions."""
        batch = self._rollout(random)
        if self._copy_steps is None:
            self._copy_steps = False
        return batch

    def _rollout(self, random: bool) -> TensorDictBase:
        env = self.env
        td = self._carry
        if td is None or self.reset_at_each_iter:
            td = env.reset()
            self._traj.new_episodes()
        batch = self._fast_rollout(td, random)
        if batch is None:
            batch = self._step_loop(td, random)
        if batch.device != self.storing_device:
            batch = batch.to(self.storing_device)
        batch.set(TRAJ_IDS, self._traj.assign(batch))
        return batch

    def _fast_rollout(self, td: TensorDictBase, random: bool) -> TensorDictBase | None:
        """The batch from the env's own fast loop (e.g. numpy over gymnasium), if it has one
        for this policy; ``None`` otherwise. Not before the policy's first action was
        validated by the step loop, nor for batches too short to pay for its setup."""
        policy = self._policy_call
        if self.steps_per_batch < MIN_NUMPY_LOOP_STEPS:
            return None
        if policy is not None and (random or self._move_for_policy or not self._checked):
            return None
        env = self.env
        with torch.no_grad(), set_exploration_type(self.exploration_type):
            batch = env.fast_rollout(
                self.steps_per_batch, td, policy=policy, break_when_any_done=False
            )
            if batch is None:
                return None
            # The next batch starts where this one ended, as step_and_maybe_reset leaves it.
            last = batch[(slice(None),) * len(env.batch_size) + (-1,)]
            self._carry = env.maybe_reset(env.step_mdp(last))
        return batch

    def _step_loop(self, td: TensorDictBase, random: bool) -> TensorDictBase:
        """The batch from ``policy -> env.step_and_maybe_reset``, one step at a time."""
        env = self.env
        # Random actions overwrite the policy's where it runs too: its other outputs are
        # still recorded, so random-phase batches have the same entries as later ones.
        policy = self._policy_call
        act = env.rand_action if random or policy is None else None
        step = env.step_and_maybe_reset
        copy_steps = self._copy_steps
        steps: list[TensorDictBase] = []
        append = steps.append
        move = self._move_for_policy
        env_device, policy_device = env.device, self.device
        with torch.no_grad(), set_exploration_type(self.exploration_type):
            for _ in range(self.steps_per_batch):
                if policy is not None:
                    td = policy(td.to(policy_device)).to(env_device) if move else policy(td)
                if act is not None:
                    td = act(td)
                if self._checked or act is not None:
                    transition, td = step(td, check=False)
                else:  # the policy's first action is validated against the spec
                    transition, td = step(td, check=True)
                    self._checked = True
                append(transition.clone() if copy_steps else transition)
        if copy_steps is None and _reuses_buffers(steps):
            # The env hands out the same memory at every step, so the references kept
            # above were overwritten: collect this batch again from a reset (so no
            # trajectory spans the discarded steps), copying each step from now on.
            self._copy_steps = True
            self._carry = None
            self._traj.new_episodes()
            return self._step_loop(env.reset(), random)
        self._carry = td
        return self._stack(steps)

    def _stack(self, steps: list[TensorDictBase]) -> TensorDictBase:
        try:
            return torch.stack(steps, dim=len(self.env.batch_size))
        except RuntimeError as err:
            first = set(steps[0].keys(True, True))
            odd = next((i for i, s in enumerate(steps) if set(s.keys(True, True)) != first), None)
            if odd is None:
                raise
            diff = sorted(map(str, first ^ set(steps[odd].keys(True, True))))
            raise CollectorError(
                f"{type(self).__name__}: step {odd} of the batch has other entries than step "
                f"0 (differing: {diff}). The env and the policy must write the same keys at "
                f"every step, after resets too."
            ) from err

    # ------------------------------------------------------------------ control
    def set_seed(self, seed: int) -> int:
        """Seed the env; the next batch starts from a fresh (seeded) reset.

        Args:
            seed: The seed.

        Returns:
            The next seed not used by this env (to seed another one without overlap).
        """
        self._check_open("set_seed")
        next_seed = self.env.set_seed(seed)
        self._carry = None
        return seed + 1 if next_seed is None else next_seed

    def update_policy_weights_(
        self, weights: Mapping[str, Any] | TensorDictBase | None = None
    ) -> None:
        """Bring the policy the collector runs up to date.

        Without ``weights`` this copies the user's policy into the collector's copy (made
        when ``device`` differs from where the policy lives); when the collector runs the
        user's policy itself, it is already up to date and nothing happens.

        Args:
            weights: Parameters and buffers to load instead (a TensorDict as from
                ``TensorDict.from_module(policy)``, or a ``state_dict``).
        """
        self._check_open("update_policy_weights_")
        target = policy_weights(self.policy)
        if target is None:
            return
        if weights is not None:
            source = as_weights(weights)
        elif self._source_policy is not None:
            source = policy_weights(self._source_policy)
        else:
            return
        target.update_(source)

    def _shutdown(self) -> None:
        self._carry = None
        if self._owns_env:
            self.env.close()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The collector's state: counters, trajectory ids, policy, env and current step.

        The env's step in progress (the observation the next action will be taken from) is
        included when the innermost env can save its own state (it has ``state_dict`` and
        ``load_state_dict``, like an env keeping its whole state in its TensorDicts); then
        :meth:`load_state_dict` continues the same episodes. Otherwise a restored collector
        starts new episodes with a reset, and only counters, trajectory numbering, the
        policy and the transforms' state carry over.
        """
        envs = [
            e.state_dict() if callable(getattr(e, "state_dict", None)) else None
            for e in env_chain(self.env)
        ]
        carry = self._carry if env_resumable(self.env) else None
        policy = self._source_policy if self._source_policy is not None else self.policy
        return {
            **self._base_state(),
            "traj": self._traj.state_dict(),
            "envs": envs,
            "carry": None if carry is None else carry.to_dict(),
            "policy": policy.state_dict() if isinstance(policy, nn.Module) else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (same env type and policy structure)."""
        self._check_open("load_state_dict")
        self._load_base_state(state_dict)
        self._traj.load_state_dict(state_dict["traj"])
        for env, env_state in zip(env_chain(self.env), state_dict["envs"]):
            if env_state is not None:
                env.load_state_dict(env_state)
        if state_dict["policy"] is not None:
            policy = self._source_policy if self._source_policy is not None else self.policy
            policy.load_state_dict(state_dict["policy"])
            self.update_policy_weights_()
        carry = state_dict["carry"]
        if carry is not None and env_resumable(self.env):
            env = self.env
            self._carry = TensorDict(carry, batch_size=env.batch_size, device=env.device)
        else:
            self._carry = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(env={self.env!r}, frames_per_batch={self.frames_per_batch}, "
            f"total_frames={self.total_frames}, frames={self._frames})"
        )
