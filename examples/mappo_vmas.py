"""MAPPO on VMAS navigation: agents learn to reach their goals without colliding.

    python examples/mappo_vmas.py                     # 3 agents, 60 envs, ~60k frames
    python examples/mappo_vmas.py --ippo              # a decentralised critic instead

Needs the VMAS backend (pip install plugins/rlvmas). Writes runs/mappo_vmas-<time>-seed<seed>/.
References: Yu et al. 2022 (MAPPO); Bettini et al. 2022 (VMAS). Settings: TorchRL's
multi-agent PPO tutorial on this task (3 agents, 100-step episodes, 60 envs x 100 steps per
batch, 30 epochs of 400-frame minibatches, lr 3e-4, clip 0.2, gamma 0.99, lambda 0.9).
The policy's parameters are shared by the agents, each seeing its own observation; MAPPO's
critic sees all of them. Evaluation: the mean over agents of each env's first episode
return (an episode ends when every agent is on its goal, or after 100 steps).
"""

from __future__ import annotations

import torch
from _common import (
    Metrics,
    base_parser,
    finish,
    first_episode_return,
    log_episodes,
    ppo_epochs,
    progress,
    setup,
    update_step,
)
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn

from rlblocks.collectors import SyncDataCollector
from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.envs import RewardSum, TransformedEnv
from rlblocks.objectives import IPPOLoss, MAPPOLoss
from rlblocks.objectives.modules import MultiAgentMLP, ProbabilisticActor, TanhNormal, ValueOperator
from rlblocks.vmas import VmasEnv

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="navigation", total_frames=60_000)
parser.add_argument("--n-agents", type=int, default=3, help="agents in the scenario")
parser.add_argument("--max-steps", type=int, default=100, help="steps per episode")
parser.add_argument("--num-envs", type=int, default=60, help="VMAS envs stepped together")
parser.add_argument("--num-steps", type=int, default=100, help="steps per env per batch")
parser.add_argument("--update-epochs", type=int, default=30, help="passes over each batch")
parser.add_argument("--minibatch-size", type=int, default=400, help="frames per gradient step")
parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate")
parser.add_argument("--gamma", type=float, default=0.99, help="discount")
parser.add_argument("--gae-lambda", type=float, default=0.9, help="GAE lambda")
parser.add_argument("--clip-coef", type=float, default=0.2, help="clip range epsilon")
parser.add_argument("--ent-coef", type=float, default=1e-4, help="entropy bonus weight")
parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping")
parser.add_argument("--hidden", type=int, default=256, help="cells per hidden layer")
parser.add_argument("--ippo", action="store_true", help="decentralised critic (IPPO)")
args = parser.parse_args()
logger = setup(args, "mappo_vmas")


def make_env(num_envs: int, seed: int) -> TransformedEnv:
    env = VmasEnv(args.env_id, num_envs=num_envs, max_steps=args.max_steps, seed=seed,
                  n_agents=args.n_agents)  # fmt: skip
    return TransformedEnv(env, RewardSum(in_keys=[("agents", "reward")]))


env = make_env(args.num_envs, args.seed)
obs_dim = env.full_observation_spec["agents", "observation"].shape[-1]
action_spec = env.full_action_spec["agents", "action"]


def mlp(n_out: int, centralized: bool) -> MultiAgentMLP:
    """Parameters shared by the agents; a centralized net sees every agent's input."""
    return MultiAgentMLP(obs_dim, n_out, args.n_agents, centralized=centralized,
                         share_params=True, depth=2, num_cells=args.hidden)  # fmt: skip


# -- models: a Gaussian policy per agent, a centralized (MAPPO) or per-agent (IPPO) critic ---
actor = ProbabilisticActor(
    TensorDictModule(
        nn.Sequential(mlp(2 * action_spec.shape[-1], False), NormalParamExtractor()),
        in_keys=[("agents", "observation")],
        out_keys=[("agents", "loc"), ("agents", "scale")],
    ),
    in_keys={"loc": ("agents", "loc"), "scale": ("agents", "scale")},
    out_keys=[("agents", "action")],
    distribution_class=TanhNormal,  # squashed into the bounds of one env's agents' actions
    distribution_kwargs={"low": action_spec.low[0], "high": action_spec.high[0]},
    return_log_prob=True,
    log_prob_key=("agents", "sample_log_prob"),
)
critic = ValueOperator(
    mlp(1, centralized=not args.ippo),
    in_keys=[("agents", "observation")],
    out_keys=[("agents", "state_value")],
)
loss_module = (IPPOLoss if args.ippo else MAPPOLoss)(
    actor, critic, group="agents", clip_epsilon=args.clip_coef, entropy_coef=args.ent_coef,
    loss_critic_type="smooth_l1", gamma=args.gamma, lmbda=args.gae_lambda,
)  # fmt: skip
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update_minibatch = update_step(loss_module, optimizer, args, max_grad_norm=args.max_grad_norm)

# -- the loop: collect, GAE per agent, epochs of minibatches --------------------------------
frames_per_batch = args.num_envs * args.num_steps
n_batches = max(1, args.total_frames // frames_per_batch)
collector = SyncDataCollector(
    env, actor, frames_per_batch=frames_per_batch, total_frames=n_batches * frames_per_batch
)
metrics, bar, frames = Metrics(), progress(args), 0
for batch in collector:
    frames += batch.numel()
    with torch.no_grad():
        loss_module.value_estimator(batch)  # per agent; the env's done is broadcast
    keys = ["observation", "action", "sample_log_prob", "advantage", "value_target"]
    data = batch.reshape(-1).select(*[("agents", key) for key in keys])  # what the loss reads
    out = ppo_epochs(update_minibatch, data, args)
    metrics.add(
        pg_loss=out["loss_objective"],
        v_loss=out["loss_critic"],
        entropy=out["entropy"],
        clipfrac=out["clip_fraction"],
        approx_kl=out["kl_approx"],
    )
    metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames, ("agents", "episode_reward"))  # mean over agents
bar.close()
collector.shutdown()

# -- evaluation: the mean action, fresh envs, each one's first episode ----------------------
eval_env = make_env(args.eval_episodes, args.seed + 10_000)
with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
    traj = eval_env.rollout(args.max_steps, actor, break_when_any_done=False)
eval_return = first_episode_return(traj, ("agents", "reward"))  # mean over agents
finish(logger, args, actor, frames, {"actor": actor, "critic": critic}, eval_return=eval_return)
