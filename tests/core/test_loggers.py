"""Experiment loggers: the shared Logger API, CSVLogger, TensorBoardLogger and WandbLogger."""

from __future__ import annotations

import csv
import gc
import json
import math
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensordict import TensorDict

import rlblocks.core as rc
from rlblocks.core.errors import MissingDependencyError, PluginLoadWarning, RLBlocksError
from rlblocks.core.loggers import (
    CSVLogger,
    Logger,
    LoggerClosedError,
    LoggerError,
    TensorBoardLogger,
    WandbLogger,
)

HEADER = ["step", "name", "value", "wall_time"]


def read_rows(logger: CSVLogger) -> list[dict[str, str]]:
    with open(logger.scalars_path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        assert reader.fieldnames == HEADER
        return list(reader)


def triples(logger: CSVLogger) -> list[tuple[int, str, float]]:
    return [(int(r["step"]), r["name"], float(r["value"])) for r in read_rows(logger)]


class RecordingLogger(Logger):
    """The smallest Logger subclass: records what the base class hands to the hooks."""

    def __init__(self, exp_name: str = "rec", log_dir: Any = None) -> None:
        super().__init__(exp_name, log_dir)
        self.scalars: list[tuple[int, str, float]] = []
        self.hparams: list[dict[str, Any]] = []
        self.close_calls = 0

    def _write_scalars(self, items: list[tuple[str, float]], step: int, wall_time: float) -> None:
        self.scalars.extend((step, name, value) for name, value in items)

    def _write_hparams(self, hparams: dict[str, Any]) -> None:
        self.hparams.append(hparams)

    def _close(self) -> None:
        self.close_calls += 1


# -- the shared API (checked on a recording subclass, so no files are involved) ----------------


def test_logger_is_abstract():
    with pytest.raises(TypeError, match="abstract"):
        Logger("x")  # type: ignore[abstract]


def test_values_of_every_accepted_type_become_floats(tmp_path):
    logger = RecordingLogger(log_dir=tmp_path)
    weight = torch.tensor(2.0, requires_grad=True)
    logger.log_metrics(
        {
            "int": 3,
            "float": 0.25,
            "bool": True,
            "np_float32": np.float32(1.5),
            "np_int64": np.int64(7),
            "np_array": np.array([[4.5]]),
            "tensor_0d": torch.tensor(-1.0),
            "tensor_1elem": torch.tensor([9], dtype=torch.int32),
            "tensor_grad": weight * 3,
            "nan": float("nan"),
        },
        step=5,
    )
    values = {name: value for _, name, value in logger.scalars}
    assert all(type(v) is float for v in values.values())
    assert {k: v for k, v in values.items() if k != "nan"} == {
        "int": 3.0,
        "float": 0.25,
        "bool": 1.0,
        "np_float32": 1.5,
        "np_int64": 7.0,
        "np_array": 4.5,
        "tensor_0d": -1.0,
        "tensor_1elem": 9.0,
        "tensor_grad": 6.0,
    }
    assert math.isnan(values["nan"])
    assert {step for step, _, _ in logger.scalars} == {5}


def test_auto_step_counter_advances_once_per_call_and_ignores_explicit_steps(tmp_path):
    logger = RecordingLogger(log_dir=tmp_path)
    logger.log_scalar("a", 1.0)
    logger.log_scalar("a", 2.0)
    logger.log_metrics({"a": 3.0, "b": 4.0})
    logger.log_scalar("a", 5.0, step=100)
    logger.log_metrics({})  # logs nothing, takes no step
    logger.log_scalar("a", 6.0)
    assert logger.scalars == [
        (0, "a", 1.0),
        (1, "a", 2.0),
        (2, "a", 3.0),
        (2, "b", 4.0),
        (100, "a", 5.0),
        (3, "a", 6.0),
    ]


def test_steps_accept_numpy_and_tensor_integers(tmp_path):
    logger = RecordingLogger(log_dir=tmp_path)
    logger.log_scalar("a", 1.0, step=np.int64(7))
    logger.log_scalar("a", 1.0, step=torch.tensor(8))
    assert [s for s, _, _ in logger.scalars] == [7, 8]
    assert all(type(s) is int for s, _, _ in logger.scalars)


def test_nested_metrics_and_tensordicts_are_flattened_with_slashes(tmp_path):
    logger = RecordingLogger(log_dir=tmp_path)
    logger.log_metrics({"loss": {"actor": 1.0, "critic": {"v": 2.0}}, "lr": 0.1}, step=0)
    losses = TensorDict({"loss_objective": torch.tensor(0.5), "aux": {"kl": torch.tensor(0.01)}})
    logger.log_metrics(losses, step=1)
    assert sorted(logger.scalars) == sorted(
        [
            (0, "loss/actor", 1.0),
            (0, "loss/critic/v", 2.0),
            (0, "lr", 0.1),
            (1, "loss_objective", 0.5),
            (1, "aux/kl", pytest.approx(0.01)),
        ]
    )


@pytest.mark.parametrize(
    ("name", "shown"), [("", "''"), ("  ", "'  '"), (3, "3"), (None, "None"), (b"x", "b'x'")]
)
def test_bad_metric_name_raises_naming_it(tmp_path, name, shown):
    logger = RecordingLogger(log_dir=tmp_path)
    with pytest.raises(LoggerError, match="metric name must be a non-empty str") as info:
        logger.log_scalar(name, 1.0)
    assert f"got {shown}" in str(info.value)
    with pytest.raises(LoggerError, match="keys must be non-empty str"):
        logger.log_metrics({name: 1.0})
    assert logger.scalars == []


@pytest.mark.parametrize(
    ("step", "shown"),
    [(-1, "step must be >= 0, got -1"), (1.5, "got 1.5 of type float"), (True, "got True"),
     ("3", "got '3' of type str"), (torch.tensor([1, 2]), "of type Tensor")],
)  # fmt: skip
def test_bad_step_raises_naming_it(tmp_path, step, shown):
    logger = RecordingLogger(log_dir=tmp_path)
    with pytest.raises(LoggerError, match="step") as info:
        logger.log_scalar("a", 1.0, step=step)
    assert shown in str(info.value)
    with pytest.raises(LoggerError, match="step"):
        logger.log_metrics({"a": 1.0}, step=step)
    assert logger.scalars == []


def test_non_scalar_tensor_raises_naming_metric_and_shape(tmp_path):
    logger = RecordingLogger(log_dir=tmp_path)
    with pytest.raises(LoggerError, match=r"metric 'q_values' must be a single number") as info:
        logger.log_scalar("q_values", torch.zeros(2, 3))
    assert "Tensor of shape (2, 3)" in str(info.value)
    with pytest.raises(LoggerError, match=r"ndarray of shape \(0,\)"):
        logger.log_scalar("empty", np.array([]))
    assert logger.scalars == []


@pytest.mark.parametrize("value", ["1.0", [1.0], None, 1 + 2j, torch.tensor(1 + 2j)])
def test_non_numeric_value_raises_naming_metric_and_type(tmp_path, value):
    logger = RecordingLogger(log_dir=tmp_path)
    with pytest.raises(LoggerError, match=r"metric 'ret' must be a real number .* got "):
        logger.log_scalar("ret", value)


def test_rejected_log_metrics_writes_nothing_and_keeps_the_counter(tmp_path):
    logger = RecordingLogger(log_dir=tmp_path)
    with pytest.raises(LoggerError, match="'bad'"):
        logger.log_metrics({"good": 1.0, "bad": torch.ones(3)})
    with pytest.raises(LoggerError, match="must be a mapping"):
        logger.log_metrics([("a", 1.0)])  # type: ignore[arg-type]
    logger.log_scalar("good", 2.0)
    assert logger.scalars == [(0, "good", 2.0)]


def test_hparams_are_flattened_and_converted_to_plain_values(tmp_path):
    logger = RecordingLogger(log_dir=tmp_path)
    logger.log_hparams(
        {
            "lr": 3e-4,
            "env": {"id": "CartPole-v1", "num_envs": np.int64(8), "kwargs": {}},
            "clip": True,
            "seed": None,
            "layers": (64, {"act": "tanh"}),
            "mask": torch.tensor([1, 0]),
            "scale": np.array([0.5, 2.0]),
            "device": torch.device("cpu"),
            "dtype": torch.float32,
            "data": tmp_path,
        }
    )
    assert logger.hparams == [
        {
            "lr": 3e-4,
            "env/id": "CartPole-v1",
            "env/num_envs": 8,
            "clip": True,
            "seed": None,
            "layers": [64, {"act": "tanh"}],
            "mask": [1, 0],
            "scale": [0.5, 2.0],
            "device": "cpu",
            "dtype": "torch.float32",
            "data": str(tmp_path),
        }
    ]
    assert type(logger.hparams[0]["env/num_envs"]) is int


def test_bad_hparams_raise_naming_the_key(tmp_path):
    logger = RecordingLogger(log_dir=tmp_path)
    with pytest.raises(LoggerError, match=r"hyper-parameter 'optim/cls' has a value of type type"):
        logger.log_hparams({"optim": {"cls": torch.optim.Adam}})
    with pytest.raises(LoggerError, match=r"keys must be non-empty str, got 1 of type int"):
        logger.log_hparams({"optim": {1: 2}})
    with pytest.raises(LoggerError, match="vars\\(args\\)"):
        logger.log_hparams([("lr", 1)])  # type: ignore[arg-type]
    assert logger.hparams == []


@pytest.mark.parametrize(
    ("exp_name", "message"),
    [("", "non-empty str"), (" ", "non-empty str"), (None, "non-empty str"),
     ("../escape", "relative folder name"), ("/abs/run", "relative folder name")],
)  # fmt: skip
def test_bad_exp_name_raises(tmp_path, exp_name, message):
    with pytest.raises(LoggerError, match=message):
        RecordingLogger(exp_name, log_dir=tmp_path)


def test_bad_log_dir_raises(tmp_path):
    with pytest.raises(LoggerError, match=r"log_dir must be a str or os\.PathLike folder, got 3"):
        RecordingLogger("x", log_dir=3)


def test_log_dir_is_absolute_and_defaults_to_runs_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert RecordingLogger("exp").log_dir == tmp_path / "runs" / "exp"
    grouped = RecordingLogger("cartpole/seed0", log_dir="out")
    assert grouped.log_dir == tmp_path / "out" / "cartpole" / "seed0"
    assert grouped.log_dir.is_absolute()


def test_close_is_idempotent_and_logging_after_close_raises(tmp_path):
    logger = RecordingLogger(log_dir=tmp_path)
    logger.close()
    logger.close()
    assert logger.close_calls == 1
    assert logger.closed
    calls = [
        lambda: logger.log_scalar("a", 1.0),
        lambda: logger.log_metrics({"a": 1.0}),
        lambda: logger.log_hparams({"lr": 1.0}),
        logger.flush,
    ]
    for call in calls:
        with pytest.raises(LoggerClosedError, match="is closed") as info:
            call()
        assert isinstance(info.value, RLBlocksError)
        assert "RecordingLogger(exp_name='rec'" in str(info.value)
    assert logger.scalars == []


def test_context_manager_closes_on_success_and_on_error(tmp_path):
    with RecordingLogger(log_dir=tmp_path) as logger:
        assert not logger.closed
    assert logger.closed
    with pytest.raises(KeyError), RecordingLogger(log_dir=tmp_path) as failing:
        raise KeyError("boom")
    assert failing.closed


# -- CSVLogger ---------------------------------------------------------------------------------


def test_csv_round_trip_with_the_csv_module(tmp_path):
    before = time.time()
    with CSVLogger("run", log_dir=tmp_path) as logger:
        assert logger.log_dir == tmp_path / "run"
        assert logger.log_dir.is_dir()
        logger.log_scalar("train/loss", 0.5, step=0)
        logger.log_metrics({"train/loss": 0.25, "eval/return": 200.0}, step=10)
        logger.log_scalar('name, with "quotes"', float("nan"), step=20)
    rows = read_rows(logger)
    assert [(r["step"], r["name"]) for r in rows] == [
        ("0", "train/loss"),
        ("10", "train/loss"),
        ("10", "eval/return"),
        ("20", 'name, with "quotes"'),
    ]
    assert [float(r["value"]) for r in rows[:3]] == [0.5, 0.25, 200.0]
    assert math.isnan(float(rows[3]["value"]))
    assert all(before <= float(r["wall_time"]) <= time.time() for r in rows)
    assert logger.scalars_path == tmp_path / "run" / "scalars.csv"
    assert logger.scalars_path.read_text(encoding="utf-8").startswith("step,name,value,wall_time\n")


def test_csv_reads_with_pandas(tmp_path):
    import pandas as pd

    with CSVLogger("run", log_dir=tmp_path) as logger:
        for step in range(3):
            logger.log_metrics({"loss": 1.0 / (step + 1), "return": 10.0 * step}, step=step)
        logger.log_scalar("late_metric", float("nan"), step=3)
    frame = pd.read_csv(logger.scalars_path)
    assert list(frame.columns) == HEADER
    assert len(frame) == 7
    wide = frame.pivot_table(index="step", columns="name", values="value", dropna=False)
    assert wide.loc[2, "return"] == 20.0
    assert wide.loc[1, "loss"] == 0.5
    assert math.isnan(frame.loc[frame["name"] == "late_metric", "value"].item())


def test_csv_tensor_numpy_and_auto_steps(tmp_path):
    with CSVLogger("run", log_dir=tmp_path) as logger:
        logger.log_scalar("t", torch.tensor([1.5]))
        logger.log_scalar("n", np.float64(2.5))
        logger.log_metrics({"a": np.int32(3), "b": torch.tensor(4)})
    assert triples(logger) == [(0, "t", 1.5), (1, "n", 2.5), (2, "a", 3.0), (2, "b", 4.0)]


def test_csv_buffers_rows_until_flush_every_or_flush(tmp_path):
    logger = CSVLogger("run", log_dir=tmp_path, flush_every=3, flush_secs=None)
    logger.log_scalar("a", 1.0, step=0)
    logger.log_scalar("a", 2.0, step=1)
    assert read_rows(logger) == []  # buffered: no write per scalar
    logger.log_scalar("a", 3.0, step=2)
    assert len(read_rows(logger)) == 3
    logger.log_scalar("a", 4.0, step=3)
    assert len(read_rows(logger)) == 3
    logger.flush()
    assert len(read_rows(logger)) == 4
    logger.log_scalar("a", 5.0, step=4)
    logger.close()
    assert [v for _, _, v in triples(logger)] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_csv_flushes_after_flush_secs(tmp_path):
    logger = CSVLogger("run", log_dir=tmp_path, flush_every=10_000, flush_secs=1e-9)
    logger.log_scalar("a", 1.0, step=0)
    time.sleep(0.01)
    logger.log_scalar("a", 2.0, step=1)
    assert len(read_rows(logger)) == 2
    logger.close()


def test_csv_never_closed_logger_is_flushed_when_collected(tmp_path):
    logger = CSVLogger("run", log_dir=tmp_path, flush_secs=None)
    path = logger.scalars_path
    logger.log_scalar("a", 1.0, step=0)
    del logger
    gc.collect()
    assert path.read_text(encoding="utf-8").splitlines()[1].startswith("0,a,1.0,")


def test_csv_hparams_json(tmp_path):
    with CSVLogger("run", log_dir=tmp_path) as logger:
        logger.log_hparams({"lr": 1e-3, "env": {"id": "CartPole-v1"}, "seed": None})
        logger.log_hparams({"lr": 5e-4, "layers": [64, 64], "clip": True})
    assert logger.hparams_path == tmp_path / "run" / "hparams.json"
    assert json.loads(logger.hparams_path.read_text(encoding="utf-8")) == {
        "lr": 5e-4,
        "env/id": "CartPole-v1",
        "seed": None,
        "layers": [64, 64],
        "clip": True,
    }
    assert sorted(p.name for p in logger.log_dir.iterdir()) == ["hparams.json", "scalars.csv"]


def test_csv_reopening_a_run_folder_appends(tmp_path):
    with CSVLogger("run", log_dir=tmp_path) as first:
        first.log_scalar("a", 1.0, step=0)
        first.log_hparams({"lr": 1.0, "seed": 0})
    with CSVLogger("run", log_dir=tmp_path) as second:
        second.log_scalar("a", 2.0, step=1)
        second.log_hparams({"seed": 1})
    assert triples(second) == [(0, "a", 1.0), (1, "a", 2.0)]
    assert second.scalars_path.read_text(encoding="utf-8").count("step,name") == 1
    assert json.loads(second.hparams_path.read_text(encoding="utf-8")) == {"lr": 1.0, "seed": 1}


def test_csv_reopening_after_a_partial_row_starts_on_a_new_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "scalars.csv").write_text("step,name,value,wall_time\n0,a,1.0,5.0\n1,a,2.", "utf-8")
    with CSVLogger("run", log_dir=tmp_path) as logger:
        logger.log_scalar("a", 3.0, step=2)
    lines = logger.scalars_path.read_text(encoding="utf-8").splitlines()
    assert lines[2] == "1,a,2."
    assert lines[3].startswith("2,a,3.0,")


