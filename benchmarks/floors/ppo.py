"""PPO in plain PyTorch: the floor examples/ppo.py is timed against in learning.py.

    python benchmarks/floors/ppo.py                     # examples/ppo.py's defaults
    python benchmarks/floors/ppo.py --num-envs 8 --num-steps 32 --minibatch-size 256 \\
        --lr 1e-3 --anneal-clip                         # rl-zoo's CartPole-v1 setting

The same flags, defaults and math as examples/ppo.py, written the short way (CleanRL's
style): a gymnasium ``SyncVectorEnv``, two ``nn.Sequential`` networks, a loop. GAE with
``V(s')`` of the final observation after a truncation (and none after a termination),
advantages standardized per minibatch, the clipped objective plus ``vf_coef`` times the
squared value error, fused Adam with ``eps=1e-5`` and the lr (and with ``--anneal-clip``
the clip range) annealed linearly to 0 over the batches, gradients clipped to
``max_grad_norm``. What it leaves out is what the example adds beyond the algorithm: the
run folder, the CSV log, the checkpoint and the learning-curve plot.
"""

from __future__ import annotations

import argparse

import torch
from _shared import (
    base_parser,
    evaluate,
    final_observations,
    make_vector_env,
    mlp,
    report,
    setup,
)
from torch import nn
from torch.distributions import Categorical


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """examples/ppo.py's hyper-parameters, with its defaults."""
    parser = base_parser(__doc__.splitlines()[0], env_id="CartPole-v1", total_frames=100_000)
    parser.add_argument("--num-envs", type=int, default=64, help="envs stepped together")
    parser.add_argument("--num-steps", type=int, default=16, help="steps per env per batch")
    parser.add_argument("--update-epochs", type=int, default=20, help="passes over each batch")
    parser.add_argument("--minibatch-size", type=int, default=1024, help="frames per step")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam lr (annealed to 0)")
    parser.add_argument("--gamma", type=float, default=0.98, help="discount")
    parser.add_argument("--gae-lambda", type=float, default=0.8, help="GAE lambda")
    parser.add_argument("--clip-coef", type=float, default=0.2, help="clip range epsilon")
    parser.add_argument("--anneal-clip", action="store_true", help="anneal the clip range too")
    parser.add_argument("--ent-coef", type=float, default=0.0, help="entropy bonus weight")
    parser.add_argument("--vf-coef", type=float, default=0.5, help="value loss weight")
    parser.add_argument("--max-grad-norm", type=float, default=0.5, help="gradient clipping")
    parser.add_argument("--hidden", type=int, default=64, help="cells per hidden layer")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    setup(args)
    envs = make_vector_env(args.env_id, args.num_envs)
    obs_dim = envs.single_observation_space.shape[0]
    # rlblocks' MLP default activation is tanh.
    actor = mlp(obs_dim, envs.single_action_space.n, args.hidden, nn.Tanh)
    critic = mlp(obs_dim, 1, args.hidden, nn.Tanh)
    params = [*actor.parameters(), *critic.parameters()]
    optimizer = torch.optim.Adam(params, lr=args.lr, eps=1e-5, fused=True)

    steps, n = args.num_steps, args.num_envs
    batch_size = steps * n
    n_updates = max(1, args.total_frames // batch_size)  # whole batches, as the example
    obs_buf = torch.zeros(steps, n, obs_dim)
    next_obs_buf = torch.zeros(steps, n, obs_dim)
    actions = torch.zeros(steps, n, dtype=torch.long)
    logprobs = torch.zeros(steps, n)
    rewards = torch.zeros(steps, n)
    dones = torch.zeros(steps, n)
    terminateds = torch.zeros(steps, n)

    obs_np, _ = envs.reset(seed=args.seed)
    obs = torch.as_tensor(obs_np)
    frames = 0
    for update in range(n_updates):
        progress_left = 1.0 - update / n_updates
        optimizer.param_groups[0]["lr"] = args.lr * progress_left
        clip = args.clip_coef * (progress_left if args.anneal_clip else 1.0)
        for t in range(steps):
            with torch.no_grad():
                dist = Categorical(logits=actor(obs), validate_args=False)
                action = dist.sample()
                logprobs[t] = dist.log_prob(action)
            next_np, reward, terminated, truncated, info = envs.step(action.numpy())
            done = terminated | truncated
            obs_buf[t] = obs
            actions[t] = action
            rewards[t] = torch.as_tensor(reward)
            dones[t] = torch.as_tensor(done)
            terminateds[t] = torch.as_tensor(terminated)
            next_obs_buf[t] = torch.as_tensor(final_observations(next_np, done, info))
            obs = torch.as_tensor(next_np)
        frames += batch_size

        with torch.no_grad():
            values = critic(obs_buf).squeeze(-1)
            next_values = critic(next_obs_buf).squeeze(-1)
            delta = rewards + args.gamma * (1.0 - terminateds) * next_values - values
            advantages = torch.zeros_like(delta)
            last = torch.zeros(n)
            for t in reversed(range(steps)):
                last = delta[t] + args.gamma * args.gae_lambda * (1.0 - dones[t]) * last
                advantages[t] = last
            returns = advantages + values

        b_obs = obs_buf.reshape(batch_size, obs_dim)
        b_actions, b_logprobs = actions.reshape(-1), logprobs.reshape(-1)
        b_advantages, b_returns = advantages.reshape(-1), returns.reshape(-1)
        for _epoch in range(args.update_epochs):
            for mb in torch.randperm(batch_size).split(args.minibatch_size):
                dist = Categorical(logits=actor(b_obs[mb]), validate_args=False)
                ratio = (dist.log_prob(b_actions[mb]) - b_logprobs[mb]).exp()
                std, mean = torch.std_mean(b_advantages[mb])
                mb_advantages = (b_advantages[mb] - mean) / std.clamp_min(1e-8)
                clipped = ratio.clamp(1.0 - clip, 1.0 + clip)
                pg_loss = -torch.minimum(ratio * mb_advantages, clipped * mb_advantages).mean()
                v_loss = (critic(b_obs[mb]).squeeze(-1) - b_returns[mb]).square().mean()
                loss = pg_loss + args.vf_coef * v_loss
                if args.ent_coef:  # a zero weight trains nothing: no entropy graph
                    loss = loss - args.ent_coef * dist.entropy().mean()
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(params, args.max_grad_norm, foreach=True)
                optimizer.step()
    envs.close()

    def act(observation):
        return actor(torch.as_tensor(observation)).argmax(-1).numpy()

    report(frames, evaluate(act, args.env_id, args.eval_episodes, args.seed), args.eval_episodes)


if __name__ == "__main__":
    main()
