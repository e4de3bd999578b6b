"""The TensorDict contract: keys, step_mdp and done flags."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

import rlblocks.core as rc
from rlblocks.core import MissingKeyError, step_mdp, terminated_or_truncated


def transition(batch: int = 3) -> TensorDict:
    flags = torch.zeros(batch, 1, dtype=torch.bool)
    return TensorDict(
        {
            "observation": torch.zeros(batch, 4),
            "action": torch.ones(batch, 1),
            "done": flags.clone(),
            "terminated": flags.clone(),
            "truncated": flags.clone(),
            ("collector", "traj_ids"): torch.arange(batch),
            "next": {
                "observation": torch.ones(batch, 4),
                "reward": torch.full((batch, 1), 2.0),
                "done": torch.tensor([[True], [False], [True]])[:batch],
                "terminated": torch.tensor([[True], [False], [False]])[:batch],
                "truncated": torch.tensor([[False], [False], [True]])[:batch],
            },
        },
        batch_size=[batch],
    )


def test_key_vocabulary():
    assert (rc.OBSERVATION, rc.ACTION, rc.REWARD, rc.NEXT) == (
        "observation",
        "action",
        "reward",
        "next",
    )
    assert rc.DONE_KEYS == ("done", "terminated", "truncated")


def test_step_mdp_moves_next_up_and_drops_action_and_reward():
    td = transition()
    out = step_mdp(td)
    assert torch.equal(out["observation"], td["next", "observation"])
    assert torch.equal(out["done"], td["next", "done"])
    assert torch.equal(out["terminated"], td["next", "terminated"])
    assert "next" not in out.keys()
    assert "action" not in out.keys()
    assert "reward" not in out.keys()
    # Other root entries survive (collector metadata), and the input is untouched.
    assert torch.equal(out["collector", "traj_ids"], torch.arange(3))
    assert torch.equal(td["observation"], torch.zeros(3, 4))
    assert "next" in td.keys()
    assert out.batch_size == td.batch_size


def test_step_mdp_builds_a_plain_independent_tensordict():
    td = transition()
    out = step_mdp(td)
    assert type(out) is TensorDict and out.device == td.device
    out.set("extra", torch.zeros(3))  # the result owns its entries: the input is unchanged
    out["observation"] = torch.full((3, 4), 5.0)
    assert "extra" not in td.keys() and "extra" not in td["next"].keys()
    assert torch.equal(td["next", "observation"], torch.ones(3, 4))
    assert out.lock_().is_locked and out.clone()["extra"].shape == (3,)


def test_step_mdp_options():
    td = transition()
    out = step_mdp(td, keep_other=False)
    assert set(out.keys()) == {"observation", "done", "terminated", "truncated"}
    out = step_mdp(td, keep_other=False, exclude_action=False, exclude_reward=False)
    assert set(out.keys()) == {"observation", "done", "terminated", "truncated", "action", "reward"}
    out = step_mdp(td, exclude_done=True)
    assert not ({"done", "terminated", "truncated"} & set(out.keys()))
    out = step_mdp(td, exclude_action=False)
    assert torch.equal(out["action"], td["action"])


def test_step_mdp_nested_keys():
    td = TensorDict(
        {
            "agents": {"observation": torch.zeros(2, 3), "action": torch.zeros(2, 1)},
            "next": {"agents": {"observation": torch.ones(2, 3), "reward": torch.ones(2, 1)}},
        },
        batch_size=[2],
    )
    out = step_mdp(
        td, reward_keys=("agents", "reward"), action_keys=[("agents", "action")], done_keys=[]
    )
    assert torch.equal(out["agents", "observation"], torch.ones(2, 3))
    assert ("agents", "action") not in out.keys(include_nested=True)
    assert ("agents", "reward") not in out.keys(include_nested=True)


def test_step_mdp_merges_sub_tensordicts_present_at_both_levels():
    td = TensorDict(
        {
            "observation": torch.zeros(2, 3),
            "action": torch.zeros(2, 1),
            "info": {"seed": torch.arange(2), "steps": torch.zeros(2)},
            "next": {
                "observation": torch.ones(2, 3),
                "reward": torch.ones(2, 1),
                "info": {"steps": torch.ones(2)},
            },
        },
        batch_size=[2],
    )
    out = step_mdp(td)
    assert torch.equal(out["info", "steps"], torch.ones(2))  # "next" wins
    assert torch.equal(out["info", "seed"], torch.arange(2))  # the root's other entries stay
    assert torch.equal(out["observation"], torch.ones(2, 3))


def test_step_mdp_without_next_says_what_to_do():
    with pytest.raises(MissingKeyError, match="'next' entry.*Call env.step") as info:
        step_mdp(TensorDict({"observation": torch.zeros(2)}, batch_size=[]))
    assert isinstance(info.value, KeyError)
    assert str(info.value).startswith("step_mdp")  # not repr-quoted like a bare KeyError


def test_terminated_or_truncated():
    nxt = transition()["next"]
    nxt["done"] = torch.zeros(3, 1, dtype=torch.bool)
    done = terminated_or_truncated(nxt, write_done=True)
    assert done.tolist() == [[True], [False], [True]]
    assert torch.equal(nxt["done"], done)
    only_term = TensorDict({"terminated": torch.tensor([[True], [False]])}, [2])
    assert terminated_or_truncated(only_term).tolist() == [[True], [False]]
    only_done = TensorDict({"done": torch.tensor([[0], [1]], dtype=torch.uint8)}, [2])
    assert terminated_or_truncated(only_done).tolist() == [[False], [True]]
    with pytest.raises(MissingKeyError, match="needs 'terminated', 'truncated' or 'done'"):
        terminated_or_truncated(TensorDict({"reward": torch.zeros(2, 1)}, [2]))
