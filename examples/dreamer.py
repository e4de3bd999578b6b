"""Dreamer (v1) on a dm_control task from its state variables, cartpole/swingup by default.

    python examples/dreamer.py                  # 100k frames, ~15 min on 1 core
    python examples/dreamer.py --pixels         # from 64x64 frames (MuJoCo renders headless)
    python examples/dreamer.py --env-id cartpole/balance --total-frames 30000

Writes runs/dreamer-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Hafner et al. 2020, "Dream to Control: Learning Behaviors by
Latent Imagination".

The world model (an RSSM: GRU belief, 30-dim Gaussian state; MLP encoder and decoder of the
state variables, or Dreamer's convolutions with --pixels; a reward head) trains on slices of
50 real steps; the actor backpropagates lambda-returns of 15-step rollouts imagined from
every latent of the slices (a ModelBasedEnv), the value regresses them. Acting needs the
latent of the present step, so the policy filters it online: each step folds the last action
(the RSSM's prior step) and the new observation (its posterior) into (state, belief), kept
across steps, zeroed at each reset. Frames are physics steps: with action repeat 8 an
episode is 1000 frames, 125 actions.

As the paper: 5 random episodes, then a fixed number of updates per episode; Adam clipped at
100, model lr 6e-4; gamma 0.99, lambda 0.95; action noise 0.3; the action model's mean
5 tanh(x / 5) and std softplus(x + 5-at-init). Changed for a 2-core CPU: layers and belief
100 wide (200-400), 16 slices per batch (50), 50 updates per episode (100), free nats 1
(with 3, the KL of 5 state variables stays under 3 nats: the prior gets no gradient), actor
and value lr 4e-4 (8e-5), and an actor entropy bonus of 1e-4 (DreamerV2's; Dreamer has
none). Action repeat 8 (the paper's 2; PlaNet, CURL and DrQ use 8 on cartpole): at 2, seed 1
settled on pushing the cart against one end (a return of ~75, which constant full force
scores) with any of the actor settings tried.

Target (benchmarks/learning.py): 326 after 100k frames, Dreamer's own score on
cartpole/swingup from pixels (the paper's curves, tabulated in CURL's Table 1); from states
the task is easier, so this is a floor, not a like-for-like comparison. Uniform random
actions score 133 on average at action repeat 8. Measured (`python benchmarks/learning.py
--algos dreamer`, 1 thread, two seeds at once, ~15 min each): 486.5 / 500.8 / 532.0 (seeds
1 / 2 / 3).

Why the benchmark runs from states: MuJoCo renders headless here (EGL, ~18 ms a 64x64
frame), but one world-model update on 16 x 50 frames takes 3.3 s on 1 CPU thread against
28 ms from states, so 100k frames from pixels would take about 5 hours a seed.
"""

from __future__ import annotations

import torch
from _common import Metrics, add_eval_every_arg, base_parser, finish, progress, setup
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.buffers import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer
from rlblocks.core import ExplorationType, set_exploration_type
from rlblocks.core.specs import Composite, Unbounded
from rlblocks.dmcontrol import DMControlEnv
from rlblocks.envs import (
    CatTensors,
    Compose,
    DoubleToFloat,
    ModelBasedEnv,
    ToTensorImage,
    TransformedEnv,
)
from rlblocks.objectives import (
    DreamerActorLoss,
    DreamerModelLoss,
    DreamerValueLoss,
    make_update_step,
)
from rlblocks.objectives.modules import (
    MLP,
    RSSM,
    NormalParamExtractor,
    ObsDecoder,
    ObsEncoder,
    ProbabilisticActor,
    TanhNormal,
    WorldModel,
)

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="cartpole/swingup", total_frames=100_000)
parser.add_argument("--pixels", action="store_true", help="learn from 64x64 frames, not states")
parser.add_argument("--action-repeat", type=int, default=8, help="physics steps per action")
parser.add_argument("--seed-episodes", type=int, default=5, help="random episodes first")
parser.add_argument("--updates", type=int, default=50, help="updates after each episode")
parser.add_argument("--batch-size", type=int, default=16, help="slices per update")
parser.add_argument("--slice-len", type=int, default=50, help="steps per slice")
parser.add_argument("--horizon", type=int, default=15, help="imagined steps")
parser.add_argument("--state", type=int, default=30, help="stochastic latent size")
parser.add_argument("--belief", type=int, default=100, help="GRU belief size")
parser.add_argument("--hidden", type=int, default=100, help="cells per hidden layer")
parser.add_argument("--model-lr", type=float, default=6e-4, help="world model Adam lr")
parser.add_argument("--actor-lr", type=float, default=4e-4, help="actor Adam lr")
parser.add_argument("--value-lr", type=float, default=4e-4, help="value Adam lr")
parser.add_argument("--grad-clip", type=float, default=100.0, help="max gradient norm")
parser.add_argument("--free-nats", type=float, default=1.0, help="KL floor")
parser.add_argument("--gamma", type=float, default=0.99, help="discount")
parser.add_argument("--lmbda", type=float, default=0.95, help="lambda of the returns")
parser.add_argument("--entropy-coef", type=float, default=1e-4, help="actor entropy bonus")
parser.add_argument("--expl-noise", type=float, default=0.3, help="Gaussian action noise")
add_eval_every_arg(parser)
args = parser.parse_args()
logger = setup(args, "dreamer")


