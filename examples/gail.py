"""GAIL: imitation from expert demonstrations, PPO on the discriminator's reward, Pendulum-v1.

    python examples/gail.py                          # 400k frames, demonstrations from Minari
    python examples/gail.py --dataset-format d4rl    # the same in D4RL's HDF5 layout
    python examples/gail.py --true-reward            # control: PPO on the env's reward

The first run with a seed trains a SAC expert and records its demonstrations (see
_offline.py; later runs reuse both). The policy never sees the env's reward: a discriminator
learns to tell the expert's (observation, action) pairs from the policy's, and PPO maximizes
-log(1 - D(s, a)). Pendulum's episodes have a fixed length, so that always-positive reward
cannot be earned by merely surviving (on CartPole it could). The final evaluation prints the
return and the normalized score (0 random, 1 the expert). Writes runs/gail-<time>-seed<seed>/.
Reference: Ho & Ermon 2016, "Generative Adversarial Imitation Learning".
"""

from __future__ import annotations

import torch
from _common import (
    Metrics,
    base_parser,
    env_specs,
    finish,
    log_episodes,
    make_tanh_normal_actor,
    make_train_env,
    ppo_epochs,
    progress,
    setup,
    update_step,
)
from _offline import add_dataset_args, open_dataset, report
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.collectors import SyncDataCollector
from rlblocks.objectives import ClipPPOLoss, GAILLoss
from rlblocks.objectives.modules import MLP, ValueOperator

# -- hyper-parameters (PPO's for Pendulum in rl-zoo, without gSDE; the discriminator's) ------
parser = base_parser(__doc__.splitlines()[0], env_id="Pendulum-v1", total_frames=400_000)
add_dataset_args(parser)
parser.set_defaults(dataset_steps=10_000)  # 50 expert episodes
parser.add_argument("--num-envs", type=int, default=16, help="envs stepped together")
parser.add_argument("--num-steps", type=int, default=64, help="steps per env per batch")
parser.add_argument("--update-epochs", type=int, default=10, help="passes over each batch")
parser.add_argument("--minibatch-size", type=int, default=256, help="frames per gradient step")
parser.add_argument("--lr", type=float, default=1e-3, help="PPO's Adam learning rate")
parser.add_argument("--gamma", type=float, default=0.9, help="discount")
parser.add_argument("--gae-lambda", type=float, default=0.95, help="GAE lambda")
parser.add_argument("--clip-coef", type=float, default=0.2, help="clip range epsilon")
parser.add_argument("--disc-lr", type=float, default=3e-4, help="discriminator learning rate")
parser.add_argument("--disc-steps", type=int, default=1, help="discriminator steps per batch")
parser.add_argument("--hidden", type=int, default=64, help="cells per hidden layer")
parser.add_argument("--true-reward", action="store_true", help="control: the env's reward")
args = parser.parse_args()
logger = setup(args, "gail")
env = make_train_env(args.env_id, args.num_envs, args.seed)  # its reward is only logged
obs_dim, action_spec = env_specs(args.env_id)
frames_per_batch = args.num_envs * args.num_steps
demos, refs = open_dataset(args, action_spec, quality="expert", batch_size=frames_per_batch)

# -- models: PPO's tanh-Gaussian policy and critic; the discriminator D(s, a) ----------------
actor = make_tanh_normal_actor(obs_dim, action_spec, args.hidden, return_log_prob=True)
critic = ValueOperator(MLP(obs_dim, 1, num_cells=[args.hidden] * 2), in_keys=["observation"])
ppo = ClipPPOLoss(
    actor,
    critic,
    clip_epsilon=args.clip_coef,
    loss_critic_type="l2",
    normalize_advantage=True,
    gamma=args.gamma,
    lmbda=args.gae_lambda,
)
optimizer = torch.optim.Adam(ppo.parameters(), lr=args.lr)
update_policy = update_step(ppo, optimizer, args, max_grad_norm=0.5)


class Discriminator(nn.Module):
    """``D(s, a)``: the probability that the pair is the expert's."""

    def __init__(self) -> None:
        super().__init__()
        self.net = MLP(obs_dim + action_spec.shape[-1], 1, num_cells=[args.hidden] * 2)

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([observation, action], -1)))


discriminator = TensorDictModule(
    Discriminator(), in_keys=["observation", "action"], out_keys=["d_logits"]
)
gail = GAILLoss(discriminator)
disc_optimizer = torch.optim.Adam(gail.parameters(), lr=args.disc_lr)
update_discriminator = update_step(gail, disc_optimizer, args)

# -- the loop: D learns on each batch, then PPO on the batch relabelled with D's reward ------
n_updates = max(1, args.total_frames // frames_per_batch)
collector = SyncDataCollector(
    env, actor, frames_per_batch=frames_per_batch, total_frames=n_updates * frames_per_batch
)
loss_keys = ["observation", "action", "sample_log_prob", "advantage", "value_target"]
metrics, bar, frames = Metrics(), progress(args), 0
for batch in collector:
    frames += batch.numel()
    flat = batch.reshape(-1)
    for _ in range(args.disc_steps):
        pairs = demos.sample().select("observation", "action")
        pairs["collector_observation"] = flat["observation"]
        pairs["collector_action"] = flat["action"]
        disc = update_discriminator(pairs)
    with torch.no_grad():
        if not args.true_reward:
            gail.reward(batch)  # ("next", "reward") = -log(1 - D(s, a)), in place
        ppo.value_estimator(batch)
    data = batch.reshape(-1).select(*loss_keys)
    out = ppo_epochs(update_policy, data, args)
    metrics.add(
        loss_discriminator=disc["loss_discriminator"],
        expert_accuracy=disc["expert_accuracy"],
        policy_accuracy=disc["collector_accuracy"],
        pg_loss=out["loss_objective"],
    )
    metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)  # the env's return (RewardSum), for the record
bar.close()
collector.shutdown()
report(finish(logger, args, actor, frames, {"actor": actor, "discriminator": discriminator}), refs)
