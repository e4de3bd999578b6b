"""ActionMask: the action spec follows the legal-action mask the env reports."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tensordict import TensorDict, TensorDictBase

from rlblocks.core import DONE, RESET, TERMINATED, TRUNCATED
from rlblocks.core.specs import Binary, Bounded, Categorical, Composite, OneHot, Unbounded
from rlblocks.envs import ActionMask, EnvBase, InvalidActionError, TransformedEnv, TransformError

LENGTH = 6  # steps per episode


class LineWalk(EnvBase):
    """A position 0..4 on a line: actions 0 (left), 1 (stay), 2 (right); walking off the
    line is illegal (the env itself raises on it). Episodes end after ``LENGTH`` steps, in
    a state where nothing is legal (game over)."""

    step_returns_done_flags = True

    def __init__(self, batch_size: Any = (), one_hot: bool = False, mask_key="action_mask"):
        super().__init__(batch_size=batch_size)
        b = self.batch_size
        self.mask_key = mask_key
        self.full_observation_spec = Composite(
            {
                "observation": Unbounded(shape=(*b, 1)),
                mask_key: Binary(shape=(*b, 3), dtype=torch.bool),
            },
            shape=b,
        )
        self.action_spec = OneHot(3, shape=(*b, 3)) if one_hot else Categorical(3, shape=b)
        self.reward_spec = Unbounded(shape=(*b, 1))
        self.pos = torch.full((*b, 1), 2)
        self.t = torch.zeros(*b, 1, dtype=torch.long)

    def _observe(self, flags):
        over = self.t >= LENGTH
        mask = torch.cat([self.pos > 0, torch.ones_like(over), self.pos < 4], -1) & ~over
        data = {"observation": self.pos.float(), self.mask_key: mask, **flags}
        return TensorDict(data, batch_size=self.batch_size)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: Any) -> TensorDictBase:
        rows = None if tensordict is None else tensordict.get(RESET, None)
        if rows is None:
            rows = torch.ones_like(self.t, dtype=torch.bool)
        rows = rows.reshape_as(self.t)
        self.pos = torch.where(rows, torch.randint(0, 5, self.pos.shape), self.pos)
        self.t = torch.where(rows, 0, self.t)
        flag = torch.zeros_like(self.t, dtype=torch.bool)
        return self._observe({DONE: flag, TERMINATED: flag.clone(), TRUNCATED: flag.clone()})

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action")
        if action.shape[-1:] == (3,) and action.shape != self.batch_size:
            action = action.long().argmax(-1)
        move = action.reshape_as(self.pos) - 1
        new = self.pos + move
        if ((new < 0) | (new > 4)).any():
            raise RuntimeError("LineWalk: walked off the line")
        self.pos, self.t = new, self.t + 1
        over = self.t >= LENGTH
        out = self._observe({DONE: over, TERMINATED: over, TRUNCATED: torch.zeros_like(over)})
        out.set(("reward"), torch.zeros_like(self.pos, dtype=torch.float32))
        return out

    def _set_seed(self, seed: int | None) -> None:
        torch.manual_seed(seed or 0)


def allowed(masks: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    if actions.shape == masks.shape:  # one-hot
        return (masks & actions.bool()).any(-1)
    return masks.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("one_hot", [False, True])
def test_random_actions_follow_the_mask_through_episodes_and_resets(one_hot):
    env = TransformedEnv(LineWalk(batch_size=[8], one_hot=one_hot), ActionMask())
    # 40 steps: several episodes each, through terminal states where nothing is legal.
    trajectory = env.rollout(40, break_when_any_done=False)
    assert allowed(trajectory["action_mask"], trajectory["action"]).all()
    assert not trajectory["next", "action_mask"][..., LENGTH - 1, :].any()  # game over seen
    # The spec's own sampler follows the current mask too (after the rollout's last reset).
    td = env.reset()
    for _ in range(20):
        assert allowed(td["action_mask"], env.action_spec.rand()).all()


def reset_until_one_is_at_the_left_end(env):
    for _ in range(200):
        td = env.reset()
        at_edge = td["observation"].squeeze(-1) == 0
        if at_edge.any():
            return td, int(at_edge.nonzero()[0])
    raise AssertionError("no env started at position 0 in 200 resets")


def test_an_illegal_action_is_refused_before_the_env_steps():
    env = TransformedEnv(LineWalk(batch_size=[3]), ActionMask())
    td, edge = reset_until_one_is_at_the_left_end(env)
    action = torch.ones(3, dtype=torch.long)  # "stay" is always legal
    env.step(td.clone().set("action", action))
    td, edge = reset_until_one_is_at_the_left_end(env)
    action[edge] = 0  # left, at position 0
    before = env.base_env.t.clone()
    expected = rf"'action'.*forbids.*index \[{edge}\]: category 0"
    with pytest.raises(InvalidActionError, match=expected):
        env.step(td.set("action", action))
    assert torch.equal(env.base_env.t, before)  # nothing stepped


def test_without_the_env_check_an_illegal_action_reaches_the_env():
    env = TransformedEnv(LineWalk(batch_size=[3]), ActionMask(), check_actions=False)
    td, edge = reset_until_one_is_at_the_left_end(env)
    action = torch.ones(3, dtype=torch.long)
    action[edge] = 0
    with pytest.raises(RuntimeError, match="walked off the line"):
        env.step(td.set("action", action))


def test_a_missing_mask_key_is_named_with_what_the_env_has():
    with pytest.raises(TransformError, match=r"no 'legal'.*\['action_mask', 'observation'\]"):
        TransformedEnv(LineWalk(), ActionMask(mask_key="legal")).action_spec  # noqa: B018


def test_a_non_discrete_action_is_refused():
    class Continuous(LineWalk):
        def __init__(self):
            super().__init__()
            self.action_spec = Bounded(-1.0, 1.0, shape=(1,))

    with pytest.raises(TransformError, match="needs a Categorical or OneHot spec.*Bounded"):
        TransformedEnv(Continuous(), ActionMask()).action_spec  # noqa: B018


def test_a_custom_mask_key_and_integer_masks():
    env = TransformedEnv(LineWalk(batch_size=[4], mask_key="legal"), ActionMask(mask_key="legal"))
    trajectory = env.rollout(12, break_when_any_done=False)
    assert allowed(trajectory["legal"], trajectory["action"]).all()
