"""DDPG (deterministic policy gradient with target networks), Pendulum-v1 by default.

    python examples/ddpg.py                     # 30k frames
    python examples/ddpg.py --total-frames 5000 --seed 3

Writes runs/ddpg-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Lillicrap et al. 2016, "Continuous control with deep RL".
"""

from __future__ import annotations

import torch
from _common import (
    Metrics,
    add_off_policy_args,
    add_ship_args,
    base_parser,
    env_specs,
    finish,
    log_episodes,
    make_deterministic_actor,
    make_qvalue,
    make_replay_buffer,
    make_train_env,
    progress,
    setup,
    store,
    update_step,
)
from tensordict.nn import TensorDictSequential

from rlblocks.collectors import SyncDataCollector
from rlblocks.objectives import DDPGLoss, SoftUpdate
from rlblocks.objectives.modules import OrnsteinUhlenbeckProcessModule

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="Pendulum-v1", total_frames=30_000)
parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
parser.add_argument("--ou-sigma", type=float, default=0.2, help="exploration noise scale")
add_off_policy_args(parser)  # buffer, batch, gamma, tau, ... (see --help)
add_ship_args(parser)  # --export, --video
args = parser.parse_args()
logger = setup(args, "ddpg")
env = make_train_env(args.env_id, args.num_envs, args.seed)
obs_dim, action_spec = env_specs(args.env_id)

# -- models: a deterministic policy explored with Ornstein-Uhlenbeck noise, a Q-network ----
actor = make_deterministic_actor(obs_dim, action_spec, args.hidden)
explore = OrnsteinUhlenbeckProcessModule(action_spec, sigma=args.ou_sigma)
policy = TensorDictSequential(actor, explore)
qvalue = make_qvalue(obs_dim, action_spec.shape[-1], args.hidden)
loss_module = DDPGLoss(actor, qvalue, gamma=args.gamma)
target_updater = SoftUpdate(loss_module, tau=args.tau)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update = update_step(loss_module, optimizer, args)  # actor and critic at once
replay_buffer = make_replay_buffer(args.buffer_size, args.batch_size)

# -- the loop: collect, store, one actor and critic step per frame --------------------------
collector = SyncDataCollector(
    env,
    policy,
    frames_per_batch=args.frames_per_batch,
    total_frames=args.total_frames,
    init_random_frames=args.learning_starts,
)
metrics, bar, frames = Metrics(), progress(args), 0
for batch in collector:
    frames += batch.numel()
    store(replay_buffer, batch, loss_module)
    if frames >= args.learning_starts:
        for _ in range(batch.numel()):
            out = update(replay_buffer.sample())
            target_updater.step()
        metrics.add(loss_actor=out["loss_actor"], loss_value=out["loss_value"])
        if frames % 1000 < batch.numel():
            metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
bar.close()
collector.shutdown()
finish(logger, args, actor, frames, {"actor": actor, "qvalue": loss_module})
