"""TQC (five quantile critics, the top quantiles of the pooled target dropped), Pendulum-v1.

    python examples/tqc.py                      # 20k frames
    python examples/tqc.py --total-frames 5000 --seed 3

SAC with distributional critics: each of N critics predicts K quantiles of the return; the
TD target pools the N * K target quantiles and drops the d * N largest (d per net), which
controls overestimation; the critics learn with the quantile Huber loss and the actor
maximizes the mean of every quantile. The paper's settings kept here: N = 5 critics of
K = 25 quantiles, d = 2 dropped per net, tau 0.005, learning rate 3e-4, update-to-data ratio
1. Deviations, for a 20k-frame run on one CPU core: batches of 64 transitions (the paper:
256; the quantile Huber loss pairs each of the 5 * 25 quantiles with all 115 target atoms,
so at 256 an update costs 8x SAC's here), critics of two layers of 256 units (the paper:
three of 512) and 1000 random frames first (the paper: 5000).

Writes runs/tqc-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Kuznetsov et al. 2020, "Controlling Overestimation Bias
with Truncated Mixture of Continuous Distributional Quantile Critics".
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
from rlblocks.objectives import SoftUpdate, TQCLoss

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="Pendulum-v1", total_frames=20_000)
parser.add_argument("--utd", type=float, default=1.0, help="updates per collected frame")
parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (all terms)")
parser.add_argument("--num-qvalue-nets", type=int, default=5, help="N: critics")
parser.add_argument("--n-quantiles", type=int, default=25, help="K: quantiles per critic")
parser.add_argument("--drop-per-net", type=int, default=2, help="d: top quantiles dropped")
add_off_policy_args(parser)  # buffer, batch, gamma, tau, ... (see --help)
parser.set_defaults(batch_size=64)  # the quantile loss grows with batch * (N * K) ** 2
add_eval_every_arg(parser)
args = parser.parse_args()
logger = setup(args, "tqc")
env = make_train_env(args.env_id, args.num_envs, args.seed)
obs_dim, action_spec = env_specs(args.env_id)

# -- models: SAC's policy and a Q-network with K outputs (the loss makes the N critics) -----
actor = make_tanh_normal_actor(obs_dim, action_spec, args.hidden)
qvalue = make_qvalue(obs_dim, action_spec.shape[-1], args.hidden, num_outputs=args.n_quantiles)
loss_module = TQCLoss(
    actor,
    qvalue,
    num_qvalue_nets=args.num_qvalue_nets,
    top_quantiles_to_drop_per_net=args.drop_per_net,
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
