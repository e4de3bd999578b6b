"""IQL (implicit Q-learning) trained offline from a dataset on disk, Pendulum-v1 by default.

    python examples/iql_offline.py --collect    # first: write the dataset, then train
    python examples/iql_offline.py              # train from the dataset already written

The dataset is a LazyMemmapStorage folder (--dataset). When it is missing (or with
--collect) the script first fills it with --dataset-frames random-action transitions from
the env and says so; later runs reopen it without touching the env. Training never steps
the env: only the final evaluation does. Writes runs/iql-<time>-seed<seed>/ like the other
examples. Reference: Kostrikov et al. 2022, "Offline RL with Implicit Q-Learning".
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from _common import (
    Metrics,
    base_parser,
    env_specs,
    finish,
    make_qvalue,
    make_train_env,
    progress,
    setup,
    update_step,
)
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.buffers import LazyMemmapStorage, TensorDictReplayBuffer
from rlblocks.collectors import SyncDataCollector
from rlblocks.objectives import IQLLoss, SoftUpdate
from rlblocks.objectives.modules import (
    MLP,
    NormalParamExtractor,
    ProbabilisticActor,
    TanhNormal,
    ValueOperator,
)

# -- hyper-parameters ----------------------------------------------------------------------
parser = base_parser(__doc__.splitlines()[0], env_id="Pendulum-v1", total_frames=20_000)
parser.set_defaults(total_frames=20_000)  # here: gradient steps x batch rows seen, see below
parser.add_argument("--dataset", default="runs/datasets/pendulum-random", help="storage dir")
parser.add_argument("--collect", action="store_true", help="(re)write the dataset first")
parser.add_argument("--dataset-frames", type=int, default=20_000, help="frames to collect")
parser.add_argument("--batch-size", type=int, default=256, help="transitions per update")
parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate")
parser.add_argument("--gamma", type=float, default=0.99, help="discount")
parser.add_argument("--tau", type=float, default=0.005, help="target network update weight")
parser.add_argument("--expectile", type=float, default=0.7, help="value expectile")
parser.add_argument("--temperature", type=float, default=3.0, help="advantage weight beta")
parser.add_argument("--hidden", type=int, default=256, help="cells per hidden layer")
args = parser.parse_args()
logger = setup(args, "iql")
obs_dim, action_spec = env_specs(args.env_id)

# -- the dataset: reopened from disk, or collected once into a memory-mapped storage --------
dataset = Path(args.dataset)
if args.collect or not (dataset / "storage.json").exists():
    print(f"collecting {args.dataset_frames} random-action frames into {dataset}")
    shutil.rmtree(dataset, ignore_errors=True)
    storage = LazyMemmapStorage(args.dataset_frames, scratch_dir=dataset)
    collector = SyncDataCollector(
        make_train_env(args.env_id, 1, args.seed),
        None,  # random actions
        frames_per_batch=1000,
        total_frames=args.dataset_frames,
    )
    writer = TensorDictReplayBuffer(storage=storage)
    for batch in collector:
        writer.extend(batch.reshape(-1))
    collector.shutdown()
else:
    storage = LazyMemmapStorage.open(dataset)
replay_buffer = TensorDictReplayBuffer(storage=storage, batch_size=args.batch_size)
print(f"dataset: {len(replay_buffer)} transitions in {dataset}")

# -- models: a Gaussian policy, a Q-network (the loss makes the twins) and a V-network ------
actor_net = nn.Sequential(
    MLP(obs_dim, 2 * action_spec.shape[-1], num_cells=[args.hidden] * 2, activation_class=nn.ReLU),
    NormalParamExtractor(),
)
actor = ProbabilisticActor(
    TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
    in_keys=["loc", "scale"],
    distribution_class=TanhNormal,
    spec=action_spec,
)
value = ValueOperator(
    MLP(obs_dim, 1, num_cells=[args.hidden] * 2, activation_class=nn.ReLU),
    in_keys=["observation"],
)
loss_module = IQLLoss(
    actor,
    make_qvalue(obs_dim, action_spec.shape[-1], args.hidden),
    value,
    expectile=args.expectile,
    temperature=args.temperature,
    gamma=args.gamma,
)
target_updater = SoftUpdate(loss_module, tau=args.tau)
optimizer = torch.optim.Adam(loss_module.parameters(), lr=args.lr)
update = update_step(loss_module, optimizer, args)  # actor, Q and V at once

# -- the loop: gradient steps on dataset batches; "frames" counts the rows trained on -------
metrics, bar = Metrics(), progress(args)
n_updates = max(1, args.total_frames // args.batch_size)
terms = ("loss_actor", "loss_qvalue", "loss_value")
for step in range(1, n_updates + 1):
    out = update(replay_buffer.sample())
    target_updater.step()
    metrics.add(**{key: out[key] for key in terms})
    if step % 20 == 0 or step == n_updates:
        metrics.flush(logger, step * args.batch_size)
    bar.update(args.batch_size)
bar.close()
finish(logger, args, actor, n_updates * args.batch_size, {"actor": actor, "iql": loss_module})
