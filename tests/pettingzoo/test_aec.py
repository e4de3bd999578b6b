"""PettingZoo's AEC (turn-based) API: classic.tictactoe_v3 with masks, and MPE's AEC envs."""

from __future__ import annotations

import numpy as np
import pettingzoo
import pytest
import torch
from mpe2 import simple_spread_v3

from rlblocks.envs import ActionMask, TransformedEnv, check_env_specs
from rlblocks.envs.errors import InvalidActionError
from rlblocks.pettingzoo import PettingZooEnv, PettingZooWrapper

PLAYERS = ["player_1", "player_2"]


def play(env, td, square: int):
    """Put ``square`` as every row's action (only the player on turn's is applied)."""
    td["agents", "action"] = torch.full((2,), square)
    return env.step(td)


def test_tictactoe_layout(tictactoe):
    assert not tictactoe.parallel and tictactoe.use_mask
    assert tictactoe.group_map == {"agents": PLAYERS}
    spec = tictactoe.full_observation_spec["agents"]
    assert spec["observation"].shape == (2, 3, 3, 2) and spec["observation"].dtype == torch.int8
    assert spec["action_mask"].shape == (2, 9) and spec["action_mask"].dtype == torch.bool
    assert spec["mask"].shape == (2,) and spec["mask"].dtype == torch.bool
    check_env_specs(tictactoe, seed=0)


def test_whose_turn_alternates_and_masks_follow_the_board(tictactoe):
    td = tictactoe.reset()
    assert td["agents", "mask"].tolist() == [True, False]  # player_1 opens
    assert td["agents", "action_mask"][0].all()
    assert not td["agents", "action_mask"][1].any()  # PettingZoo: off-turn masks are empty
    td = tictactoe.step_mdp(play(tictactoe, td, 4))
    assert td["agents", "mask"].tolist() == [False, True]
    legal = td["agents", "action_mask"][1]
    assert not legal[4] and int(legal.sum()) == 8
    # player_1's mark is in its own plane; player_2 sees it in the opponent plane
    assert td["agents", "observation"][0, 1, 1].tolist() == [1, 0]
    assert td["agents", "observation"][1, 1, 1].tolist() == [0, 1]
    td = tictactoe.step_mdp(play(tictactoe, td, 0))
    assert td["agents", "mask"].tolist() == [True, False]
    assert not td["done"].item()


def test_the_action_mask_transform_follows_the_players_masks(tictactoe):
    env = TransformedEnv(tictactoe, ActionMask(("agents", "action"), ("agents", "action_mask")))
    td = env.step_mdp(play(env, env.reset(), 4))
    spec = env.full_action_spec["agents", "action"]
    assert torch.equal(spec.mask[1], td["agents", "action_mask"][1])  # player_2 on turn
    assert spec.mask[0].all()  # off turn: PettingZoo's mask is empty, the spec's is full
    assert all(int(spec.rand()[1]) != 4 for _ in range(50))
    td["agents", "action"] = torch.tensor([0, 4])  # square 4 is taken
    with pytest.raises(InvalidActionError, match="forbids"):
        env.step(td)


def test_win_rewards_and_episode_end(tictactoe):
    td = tictactoe.reset()
    rewards = []
    for square in [0, 3, 1, 4, 2]:  # player_1 takes the top row
        td = play(tictactoe, td, square)
        rewards.append(td["next", "agents", "reward"].squeeze(-1).tolist())
        nxt = td["next"]
        td = tictactoe.step_mdp(td)
    assert rewards == [[0, 0]] * 4 + [[1, -1]]
    assert nxt["done"].item() and nxt["terminated"].item() and not nxt["truncated"].item()
    assert nxt["agents", "terminated"].all()
    assert not nxt["agents", "mask"].any()  # nobody is on turn any more
    from rlblocks.pettingzoo import EpisodeOverError

    with pytest.raises(EpisodeOverError, match="reset"):
        play(tictactoe, td, 5)
    td = tictactoe.reset()
    assert td["agents", "mask"].tolist() == [True, False] and not td["done"].item()


