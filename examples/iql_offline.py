"""IQL (implicit Q-learning) trained offline from a recorded dataset, Pendulum-v1 by default.

    python examples/iql_offline.py                          # Minari dataset, 20k updates
    python examples/iql_offline.py --dataset-format d4rl    # the same in D4RL's HDF5 layout

The first run with a seed trains a SAC expert briefly and records a medium-quality dataset
from it (see _offline.py; later runs reuse both). Training reads only the dataset: the env is
stepped by the final evaluation alone, which prints the return and D4RL's normalized score
(0 random, 1 the expert). Writes runs/iql-<time>-seed<seed>/ like the other examples.
Reference: Kostrikov et al. 2022, "Offline Reinforcement Learning with Implicit Q-Learning".
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
from torch import nn

from rlblocks.objectives import IQLLoss, SoftUpdate
from rlblocks.objectives.modules import MLP, ValueOperator

# -- hyper-parameters ----------------------------------------------------------------------
parser = offline_parser(__doc__.splitlines()[0], updates=20_000)  # --total-frames: updates
parser.add_argument("--expectile", type=float, default=0.7, help="value expectile")
# beta 1, chosen on seed 1 of this dataset (the paper's 3 is for MuJoCo locomotion)
parser.add_argument("--temperature", type=float, default=1.0, help="advantage weight beta")
args = parser.parse_args()
logger, obs_dim, action_spec, dataset, refs = start(args, "iql", batch_size=args.batch_size)

# -- models: a Gaussian policy, a Q-network (the loss makes the twins) and a V-network ------
actor = make_tanh_normal_actor(obs_dim, action_spec, args.hidden)
value = ValueOperator(
    MLP(obs_dim, 1, num_cells=[args.hidden] * 2, activation_class=nn.ReLU),
    in_keys=["observation"],
)
loss_module = IQLLoss(
    actor,
    make_qvalue(obs_dim, action_spec.shape[-1], args.hidden),
    value,
    expectile=args.expectile,
    temperature=args.temperature,
    gamma=args.gamma,
)
target_updater = SoftUpdate(loss_module, tau=args.tau)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update = update_step(loss_module, optimizer, args)  # actor, Q and V at once

# -- the loop: gradient steps on dataset batches ("frames" counts the steps) --------------
train(
    args,
    logger,
    dataset,
    soft_updated(update, target_updater),
    ("loss_actor", "loss_qvalue", "loss_value"),
)
report(finish(logger, args, actor, args.total_frames, {"actor": actor, "iql": loss_module}), refs)
