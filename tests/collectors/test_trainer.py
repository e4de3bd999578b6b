"""Trainer: the loop and its hooks, logging, progress bar, checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import copy
import csv
import os
from pathlib import Path

import pytest
import torch

from rlblocks.collectors import (
    STAGES,
    CheckpointError,
    CollectorConfigError,
    MultiSyncDataCollector,
    SyncDataCollector,
    Trainer,
    TrainerError,
)
from rlblocks.collectors._checkpoint import KIND
from rlblocks.core.checkpoint import read_checkpoint, write_checkpoint
from rlblocks.core.loggers import CSVLogger


def build(kit, *, buffer=True, seed=0, collector_cls=SyncDataCollector, **kwargs):
    """A small actor-critic setup on the savable WalkEnv; the same for every call."""
    torch.manual_seed(seed)
    policy = kit.make_policy(seed=seed)
    loss = kit.TinyLoss(policy)
    optimizer = torch.optim.Adam(loss.parameters(), lr=1e-2)
    if collector_cls is SyncDataCollector:
        collector = SyncDataCollector(
            kit.WalkEnv(batch_size=[2], seed=seed), policy, frames_per_batch=16,
            init_random_frames=16,
        )  # fmt: skip
    else:
        collector = collector_cls(
            [lambda: kit.WalkEnv(batch_size=[2], seed=seed)] * 2, policy, frames_per_batch=16
        )
    kwargs.setdefault("progress_bar", False)
    trainer = Trainer(
        collector,
        loss,
        optimizer,
        replay_buffer=kit.ListBuffer() if buffer else None,
        optim_steps_per_batch=3,
        batch_size=8,
        clip_grad_norm=1.0,
        target_net_updater=kit.TargetUpdater(loss),
        **kwargs,
    )
    return trainer


def parameters(trainer):
    return {k: v.clone() for k, v in trainer.loss_module.state_dict().items()}


def test_counters_and_policy_updates(kit):
    trainer = build(kit)
    before = parameters(trainer)
    trainer.train(num_batches=4)
    assert (trainer.frames, trainer.batches, trainer.optim_steps) == (64, 4, 12)
    assert trainer.target_net_updater.steps == 12
    after = parameters(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    trainer.collector.shutdown()


def test_hooks_run_in_order_with_their_arguments(kit):
    trainer = build(kit, buffer=False)
    calls = []

    def batch_process(batch):
        calls.append(("batch_process", tuple(batch.batch_size)))
        return batch.set("marked", torch.ones(batch.batch_size))

    def process_optim_batch(sub):
        calls.append(("process_optim_batch", bool(sub["marked"].all())))

    trainer.register_op("batch_process", batch_process)
    trainer.register_op("pre_optim_steps", lambda: calls.append(("pre_optim_steps",)))
    trainer.register_op("process_optim_batch", process_optim_batch)
    trainer.register_op(
        "post_loss", lambda losses: calls.append(("post_loss", "loss_actor" in losses.keys()))
    )
    trainer.register_op("post_optim", lambda: calls.append(("post_optim",)))
    trainer.register_op("post_steps", lambda: calls.append(("post_steps",)))
    trainer.train(num_batches=1)
    step = [("process_optim_batch", True), ("post_loss", True), ("post_optim",)]
    assert calls == [
        ("batch_process", (2, 8)),
        ("pre_optim_steps",),
        *step * 3,
        ("post_steps",),
    ]
    trainer.collector.shutdown()


def test_register_op_rejects_unknown_stages_with_a_suggestion(kit):
    trainer = build(kit)
    with pytest.raises(CollectorConfigError, match="did you mean 'post_optim'"):
        trainer.register_op("post_optimizer", lambda: None)
    with pytest.raises(CollectorConfigError, match="must be callable"):
        trainer.register_op("post_optim", 3)
    assert STAGES[0] == "batch_process" and len(STAGES) == 6
    trainer.collector.shutdown()


def test_clip_grad_norm_bounds_the_gradients(kit):
    trainer = build(kit, buffer=False)
    norms = []

    def record():
        grads = [p.grad for p in trainer.loss_module.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    trainer.register_op("post_optim", record)
    trainer.train(num_batches=2)
    assert len(norms) == 6 and max(norms) <= 1.0 + 1e-5
    trainer.collector.shutdown()


def test_metrics_are_logged_at_the_frame_count(kit, tmp_path):
    logger = CSVLogger("run", log_dir=tmp_path)
    trainer = build(kit, logger=logger)
    trainer.register_op("post_steps", lambda: {"custom/metric": 3.0})
    trainer.train(num_batches=3)
    logger.close()
    with open(logger.log_dir / "scalars.csv") as f:
        rows = list(csv.DictReader(f))
    names = {row["name"] for row in rows}
    assert {"train/loss_actor", "train/loss_value", "train/frames_per_s", "custom/metric"} <= names
    assert "train/advantage" not in names  # only loss_* terms are logged as losses
    steps = sorted({int(row["step"]) for row in rows})
    assert steps == [16, 32, 48]
    trainer.collector.shutdown()


def test_progress_bar_shows_frames_rate_and_episode_reward(kit, capsys):
    trainer = build(kit, progress_bar=True)
    trainer.train(num_batches=6)
    err = capsys.readouterr().err
    assert "frames" in err and "frames/s" in err
    assert trainer.last_episode_reward is not None and "episode_reward" in err
    trainer.collector.shutdown()


def test_loss_without_loss_terms_is_an_error(kit):
    trainer = build(kit)
    trainer.loss_module.forward = lambda batch: {"value": torch.zeros(())}
    with pytest.raises(TrainerError, match="no 'loss_\\*' entry"):
        trainer.train(num_batches=1)
    trainer.collector.shutdown()


def test_collector_filling_a_buffer_needs_the_trainer_to_share_it(kit):
    trainer = build(kit, buffer=False)
    trainer.collector.replay_buffer = kit.ListBuffer()
    with pytest.raises(TrainerError, match="Trainer\\(replay_buffer=...\\)"):
        trainer.train(num_batches=1)
    trainer.replay_buffer = trainer.collector.replay_buffer
    trainer.train(num_batches=1)
    assert trainer.optim_steps == 3 and len(trainer.replay_buffer) == 32
    trainer.collector.shutdown()


def test_checkpoint_interval_writes_complete_folders_and_latest(kit, tmp_path):
    trainer = build(kit, checkpoint_dir=tmp_path, checkpoint_interval=32)
    trainer.train(num_batches=5)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "checkpoint_000000000032",
        "checkpoint_000000000064",
        "checkpoint_000000000080",  # the end of train()
        "latest",
    ]
    assert (tmp_path / "latest").read_text().strip() == "checkpoint_000000000080"
    files = read_checkpoint(tmp_path / "checkpoint_000000000080", kind=KIND).files
    assert {"trainer.pt", "replay_buffer/items.pt"} <= set(files)
    trainer.collector.shutdown()


@pytest.mark.parametrize("collector_cls", [SyncDataCollector, MultiSyncDataCollector])
def test_resume_gives_identical_parameters(kit, tmp_path, collector_cls):
    """Train N, save, train M; separately load and train M: the same parameters."""
    scheduler_trainer = build(kit, collector_cls=collector_cls)
    scheduler = torch.optim.lr_scheduler.StepLR(scheduler_trainer.optimizer, 2, gamma=0.5)
    scheduler_trainer.register_op("post_steps", scheduler.step)
    scheduler_trainer.train(num_batches=3)
    path = scheduler_trainer.save(tmp_path / "ckpt")
    scheduler_trainer.train(num_batches=4)
    expected = parameters(scheduler_trainer)
    expected_optim = scheduler_trainer.optimizer.state_dict()
    scheduler_trainer.collector.shutdown()

    resumed = build(kit, seed=123, collector_cls=collector_cls)  # other initial weights
    resumed_scheduler = torch.optim.lr_scheduler.StepLR(resumed.optimizer, 2, gamma=0.5)
    resumed.register_op("post_steps", resumed_scheduler.step)
    resumed.load(path)
    assert (resumed.frames, resumed.optim_steps) == (48, 9)
    resumed.train(num_batches=4)
    got = parameters(resumed)
    resumed.collector.shutdown()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert resumed.optimizer.param_groups[0]["lr"] == expected_optim["param_groups"][0]["lr"]
    assert resumed.frames == scheduler_trainer.frames == 112


def test_load_takes_the_latest_checkpoint_of_a_folder(kit, tmp_path):
    trainer = build(kit, checkpoint_dir=tmp_path)
    trainer.train(num_batches=2)
    trainer.collector.shutdown()
    other = build(kit)
    other.load(tmp_path)
    assert other.frames == 32 and len(other.replay_buffer) == 32
    other.collector.shutdown()


def test_bad_checkpoints_raise_checkpoint_errors(kit, tmp_path):
    trainer = build(kit)
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        trainer.load(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()  # a bare trainer.pt, with no manifest to verify it by
    (tmp_path / "plain" / "trainer.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        trainer.load(tmp_path / "plain")
    write_checkpoint(  # intact as written, but what was written is not a trainer state
        tmp_path / "corrupt",
        lambda w: w.write_bytes("trainer.pt", b"not a checkpoint"),
        kind=KIND,
    )
    with pytest.raises(CheckpointError, match="cannot read"):
        trainer.load(tmp_path / "corrupt")
    path = trainer.save(tmp_path / "good")
    no_buffer = build(kit, buffer=False)
    with pytest.raises(CheckpointError, match="has replay buffer but this trainer has none"):
        no_buffer.load(path)
    other_model = build(kit)
    other_model.loss_module.value = torch.nn.Linear(1, 3)
    with pytest.raises(CheckpointError, match="does not match this trainer"):
        other_model.load(path)
    for t in (trainer, no_buffer, other_model):
        t.collector.shutdown()


def test_a_failed_save_keeps_the_previous_checkpoint(kit, tmp_path):
    trainer = build(kit)
    trainer.train(num_batches=1)
    target = trainer.save(tmp_path / "ckpt")
    before = sorted(p.name for p in target.iterdir())

    def broken_dumps(path):
        Path(path).mkdir()
        (Path(path) / "items.pt").write_text("half written")
        raise OSError("disk full")

    trainer.replay_buffer.dumps = broken_dumps
    trainer.train(num_batches=1)
    with pytest.raises(OSError, match="disk full"):
        trainer.save(target)
    assert sorted(p.name for p in target.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left
    restored = build(kit)
    restored.load(target)
    assert restored.frames == 16 and len(restored.replay_buffer) == 16
    for t in (trainer, restored):
        t.collector.shutdown()


def trainer_snapshot(trainer):
    """What a failed load must leave as it was: weights, optimizer, counters, buffer."""
    return {
        "parameters": parameters(trainer),
        "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
        "counters": (trainer.frames, trainer.batches, trainer.optim_steps),
        "collector": trainer.collector.frames,
        "updater": trainer.target_net_updater.steps,
        "buffer": len(trainer.replay_buffer),
    }


def assert_same(before, after):
    assert before.keys() == after.keys()
    for key in before:
        if key == "parameters":
            assert all(torch.equal(before[key][k], after[key][k]) for k in before[key])
        elif key == "optimizer":
            assert str(before[key]) == str(after[key])
        else:
            assert before[key] == after[key], key


def saved_and_other(kit, tmp_path):
    """A checkpoint after 2 batches, and another trainer (other weights) after 1 batch."""
    trainer = build(kit)
    trainer.train(num_batches=2)
    path = trainer.save(tmp_path / "ckpt")
    trainer.collector.shutdown()
    other = build(kit, seed=5)
    other.train(num_batches=1)
    return path, other


def test_a_corrupt_replay_buffer_fails_the_load_before_anything_changes(kit, tmp_path):
    """Issue 20, item 5: the weights, optimizer and counters were replaced before the
    buffer raised."""
    path, other = saved_and_other(kit, tmp_path)
    items = next(path.rglob("items.pt"))
    data = bytearray(items.read_bytes())
    data[len(data) // 2] ^= 0x10
    items.write_bytes(bytes(data))
    before = trainer_snapshot(other)
    with pytest.raises(CheckpointError, match=r"replay_buffer/items.pt.*CRC-32"):
        other.load(path)
    assert_same(before, trainer_snapshot(other))
    other.collector.shutdown()


def test_a_buffer_that_refuses_its_state_leaves_the_trainer_as_it_was(kit, tmp_path):
    path, other = saved_and_other(kit, tmp_path)

    def refusing_loads(folder):
        raise ValueError("this buffer holds 50 elements, the checkpoint 80")

    other.replay_buffer.loads = refusing_loads
    before = trainer_snapshot(other)
    with pytest.raises(CheckpointError, match="holds 50 elements.*The trainer is unchanged"):
        other.load(path)
    assert_same(before, trainer_snapshot(other))
    other.collector.shutdown()


def test_a_flipped_bit_inside_a_weight_tensor_is_caught(kit, tmp_path):
    """Issue 20, item 6: trainer.pt had no checksum; a flipped weight loaded silently."""
    path, other = saved_and_other(kit, tmp_path)
    state_file = next(path.rglob("trainer.pt"))
    data = bytearray(state_file.read_bytes())
    weight = torch.load(state_file, weights_only=True)["loss_module"]
    raw = next(v for v in weight.values() if v.numel() >= 4).numpy().tobytes()
    offset = bytes(data).index(raw)
    data[offset + 1] ^= 0x04
    state_file.write_bytes(bytes(data))
    before = trainer_snapshot(other)
    with pytest.raises(CheckpointError, match=r"'trainer.pt' has CRC-32"):
        other.load(path)
    assert_same(before, trainer_snapshot(other))
    other.collector.shutdown()


def test_an_interrupted_overwriting_save_keeps_a_loadable_checkpoint(kit, tmp_path, monkeypatch):
    """Issue 20, item 7: a crash between the two renames of an overwrite left no checkpoint
    at the path. Fail each os.replace call in turn: the path loads, old or new."""
    trainer = build(kit)
    trainer.train(num_batches=1)
    path = trainer.save(tmp_path / "ckpt")
    trainer.train(num_batches=1)
    real = os.replace
    for k in range(1, 10):
        calls = [0]

        def failing(*args, _k=k, _calls=calls):
            _calls[0] += 1
            if _calls[0] == _k:
                raise OSError("crash")
            return real(*args)

        monkeypatch.setattr(os, "replace", failing)
        with contextlib.suppress(OSError):
            trainer.save(path)
        monkeypatch.undo()
        restored = build(kit)
        restored.load(path)
        assert restored.frames in (16, 32)
        restored.collector.shutdown()
        if calls[0] < k:
            assert restored.frames == 32
            break
    trainer.collector.shutdown()


def test_save_needs_a_destination(kit):
    trainer = build(kit)
    with pytest.raises(CollectorConfigError, match="no path given"):
        trainer.save()
    trainer.collector.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"collector": object()}, "collector must be an rlblocks collector"),
        ({"loss_module": lambda td: td}, "loss_module must be an nn.Module"),
        ({"optimizer": object()}, "optimizer must be a torch optimizer"),
        ({"replay_buffer": [1]}, "lacks"),
        ({"clip_grad_norm": -1.0}, "clip_grad_norm must be a positive number"),
        ({"logger": print}, "logger must be an rlblocks logger"),
        ({"checkpoint_interval": 10}, "needs a checkpoint_dir"),
        ({"optim_steps_per_batch": 0}, "optim_steps_per_batch must be a positive int, got 0"),
        ({"batch_size": 2.5}, r"batch_size must be a positive int \(or None\), got 2.5"),
        ({"target_net_updater": object()}, "step\\(\\) method"),
    ],
)
def test_bad_arguments(kit, kwargs, match):
    base = build(kit)
    args = {
        "collector": base.collector,
        "loss_module": base.loss_module,
        "optimizer": base.optimizer,
        **kwargs,
    }
    with pytest.raises(CollectorConfigError, match=match):
        Trainer(**args)
    base.collector.shutdown()
