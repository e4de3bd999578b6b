"""DQN with hindsight experience replay (HER) on the bit-flipping task, 15 bits by default.

    python examples/her_bitflip.py              # HER ("future", k=4): success rate 1.0
    python examples/her_bitflip.py --her-k 0    # the same DQN without relabelling: 0.0

Writes runs/her_bitflip-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Andrychowicz et al. 2017, "Hindsight Experience Replay".

Each episode starts from random bits and asks for random target bits; an action flips one
bit, the reward is -1 until the bits match (then 0, and the episode ends), and an episode is
cut after n_bits steps. Random actions almost never reach a 15-bit target, so without HER
the Q-network never sees a reward other than -1. HER replays each sampled transition, with
probability k / (k + 1), as if its goal had been bits its episode reached later. The
Q-network reads the bits and the goal; gamma 0.98, k = 4 and "future" are the paper's. The
evaluation plays greedy episodes on fresh targets: the mean return (-6.5 is optimal: a
target differs in 7.5 bits on average) and the success rate.
"""

from __future__ import annotations

import torch
from _common import (
    Metrics,
    base_parser,
    finish,
    first_episode_return,
    log_episodes,
    progress,
    setup,
    update_step,
)
from tensordict.nn import TensorDictSequential
from torch import nn

from rlblocks.buffers import HindsightRelabel, LazyTensorStorage, TensorDictReplayBuffer
from rlblocks.collectors import SyncDataCollector
from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.specs import Categorical
from rlblocks.envs import BitFlippingEnv, RewardSum, TransformedEnv
from rlblocks.objectives import DQNLoss, SoftUpdate
from rlblocks.objectives.modules import MLP, EGreedyModule, QValueActor

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="BitFlippingEnv", total_frames=40_000)
parser.add_argument("--n-bits", type=int, default=15, help="bits to match (and actions)")
parser.add_argument("--her-k", type=int, default=4, help="relabelled per real transition")
parser.add_argument("--her-strategy", default="future", choices=["future", "final", "episode"])
parser.add_argument("--num-envs", type=int, default=16, help="envs stepped together")
parser.add_argument("--frames-per-batch", type=int, default=256, help="frames between updates")
parser.add_argument("--gradient-steps", type=int, default=32, help="updates per batch")
parser.add_argument("--batch-size", type=int, default=256, help="transitions per update")
parser.add_argument("--buffer-size", type=int, default=100_000, help="replay capacity")
parser.add_argument("--learning-starts", type=int, default=1000, help="random frames first")
parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
parser.add_argument("--gamma", type=float, default=0.98, help="discount")
parser.add_argument("--tau", type=float, default=0.005, help="target network update weight")
parser.add_argument("--eps-end", type=float, default=0.05, help="final epsilon")
parser.add_argument("--exploration-fraction", type=float, default=0.2, help="of the frames")
parser.add_argument("--hidden", type=int, default=256, help="cells per hidden layer")
args = parser.parse_args()
if args.env_id != "BitFlippingEnv":
    parser.error(f"--env-id {args.env_id}: this example runs BitFlippingEnv; size it with --n-bits")
logger = setup(args, "her_bitflip")
env = TransformedEnv(BitFlippingEnv(args.n_bits, batch_size=[args.num_envs]), RewardSum())
env.set_seed(args.seed)

# -- models: Q(s, g, .) on the bits and the goal, epsilon-greedy exploration ----------------
qnet = MLP(2 * args.n_bits, args.n_bits, num_cells=[args.hidden] * 2, activation_class=nn.ReLU)
qvalue = QValueActor(qnet, in_keys=["observation", "desired_goal"], spec=Categorical(args.n_bits))
explore = EGreedyModule(
    Categorical(args.n_bits),  # one env's action
    eps_init=1.0,
    eps_end=args.eps_end,
    annealing_num_steps=int(args.exploration_fraction * args.total_frames),
)
policy = TensorDictSequential(qvalue, explore)
loss_module = DQNLoss(qvalue, delay_value=True, double_dqn=True, gamma=args.gamma)
target_updater = SoftUpdate(loss_module, tau=args.tau)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update = update_step(loss_module, optimizer, args)

# -- replay: goals relabelled at sampling time, within each collector trajectory -------------
storage = LazyTensorStorage(args.buffer_size)
her = HindsightRelabel(
    storage,
    BitFlippingEnv.compute_reward,
    terminated_fn=BitFlippingEnv.compute_terminated,  # reaching the new goal ends the episode
    strategy=args.her_strategy,
    n_sampled_goal=args.her_k,
    traj_key=("collector", "traj_ids"),  # each env's steps, though the batches mix the envs
)
replay_buffer = TensorDictReplayBuffer(storage=storage, batch_size=args.batch_size, transform=her)

# -- the loop: collect, store, then gradient steps on relabelled transitions ----------------
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
    replay_buffer.extend(batch.reshape(-1))
    explore.step(batch.numel())
    if frames >= args.learning_starts:
        for _ in range(args.gradient_steps):
            out = update(replay_buffer.sample())
            target_updater.step()
        metrics.add(td_loss=out["loss_qvalue"], epsilon=explore.eps)
        ended = batch["next", "done"]  # the share of the episodes ended here that succeeded
        if ended.any():
            metrics.add(success=batch["next", "terminated"][ended].float().mean())
        metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
bar.close()
collector.shutdown()

# -- evaluation: greedy episodes on fresh targets; each env's first episode counts ----------
eval_env = BitFlippingEnv(args.n_bits, batch_size=[args.eval_episodes], seed=args.seed + 10_000)
with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
    traj = eval_env.rollout(eval_env.max_steps, qvalue, break_when_any_done=False)
eval_return = first_episode_return(traj, "reward")
success = first_episode_return(traj, "terminated")  # 1 where the first episode reached its goal
eval_env.close()
logger.log_scalar("eval/success", success, step=frames)
print(f"final success rate: {success:.2f}")
finish(logger, args, qvalue, frames, {"qvalue": qvalue}, eval_return=eval_return)
