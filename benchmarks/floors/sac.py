"""SAC in plain PyTorch: the floor examples/sac.py is timed against in learning.py.

    python benchmarks/floors/sac.py                     # examples/sac.py's defaults

The same flags, defaults and math as examples/sac.py, written the short way (CleanRL's
style): a gymnasium ``SyncVectorEnv``, ``nn.Sequential`` networks, a replay buffer of
preallocated tensors sampled uniformly with replacement. The actor is an MLP giving ``loc``
and a scale through tensordict's ``NormalParamExtractor`` mapping (a softplus shifted to 1
at 0, plus 0.01, at least 1e-4), squashed by tanh into the action bounds (rlblocks'
``TanhNormal``); twin critics with Polyak-averaged targets; a learned temperature
``alpha = exp(log_alpha)`` from 1 towards the entropy ``-action_dims``. Each update sums
the critic, actor and temperature terms of ``SACLoss`` (the critics frozen in the actor
term) and takes one Adam step over every parameter. Uniformly random actions while fewer
than ``learning_starts`` frames were collected before the batch. What it leaves out is
what the example adds beyond the algorithm: the run folder, the CSV log, the checkpoint
and the plot.
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
from _shared import (
    Replay,
    base_parser,
    evaluate,
    final_observations,
    make_vector_env,
    mlp,
    report,
    setup,
)
from torch import nn
from torch.nn import functional as F

# softplus(x + SCALE_BIAS) + 0.01 is 1 at x = 0: tensordict's "biased_softplus_1.0".
SCALE_BIAS = math.log(math.expm1(0.99))
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """examples/sac.py's hyper-parameters (its own and ``add_off_policy_args``'s)."""
    parser = base_parser(__doc__.splitlines()[0], env_id="Pendulum-v1", total_frames=20_000)
    parser.add_argument("--utd", type=float, default=1.0, help="updates per collected frame")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (all terms)")
    parser.add_argument("--loss-function", default="smooth_l1", choices=["l2", "smooth_l1"])
    parser.add_argument("--num-envs", type=int, default=1, help="envs stepped together")
    parser.add_argument("--frames-per-batch", type=int, default=1, help="frames per batch")
    parser.add_argument("--batch-size", type=int, default=256, help="transitions per update")
    parser.add_argument("--buffer-size", type=int, default=100_000, help="replay capacity")
    parser.add_argument("--learning-starts", type=int, default=1000, help="random frames first")
    parser.add_argument("--gamma", type=float, default=0.99, help="discount")
    parser.add_argument("--tau", type=float, default=0.005, help="target network update weight")
    parser.add_argument("--hidden", type=int, default=256, help="cells per hidden layer")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    setup(args)
    envs = make_vector_env(args.env_id, args.num_envs)
    obs_dim, action_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    low = torch.as_tensor(envs.single_action_space.low)
    high = torch.as_tensor(envs.single_action_space.high)
    center, half = (high + low) / 2, (high - low) / 2

    actor = mlp(obs_dim, 2 * action_dim, args.hidden)
    qf1 = mlp(obs_dim + action_dim, 1, args.hidden)
    qf2 = mlp(obs_dim + action_dim, 1, args.hidden)
    qf1_target = copy.deepcopy(qf1).requires_grad_(False)
    qf2_target = copy.deepcopy(qf2).requires_grad_(False)
    qf_params = [*qf1.parameters(), *qf2.parameters()]
    target_params = [*qf1_target.parameters(), *qf2_target.parameters()]
    log_alpha = torch.zeros((), requires_grad=True)  # alpha starts at 1
    target_entropy = -float(action_dim)
    optimizer = torch.optim.Adam([*actor.parameters(), *qf_params, log_alpha], lr=args.lr)
    critic_loss = F.mse_loss if args.loss_function == "l2" else F.smooth_l1_loss

    def policy(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action in the bounds and its log-probability."""
        loc, pre_scale = actor(obs).chunk(2, -1)
        scale = (F.softplus(pre_scale + SCALE_BIAS) + 0.01).clamp_min(1e-4)
        u = loc + scale * torch.randn_like(loc)
        normal = -0.5 * ((u - loc) / scale).square() - scale.log() - HALF_LOG_2PI
        log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))  # log(1 - tanh(u)^2)
        return center + half * torch.tanh(u), (normal - log_det - half.log()).sum(-1)

    def min_q(networks: tuple[nn.Module, nn.Module], obs, action) -> torch.Tensor:
        obs_action = torch.cat([obs, action], -1)
        return torch.minimum(networks[0](obs_action), networks[1](obs_action)).squeeze(-1)

    n = args.num_envs
    rb = Replay(args.buffer_size, obs_dim, torch.zeros(action_dim))

    steps = args.frames_per_batch // n
    n_batches = math.ceil(args.total_frames / args.frames_per_batch)  # as the collector
    frames = 0
    obs_np, _ = envs.reset(seed=args.seed)
    obs = torch.as_tensor(obs_np)
    for _batch in range(n_batches):
        random_phase = frames < args.learning_starts
        for _ in range(steps):
            if random_phase:
                action = low + (high - low) * torch.rand(n, action_dim)
            else:
                with torch.no_grad():
                    action, _ = policy(obs)
            next_np, reward, terminated, truncated, info = envs.step(action.numpy())
            final = final_observations(next_np, terminated | truncated, info)
            rb.add(obs, action, reward, terminated, final)
            obs = torch.as_tensor(next_np)
        frames += steps * n
        if frames < args.learning_starts:
            continue
        for _ in range(max(1, int(args.utd * steps * n))):
            idx = rb.sample_indices(args.batch_size)
            b_obs, b_actions = rb.obs[idx], rb.actions[idx]
            alpha = log_alpha.detach().exp()
            with torch.no_grad():
                next_action, next_log_prob = policy(rb.next_obs[idx])
                next_value = (
                    min_q((qf1_target, qf2_target), rb.next_obs[idx], next_action)
                    - alpha * next_log_prob
                )
                target = rb.rewards[idx] + args.gamma * (1.0 - rb.terminated[idx]) * next_value
            obs_action = torch.cat([b_obs, b_actions], -1)
            qf_loss = sum(critic_loss(qf(obs_action).squeeze(-1), target) for qf in (qf1, qf2))
            action, log_prob = policy(b_obs)
            for p in qf_params:  # the actor term reads the critics, it does not train them
                p.requires_grad_(False)
            actor_loss = (alpha * log_prob - min_q((qf1, qf2), b_obs, action)).mean()
            for p in qf_params:
                p.requires_grad_(True)
            alpha_loss = -(log_alpha * (log_prob + target_entropy).detach()).mean()
            optimizer.zero_grad()
            (qf_loss + actor_loss + alpha_loss).backward()
            optimizer.step()
            with torch.no_grad():
                torch._foreach_lerp_(target_params, qf_params, args.tau)
    envs.close()

    def act(observation):
        loc, _ = actor(torch.as_tensor(observation)).chunk(2, -1)
        return (center + half * torch.tanh(loc)).numpy()

    report(frames, evaluate(act, args.env_id, args.eval_episodes, args.seed), args.eval_episodes)


if __name__ == "__main__":
    main()
