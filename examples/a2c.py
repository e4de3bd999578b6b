"""A2C (synchronous advantage actor-critic), CartPole-v1 by default.

    python examples/a2c.py                      # 200k frames
    python examples/a2c.py --total-frames 20000 --seed 3

Writes runs/a2c-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Mnih et al. 2016, "Asynchronous Methods for Deep RL".
"""

from __future__ import annotations

import torch
from _common import (
    Metrics,
    add_ship_args,
    base_parser,
    env_specs,
    finish,
    log_episodes,
    make_train_env,
    progress,
    schedulable,
    set_learning_rate,
    setup,
    update_step,
)
from tensordict.nn import TensorDictModule

from rlblocks.collectors import SyncDataCollector
from rlblocks.objectives import A2CLoss
from rlblocks.objectives.modules import MLP, ProbabilisticActor, ValueOperator

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="CartPole-v1", total_frames=200_000)
parser.add_argument("--num-envs", type=int, default=8, help="envs stepped together")
parser.add_argument("--num-steps", type=int, default=8, help="steps per env per update")
parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (annealed to 0)")
parser.add_argument("--gamma", type=float, default=0.99, help="discount")
parser.add_argument("--gae-lambda", type=float, default=0.95, help="GAE lambda")
parser.add_argument("--ent-coef", type=float, default=0.0, help="entropy bonus weight")
parser.add_argument("--vf-coef", type=float, default=0.5, help="value loss weight")
parser.add_argument("--max-grad-norm", type=float, default=0.5, help="gradient clipping")
parser.add_argument("--hidden", type=int, default=64, help="cells per hidden layer")
add_ship_args(parser)  # --export, --video
args = parser.parse_args()
logger = setup(args, "a2c")
env = make_train_env(args.env_id, args.num_envs, args.seed)
obs_dim, action_spec = env_specs(args.env_id)

# -- models: a categorical policy over logits and a state-value critic -----------------------
actor = ProbabilisticActor(
    TensorDictModule(
        MLP(obs_dim, action_spec.n, num_cells=[args.hidden] * 2),
        in_keys=["observation"],
        out_keys=["logits"],
    ),
    in_keys=["logits"],
    distribution_class=torch.distributions.Categorical,
    spec=action_spec,
)
critic = ValueOperator(MLP(obs_dim, 1, num_cells=[args.hidden] * 2), in_keys=["observation"])
loss_module = A2CLoss(
    actor,
    critic,
    entropy_coef=args.ent_coef,
    critic_coef=args.vf_coef,
    loss_critic_type="l2",  # squared error, as SB3: Huber's bounded gradient lags the returns
    gamma=args.gamma,
    lmbda=args.gae_lambda,
)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=schedulable(args.lr, args))
update = update_step(loss_module, optimizer, args, max_grad_norm=args.max_grad_norm)

# -- the loop: one gradient step per (short) batch, advantages from GAE --------------------
frames_per_batch = args.num_envs * args.num_steps
n_updates = max(1, args.total_frames // frames_per_batch)
collector = SyncDataCollector(
    env, actor, frames_per_batch=frames_per_batch, total_frames=n_updates * frames_per_batch
)
metrics, bar, frames = Metrics(), progress(args), 0
for iteration, batch in enumerate(collector):
    frames += batch.numel()
    set_learning_rate(optimizer, args.lr * (1.0 - iteration / n_updates))
    out = update(batch)  # the loss computes GAE over [num_envs, num_steps] itself
    metrics.add(pg_loss=out["loss_objective"], v_loss=out["loss_critic"])
    if iteration % 20 == 0:
        metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
bar.close()
collector.shutdown()
finish(logger, args, actor, frames, {"actor": actor, "critic": critic})
