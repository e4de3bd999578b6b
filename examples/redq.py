"""REDQ (ten critics, target over a random pair, several updates per frame), Pendulum-v1.

    python examples/redq.py                     # 20k frames
    python examples/redq.py --total-frames 5000 --seed 3 --utd 5

SAC with an ensemble of N critics: the TD target takes the min over a random subset of M of
the N target critics, the actor maximizes the mean of all N, and each collected frame is
followed by G gradient steps (each with its own replay sample and target update). The
paper's settings kept here: N = 10, M = 2, batch 256, tau 0.005, learning rate 3e-4.
Deviations, for a 20k-frame run on one CPU core: G = 2 (the paper: 20) and networks of 64
units (the paper: 256), since ten critics of 256 units cost four SAC updates each, and 1000
random frames first (the paper: 5000).

Writes runs/redq-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Chen et al. 2021, "Randomized Ensembled Double Q-Learning:
Learning Fast Without a Model".
"""

from __future__ import annotations

import torch
from _common import (
    Metrics,
    add_eval_every_arg,
    add_off_policy_args,
    base_parser,
    env_specs,
    evaluate_every,
    finish,
    log_episodes,
    make_qvalue,
    make_replay_buffer,
    make_tanh_normal_actor,
    make_train_env,
    progress,
    setup,
    store,
    update_step,
)

from rlblocks.collectors import SyncDataCollector
from rlblocks.objectives import REDQLoss, SoftUpdate

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="Pendulum-v1", total_frames=20_000)
parser.add_argument("--utd", type=float, default=2.0, help="G: updates per collected frame")
parser.add_argument("--num-qvalue-nets", type=int, default=10, help="N: critics")
parser.add_argument("--sub-sample-len", type=int, default=2, help="M: critics in the target")
parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (all terms)")
parser.add_argument(
    "--loss-function", default="l2", choices=["l2", "smooth_l1"], help="critic loss"
)
add_off_policy_args(parser)  # buffer, batch, gamma, tau, ... (see --help)
parser.set_defaults(hidden=64)  # ten critics: 256 units (the paper's) cost 4x as much
add_eval_every_arg(parser)
args = parser.parse_args()
logger = setup(args, "redq")
env = make_train_env(args.env_id, args.num_envs, args.seed)
obs_dim, action_spec = env_specs(args.env_id)

# -- models: SAC's policy and a Q-network (the loss makes the N critics, run as one batch) --
actor = make_tanh_normal_actor(obs_dim, action_spec, args.hidden)
loss_module = REDQLoss(
    actor,
    make_qvalue(obs_dim, action_spec.shape[-1], args.hidden),
    num_qvalue_nets=args.num_qvalue_nets,
    sub_sample_len=args.sub_sample_len,
    loss_function=args.loss_function,
    gamma=args.gamma,
)
target_updater = SoftUpdate(loss_module, tau=args.tau)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update = update_step(loss_module, optimizer, args)  # actor, critics and temperature at once
replay_buffer = make_replay_buffer(args.buffer_size, args.batch_size)

# -- the loop: collect, store, then G gradient steps per frame on replayed transitions -----
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
