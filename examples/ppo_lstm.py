"""Recurrent PPO (LSTM policy) on CartPole-v1 with the velocities masked out (a POMDP).

    python examples/ppo_lstm.py                 # ~100k frames; evaluation return ~500
    python examples/ppo_lstm.py --no-lstm       # the same with an MLP: it cannot see velocity

Writes runs/ppo_lstm-<time>-seed<seed>/ as examples/ppo.py. References: Schulman et al. 2017,
"Proximal Policy Optimization"; Hausknecht & Stone 2015, "Deep Recurrent Q-Learning for POMDPs".

Only cart position and pole angle are observed. The LSTM state travels in the TensorDict
(primer + InitTracker); the loss re-runs the LSTM over whole env sequences (minibatches are
sets of envs), restarting it at episode starts. Defaults: rl-baselines3-zoo's RecurrentPPO on
CartPoleNoVel-v1 (8 envs x 32 steps, 20 epochs, lr/clip annealed, observations normalized).
"""

from __future__ import annotations

import torch
from _common import (
    Metrics,
    base_parser,
    env_specs,
    finish,
    first_episode_return,
    log_episodes,
    ppo_epochs,
    progress,
    set_learning_rate,
    setup,
    update_step,
)
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torch.distributions import Categorical

from rlblocks.collectors import SyncDataCollector
from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.specs import Bounded
from rlblocks.envs import Compose, GymEnv, InitTracker, RewardSum, TensorDictPrimer
from rlblocks.envs.transforms import Transform, TransformedEnv, VecNorm
from rlblocks.objectives import ClipPPOLoss
from rlblocks.objectives.modules import MLP, LSTMModule, ProbabilisticActor, ValueOperator
from rlblocks.objectives.value import GAE

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="CartPole-v1", total_frames=100_000)
parser.add_argument("--no-lstm", action="store_true", help="an MLP instead of the LSTM")
parser.add_argument("--num-envs", type=int, default=8, help="envs stepped together")
parser.add_argument("--num-steps", type=int, default=32, help="steps per env per batch")
parser.add_argument("--update-epochs", type=int, default=20, help="passes over each batch")
parser.add_argument("--minibatch-size", type=int, default=8, help="env sequences per step")
parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (annealed to 0)")
parser.add_argument("--gamma", type=float, default=0.98, help="discount")
parser.add_argument("--gae-lambda", type=float, default=0.8, help="GAE lambda")
parser.add_argument("--clip-coef", type=float, default=0.2, help="clip range (annealed to 0)")
parser.add_argument("--hidden", type=int, default=64, help="LSTM (or MLP) cells")
args = parser.parse_args()
logger = setup(args, "ppo_lstm")


class MaskVelocity(Transform):
    """Keep the positions of CartPole's observation ``[x, x_dot, theta, theta_dot]``."""

    stateless, keep = True, (0, 2)

    def _apply_transform(self, value: torch.Tensor) -> torch.Tensor:
        return value[..., self.keep]

    def _apply_transform_spec(self, spec: Bounded) -> Bounded:
        return Bounded(spec.low[..., self.keep], spec.high[..., self.keep], device=spec.device)


def make_env(num_envs: int, seed: int, obs_norm: VecNorm) -> TransformedEnv:
    """The masked, normalized env, with the recurrent states (primers) and episode starts."""
    transforms = [MaskVelocity(in_keys=["observation"]), obs_norm, InitTracker(), RewardSum()]
    lstms = [m for m in (actor_memory, critic_memory) if isinstance(m, LSTMModule)]
    transforms += [TensorDictPrimer(m.primer_specs()) for m in lstms]
    env = TransformedEnv(GymEnv(args.env_id, num_envs=num_envs), Compose(*transforms))
    env.set_seed(seed)
    return env


