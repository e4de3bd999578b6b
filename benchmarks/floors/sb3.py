"""Stable-Baselines3 configured from an example's flags: the reference side of learning.py.

    python benchmarks/floors/sb3.py ppo --num-envs 8 --num-steps 32 --minibatch-size 256 \\
        --lr 1e-3 --anneal-clip

Takes the algorithm, then the flags of ``examples/<algo>.py`` (parsed by the floor's own
parser, so the defaults are the example's too) and translates them into SB3's arguments;
a flag SB3 cannot honour (a setting its algorithm has no knob for) is an error, not a
silent approximation. Prints the SB3 call it made, the frames it trained and the final
return under the examples' evaluation protocol (``_shared.evaluate``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from _shared import evaluate, report, setup


class NotExpressible(SystemExit):
    """A flag asks for something SB3's algorithm cannot do."""

    def __init__(self, algo: str, problem: str) -> None:
        super().__init__(f"sb3.py {algo}: {problem}; SB3 cannot run this setting")


def linear(start: float):
    """SB3's schedule for a value annealed linearly to 0 (rl-zoo's ``lin_<start>``)."""
    return lambda progress_remaining: start * progress_remaining


def ppo(args: argparse.Namespace) -> tuple[Any, dict[str, Any], int]:
    """PPO, its arguments and the frames to train (whole batches, as the example)."""
    from stable_baselines3 import PPO

    batch = args.num_envs * args.num_steps
    kwargs = {
        "n_steps": args.num_steps,
        "batch_size": args.minibatch_size,
        "n_epochs": args.update_epochs,
        "learning_rate": linear(args.lr),
        "gamma": args.gamma,
        "gae_lambda": args.gae_lambda,
        "clip_range": linear(args.clip_coef) if args.anneal_clip else args.clip_coef,
        "ent_coef": args.ent_coef,
        "vf_coef": args.vf_coef,
        "max_grad_norm": args.max_grad_norm,
        "normalize_advantage": True,
        "policy_kwargs": {"net_arch": {"pi": [args.hidden] * 2, "vf": [args.hidden] * 2}},
    }
    return PPO, kwargs, max(1, args.total_frames // batch) * batch


def dqn(args: argparse.Namespace) -> tuple[Any, dict[str, Any], int]:
    """DQN (SB3's loss is the Huber loss; its target copies count frames)."""
    from stable_baselines3 import DQN

    if args.loss_function != "smooth_l1":
        raise NotExpressible("dqn", "SB3's DQN loss is smooth_l1 (--loss-function smooth_l1)")
    if args.target_update_frames is None:
        raise NotExpressible(
            "dqn", "SB3 copies the target every N frames: give --target-update-frames"
        )
    if args.double_dqn:
        raise NotExpressible("dqn", "SB3's DQN has no double-DQN target")
    kwargs = {
        "train_freq": args.frames_per_batch // args.num_envs,
        "gradient_steps": args.gradient_steps,
        "batch_size": args.batch_size,
        "buffer_size": args.buffer_size,
        "learning_starts": args.learning_starts,
        "learning_rate": args.lr,
        "gamma": args.gamma,
        "target_update_interval": args.target_update_frames,
        "exploration_initial_eps": 1.0,
        "exploration_final_eps": args.eps_end,
        "exploration_fraction": args.exploration_fraction,
        # No --max-grad-norm in the example means no clipping: an infinite bound.
        "max_grad_norm": float("inf") if args.max_grad_norm is None else args.max_grad_norm,
        "policy_kwargs": {"net_arch": [args.hidden] * 2},
    }
    return DQN, kwargs, args.total_frames


def sac(args: argparse.Namespace) -> tuple[Any, dict[str, Any], int]:
    """SAC (SB3's critic loss is the squared error)."""
    from stable_baselines3 import SAC

    if args.loss_function != "l2":
        raise NotExpressible("sac", "SB3's SAC critic loss is l2 (--loss-function l2)")
    steps = args.frames_per_batch // args.num_envs
    kwargs = {
        "train_freq": steps,
        "gradient_steps": max(1, int(args.utd * args.frames_per_batch)),
        "batch_size": args.batch_size,
        "buffer_size": args.buffer_size,
        "learning_starts": args.learning_starts,
        "learning_rate": args.lr,
        "gamma": args.gamma,
        "tau": args.tau,
        "ent_coef": "auto_1.0",  # learned, from 1 (the example's alpha_init)
        "target_entropy": "auto",  # -action dims
        "policy_kwargs": {"net_arch": [args.hidden] * 2},
    }
    return SAC, kwargs, args.total_frames


ALGOS = {"ppo": ppo, "dqn": dqn, "sac": sac}


def describe(name: str, n_envs: int, kwargs: dict[str, Any]) -> str:
    """One line naming every argument given to SB3 (schedules by what they do)."""
    shown = {"n_envs": n_envs}
    for key, value in kwargs.items():
        shown[key] = f"linear({value(1.0):g} -> 0)" if callable(value) else value
    return f"{name}('MlpPolicy', " + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ALGOS:
        raise SystemExit(f"usage: sb3.py {{{','.join(ALGOS)}}} [example flags]")
    algo = sys.argv[1]
    parse_args = importlib.import_module(algo).parse_args  # the floor's: the example's flags
    args = parse_args(sys.argv[2:])
    setup(args)
    from stable_baselines3.common.env_util import make_vec_env

    algo_class, kwargs, frames = ALGOS[algo](args)
    print("SB3 call:", describe(algo_class.__name__, args.num_envs, kwargs))
    env = make_vec_env(args.env_id, n_envs=args.num_envs, seed=args.seed)
    model = algo_class("MlpPolicy", env, seed=args.seed, device="cpu", verbose=0, **kwargs)
    model.learn(total_timesteps=frames)
    env.close()

    def act(observation):
        return model.predict(observation, deterministic=True)[0]

    eval_return = evaluate(act, args.env_id, args.eval_episodes, args.seed)
    report(model.num_timesteps, eval_return, args.eval_episodes)


if __name__ == "__main__":
    main()
