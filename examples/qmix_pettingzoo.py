"""VDN (or QMIX) on PettingZoo's MPE simple_spread: 3 agents cover 3 landmarks together.

    python examples/qmix_pettingzoo.py                 # VDN, 8 envs, 100k frames
    python examples/qmix_pettingzoo.py --mixer qmix    # mixed by state-conditioned weights

Needs the PettingZoo backend with MPE: pip install "plugins/rlpettingzoo[mpe]".
Writes runs/qmix_pettingzoo-<time>-seed<seed>/. References: Rashid et al. 2018 (QMIX), Sunehag
et al. 2018 (VDN). Each agent's Q-network (parameters shared by the agents) sees its own
observation; the mixer sees the env's global state. The team reward is the mean of the
agents' rewards (simple_spread gives each agent the same shared reward by default); one
frame is one step of one env. Evaluation: the mean team return of one 25-step episode per
env, greedy.
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

from rlblocks.buffers import LazyTensorStorage, TensorDictReplayBuffer
from rlblocks.collectors import SyncDataCollector
from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.specs import Categorical
from rlblocks.envs import RewardSum, SerialEnv, TransformedEnv
from rlblocks.objectives import QMixerLoss, SoftUpdate
from rlblocks.objectives.modules import EGreedyModule, MultiAgentMLP, QMixer, QValueActor, VDNMixer
from rlblocks.pettingzoo import PettingZooEnv

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="mpe2.simple_spread_v3", total_frames=100_000)
parser.add_argument("--n-agents", type=int, default=3, help="agents (and landmarks)")
parser.add_argument("--max-cycles", type=int, default=25, help="steps per episode")
parser.add_argument("--num-envs", type=int, default=8, help="envs stepped together")
parser.add_argument("--frames-per-batch", type=int, default=200, help="frames between updates")
parser.add_argument("--gradient-steps", type=int, default=32, help="updates per batch")
parser.add_argument("--batch-size", type=int, default=256, help="transitions per update")
parser.add_argument("--buffer-size", type=int, default=100_000, help="replay capacity")
parser.add_argument("--learning-starts", type=int, default=2000, help="random frames first")
parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate")
parser.add_argument("--gamma", type=float, default=0.99, help="discount")
parser.add_argument(
    "--reward-scale", type=float, default=0.1, help="team reward factor: QMIX's ELU mixer "
    "saturates (and stops training the agents) when values reach tens"
)  # fmt: skip
parser.add_argument("--tau", type=float, default=0.005, help="target network update weight")
parser.add_argument("--loss-function", default="smooth_l1", choices=["l2", "smooth_l1"])
parser.add_argument("--eps-end", type=float, default=0.05, help="final epsilon")
parser.add_argument("--exploration-fraction", type=float, default=0.3, help="of the frames")
parser.add_argument("--hidden", type=int, default=128, help="cells per hidden layer")
parser.add_argument("--share-params", action="store_true", help="one Q-network for all agents")
parser.add_argument("--mixer", default="vdn", choices=["vdn", "qmix"], help="value mixer")
parser.add_argument("--max-grad-norm", type=float, default=10.0, help="gradient clipping")
args = parser.parse_args()
logger = setup(args, "qmix_pettingzoo")


def make_env() -> PettingZooEnv:
    return PettingZooEnv(args.env_id, N=args.n_agents, max_cycles=args.max_cycles,
                         continuous_actions=False, return_state=True)  # fmt: skip


reward_sums = RewardSum(in_keys=[("agents", "reward")])  # each agent's episode return
env = TransformedEnv(SerialEnv(args.num_envs, make_env), reward_sums)
env.set_seed(args.seed)
obs_dim = env.full_observation_spec["agents", "observation"].shape[-1]
n_actions = env.full_action_spec["agents", "action"].n
state_dim = env.full_observation_spec["state"].shape[-1]

# -- models: per-agent Q-values (own parameters by default), a mixer, epsilon-greedy ---------
qnet = MultiAgentMLP(obs_dim, n_actions, args.n_agents, centralized=False, depth=2,
                     share_params=args.share_params, num_cells=args.hidden,
                     activation_class=nn.ReLU)  # fmt: skip
qvalue = QValueActor(
    qnet,
    in_keys=[("agents", "observation")],
    action_value_key=("agents", "action_value"),  # greedy actions go next to it, per agent
    spec=Categorical(n_actions, shape=(args.n_agents,)),
)
explore = EGreedyModule(
    Categorical(n_actions),  # one agent's action: every agent explores on its own
    eps_init=1.0,
    eps_end=args.eps_end,
    annealing_num_steps=int(args.exploration_fraction * args.total_frames),
    action_key=("agents", "action"),
)
policy = TensorDictSequential(qvalue, explore)
mixer = QMixer(state_dim, 32, args.n_agents) if args.mixer == "qmix" else VDNMixer(args.n_agents)
loss_module = QMixerLoss(qvalue, mixer, loss_function=args.loss_function, gamma=args.gamma)
target_updater = SoftUpdate(loss_module, tau=args.tau)  # Polyak targets: steadier than copies
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update = update_step(loss_module, optimizer, args, max_grad_norm=args.max_grad_norm)
replay_buffer = TensorDictReplayBuffer(
    storage=LazyTensorStorage(args.buffer_size), batch_size=args.batch_size
)

# -- the loop: collect, store with the team reward, a few updates on replayed steps ---------
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
    team_reward = batch["next", "agents", "reward"].mean(-2)  # [*batch, 1]: what QMIX learns
    batch["next", "reward"] = team_reward * args.reward_scale
    replay_buffer.extend(batch.reshape(-1))
    explore.step(batch.numel())
    if frames >= args.learning_starts:
        for _ in range(args.gradient_steps):
            out = update(replay_buffer.sample())
            target_updater.step()
        metrics.add(td_loss=out["loss_qvalue"], epsilon=explore.eps)
        metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames, ("agents", "episode_reward"))  # the team's
bar.close()
collector.shutdown()

# -- evaluation: greedy actions, fresh envs, one full episode each ---------------------------
eval_env = SerialEnv(args.eval_episodes, make_env)
eval_env.set_seed(args.seed + 10_000)
with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
    traj = eval_env.rollout(args.max_cycles, qvalue, break_when_any_done=False)
eval_return = first_episode_return(traj, ("agents", "reward"))  # the team return
eval_env.close()
finish(logger, args, qvalue, frames, {"qvalue": qvalue, "mixer": mixer}, eval_return=eval_return)