def make_memory(name: str) -> tuple[TensorDictModule, TensorDictModule]:
    """An LSTM (or --no-lstm layer) writing ``name``: stepping, and over [envs, T] sequences."""
    if args.no_lstm:
        layer = nn.Sequential(nn.Linear(obs_dim, args.hidden), nn.ReLU())
        return (TensorDictModule(layer, in_keys=["observation"], out_keys=[name]),) * 2
    states = [f"{name}_h", f"{name}_c"]
    lstm = LSTMModule(obs_dim, args.hidden, in_key="observation", out_key=name, state_keys=states)
    return lstm, lstm.set_recurrent_mode(True)


def make_actor(memory: TensorDictModule) -> ProbabilisticActor:
    """A categorical policy on ``memory``, writing ``sample_log_prob`` (pi_old of the ratio)."""
    net = TensorDictSequential(memory, pi_head)
    return ProbabilisticActor(
        net, ["logits"], distribution_class=Categorical, spec=action_spec, return_log_prob=True
    )


# -- models: an LSTM each for the policy and the critic, as sb3-contrib's RecurrentPPO ------
obs_dim, action_spec = len(MaskVelocity.keep), env_specs(args.env_id)[1]
actor_memory, actor_sequences = make_memory("actor_memory")
critic_memory, critic_sequences = make_memory("critic_memory")
head = dict(num_cells=[64], activation_class=nn.ReLU)
pi_head = TensorDictModule(MLP(args.hidden, action_spec.n, **head), ["actor_memory"], ["logits"])
value_head = ValueOperator(MLP(args.hidden, 1, **head), in_keys=["critic_memory"])
actor, critic = make_actor(actor_memory), TensorDictSequential(critic_memory, value_head)
loss_module = ClipPPOLoss(
    make_actor(actor_sequences),
    TensorDictSequential(critic_sequences, value_head),
    clip_epsilon=args.clip_coef,
    entropy_bonus=False,  # rl-zoo's ent_coef 0
    critic_coef=0.5,
    loss_critic_type="l2",
    normalize_advantage=True,
)
# Values stepping from the stored states; under "next", the state after each step (exact).
gae = GAE(gamma=args.gamma, lmbda=args.gae_lambda, value_network=critic)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr, eps=1e-5)
update_minibatch = update_step(loss_module, optimizer, args, max_grad_norm=0.5)

# -- the loop: collect [envs, steps] sequences, advantages, epochs over sets of sequences ----
obs_norm = VecNorm(decay=None)  # running mean and std of the positions, as rl-zoo
frames_per_batch = args.num_envs * args.num_steps
n_updates = max(1, args.total_frames // frames_per_batch)
env = make_env(args.num_envs, args.seed, obs_norm)
policy = TensorDictSequential(actor, critic)  # the critic's state is carried as well
collector = SyncDataCollector(
    env, policy, frames_per_batch=frames_per_batch, total_frames=n_updates * frames_per_batch
)
metrics, bar, frames = Metrics(), progress(args), 0
for update, batch in enumerate(collector):
    frames += batch.numel()
    set_learning_rate(optimizer, args.lr * (1.0 - update / n_updates))  # both annealed
    loss_module.clip_epsilon = args.clip_coef * (1.0 - update / n_updates)
    with torch.no_grad():
        gae(batch)
    out = ppo_epochs(update_minibatch, batch, args)  # shuffles envs: whole sequences
    metrics.add(pg_loss=out["loss_objective"], v_loss=out["loss_critic"])
    metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
bar.close()
collector.shutdown()

# -- evaluation: deterministic episodes of the same masked env, the state carried through --
eval_env = make_env(args.eval_episodes, args.seed + 10_000, obs_norm.frozen_copy())
with eval_env, torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
    trajectory = eval_env.rollout(500, actor, break_when_any_done=False)  # CartPole's limit
modules = {"actor": actor, "critic": critic, "obs_norm": obs_norm}
finish(logger, args, actor, frames, modules, first_episode_return(trajectory, "reward"))
