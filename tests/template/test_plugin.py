"""The installed rlblocks-template distribution: its entry point and all three components,
used only through the names it registers (what a user of the plugin would do)."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import LazyTensorStorage, TensorDictReplayBuffer
from rlblocks.core import (
    UnknownComponentError,
    list_components,
    make_env,
    make_loss,
    make_sampler,
    plugin_failures,
)
from rlblocks.objectives import total_loss
from rlblocks.objectives.modules import MLP, ValueOperator
from rlblocks.template import ChainWalkEnv, RecentSampler, TDValueLoss, __version__

DIST = "rlblocks-template"


def test_entry_point_is_declared_and_loads():
    (entry,) = [
        ep
        for ep in importlib.metadata.entry_points(group="rlblocks")
        if ep.dist is not None and ep.dist.name == DIST
    ]
    assert (entry.name, entry.value) == ("template", "rlblocks.template._plugin")
    module = entry.load()
    assert set(module.rlblocks_env_backends()) == {"template"}
    assert module.rlblocks_losses() == {"template_td_value": TDValueLoss}
    assert module.rlblocks_samplers() == {"template_recent": RecentSampler}


def test_the_installed_distribution_is_discovered():
    found = {(c.kind, c.name): c for c in list_components() if c.distribution == DIST}
    assert set(found) == {
        ("env_backend", "template"),
        ("loss", "template_td_value"),
        ("sampler", "template_recent"),
    }
    assert {(c.plugin, c.version) for c in found.values()} == {("template", __version__)}
    assert not [f for f in plugin_failures() if f.distribution == DIST]


def test_make_env_rolls_out_the_chain_walk():
    env = make_env("template:ChainWalk-v0", length=5, batch_size=[4])
    assert isinstance(env, ChainWalkEnv) and env.length == 5
    env.set_seed(0)
    traj = env.rollout(30, break_when_any_done=False)
    assert traj.batch_size == torch.Size([4, 30])
    assert traj["next", "observation"].shape == (4, 30, 5)
    assert traj["next", "terminated"].any()  # random walks on 5 states end within 30 steps


def test_an_unknown_env_id_suggests_the_closest():
    with pytest.raises(UnknownComponentError, match="Did you mean 'ChainWalk-v0'"):
        make_env("template:ChainWalk-v1")


def test_make_loss_trains_a_value_network():
    value = ValueOperator(MLP(in_features=7, out_features=1, num_cells=[16]))
    loss = make_loss("template_td_value", value_network=value, gamma=0.9)
    assert isinstance(loss, TDValueLoss)
    env = make_env("template:ChainWalk-v0", batch_size=[8])
    batch = env.rollout(20, break_when_any_done=False).reshape(-1)
    out = loss(batch)
    total_loss(out).backward()
    assert out["loss_value"].item() > 0
    assert all(p.grad is not None for p in value.parameters())


def test_make_sampler_serves_a_replay_buffer():
    sampler = make_sampler("template_recent", window=5)
    assert isinstance(sampler, RecentSampler)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(8), sampler=sampler, batch_size=64)
    rb.extend(TensorDict({"step": torch.arange(11)}, batch_size=[11]))  # wraps around
    batch = rb.sample()
    assert set(batch["step"].tolist()) == {6, 7, 8, 9, 10}