def test_illegal_move_raises_and_changes_nothing(tictactoe):
    td = tictactoe.step_mdp(play(tictactoe, tictactoe.reset(), 4))
    board = tictactoe.env.unwrapped.board.squares.copy()
    with pytest.raises(InvalidActionError) as info:
        play(tictactoe, td, 4)  # player_2 on the occupied centre
    message = str(info.value)
    for part in ("'player_2'", "group 'agents'", "action 4", "[0, 1, 2, 3, 5, 6, 7, 8]"):
        assert part in message
    assert tictactoe.env.unwrapped.board.squares == board
    assert tictactoe.env.agent_selection == "player_2"
    nxt = play(tictactoe, td, 0)["next"]  # the game goes on
    assert nxt["agents", "observation"][1, 0, 0].tolist() == [1, 0]


def test_off_turn_rows_are_ignored(tictactoe):
    td = tictactoe.reset()
    td["agents", "action"] = torch.tensor([2, 4])  # player_2's 4 is not applied
    td = tictactoe.step_mdp(tictactoe.step(td))
    legal = td["agents", "action_mask"][1]
    assert not legal[2] and legal[4]


def test_random_rollouts_take_legal_moves(tictactoe):
    tictactoe.set_seed(0)
    traj = tictactoe.rollout(200, break_when_any_done=False)  # raises on any illegal move
    done = traj["next", "done"].squeeze(-1)
    assert done.sum() >= 20  # games of 5 to 9 moves
    final = traj["next", "agents", "reward"][done].squeeze(-1)
    # a game ends in a draw or with +1 / -1
    assert set(map(tuple, final.tolist())) <= {(0.0, 0.0), (1.0, -1.0), (-1.0, 1.0)}
    assert (traj["agents", "mask"].sum(-1) == 1).all()  # exactly one player acts per step


def test_tictactoe_equals_a_raw_pettingzoo_game():
    raw = pettingzoo.make("aec", "classic/tictactoe_v3")
    raw.reset()
    env = PettingZooEnv("classic.tictactoe_v3")
    td = env.reset()
    for square in [4, 0, 8, 2, 1, 7, 5, 3, 6]:  # a full board: a draw
        td = play(env, td, square)
        raw.step(square)
        for i, player in enumerate(PLAYERS):
            observation = raw.observe(player)["observation"]
            assert np.array_equal(td["next", "agents", "observation"][i], observation)
        if td["next", "done"].item():
            break
        td = env.step_mdp(td)
    assert all(raw.terminations.values())
    assert td["next", "agents", "reward"].sum().item() == 0


def test_mpe_aec_rewards_add_up_to_what_last_reports():
    """Summed between turns, the per-step rewards are PettingZoo's cumulative rewards."""
    actions = np.random.default_rng(0).integers(0, 5, 40)
    raw = simple_spread_v3.env(N=2, max_cycles=5)
    raw.reset(seed=3)
    totals = dict.fromkeys(raw.possible_agents, 0.0)
    moves = iter(actions.tolist())
    for agent in raw.agent_iter():
        _, reward, terminated, truncated, _ = raw.last()
        totals[agent] += reward
        raw.step(None if terminated or truncated else next(moves))
    env = PettingZooWrapper(simple_spread_v3.env(N=2, max_cycles=5))
    td = env.reset(seed=3)
    total, moves = torch.zeros(2), 0
    for action in actions[:10]:
        moves += 1
        td["agents", "action"] = torch.full((2,), int(action))
        td = env.step(td)
        total += td["next", "agents", "reward"].squeeze(-1)
        if td["next", "done"].item():
            break
        td = env.step_mdp(td)
    assert moves == 10  # 5 cycles of 2 moves, then truncated
    assert td["next", "truncated"].item()
    assert total.tolist() == pytest.approx([totals["agent_0"], totals["agent_1"]], abs=1e-5)


def test_aec_needs_the_mask():
    with pytest.raises(ValueError, match="use_mask=False"):
        PettingZooEnv("classic.tictactoe_v3", use_mask=False)


def test_one_hot_actions_in_turns():
    env = PettingZooEnv("classic.connect_four_v3", categorical_actions=False)
    assert env.full_action_spec["agents", "action"].shape == (2, 7)
    td = env.reset()
    td = env.rand_action(td)
    assert td["agents", "action"].sum(-1).tolist() == [1, 1]
    nxt = env.step(td)["next"]
    column = int(td["agents", "action"][0].float().argmax())
    assert nxt["agents", "observation"][0, 5, column, 0].item() == 1  # the disc fell down