def test_csv_refuses_foreign_files_and_leaves_them_untouched(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    foreign = "epoch;loss\n1;0.5\n"
    (run / "scalars.csv").write_text(foreign, encoding="utf-8")
    with pytest.raises(LoggerError, match=r"its header is 'epoch;loss'.*another exp_name"):
        CSVLogger("run", log_dir=tmp_path)
    assert (run / "scalars.csv").read_text(encoding="utf-8") == foreign

    (run / "scalars.csv").unlink()
    (run / "hparams.json").write_text("[1, 2]", encoding="utf-8")
    logger = CSVLogger("run", log_dir=tmp_path)
    with pytest.raises(LoggerError, match=r"hparams\.json exists but is not a JSON object"):
        logger.log_hparams({"lr": 1.0})
    assert (run / "hparams.json").read_text(encoding="utf-8") == "[1, 2]"
    logger.close()


def test_csv_loggers_in_different_folders_are_independent(tmp_path):
    a = CSVLogger("a", log_dir=tmp_path, flush_every=1)
    b = CSVLogger("b", log_dir=tmp_path, flush_every=1)
    a.log_scalar("x", 1.0)
    b.log_scalar("y", 2.0)
    a.log_scalar("x", 3.0)
    a.close()
    b.close()
    assert triples(a) == [(0, "x", 1.0), (1, "x", 3.0)]
    assert triples(b) == [(0, "y", 2.0)]


def test_csv_close_flushes_and_is_idempotent(tmp_path):
    logger = CSVLogger("run", log_dir=tmp_path, flush_secs=None)
    logger.log_scalar("a", 1.0, step=0)
    logger.close()
    logger.close()
    assert triples(logger) == [(0, "a", 1.0)]
    with pytest.raises(LoggerClosedError, match=r"CSVLogger\(exp_name='run'.* is closed"):
        logger.log_scalar("a", 2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"flush_every": 0}, "flush_every must be an int >= 1"),
     ({"flush_every": 1.5}, "flush_every must be an int >= 1"),
     ({"flush_secs": 0}, "flush_secs must be a number of seconds > 0"),
     ({"flush_secs": "10"}, "flush_secs must be a number of seconds > 0")],
)  # fmt: skip
def test_csv_bad_flush_settings_raise(tmp_path, kwargs, message):
    with pytest.raises(LoggerError, match=message):
        CSVLogger("run", log_dir=tmp_path, **kwargs)


