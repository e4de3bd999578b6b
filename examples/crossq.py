"""CrossQ (batch-renormalized critics, no target networks), Pendulum-v1 by default.

    python examples/crossq.py                   # 20k frames
    python examples/crossq.py --total-frames 5000 --seed 3 --eval-every 1000

SAC without target networks: the critics put batch renormalization between each hidden
layer and its activation and see (s, a) and (s', pi(s')) in one joint pass, so that their
statistics cover both halves of the TD target. The paper's settings kept here: update-to-data
ratio 1, no target network, the actor and the temperature updated every third critic step,
Adam with betas (0.5, 0.999) and learning rate 1e-3, two critics, momentum 0.01 of the
batch renormalization. Deviations, for a 20k-frame run on one CPU core: critics of 256 units
(the paper: 2048), batch renormalization's corrections after 5000 updates (the paper: 100k,
longer than this whole run), 1000 random frames first (the paper: 5000), the actor without
normalization, and the critics' Huber loss of examples/sac.py (the paper's squared error
let Pendulum's large early TD errors through: seed 3 never reached -200 in 20k frames).

Writes runs/crossq-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Bhatt et al. 2024, "CrossQ: Batch Normalization in Deep
Reinforcement Learning for Greater Sample Efficiency and Simplicity".
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
    td3_step,
)

from rlblocks.collectors import SyncDataCollector
from rlblocks.objectives import CrossQLoss
from rlblocks.objectives.modules import BatchRenorm1d

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="Pendulum-v1", total_frames=20_000)
parser.add_argument("--utd", type=float, default=1.0, help="critic updates per frame")
parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (all terms)")
parser.add_argument("--beta1", type=float, default=0.5, help="Adam's first beta")
parser.add_argument("--policy-delay", type=int, default=3, help="critic steps per actor step")
parser.add_argument("--critic-hidden", type=int, default=256, help="cells per critic layer")
parser.add_argument("--bn-momentum", type=float, default=0.01, help="batch renorm momentum")
parser.add_argument("--bn-warmup", type=int, default=5000, help="updates before renorm")
parser.add_argument(
    "--loss-function", default="smooth_l1", choices=["l2", "smooth_l1"], help="critic loss"
)
add_off_policy_args(parser)  # buffer, batch, gamma, ... (see --help; --tau is unused)
add_eval_every_arg(parser)
args = parser.parse_args()
logger = setup(args, "crossq")
env = make_train_env(args.env_id, args.num_envs, args.seed)
obs_dim, action_spec = env_specs(args.env_id)

# -- models: SAC's policy, a batch-renormalized Q-network (the loss makes the two critics) --
actor = make_tanh_normal_actor(obs_dim, action_spec, args.hidden)
norm = {"momentum": args.bn_momentum, "warmup_steps": args.bn_warmup}
qvalue = make_qvalue(
    obs_dim, action_spec.shape[-1], args.critic_hidden, norm_class=BatchRenorm1d, norm_kwargs=norm
)
loss_module = CrossQLoss(actor, qvalue, loss_function=args.loss_function, gamma=args.gamma)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
# The critics every step, the actor and the temperature every policy_delay steps; no targets.
step = td3_step(loss_module, optimizer, None, args)
replay_buffer = make_replay_buffer(args.buffer_size, args.batch_size)

# -- the loop: collect, store, then gradient steps on replayed transitions ------------------
collector = SyncDataCollector(
    env,
    actor,
    frames_per_batch=args.frames_per_batch,
    total_frames=args.total_frames,
    init_random_frames=args.learning_starts,
)
metrics, bar, frames, updates = Metrics(), progress(args), 0, 0
for batch in collector:
    frames += batch.numel()
    store(replay_buffer, batch, loss_module)
    if frames >= args.learning_starts:
        for _ in range(max(1, int(args.utd * batch.numel()))):
            updates += 1
            out = step(updates, replay_buffer.sample())
        metrics.add(loss_qvalue=out["loss_qvalue"])
        if updates % args.policy_delay == 0:  # the actor's terms are fresh on those steps
            metrics.add(loss_actor=out["loss_actor"], alpha=out["alpha"])
        if frames % 1000 < batch.numel():
            metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
    evaluate_every(logger, args, actor, frames, batch.numel())
bar.close()
collector.shutdown()
finish(logger, args, actor, frames, {"actor": actor, "qvalue": loss_module})