OBS = "pixels" if args.pixels else "observation"  # what the world model encodes


def make_env(seed: int) -> TransformedEnv:
    """The dm_control task: 64x64 frames as floats in [0, 1] (``--pixels``), else its state
    variables concatenated into one float32 vector."""
    domain, task = args.env_id.split("/")
    if args.pixels:
        base = DMControlEnv(
            domain, task, frame_skip=args.action_repeat, from_pixels=True, pixels_only=True,
            height=64, width=64,
        )  # fmt: skip
        to_obs = ToTensorImage(in_keys=[OBS])
    else:
        base = DMControlEnv(domain, task, frame_skip=args.action_repeat)
        to_obs = CatTensors(list(base.observation_spec.keys()), OBS)
    env = TransformedEnv(base, Compose(to_obs, DoubleToFloat()))  # float32 actions too
    env.set_seed(seed)
    return env


class Latent(nn.Module):
    """An MLP (ELU) on the latent ``[state, belief]``, then ``head`` layers."""

    def __init__(self, out_features: int, *head: nn.Module) -> None:
        super().__init__()
        cells = [args.hidden] * 2
        mlp = MLP(args.state + args.belief, out_features, num_cells=cells, activation_class=nn.ELU)
        self.net = nn.Sequential(mlp, *head)

    def forward(self, state: torch.Tensor, belief: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([state, belief], -1))


class LatentPolicy(nn.Module):
    """The actor on the latent it filters online: each call folds the previous action (the
    RSSM's prior step) and the new observation (its posterior) into ``(state, belief)``,
    kept across calls until :meth:`reset`, then writes the actor's action (plus ``noise``)."""

    def __init__(self, world_model: WorldModel, actor: ProbabilisticActor) -> None:
        super().__init__()
        self.world_model, self.actor, self.noise = world_model, actor, 0.0
        self.reset()

    def reset(self) -> None:
        self.state, self.belief = self.world_model.rssm.initial_state(torch.Size([]))
        self.action = torch.zeros(self.world_model.rssm.action_dim)

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        rssm, encoder = self.world_model.rssm, self.world_model.encoder
        *_, self.belief = rssm.prior(self.state, self.belief, self.action)
        *_, self.state = rssm.posterior(self.belief, encoder(td[OBS]))
        action = self.actor(TensorDict(state=self.state, belief=self.belief))["action"]
        if self.noise:
            action = (action + self.noise * torch.randn_like(action)).clamp(-1.0, 1.0)
        self.action = action
        return td.set("action", action)


