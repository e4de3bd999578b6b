"""DQN in plain PyTorch: the floor examples/dqn.py is timed against in learning.py.

    python benchmarks/floors/dqn.py                     # examples/dqn.py's defaults

The same flags, defaults and math as examples/dqn.py, written the short way (CleanRL's
style): a gymnasium ``SyncVectorEnv``, a ``nn.Sequential`` Q-network and its target copy, a
replay buffer of preallocated tensors sampled uniformly with replacement. Batches of
``frames_per_batch`` frames, uniformly random actions while fewer than
``learning_starts`` frames were collected before the batch, then epsilon-greedy with epsilon
annealed linearly per frame (held for a batch); after each batch from ``learning_starts``
on, ``gradient_steps`` Adam steps on ``d(Q(s, a), r + gamma * (1 - terminated) *
max_a' Q_target(s', a'))``. The target is copied every ``target_update`` gradient steps, or
with ``--target-update-frames`` every that many frames. What it leaves out is what the
example adds beyond the algorithm: the run folder, the CSV log, the checkpoint and the plot.
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """examples/dqn.py's hyper-parameters, with its defaults."""
    parser = base_parser(__doc__.splitlines()[0], env_id="CartPole-v1", total_frames=100_000)
    parser.add_argument("--num-envs", type=int, default=4, help="envs stepped together")
    parser.add_argument("--frames-per-batch", type=int, default=256, help="frames per batch")
    parser.add_argument("--gradient-steps", type=int, default=64, help="updates per batch")
    parser.add_argument("--batch-size", type=int, default=128, help="transitions per update")
    parser.add_argument("--buffer-size", type=int, default=100_000, help="replay capacity")
    parser.add_argument("--learning-starts", type=int, default=1000, help="random frames first")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--gamma", type=float, default=0.99, help="discount")
    parser.add_argument("--target-update", type=int, default=100, help="updates between copies")
    parser.add_argument("--target-update-frames", type=int, default=None, help="or frames")
    parser.add_argument("--eps-end", type=float, default=0.04, help="final epsilon")
    parser.add_argument("--exploration-fraction", type=float, default=0.16, help="of frames")
    parser.add_argument("--hidden", type=int, default=256, help="cells per hidden layer")
    parser.add_argument("--double-dqn", action="store_true", help="double-DQN target")
    parser.add_argument("--loss-function", default="l2", choices=["l2", "smooth_l1"])
    parser.add_argument("--max-grad-norm", type=float, default=None, help="gradient clipping")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    setup(args)
    envs = make_vector_env(args.env_id, args.num_envs)
    obs_dim, n_actions = envs.single_observation_space.shape[0], envs.single_action_space.n
    q_network = mlp(obs_dim, n_actions, args.hidden)
    target_network = copy.deepcopy(q_network).requires_grad_(False)
    params = list(q_network.parameters())
    optimizer = torch.optim.Adam(params, lr=args.lr)
    td_loss = nn.functional.mse_loss if args.loss_function == "l2" else nn.functional.smooth_l1_loss

    n = args.num_envs
    rb = Replay(args.buffer_size, obs_dim, torch.zeros((), dtype=torch.long))

    steps = args.frames_per_batch // n
    n_batches = math.ceil(args.total_frames / args.frames_per_batch)  # as the collector
    anneal_frames = int(args.exploration_fraction * args.total_frames)
    epsilon, updates, frames = 1.0, 0, 0
    obs_np, _ = envs.reset(seed=args.seed)
    obs = torch.as_tensor(obs_np)
    for _batch in range(n_batches):
        random_phase = frames < args.learning_starts
        for _ in range(steps):
            random_action = torch.randint(n_actions, (n,))
            if random_phase:
                action = random_action
            else:
                with torch.no_grad():
                    greedy = q_network(obs).argmax(-1)
                action = torch.where(torch.rand(n) < epsilon, random_action, greedy)
            next_np, reward, terminated, truncated, info = envs.step(action.numpy())
            final = final_observations(next_np, terminated | truncated, info)
            rb.add(obs, action, reward, terminated, final)
            obs = torch.as_tensor(next_np)
        frames += steps * n
        epsilon = max(args.eps_end, epsilon - (1.0 - args.eps_end) * steps * n / anneal_frames)
        every = args.target_update_frames
        if every and frames // every > (frames - steps * n) // every:
            target_network.load_state_dict(q_network.state_dict())
        if frames < args.learning_starts:
            continue
        for _ in range(args.gradient_steps):
            idx = rb.sample_indices(args.batch_size)
            next_obs = rb.next_obs[idx]
            with torch.no_grad():
                next_q = target_network(next_obs)
                if args.double_dqn:
                    best = q_network(next_obs).argmax(-1, keepdim=True)
                else:
                    best = next_q.argmax(-1, keepdim=True)
                next_value = next_q.gather(-1, best).squeeze(-1)
                target = rb.rewards[idx] + args.gamma * (1.0 - rb.terminated[idx]) * next_value
            q_value = q_network(rb.obs[idx]).gather(-1, rb.actions[idx, None]).squeeze(-1)
            loss = td_loss(q_value, target)
            optimizer.zero_grad()
            loss.backward()
            if args.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)
            optimizer.step()
            updates += 1
            if not every and updates % args.target_update == 0:
                target_network.load_state_dict(q_network.state_dict())
    envs.close()

    def act(observation):
        return q_network(torch.as_tensor(observation)).argmax(-1).numpy()

    report(frames, evaluate(act, args.env_id, args.eval_episodes, args.seed), args.eval_episodes)


if __name__ == "__main__":
    main()
