"""IMPALA (actor-learner, V-trace off-policy correction), CartPole-v1 by default.

    python examples/impala.py                   # 300k frames, 2 worker processes
    python examples/impala.py --collector ray   # the same with Ray actors

Writes runs/impala-<time>-seed<seed>/: scalars.csv, hparams.json, checkpoint.pt and
learning_curve.png. Reference: Espeholt et al. 2018, "IMPALA: Scalable Distributed Deep-RL
with Importance Weighted Actor-Learner Architectures".

Workers step their envs with the weights they last received; the learner makes one gradient
step per batch (8 envs x 8 steps), in arrival order, and publishes its weights after each.
The policy stamps each step with its weights' version, so ``policy_lag`` logs how many
updates older than the learner's a batch's policy is (~0.8 with 2 workers). V-trace
(rho-bar = c-bar = 1) corrects for it (``ratio`` and ``clipfrac`` log pi/mu and how often
it exceeds rho-bar); the loss is A2C's, with a2c.py's settings (lr 2e-3 annealed, no
entropy bonus, advantages not normalized) and V-trace as its value estimator. ~22 s on the
2-core machine (Ray: ~45 s). Batches arrive in timing order, so runs do not repeat. At
these defaults seeds 1-3 ended at 500 twice with processes and once with Ray, and seeds
1-8 in a sweep; the earlier defaults (32-step unrolls, lr 1e-3, entropy 0.01, normalized
advantages) made 475 in 5 of 9 runs, their training returns swinging from 500 to ~100.
"""

from __future__ import annotations

import functools

import torch
from _common import (
    Metrics,
    base_parser,
    env_specs,
    finish,
    log_episodes,
    make_train_env,
    progress,
    schedulable,
    set_learning_rate,
    setup,
    update_step,
)
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from rlblocks.collectors import MultiaSyncDataCollector, RayCollector
from rlblocks.objectives import A2CLoss
from rlblocks.objectives.modules import MLP, ProbabilisticActor, ValueOperator

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="CartPole-v1", total_frames=300_000)
parser.add_argument("--collector", choices=["multiprocess", "ray"], default="multiprocess",
                    help="MultiaSyncDataCollector processes or RayCollector actors")  # fmt: skip
parser.add_argument("--num-workers", type=int, default=2, help="actor processes")
parser.add_argument("--num-envs", type=int, default=8, help="envs stepped by each worker")
parser.add_argument("--num-steps", type=int, default=8, help="unroll length per batch")
parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (annealed to 0)")
parser.add_argument("--gamma", type=float, default=0.99, help="discount")
parser.add_argument("--rho-bar", type=float, default=1.0, help="V-trace clip of rho")
parser.add_argument("--c-bar", type=float, default=1.0, help="V-trace clip of the traces c")
parser.add_argument("--ent-coef", type=float, default=0.0, help="entropy bonus weight")
parser.add_argument("--vf-coef", type=float, default=0.5, help="value loss weight")
parser.add_argument("--max-grad-norm", type=float, default=0.5, help="gradient clipping")
parser.add_argument("--hidden", type=int, default=64, help="cells per hidden layer")
args = parser.parse_args()
logger = setup(args, "impala")
obs_dim, action_spec = env_specs(args.env_id)


# -- models: a categorical policy, a state-value critic, and the weights' version stamp ------
class WeightsVersion(nn.Module):
    """Writes, at every step, the learner update its weights come from: a buffer, so it
    travels to the workers with the weights and the batch says which weights collected it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("version", torch.zeros((), dtype=torch.long))

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.version.expand(observation.shape[:-1]).clone()


actor = ProbabilisticActor(
    TensorDictModule(
        MLP(obs_dim, action_spec.n, num_cells=[args.hidden] * 2),
        in_keys=["observation"],
        out_keys=["logits"],
    ),
    in_keys=["logits"],
    distribution_class=torch.distributions.Categorical,
    spec=action_spec,
    return_log_prob=True,  # "sample_log_prob": log mu(a|s) of the worker's policy
)
stamp = WeightsVersion()
policy = TensorDictSequential(
    actor, TensorDictModule(stamp, in_keys=["observation"], out_keys=["policy_version"])
)
critic = ValueOperator(MLP(obs_dim, 1, num_cells=[args.hidden] * 2), in_keys=["observation"])
loss_module = A2CLoss(
    actor,
    critic,
    entropy_coef=args.ent_coef,
    critic_coef=args.vf_coef,
    loss_critic_type="l2",  # squared error: Huber's bounded gradient lagged the returns
    gamma=args.gamma,
)
# The advantage rho_t (r_t + gamma v_{t+1} - V(s_t)) and the target v_t, from the learner's pi.
loss_module.make_value_estimator("vtrace", rho_thresh=args.rho_bar, c_thresh=args.c_bar)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=schedulable(args.lr, args))
update = update_step(loss_module, optimizer, args, max_grad_norm=args.max_grad_norm)

# -- the workers: each collects [num_envs, num_steps] batches with its latest weights ---------
frames_per_batch = args.num_envs * args.num_steps
n_updates = max(1, args.total_frames // frames_per_batch)
make_env = functools.partial(make_train_env, args.env_id, args.num_envs, args.seed)
kwargs = dict(frames_per_batch=frames_per_batch, total_frames=n_updates * frames_per_batch)
if args.collector == "ray":
    import ray

    # A small local instance: a CPU per actor, no dashboard, a 100 MiB object store.
    ray.init(num_cpus=args.num_workers, include_dashboard=False, object_store_memory=100 * 2**20)
    collector = RayCollector([make_env] * args.num_workers, policy, **kwargs)
else:
    collector = MultiaSyncDataCollector([make_env] * args.num_workers, policy, **kwargs)
collector.set_seed(args.seed)  # each worker's envs and sampling get their own seeds

# -- the learner: one gradient step per batch, in arrival order ----------------------------
metrics, bar, frames = Metrics(), progress(args), 0
for iteration, batch in enumerate(collector):
    frames += batch.numel()
    set_learning_rate(optimizer, args.lr * (1.0 - iteration / n_updates))
    with torch.no_grad():
        loss_module.value_estimator(batch)  # V-trace over [num_envs, num_steps], eager (a scan)
        # How far the worker's policy mu is from the learner's pi, and how many updates old.
        log_pi = actor.get_dist(batch.copy()).log_prob(batch["action"])
        ratio = (log_pi - batch["sample_log_prob"]).exp()
    metrics.add(
        policy_lag=(iteration - batch["policy_version"]).float().mean(),
        ratio=ratio.mean(),
        # Beyond rounding: the same weights in a worker and here differ by ~1e-7.
        clipfrac=(ratio > args.rho_bar + 1e-4).float().mean(),
    )
    out = update(batch)  # the advantage and target are in the batch: the loss reads them
    stamp.version.fill_(iteration + 1)
    collector.update_policy_weights_()
    metrics.add(pg_loss=out["loss_objective"], v_loss=out["loss_critic"])
    if iteration % 20 == 0:
        metrics.flush(logger, frames)
    log_episodes(logger, bar, batch, frames)
bar.close()
collector.shutdown()
finish(logger, args, actor, frames, {"actor": actor, "critic": critic})
