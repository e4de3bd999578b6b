"""The objectives plugin: its entry point loads and every loss is listed by ``rlblocks plugins``."""

from __future__ import annotations

import importlib.metadata

import pytest

import rlblocks.objectives as objectives
from rlblocks.core import get_component, list_losses, make_loss
from rlblocks.core._cli import main as rlblocks_cli
from rlblocks.objectives._plugin import LOSS_NAMES


def test_entry_point_is_declared_and_loads():
    (entry,) = [
        ep
        for ep in importlib.metadata.entry_points(group="rlblocks")
        if ep.dist is not None and ep.dist.name == "rlblocks-objectives"
    ]
    assert entry.value == "rlblocks.objectives._plugin"
    assert set(entry.load().rlblocks_losses()) == set(LOSS_NAMES)


def test_every_loss_is_registered_from_this_distribution():
    assert set(LOSS_NAMES) <= set(list_losses())
    for name, cls in LOSS_NAMES.items():
        info = get_component("loss", name)
        assert info.obj is getattr(objectives, cls)
        assert info.distribution == "rlblocks-objectives"
    assert set(LOSS_NAMES.values()) >= {
        "ClipPPOLoss", "PPOLoss", "KLPENPPOLoss", "A2CLoss", "ReinforceLoss", "DQNLoss",
        "DDPGLoss", "TD3Loss", "SACLoss", "DiscreteSACLoss", "IQLLoss", "CQLLoss", "BCLoss",
        "GAILLoss", "TD3BCLoss", "DecisionTransformerLoss", "OnlineDTLoss",
        "DistributionalDQNLoss", "REDQLoss", "CrossQLoss", "TQCLoss",
    }  # fmt: skip


def test_rlblocks_plugins_lists_the_losses(capsys):
    assert rlblocks_cli(["plugins"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    listed = {row[1] for row in lines if row[:1] == ["loss"] and "rlblocks-objectives" in row}
    assert set(LOSS_NAMES) <= listed


def test_torchrl_module_names_are_aliases():
    assert LOSS_NAMES["td3_bc"] == LOSS_NAMES["td3bc"] == "TD3BCLoss"
    assert LOSS_NAMES["dt"] == LOSS_NAMES["decision_transformer"] == "DecisionTransformerLoss"
    assert objectives.DTLoss is objectives.DecisionTransformerLoss  # TorchRL's class name
    assert LOSS_NAMES["c51"] == LOSS_NAMES["distributional_dqn"] == "DistributionalDQNLoss"


def test_unknown_name_suggests_the_close_one():
    with pytest.raises(LookupError, match="Did you mean 'sac'"):
        make_loss("sacc")
