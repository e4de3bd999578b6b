"""DQN (with a target network and epsilon-greedy exploration), CartPole-v1 by default.

    python examples/dqn.py                      # 100k frames
    python examples/dqn.py --total-frames 20000 --seed 3

Writes runs/dqn-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Mnih et al. 2015, "Human-level control through deep RL".
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
    make_replay_buffer,
    make_train_env,
    progress,
    setup,
    store,
    update_step,
)
from tensordict.nn import TensorDictSequential
from torch import nn

from rlblocks.collectors import SyncDataCollector
from rlblocks.objectives import DQNLoss, HardUpdate
from rlblocks.objectives.modules import MLP, EGreedyModule, QValueActor

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="CartPole-v1", total_frames=100_000)
parser.add_argument("--num-envs", type=int, default=4, help="envs stepped together")
parser.add_argument("--frames-per-batch", type=int, default=256, help="frames between updates")
parser.add_argument("--gradient-steps", type=int, default=64, help="updates per batch")
parser.add_argument("--batch-size", type=int, default=128, help="transitions per update")
parser.add_argument("--buffer-size", type=int, default=100_000, help="replay capacity")
parser.add_argument("--learning-starts", type=int, default=1000, help="random frames first")
parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
parser.add_argument("--gamma", type=float, default=0.99, help="discount")
parser.add_argument("--target-update", type=int, default=100, help="updates between copies")
parser.add_argument(
    "--target-update-frames",
    type=int,
    default=None,
    help="copy every N frames instead (SB3's target_update_interval): the copies then fall "
    "between two rounds of updates",
)
parser.add_argument("--eps-end", type=float, default=0.04, help="final epsilon")
parser.add_argument("--exploration-fraction", type=float, default=0.16, help="of the frames")
parser.add_argument("--hidden", type=int, default=256, help="cells per hidden layer")
parser.add_argument("--double-dqn", action="store_true", help="double-DQN target")
parser.add_argument("--loss-function", default="l2", choices=["l2", "smooth_l1"], help="TD loss")
parser.add_argument("--max-grad-norm", type=float, default=None, help="gradient clipping")
add_ship_args(parser)  # --export, --video
args = parser.parse_args()
logger = setup(args, "dqn")
env = make_train_env(args.env_id, args.num_envs, args.seed)

# -- models: a Q-network acting greedily, wrapped in epsilon-greedy exploration -------------
obs_dim, action_spec = env_specs(args.env_id)
qnet = MLP(obs_dim, action_spec.n, num_cells=[args.hidden] * 2, activation_class=nn.ReLU)
qvalue = QValueActor(qnet, spec=action_spec)
explore = EGreedyModule(
    action_spec,
    eps_init=1.0,
    eps_end=args.eps_end,
    annealing_num_steps=int(args.exploration_fraction * args.total_frames),
)
policy = TensorDictSequential(qvalue, explore)
loss_module = DQNLoss(
    qvalue,
    loss_function=args.loss_function,
    delay_value=True,
    gamma=args.gamma,
    double_dqn=args.double_dqn,
)
target_updater = HardUpdate(loss_module, period=args.target_update)
params = list(loss_module.parameters())
optimizer = torch.optim.Adam(params, lr=args.lr)
update = update_step(loss_module, optimizer, args, max_grad_norm=args.max_grad_norm)
replay_buffer = make_replay_buffer(args.buffer_size, args.batch_size)

# -- the loop: collect, store, then a few gradient steps on replayed transitions ------------
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
    explore.step(batch.numel())
    every = args.target_update_frames
    if every and frames // every > (frames - batch.numel()) // every:
        target_updater.copy_()  # no update since the last round: a copy of its result
    if frames >= args.learning_starts:
        for _ in range(args.gradient_steps):
            out = update(replay_buffer.sample())
            if not every:
                target_updater.step()
        metrics.add(td_loss=out["loss_qvalue"], epsilon=explore.eps)
        metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
bar.close()
collector.shutdown()
finish(logger, args, policy, frames, {"qvalue": qvalue})
