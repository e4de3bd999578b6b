"""PPO on an Atari game from pixels (the ALE through rlblocks-atari), Pong by default.

    python examples/ppo_atari.py --total-frames 10000000       # the published setting
    python examples/ppo_atari.py --env-id Breakout --total-frames 100000

Writes runs/ppo_atari-<time>-seed<seed>/ as the other examples. References: Schulman et
al. 2017, "Proximal Policy Optimization" (PPO scores 20.7 on Pong after 10M agent steps,
i.e. 40M game frames, Table 6); Mnih et al. 2015 (network, preprocessing); Huang et al.
2022, "The 37 implementation details of PPO" (CleanRL's ppo_atari.py).

The settings are CleanRL's (the paper's Table 5 with 4 epochs and a value weight of 0.5):
8 envs x 128 steps, 4 epochs of 4 minibatches, lr 2.5e-4 annealed, clip 0.1, entropy 0.01,
lambda 0.95, make_atari_env's preprocessing (4 frames per step max-pooled, 84x84 grayscale,
4 stacked, rewards clipped to their sign), and a lost life ends the advantage's horizon
("end-of-life" as done) while the game goes on. --total-frames counts agent steps (4 game
frames each), as the paper does; training returns sum clipped rewards (Pong's score either
way) and the final evaluation plays whole games unclipped. On the 2-core development
machine it ran at ~220 agent steps/s (~130 with --threads 1): the paper's 10M are a GPU's.
"""

from __future__ import annotations

import torch
from _common import (
    Metrics,
    base_parser,
    finish,
    log_episodes,
    ppo_epochs,
    progress,
    schedulable,
    set_learning_rate,
    setup,
    update_step,
)
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.atari import OBSERVATION, make_atari_env
from rlblocks.collectors import SyncDataCollector
from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.envs import RewardSum, SerialEnv, TransformedEnv
from rlblocks.objectives import ClipPPOLoss
from rlblocks.objectives.modules import ProbabilisticActor, ValueOperator

parser = base_parser(__doc__.splitlines()[0], env_id="Pong", total_frames=10_000_000)
parser.set_defaults(threads=torch.get_num_threads())  # the learner's convolutions use them
parser.add_argument("--num-envs", type=int, default=8, help="games stepped together")
parser.add_argument("--num-steps", type=int, default=128, help="steps per game per batch")
parser.add_argument("--update-epochs", type=int, default=4, help="passes over each batch")
parser.add_argument("--minibatch-size", type=int, default=256, help="frames per gradient step")
parser.add_argument("--lr", type=float, default=2.5e-4, help="Adam learning rate (annealed)")
parser.add_argument("--gamma", type=float, default=0.99, help="discount")
parser.add_argument("--gae-lambda", type=float, default=0.95, help="GAE lambda")
parser.add_argument("--clip-coef", type=float, default=0.1, help="clip range epsilon")
parser.add_argument("--ent-coef", type=float, default=0.01, help="entropy bonus weight")
parser.add_argument("--vf-coef", type=float, default=0.5, help="value loss weight")
parser.add_argument("--max-grad-norm", type=float, default=0.5, help="gradient clipping")
parser.add_argument("--eval-max-steps", type=int, default=27_000, help="steps per eval game")
args = parser.parse_args()
logger = setup(args, "ppo_atari")
env = TransformedEnv(SerialEnv(args.num_envs, lambda: make_atari_env(args.env_id)), RewardSum())
env.set_seed(args.seed)


class NatureCNN(nn.Module):
    """Mnih et al. 2015's torso: three convolutions and a 512-unit layer, on frames / 255."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(-3), nn.Linear(3136, 512),
            nn.ReLU(),
        )  # fmt: skip

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # [*batch, 4, 84, 84] uint8
        flat = self.net(frames.reshape(-1, *frames.shape[-3:]).float() / 255)
        return flat.reshape(*frames.shape[:-3], -1)


# -- a shared torso, a categorical policy head and a value head (as the paper) -------------
torso = NatureCNN()
actor = ProbabilisticActor(
    TensorDictModule(
        nn.Sequential(torso, nn.Linear(512, env.action_spec.n)),
        in_keys=[OBSERVATION],
        out_keys=["logits"],
    ),
    in_keys=["logits"],
    distribution_class=torch.distributions.Categorical,
    spec=env.action_spec,
    return_log_prob=True,
)
critic = ValueOperator(nn.Sequential(torso, nn.Linear(512, 1)), in_keys=[OBSERVATION])
loss_module = ClipPPOLoss(
    actor,
    critic,
    clip_epsilon=args.clip_coef,
    entropy_coef=args.ent_coef,
    critic_coef=args.vf_coef,
    loss_critic_type="l2",
    normalize_advantage=True,
    gamma=args.gamma,
    lmbda=args.gae_lambda,
)
# A lost life ends the advantage's horizon (the game itself goes on).
loss_module.set_keys(done="end-of-life", terminated="end-of-life")
params = list(dict.fromkeys(loss_module.parameters()))  # the torso once
optimizer = torch.optim.Adam(params, lr=schedulable(args.lr, args), eps=1e-5)
update_minibatch = update_step(loss_module, optimizer, args, max_grad_norm=args.max_grad_norm)

frames_per_batch = args.num_envs * args.num_steps
n_updates = max(1, args.total_frames // frames_per_batch)
collector = SyncDataCollector(
    env, actor, frames_per_batch=frames_per_batch, total_frames=n_updates * frames_per_batch
)
loss_keys = [OBSERVATION, "action", "sample_log_prob", "advantage", "value_target"]
metrics, bar, frames = Metrics(), progress(args), 0
for update, batch in enumerate(collector):
    frames += batch.numel()
    set_learning_rate(optimizer, args.lr * (1.0 - update / n_updates))
    with torch.no_grad():
        loss_module.value_estimator(batch)
    out = ppo_epochs(update_minibatch, batch.reshape(-1).select(*loss_keys), args)
    metrics.add(
        pg_loss=out["loss_objective"],
        v_loss=out["loss_critic"],
        entropy=out["entropy"],
        approx_kl=out["kl_approx"],
    )
    metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
bar.close()
collector.shutdown()

# -- evaluation: each env's first whole game, unclipped score, the most likely action --------
eval_env = SerialEnv(args.eval_episodes, lambda: make_atari_env(args.env_id, sign_reward=False))
eval_env.set_seed(args.seed + 10_000)  # never the training seeds
scores, playing = torch.zeros(args.eval_episodes), torch.ones(args.eval_episodes, dtype=bool)
td = eval_env.reset()
with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
    for _ in range(args.eval_max_steps):
        step, td = eval_env.step_and_maybe_reset(actor(td))
        scores += step["next", "reward"].flatten() * playing
        playing &= ~step["next", "done"].flatten()
        if not playing.any():
            break
eval_env.close()
finish(logger, args, actor, frames, {"actor": actor, "critic": critic}, scores.mean().item())
