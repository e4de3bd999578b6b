"""TD3 (twin critics, target policy smoothing, delayed actor), Pendulum-v1 by default.

    python examples/td3.py                      # 30k frames
    python examples/td3.py --total-frames 5000 --seed 3

Writes runs/td3-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Fujimoto et al. 2018, "Addressing Function Approximation
Error in Actor-Critic Methods".
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
    td3_step,
)
from tensordict.nn import TensorDictSequential

from rlblocks.collectors import SyncDataCollector
from rlblocks.objectives import SoftUpdate, TD3Loss
from rlblocks.objectives.modules import AdditiveGaussianModule

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="Pendulum-v1", total_frames=30_000)
parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
parser.add_argument("--exploration-noise", type=float, default=0.1, help="std, action units")
parser.add_argument("--policy-noise", type=float, default=0.2, help="target smoothing std")
parser.add_argument("--noise-clip", type=float, default=0.5, help="target smoothing clip")
parser.add_argument("--policy-delay", type=int, default=2, help="critic steps per actor step")
add_off_policy_args(parser)  # buffer, batch, gamma, tau, ... (see --help)
add_ship_args(parser)  # --export, --video
args = parser.parse_args()
logger = setup(args, "td3")
env = make_train_env(args.env_id, args.num_envs, args.seed)
obs_dim, action_spec = env_specs(args.env_id)

# -- models: a deterministic policy with Gaussian exploration noise, a Q-network -----------
actor = make_deterministic_actor(obs_dim, action_spec, args.hidden)
high = action_spec.high.max().item()  # noise is given in units of the action range
explore = AdditiveGaussianModule(
    action_spec, sigma_init=args.exploration_noise * high, sigma_end=args.exploration_noise * high
)
policy = TensorDictSequential(actor, explore)
qvalue = make_qvalue(obs_dim, action_spec.shape[-1], args.hidden)
loss_module = TD3Loss(
    actor,
    qvalue,
    action_spec=action_spec,
    policy_noise=args.policy_noise * high,
    noise_clip=args.noise_clip * high,
    gamma=args.gamma,
)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
# The critics every step, the actor and the targets every policy_delay steps.
step = td3_step(loss_module, optimizer, SoftUpdate(loss_module, tau=args.tau), args)
replay_buffer = make_replay_buffer(args.buffer_size, args.batch_size)

# -- the loop: the critics learn every step, the actor and the targets every policy-delay --
collector = SyncDataCollector(
    env,
    policy,
    frames_per_batch=args.frames_per_batch,
    total_frames=args.total_frames,
    init_random_frames=args.learning_starts,
)
metrics, bar, frames, updates = Metrics(), progress(args), 0, 0
for batch in collector:
    frames += batch.numel()
    store(replay_buffer, batch, loss_module)
    if frames < args.learning_starts:
        log_episodes(logger, bar, batch, frames)
        continue
    for _ in range(batch.numel()):
        updates += 1
        out = step(updates, replay_buffer.sample())
    metrics.add(loss_actor=out["loss_actor"], loss_qvalue=out["loss_qvalue"])
    if frames % 1000 < batch.numel():
        metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
bar.close()
collector.shutdown()
finish(logger, args, actor, frames, {"actor": actor, "qvalue": loss_module})
