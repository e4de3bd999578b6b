"""CQL (conservative Q-learning on SAC) trained offline from a recorded dataset, Pendulum-v1.

    python examples/cql_offline.py                          # Minari dataset, 10k updates
    python examples/cql_offline.py --dataset-format d4rl    # the same in D4RL's HDF5 layout

The first run with a seed trains a SAC expert briefly and records a medium-quality dataset
from it (see _offline.py; later runs reuse both). Training reads only the dataset; the final
evaluation prints the return and D4RL's normalized score (0 random, 1 the expert). Writes
runs/cql-<time>-seed<seed>/ like the other examples. Reference: Kumar et al. 2020,
"Conservative Q-Learning for Offline Reinforcement Learning".
"""

from __future__ import annotations

import torch
from _common import (
    finish,
    make_qvalue,
    make_tanh_normal_actor,
    update_step,
)
from _offline import offline_parser, report, soft_updated, start, train

from rlblocks.objectives import CQLLoss, SoftUpdate

# -- hyper-parameters (CQL's MuJoCo settings, but 10k updates) ------------------------------
parser = offline_parser(__doc__.splitlines()[0], updates=10_000)  # --total-frames: updates
# 64 cells, not the paper's 256: CQL scores 3 x 10 sampled actions per state on every critic,
# 87 ms per update at 256 cells on one core here, 11 ms at 64.
parser.set_defaults(hidden=64)
parser.add_argument("--min-q-weight", type=float, default=5.0, help="conservative penalty")
parser.add_argument("--num-random", type=int, default=10, help="sampled actions per kind")
args = parser.parse_args()
logger, obs_dim, action_spec, dataset, refs = start(args, "cql", batch_size=args.batch_size)

# -- models: a tanh-Gaussian policy and a Q-network (the loss makes the twins) -------------
actor = make_tanh_normal_actor(obs_dim, action_spec, args.hidden)
loss_module = CQLLoss(
    actor,
    make_qvalue(obs_dim, action_spec.shape[-1], args.hidden),
    min_q_weight=args.min_q_weight,
    num_random=args.num_random,
    action_spec=action_spec,
    gamma=args.gamma,
)
target_updater = SoftUpdate(loss_module, tau=args.tau)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update = update_step(loss_module, optimizer, args)  # actor, critics, temperature at once


# -- the loop: gradient steps on dataset batches ("frames" counts the steps) --------------
train(
    args,
    logger,
    dataset,
    soft_updated(update, target_updater),
    ("loss_actor", "loss_qvalue", "loss_cql"),
)
report(finish(logger, args, actor, args.total_frames, {"actor": actor, "cql": loss_module}), refs)