def run_episode(env: TransformedEnv, policy: LatentPolicy | None) -> TensorDictBase:
    """One episode (dm_control's time limit ends it): random actions without a policy."""
    if policy is not None:
        policy.reset()
    with torch.no_grad():
        return env.rollout(-(-1000 // args.action_repeat), policy)


# -- models: world model, actor and value on its latent, imagination env -------------------
env = make_env(args.seed)
action_dim = env.action_spec.shape[-1]
latent_dim, mlp = args.state + args.belief, dict(activation_class=nn.ELU)
if args.pixels:  # Dreamer's convolutions
    encoder, decoder = ObsEncoder(), ObsDecoder(latent_dim)
    embedding_dim = encoder.out_features
else:
    obs_dim = env.observation_spec[OBS].shape[-1]
    encoder = MLP(obs_dim, args.hidden, num_cells=[args.hidden], **mlp)
    decoder = MLP(latent_dim, obs_dim, num_cells=[args.hidden] * 2, **mlp)
    embedding_dim = args.hidden
sizes = dict(state_dim=args.state, belief_dim=args.belief, hidden_dim=args.hidden)
world_model = WorldModel(
    encoder,
    RSSM(action_dim, embedding_dim, **sizes),
    decoder,
    MLP(latent_dim, 1, num_cells=[args.hidden] * 2, **mlp),  # reward head
    observation_key=OBS,
)
actor = ProbabilisticActor(
    TensorDictModule(
        Latent(2 * action_dim, NormalParamExtractor("biased_softplus_5.0")),
        ["state", "belief"],
        ["loc", "scale"],
    ),
    in_keys=["loc", "scale"],
    distribution_class=TanhNormal,
    # Dreamer's action model: mean 5 tanh(loc / 5), std softplus (5 at init) + 1e-4
    distribution_kwargs=dict(tanh_loc=True, upscale=5.0),
    spec=env.action_spec,
)
value = TensorDictModule(Latent(1), ["state", "belief"], ["state_value"])
latent_spec = Composite(
    state=Unbounded(shape=(args.state,)), belief=Unbounded(shape=(args.belief,))
)
imagination = ModelBasedEnv.from_env(
    env,
    world_model.transition_module(),
    observation_spec=latent_spec,
    batch_size=[args.batch_size * args.slice_len],  # one rollout per latent of the batch
    check_actions=False,  # tanh keeps the actions in bounds
)
imagine = dict(
    imagination_horizon=args.horizon,
    gamma=args.gamma,
    lmbda=args.lmbda,
    entropy_coef=args.entropy_coef,
)
losses = {
    "model": DreamerModelLoss(world_model, free_nats=args.free_nats),
    "actor": DreamerActorLoss(actor, value, imagination, **imagine),
    "value": DreamerValueLoss(value),
}
nets = {"model": world_model, "actor": actor, "value": value}
lrs = {"model": args.model_lr, "actor": args.actor_lr, "value": args.value_lr}
# Separate Adams, each clipped at --grad-clip. Imagination loops in Python (the env's
# steps), so the actor update stays eager; --compile compiles the other two.
model_update, actor_update, value_update = (
    make_update_step(
        losses[name],
        torch.optim.Adam(nets[name].parameters(), lr=lrs[name]),
        max_grad_norm=args.grad_clip,
        compile=args.compile and name != "actor",
    )
    for name in ("model", "actor", "value")
)
policy = LatentPolicy(world_model, actor)
steps = args.total_frames // args.action_repeat
replay_buffer = TensorDictReplayBuffer(
    storage=LazyTensorStorage(steps + 1000),
    sampler=SliceSampler(slice_len=args.slice_len),  # never across an episode's end
    batch_size=args.batch_size * args.slice_len,
)


def evaluate(episodes: int) -> float:
    """Mean return of deterministic episodes (the actor's mode, no noise) on other seeds; torch's
    generator is restored after, so evaluating during training does not change the run."""
    eval_env, policy.noise = make_env(args.seed + 10_000), 0.0
    with torch.random.fork_rng(), set_exploration_type(ExplorationType.DETERMINISTIC):
        returns = [run_episode(eval_env, policy)["next", "reward"].sum() for _ in range(episodes)]
    eval_env.close()
    return torch.stack(returns).mean().item()


# -- the loop: an episode (random ones first), then updates on slices of past episodes ------
metrics, bar, frames, episodes = Metrics(), progress(args), 0, 0
while frames < args.total_frames:
    policy.noise = args.expl_noise
    explore = episodes >= args.seed_episodes
    with set_exploration_type(ExplorationType.RANDOM):  # samples of the actor, plus noise
        trajectory = run_episode(env, policy if explore else None)
    replay_buffer.extend(trajectory.exclude(OBS))  # the model reads ("next", OBS) only
    new_frames = trajectory.numel() * args.action_repeat
    frames, episodes = frames + new_frames, episodes + 1
    episode_return = trajectory["next", "reward"].sum().item()
    logger.log_scalar("train/episode_return", episode_return, step=frames)
    bar.set_postfix(episode_return=f"{episode_return:.1f}")
    bar.update(new_frames)
    if episodes < args.seed_episodes:
        continue
    for _ in range(args.updates):
        batch = replay_buffer.sample().reshape(args.batch_size, args.slice_len)
        model_out = model_update(batch)
        # Imagination starts from the batch's posterior latents. Gradients flow through the
        # dynamics into the actor; the model's own are not needed.
        world_model.requires_grad_(False)
        actor_out = actor_update(model_out["posterior"])
        world_model.requires_grad_(True)
        value_out = value_update(actor_out["imagined"])
    metrics.add(**{k: model_out[k] for k in ("loss_reco", "loss_reward", "kl")})
    metrics.add(**{k: actor_out[k] for k in ("loss_actor", "imagined_return")})
    if args.entropy_coef:
        metrics.add(entropy=actor_out["entropy"])
    metrics.add(loss_value=value_out["loss_value"])
    metrics.flush(logger, frames)
    if args.eval_every and args.total_frames > frames and frames % args.eval_every < new_frames:
        logger.log_scalar("eval/return", evaluate(args.eval_episodes), step=frames)
bar.close()


finish(logger, args, policy, frames, nets, eval_return=evaluate(args.eval_episodes))
env.close()