def test_make_logger_builds_the_registered_loggers(tmp_path):
    with warnings.catch_warnings():
        # The deliberately broken test-fixture plugins warn on the first lookup; that warning
        # is tested in test_plugins.py and has nothing to do with loggers.
        warnings.simplefilter("ignore", PluginLoadWarning)
        assert {"csv", "tensorboard", "wandb"} <= set(rc.list_loggers())
    logger = rc.make_logger("csv", exp_name="via_plugin", log_dir=tmp_path)
    assert type(logger) is CSVLogger
    assert logger.log_dir == tmp_path / "via_plugin"
    logger.close()


def test_importing_loggers_does_not_import_tensorboard_or_wandb():
    code = (
        "import sys, rlblocks.core, rlblocks.core.loggers; "
        "print(sorted(m for m in ('tensorboard', 'torch.utils.tensorboard', 'wandb') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# -- TensorBoardLogger -------------------------------------------------------------------------


def test_tensorboard_round_trip(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    with TensorBoardLogger("run", log_dir=tmp_path) as logger:
        logger.log_hparams({"lr": 3e-4, "env": {"id": "CartPole-v1"}, "layers": [64, 64]})
        logger.log_scalar("train/loss", torch.tensor(0.5), step=0)
        logger.log_metrics({"train/loss": 0.25, "eval/return": float("nan")}, step=10)
        logger.log_hparams({"seed": 3, "note": "a|b"})
    assert logger.log_dir == tmp_path / "run"
    # hparams share the scalars' event file (see _write_hparams for why that matters)
    assert len(list(logger.log_dir.glob("events.out.tfevents.*"))) == 1

    events = EventAccumulator(str(logger.log_dir))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "eval/return"}
    loss = events.Scalars("train/loss")
    assert [(e.step, e.value) for e in loss] == [(0, 0.5), (10, 0.25)]
    (ret,) = events.Scalars("eval/return")
    assert ret.step == 10
    assert math.isnan(ret.value)

    # HParams dashboard: the first call's set
    metadata = events.SummaryMetadata("_hparams_/session_start_info")
    start = HParamsPluginData.FromString(metadata.plugin_data.content).session_start_info
    assert {key: value.WhichOneof("kind") for key, value in start.hparams.items()} == {
        "lr": "number_value",
        "env/id": "string_value",
        "layers": "string_value",
    }
    assert start.hparams["lr"].number_value == pytest.approx(3e-4)
    assert start.hparams["env/id"].string_value == "CartPole-v1"
    assert start.hparams["layers"].string_value == "[64, 64]"

    # Text dashboard: every call
    tables = [
        (e.step, e.tensor_proto.string_val[0].decode())
        for e in events.Tensors("hparams/text_summary")
    ]
    assert tables == [
        (0, "| name | value |\n|---|---|\n| lr | 0.0003 |\n| env/id | CartPole-v1 |\n"
            "| layers | [64, 64] |\n"),
        (1, "| name | value |\n|---|---|\n| seed | 3 |\n| note | a\\|b |\n"),
    ]  # fmt: skip


def test_tensorboard_close_is_idempotent_and_validates_like_the_others(tmp_path):
    logger = TensorBoardLogger("run", log_dir=tmp_path, flush_secs=1)
    with pytest.raises(LoggerError, match=r"shape \(4,\)"):
        logger.log_scalar("x", torch.zeros(4))
    logger.flush()
    logger.close()
    logger.close()
    with pytest.raises(LoggerClosedError, match="is closed"):
        logger.log_scalar("x", 1.0)


def test_tensorboard_missing_dependency(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(MissingDependencyError) as info:
        TensorBoardLogger("run", log_dir=tmp_path)
    assert isinstance(info.value, ImportError)
    assert "TensorBoardLogger" in str(info.value)
    assert "pip install 'rlblocks-core[tensorboard]'" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_tensorboard_logger_as_torchrl_users_write_it(tmp_path):
    # from torchrl.record.loggers import TensorboardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rlblocks.core.loggers import TensorboardLogger

    logger = TensorboardLogger(exp_name="ppo_cartpole", log_dir=str(tmp_path))
    logger.log_hparams({"lr": 3e-4})
    logger.log_scalar("reward", 1.5, step=100)
    logger.close()
    assert TensorboardLogger is TensorBoardLogger and isinstance(logger, Logger)
    events = EventAccumulator(str(tmp_path / "ppo_cartpole"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("reward")] == [(100, 1.5)]
    assert "TensorboardLogger" in rc.loggers.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)  # the broken fixture plugins
        built = rc.make_logger("tensorboard", exp_name="via_plugin", log_dir=tmp_path)
    assert type(built) is TensorboardLogger
    built.close()


# -- WandbLogger -------------------------------------------------------------------------------


def read_wandb_records(path: Path) -> list[Any]:
    """Decode a ``.wandb`` transaction log (LevelDB log framing around protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a header: block padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk of a record
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield tmp_path
    import wandb

    wandb.teardown()  # stop the wandb-core service this test started


def test_wandb_offline_round_trip(wandb_env):
    logs = wandb_env / "logs"
    with WandbLogger("run", project="rlblocks-test", log_dir=logs) as logger:
        assert logger.log_dir == logs / "run"
        assert logger.run.settings.mode == "offline"
        logger.log_hparams({"lr": 3e-4, "env": {"id": "CartPole-v1"}, "seed": None})
        logger.log_scalar("train/loss", torch.tensor(0.5), step=0)
        logger.log_metrics({"train/loss": 0.25, "eval/return": float("nan")}, step=10)
        with pytest.raises(LoggerError, match="step 5 is smaller than the last step logged, 10"):
            logger.log_scalar("train/loss", 1.0, step=5)
    logger.close()  # idempotent: finish() ran once, in __exit__
    with pytest.raises(LoggerClosedError, match="is closed"):
        logger.log_scalar("x", 1.0)

    assert logger.run_dir is not None
    assert logger.run_dir.parent == logs / "run" / "wandb"
    assert logger.run_dir.name.startswith("offline-run-")
    (log_file,) = logger.run_dir.glob("run-*.wandb")
    # wandb-core writes the file from its own process: on a loaded machine its last records
    # (the run's exit) can land a moment after finish() returned.
    deadline = time.monotonic() + 20
    while True:
        try:
            records = read_wandb_records(log_file)
        except Exception:  # a record still being written
            records = []
        kinds = [r.WhichOneof("record_type") for r in records]
        if "exit" in kinds or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "exit" in kinds

    (run,) = (r.run for r in records if r.HasField("run"))
    assert (run.display_name, run.project) == ("run", "rlblocks-test")
    config = {
        u.key: json.loads(u.value_json) for r in records if r.HasField("config")
        for u in r.config.update
    }  # fmt: skip
    assert {k: config[k] for k in ("lr", "env/id", "seed")} == {
        "lr": 3e-4,
        "env/id": "CartPole-v1",
        "seed": None,
    }
    history = [
        {item.nested_key[0] if item.nested_key else item.key: item.value_json
         for item in r.history.item}
        for r in records if r.HasField("history")
    ]  # fmt: skip
    rows = [
        (int(h["_step"]), {k: v for k, v in h.items() if not k.startswith("_")}) for h in history
    ]
    assert rows == [(0, {"train/loss": "0.5"}), (10, {"train/loss": "0.25", "eval/return": "NaN"})]


def test_wandb_rejects_name_and_dir_kwargs(tmp_path):
    with pytest.raises(LoggerError, match=r"got name='x'.*pass exp_name=\.\.\. instead"):
        WandbLogger("run", log_dir=tmp_path, name="x")
    with pytest.raises(LoggerError, match=r"got dir=.*pass log_dir=\.\.\. instead"):
        WandbLogger("run", log_dir=tmp_path, dir=str(tmp_path))


def test_wandb_missing_dependency(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(MissingDependencyError) as info:
        WandbLogger("run", log_dir=tmp_path)
    assert isinstance(info.value, ImportError)
    assert "WandbLogger" in str(info.value)
    assert "pip install 'rlblocks-core[wandb]'" in str(info.value)
    assert not (tmp_path / "run").exists()


class FakeRun:
    def __init__(self, **kwargs: Any) -> None:
        self.init_kwargs = kwargs
        self.settings = type("Settings", (), {"sync_dir": None})()
        self.finish_calls: list[int] = []

    def finish(self, exit_code: int = 0) -> None:
        self.finish_calls.append(exit_code)


@pytest.fixture
def fake_wandb_init(monkeypatch):
    import wandb

    monkeypatch.setattr(wandb, "init", FakeRun)
    monkeypatch.delenv("WANDB_MODE", raising=False)


@pytest.mark.usefixtures("fake_wandb_init")
def test_wandb_defaults_to_offline_and_its_own_run(tmp_path, monkeypatch):
    import wandb

    def init_kwargs(**kwargs: Any) -> dict[str, Any]:
        logger = WandbLogger("run", log_dir=tmp_path, **kwargs)
        logger.close()
        return logger.run.init_kwargs

    assert init_kwargs() == {
        "project": None,
        "name": "run",
        "dir": str(tmp_path / "run"),
        "mode": "offline",
        "reinit": "create_new",
    }
    assert init_kwargs(mode="online", reinit="finish_previous")["mode"] == "online"
    assert init_kwargs(mode="online", reinit="finish_previous")["reinit"] == "finish_previous"
    chosen = init_kwargs(settings=wandb.Settings(mode="disabled", reinit="return_previous"))
    assert "mode" not in chosen
    assert "reinit" not in chosen
    assert "mode" not in init_kwargs(settings={"mode": "online"})
    monkeypatch.setenv("WANDB_MODE", "online")
    assert "mode" not in init_kwargs()


@pytest.mark.usefixtures("fake_wandb_init")
def test_wandb_run_is_marked_failed_when_the_with_block_raises(tmp_path):
    with pytest.raises(RuntimeError), WandbLogger("run", log_dir=tmp_path) as failing:
        raise RuntimeError("diverged")
    with WandbLogger("run", log_dir=tmp_path) as fine:
        pass
    assert (failing.run.finish_calls, fine.run.finish_calls) == ([1], [0])
