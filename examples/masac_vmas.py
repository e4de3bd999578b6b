"""MASAC on VMAS navigation: agents learn to reach their goals from replayed experience.

    python examples/masac_vmas.py                     # 3 agents, 64 envs, 100k frames
    python examples/masac_vmas.py --total-frames 60000 --seed 2

Needs the VMAS backend (pip install plugins/rlvmas). Writes runs/masac_vmas-<time>-seed<seed>/.
References: Haarnoja et al. 2018 (SAC); Lowe et al. 2017 (centralised critics); Bettini et
al. 2022 (VMAS). The tanh-Gaussian policy's parameters are shared by the agents, each seeing
its own observation; the twin critics are centralised: each agent's Q sees every agent's
observation and action. One temperature, aiming at minus one agent's action dims; it starts
small (0.01) because a step's reward is a few hundredths. Evaluation: the mean over agents
of each env's first episode return with the mean action (an episode ends when every agent
is on its goal, or after 100 steps).
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
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from rlblocks.buffers import LazyTensorStorage, TensorDictReplayBuffer
from rlblocks.collectors import SyncDataCollector
from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.envs import RewardSum, TransformedEnv
from rlblocks.objectives import MASACLoss, SoftUpdate
from rlblocks.objectives.modules import (
    MultiAgentMLP,
    NormalParamExtractor,
    ProbabilisticActor,
    TanhNormal,
)
from rlblocks.vmas import VmasEnv

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="navigation", total_frames=100_000)
parser.add_argument("--n-agents", type=int, default=3, help="agents in the scenario")
parser.add_argument("--max-steps", type=int, default=100, help="steps per episode")
parser.add_argument("--num-envs", type=int, default=64, help="VMAS envs stepped together")
parser.add_argument("--frames-per-batch", type=int, default=640, help="frames between updates")
parser.add_argument("--gradient-steps", type=int, default=64, help="updates per batch")
parser.add_argument("--batch-size", type=int, default=256, help="transitions per update")
parser.add_argument("--buffer-size", type=int, default=100_000, help="replay capacity")
parser.add_argument("--learning-starts", type=int, default=3200, help="random frames first")
parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (all terms)")
parser.add_argument("--gamma", type=float, default=0.9, help="discount")
parser.add_argument("--alpha-init", type=float, default=0.01, help="initial temperature")
parser.add_argument("--tau", type=float, default=0.005, help="target network update weight")
parser.add_argument("--hidden", type=int, default=128, help="cells per hidden layer")
args = parser.parse_args()
logger = setup(args, "masac_vmas")


def make_env(num_envs: int, seed: int) -> TransformedEnv:
    env = VmasEnv(args.env_id, num_envs=num_envs, max_steps=args.max_steps, seed=seed,
                  n_agents=args.n_agents)  # fmt: skip
    return TransformedEnv(env, RewardSum(in_keys=[("agents", "reward")]))


env = make_env(args.num_envs, args.seed)
obs_dim = env.full_observation_spec["agents", "observation"].shape[-1]
action_spec = env.full_action_spec["agents", "action"]
action_dim = action_spec.shape[-1]


def mlp(n_in: int, n_out: int, centralized: bool) -> MultiAgentMLP:
    """Parameters shared by the agents; a centralized net sees every agent's input."""
    return MultiAgentMLP(n_in, n_out, args.n_agents, centralized=centralized, share_params=True,
                         depth=2, num_cells=args.hidden, activation_class=nn.ReLU)  # fmt: skip


# -- models: a tanh-Gaussian policy per agent, a centralized Q (the loss makes the twins) ----
actor = ProbabilisticActor(
    TensorDictModule(
        nn.Sequential(mlp(obs_dim, 2 * action_dim, False), NormalParamExtractor()),
        in_keys=[("agents", "observation")],
        out_keys=[("agents", "loc"), ("agents", "scale")],
    ),
    in_keys={"loc": ("agents", "loc"), "scale": ("agents", "scale")},
    out_keys=[("agents", "action")],
    distribution_class=TanhNormal,  # squashed into the bounds of one env's agents' actions
    distribution_kwargs={"low": action_spec.low[0], "high": action_spec.high[0]},
)
# Q_i(o_1..o_n, a_1..a_n) for each agent i: one network over every agent's obs and action.
qvalue = TensorDictSequential(
    TensorDictModule(lambda obs, action: torch.cat([obs, action], -1),
                     in_keys=[("agents", "observation"), ("agents", "action")],
                     out_keys=[("agents", "obs_action")]),
    TensorDictModule(mlp(obs_dim + action_dim, 1, True), in_keys=[("agents", "obs_action")],
                     out_keys=[("agents", "state_action_value")]),
)  # fmt: skip
# target_entropy "auto": minus one agent's action dims, read from the first batch.
loss_module = MASACLoss(actor, qvalue, group="agents", gamma=args.gamma,
                        alpha_init=args.alpha_init)  # fmt: skip
target_updater = SoftUpdate(loss_module, tau=args.tau)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update = update_step(loss_module, optimizer, args)  # actor, critics and temperature at once
replay_buffer = TensorDictReplayBuffer(
    storage=LazyTensorStorage(args.buffer_size), batch_size=args.batch_size
)

# -- the loop: collect, store, a few updates on replayed steps (a frame is one env step) -----
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
    replay_buffer.extend(batch.reshape(-1))
    if frames >= args.learning_starts:
        for _ in range(args.gradient_steps):
            out = update(replay_buffer.sample())
            target_updater.step()
        terms = ("loss_actor", "loss_qvalue", "loss_alpha", "entropy")
        metrics.add(**{key: out[key] for key in terms}, alpha=out["alpha"])
        metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames, ("agents", "episode_reward"))  # mean over agents
bar.close()
collector.shutdown()

# -- evaluation: the mean action, fresh envs, each one's first episode ----------------------
eval_env = make_env(args.eval_episodes, args.seed + 10_000)
with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
    traj = eval_env.rollout(args.max_steps, actor, break_when_any_done=False)
eval_return = first_episode_return(traj, ("agents", "reward"))  # mean over agents
finish(
    logger, args, actor, frames, {"actor": actor, "qvalue": loss_module}, eval_return=eval_return
)
