"""Decision Transformer trained offline from a recorded dataset, Pendulum-v1 by default.

    python examples/dt_offline.py                          # Minari dataset, 6k updates
    python examples/dt_offline.py --dataset-format d4rl    # the same in D4RL's HDF5 layout

The first run with a seed trains a SAC expert briefly and records a medium-quality dataset
from it (see _offline.py; later runs reuse both). The transformer learns to predict the
dataset's actions from slices of --context steps (return-to-go, observation, action tokens),
and acts by asking for --target-return (default: the best episode return in the dataset).
The final evaluation prints the return and D4RL's normalized score (0 random, 1 the expert).
Writes runs/dt-<time>-seed<seed>/. Reference: Chen et al. 2021, "Decision Transformer:
Reinforcement Learning via Sequence Modeling".
"""

from __future__ import annotations

import gymnasium as gym
import torch
from _common import base_parser, finish, update_step
from _offline import add_dataset_args, report, start, train
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.buffers import SliceSampler
from rlblocks.core import step_mdp
from rlblocks.envs import GymEnv
from rlblocks.objectives import DecisionTransformerLoss
from rlblocks.objectives.modules import DecisionTransformerPolicy, DTActor

# -- hyper-parameters (the paper's for MuJoCo scaled down to a CPU: a smaller transformer, a
# shorter context, 6k updates at a higher learning rate, no warm-up) ------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="Pendulum-v1", total_frames=6_000)
add_dataset_args(parser)
parser.set_defaults(total_frames=6_000)  # here: gradient steps
parser.add_argument("--context", type=int, default=10, help="steps per training slice")
parser.add_argument("--batch-size", type=int, default=64, help="slices per update")
parser.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate")
parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
parser.add_argument("--embed", type=int, default=64, help="token width")
parser.add_argument("--layers", type=int, default=2, help="transformer blocks")
parser.add_argument("--heads", type=int, default=1, help="attention heads")
parser.add_argument("--dropout", type=float, default=0.1, help="dropout")
parser.add_argument("--target-return", type=float, default=None, help="return to ask for")
args = parser.parse_args()
mask = ("collector", "mask")


def as_slices(batch: TensorDictBase) -> TensorDictBase:
    """The sampler's flat batch as [slices, context] steps, every step real (unpadded)."""
    batch = batch.reshape(-1, args.context)
    batch.set(mask, torch.ones(batch.shape, dtype=torch.bool))
    return batch


logger, obs_dim, action_spec, dataset, refs = start(
    args,
    "dt",
    batch_size=args.batch_size * args.context,
    sampler=SliceSampler(slice_len=args.context, traj_key="episode"),
    transform=as_slices,
)
stats = dataset.stats  # the transformer sees normalized observations and returns-to-go


# -- the model: DTActor between the dataset's units and its own ---------------------------
class Normalized(nn.Module):
    def __init__(self, dt: DTActor) -> None:
        super().__init__()
        self.dt = dt
        self.register_buffer("loc", stats["observation", "loc"])
        self.register_buffer("scale", stats["observation", "scale"])
        self.register_buffer("high", action_spec.high)
        self.rtg_scale = stats["return_to_go", "scale"].item()

    def forward(self, observation, action, return_to_go, step_count, attention_mask):
        obs = (observation - self.loc) / self.scale
        rtg = return_to_go / self.rtg_scale
        out = self.dt(obs, action / self.high, rtg, step_count.squeeze(-1), attention_mask)
        return out * self.high


dt = DTActor(
    obs_dim,
    action_spec.shape[-1],
    n_embd=args.embed,
    n_layer=args.layers,
    n_head=args.heads,
    n_inner=4 * args.embed,
    context_length=args.context,
    dropout=args.dropout,
    max_ep_len=gym.spec(args.env_id).max_episode_steps,  # timesteps embedded, as in the paper
)
actor = TensorDictModule(
    Normalized(dt),
    in_keys=["observation", "action", "return_to_go", "step_count", mask],
    out_keys=["action"],
)
loss_module = DecisionTransformerLoss(actor)
optimizer = torch.optim.AdamW(dt.parameters(), lr=args.lr, weight_decay=args.weight_decay)
update = update_step(loss_module, optimizer, args, max_grad_norm=0.25)

# -- the loop: gradient steps on dataset slices ("frames" counts the steps) ----------------
train(args, logger, dataset, lambda number, batch: update(batch), ("loss_actor",))


# -- evaluation: the policy keeps its window and its return-to-go target itself -----------
@torch.no_grad()
def evaluate(target: float, episodes: int = 10) -> float:
    actor.eval()
    policy = DecisionTransformerPolicy(actor, target_return=target)
    steps = gym.spec(args.env_id).max_episode_steps
    total, alive = torch.zeros(episodes, 1), torch.ones(episodes, 1, dtype=torch.bool)
    with GymEnv(args.env_id, num_envs=episodes) as env:
        env.set_seed(args.seed + 10_000)
        td = env.reset()
        for _ in range(steps):
            td = env.step(policy(td))
            reward, done = td["next", "reward"], td["next", "done"]
            total += reward * alive
            alive &= ~done
            policy.observe(reward, done)
            td = step_mdp(td)
    return total.mean().item()


target = args.target_return if args.target_return is not None else refs["best"]
print(f"asking for return {target:.1f}")
result = evaluate(target, args.eval_episodes)
report(finish(logger, args, actor, args.total_frames, {"dt": dt}, eval_return=result), refs)
