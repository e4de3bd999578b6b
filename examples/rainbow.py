"""Rainbow DQN (C51, dueling, noisy nets, n-step, prioritized replay, double-Q), CartPole-v1.

    python examples/rainbow.py                  # 100k frames; evaluation return 500
    python examples/rainbow.py --n-steps 1 --alpha 0 --no-dueling --no-double  # parts off

Writes runs/rainbow-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Hessel et al. 2018, "Rainbow: Combining Improvements in Deep
Reinforcement Learning".

Noisy layers explore (no epsilon-greedy): they get new noise before every update, so the
policy acts with the last update's noise for the next batch (16 frames of each env), and the
evaluation uses their mean weights. The n-step, prioritization and noise settings are the
paper's (n = 3, alpha = 0.5, sigma_0 = 0.5); the support [0, 100] holds CartPole's
discounted returns (at most 1 / (1 - 0.99)); the replay ratio is examples/dqn.py's (one
update of 128 transitions per 4 frames). The priorities are the per-sample cross-entropies
and the loss weights each sample by its importance weight, beta annealed from 0.4 to 1 as
in the paper: 500 on seeds 1-3 (500 on seeds 1-3 with --beta 0 too, no correction).
"""

from __future__ import annotations

from functools import partial

import torch
from _common import (
    Metrics,
    base_parser,
    env_specs,
    finish,
    log_episodes,
    make_train_env,
    progress,
    setup,
    update_step,
)
from torch import nn

from rlblocks.buffers import (
    LazyTensorStorage,
    MultiStepTransform,
    TensorDictPrioritizedReplayBuffer,
)
from rlblocks.collectors import SyncDataCollector
from rlblocks.objectives import DistributionalDQNLoss, HardUpdate
from rlblocks.objectives.modules import (
    MLP,
    DistributionalQValueActor,
    DuelingMlpDQNet,
    NoisyLinear,
    reset_noise,
)

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="CartPole-v1", total_frames=100_000)
parser.add_argument("--num-envs", type=int, default=4, help="envs stepped together")
parser.add_argument("--frames-per-batch", type=int, default=64, help="frames between updates")
parser.add_argument("--gradient-steps", type=int, default=16, help="updates per batch")
parser.add_argument("--batch-size", type=int, default=128, help="transitions per update")
parser.add_argument("--buffer-size", type=int, default=100_000, help="replay capacity")
parser.add_argument("--learning-starts", type=int, default=1000, help="random frames first")
parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
parser.add_argument("--gamma", type=float, default=0.99, help="discount")
parser.add_argument("--n-steps", type=int, default=3, help="n-step returns (1: one-step)")
parser.add_argument("--atoms", type=int, default=51, help="atoms of the return distribution")
parser.add_argument("--v-min", type=float, default=0.0, help="lowest atom")
parser.add_argument("--v-max", type=float, default=100.0, help="highest atom")
parser.add_argument("--alpha", type=float, default=0.5, help="priority exponent (0: uniform)")
parser.add_argument("--beta", type=float, default=0.4, help="importance-weight exponent at the "
                    "start, annealed to 1 (0: not applied)")  # fmt: skip
parser.add_argument("--noise-std", type=float, default=0.5, help="noisy layers' sigma_0")
parser.add_argument("--target-update", type=int, default=100, help="updates between copies")
parser.add_argument("--hidden", type=int, default=256, help="cells per hidden layer")
parser.add_argument("--no-dueling", action="store_true", help="one head instead of V + A")
parser.add_argument("--no-double", action="store_true", help="target network picks a*")
parser.add_argument("--max-grad-norm", type=float, default=10.0, help="gradient clipping")
args = parser.parse_args()
logger = setup(args, "rainbow")
env = make_train_env(args.env_id, args.num_envs, args.seed)

# -- model: return distributions over a fixed support, from noisy (dueling) heads ----------
obs_dim, action_spec = env_specs(args.env_id)
n_actions = action_spec.n
noisy = partial(NoisyLinear, std_init=args.noise_std)
if args.no_dueling:
    net = nn.Sequential(
        MLP(obs_dim, args.hidden, num_cells=[args.hidden], activation_class=nn.ReLU),
        nn.ReLU(),
        MLP(args.hidden, (args.atoms, n_actions), num_cells=[args.hidden],
            activation_class=nn.ReLU, layer_class=noisy),
    )  # fmt: skip
else:
    net = DuelingMlpDQNet(
        (args.atoms, n_actions),
        (args.atoms, 1),  # V(s) per atom, broadcast over the actions
        mlp_kwargs_feature={"in_features": obs_dim, "num_cells": [args.hidden],
                            "out_features": args.hidden, "activation_class": nn.ReLU},
        mlp_kwargs_output={"in_features": args.hidden, "num_cells": args.hidden,
                           "activation_class": nn.ReLU, "layer_class": noisy},
    )  # fmt: skip
support = torch.linspace(args.v_min, args.v_max, args.atoms)
qvalue = DistributionalQValueActor(net, support, spec=action_spec)
loss_module = DistributionalDQNLoss(qvalue, gamma=args.gamma, double_dqn=not args.no_double)
target_updater = HardUpdate(loss_module, period=args.target_update)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update = update_step(loss_module, optimizer, args, max_grad_norm=args.max_grad_norm)
multistep = MultiStepTransform(args.n_steps, args.gamma)
replay_buffer = TensorDictPrioritizedReplayBuffer(
    alpha=args.alpha,
    beta=args.beta,  # with beta 0 every importance weight is 1 (see the docstring)
    storage=LazyTensorStorage(args.buffer_size),
    batch_size=args.batch_size,
)

# -- the loop: collect with the noisy policy, store n-step transitions, prioritized updates -
collector = SyncDataCollector(
    env,
    qvalue,
    frames_per_batch=args.frames_per_batch,
    total_frames=args.total_frames,
    init_random_frames=args.learning_starts,
)
metrics, bar, frames = Metrics(), progress(args), 0
for batch in collector:
    frames += batch.numel()
    replay_buffer.extend(multistep(batch).reshape(-1))
    if frames >= args.learning_starts:
        for _ in range(args.gradient_steps):
            reset_noise(loss_module)  # new noise for each update (online and target nets)
            if args.beta:  # annealed to 1 at the end, as in the paper
                replay_buffer.sampler.beta = (
                    args.beta + (1 - args.beta) * frames / args.total_frames
                )
            sample = replay_buffer.sample()
            out = update(sample)
            replay_buffer.update_tensordict_priority(sample)  # its td_error: cross-entropy
            target_updater.step()
        metrics.add(cross_entropy=out["loss_qvalue"], q_value=out["pred_value"].mean())
        metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
bar.close()
collector.shutdown()
qvalue.eval()  # the noisy layers' mean weights: the greedy, deterministic policy
finish(logger, args, qvalue, frames, {"qvalue": qvalue})
