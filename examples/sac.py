"""SAC (twin critics, learned temperature) on a continuous-action env, Pendulum-v1 by default.

    python examples/sac.py                      # 20k frames
    python examples/sac.py --total-frames 5000 --seed 3

Writes runs/sac-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications".
"""

from __future__ import annotations

import torch
from _common import (
    Metrics,
    add_eval_every_arg,
    add_off_policy_args,
    add_ship_args,
    base_parser,
    env_specs,
    evaluate_every,
    finish,
    log_episodes,
    make_qvalue,
    make_replay_buffer,
    make_train_env,
    progress,
    setup,
    store,
    update_step,
)
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.collectors import SyncDataCollector
from rlblocks.objectives import SACLoss, SoftUpdate
from rlblocks.objectives.modules import MLP, NormalParamExtractor, ProbabilisticActor, TanhNormal

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="Pendulum-v1", total_frames=20_000)
parser.add_argument("--utd", type=float, default=1.0, help="updates per collected frame")
parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (all terms)")
parser.add_argument(
    "--loss-function", default="smooth_l1", choices=["l2", "smooth_l1"], help="critic loss"
)
add_off_policy_args(parser)  # buffer, batch, gamma, tau, ... (see --help)
add_eval_every_arg(parser)
add_ship_args(parser)  # --export, --video
args = parser.parse_args()
logger = setup(args, "sac")
env = make_train_env(args.env_id, args.num_envs, args.seed)
obs_dim, action_spec = env_specs(args.env_id)
action_dim = action_spec.shape[-1]

# -- models: a tanh-squashed Gaussian policy and a Q-network (the loss makes the twins) -----
actor_net = nn.Sequential(
    MLP(obs_dim, 2 * action_dim, num_cells=[args.hidden] * 2, activation_class=nn.ReLU),
    NormalParamExtractor(),  # loc and a positive scale
)
actor = ProbabilisticActor(
    TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
    in_keys=["loc", "scale"],
    distribution_class=TanhNormal,
    spec=action_spec,
)
loss_module = SACLoss(
    actor,
    make_qvalue(obs_dim, action_dim, args.hidden),
    loss_function=args.loss_function,
    gamma=args.gamma,
)
target_updater = SoftUpdate(loss_module, tau=args.tau)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update = update_step(loss_module, optimizer, args)  # actor, critics and temperature at once
replay_buffer = make_replay_buffer(args.buffer_size, args.batch_size)

# -- the loop: collect, store, then gradient steps on replayed transitions ------------------
collector = SyncDataCollector(
    env,
    actor,
    frames_per_batch=args.frames_per_batch,
    total_frames=args.total_frames,
    init_random_frames=args.learning_starts,
)
metrics, bar, frames = Metrics(), progress(args), 0
for batch in collector:
    frames += batch.numel()
    store(replay_buffer, batch, loss_module)
    if frames >= args.learning_starts:
        for _ in range(max(1, int(args.utd * batch.numel()))):
            out = update(replay_buffer.sample())
            target_updater.step()
        terms = ("loss_actor", "loss_qvalue", "loss_alpha")
        metrics.add(**{key: out[key] for key in terms}, alpha=out["alpha"])
        if frames % 1000 < batch.numel():
            metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
    evaluate_every(logger, args, actor, frames, batch.numel())
bar.close()
collector.shutdown()
finish(logger, args, actor, frames, {"actor": actor, "qvalue": loss_module})
