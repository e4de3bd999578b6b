"""TextEnv: prompts in, responses as actions, verifiable rewards out; rollouts, collectors
and replay buffers carry its tokens and text like any env's data."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from rlblocks.buffers import LazyTensorStorage, ReplayBuffer
from rlblocks.collectors import SyncDataCollector
from rlblocks.envs import InvalidActionError
from rlblocks.llm import (
    ContextLengthError,
    LLMError,
    RewardFunctionError,
    TextDataset,
    TextEnv,
    arithmetic_task,
    encode_responses,
    exact_match_reward,
    texts,
)

DATA = TextDataset(["1+1=", "2+2=", "3+30=", "40+4="], ["2", "4", "33", "44"])


def make_env(tokenizer, **kwargs):
    options = {"batch_size": 4, "max_prompt_tokens": 6, "max_new_tokens": 3}
    options.update(kwargs)
    return TextEnv(options.pop("dataset", DATA), exact_match_reward, tokenizer, **options)


def answer(env, td, responses):
    """Write ``responses`` (one per row) as the action, as a policy would."""
    tokens, _ = encode_responses(env.tokenizer, responses, env.max_new_tokens)
    td.set(("tokens", "response"), tokens)
    return td


def test_reset_gives_padded_prompts_with_text_and_groups(tokenizer):
    env = make_env(tokenizer, batch_size=6, group_size=3)
    td = env.reset()
    prompts = texts(td, ("text", "prompt"))
    assert len(prompts) == 6
    # each prompt fills group_size rows in a row
    assert prompts[0] == prompts[1] == prompts[2] and prompts[3] == prompts[5]
    assert td["prompt_id"].tolist()[:3] == [td["prompt_id"][0].item()] * 3
    tokens, mask = td["tokens", "prompt"], td["masks", "prompt"]
    assert tokens.shape == mask.shape == (6, 6)
    for row in range(6):
        assert tokenizer.decode(tokens[row][mask[row]]) == prompts[row]
        assert mask[row, -1]  # left-padded: the last position is always a real token
    assert texts(td, ("text", "answer"))[0] == DATA.answers[td["prompt_id"][0]]


def test_step_rewards_exact_answers_and_ends_the_episode(tokenizer):
    env = make_env(tokenizer, shuffle=False)
    td = env.reset()
    right = [DATA.answers[i] for i in td["prompt_id"].tolist()]
    responses = [right[0], "9", right[2], "45"]
    prompts = texts(td, ("text", "prompt"))
    out = env.step(answer(env, td, responses))["next"]
    assert out["reward"].squeeze(-1).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert out["done"].all() and out["terminated"].all() and not out["truncated"].any()
    assert texts(out, ("text", "history")) == [p + r for p, r in zip(prompts, responses)]


def test_response_ends_at_the_first_eos(tokenizer):
    env = make_env(tokenizer, dataset=TextDataset(["1+1="], ["2"]), batch_size=1)
    td = env.reset()
    two, eos = tokenizer.encode("2")[0], tokenizer.eos_token_id
    td.set(("tokens", "response"), torch.tensor([[two, eos, two]]))  # "2", then ignored
    assert env.step(td)["next", "reward"].item() == 1.0


def test_shuffle_false_walks_the_dataset_in_order(tokenizer):
    env = make_env(tokenizer, batch_size=2, shuffle=False)
    ids = [env.reset()["prompt_id"].tolist() for _ in range(3)]
    assert ids == [[0, 1], [2, 3], [0, 1]]


def test_seeding_repeats_the_prompt_order(tokenizer):
    env = make_env(tokenizer, dataset=arithmetic_task(100, high=20), batch_size=4)
    first = [env.reset(seed=5)["prompt_id"].tolist() for _ in range(1)] + [
        env.reset()["prompt_id"].tolist()
    ]
    again = [env.reset(seed=5)["prompt_id"].tolist(), env.reset()["prompt_id"].tolist()]
    assert first == again


def test_rollout_and_collector_carry_tokens_and_text(tokenizer):
    env = make_env(tokenizer)
    trajectory = env.rollout(3, break_when_any_done=False)  # random tokens as actions
    assert trajectory.batch_size == (4, 3)
    assert trajectory["tokens", "response"].shape == (4, 3, 3)
    prompts = trajectory["text", "prompt"].tolist()
    assert len(prompts) == 4 and len(prompts[0]) == 3 and isinstance(prompts[0][0], str)
    assert len(trajectory["next", "text", "history"].tolist()[0]) == 3

    collector = SyncDataCollector(env, None, frames_per_batch=8, total_frames=16)
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2 and batches[0].batch_size == (4, 2)
    assert len(batches[0]["next", "text", "history"].tolist()) == 4


def test_completions_go_through_a_replay_buffer(tokenizer):
    env = make_env(tokenizer)
    batch = env.rollout(2, break_when_any_done=False).reshape(-1)
    buffer = ReplayBuffer(storage=LazyTensorStorage(16), batch_size=5)
    buffer.extend(batch.exclude("text", ("next", "text")))
    sample = buffer.sample()
    assert sample["tokens", "response"].shape == (5, 3)
    assert sample["masks", "prompt"].dtype == torch.bool
    assert len(buffer) == 8


def test_actions_outside_the_vocabulary_are_rejected(tokenizer):
    env = make_env(tokenizer)
    td = env.reset()
    td.set(("tokens", "response"), torch.full((4, 3), len(tokenizer)))
    with pytest.raises(InvalidActionError):
        env.step(td)


@pytest.mark.parametrize(
    ("reward", "match"),
    [
        (lambda p, r, a: [1.0] * (len(r) - 1), r"shape \[3\] for 4 responses"),
        (lambda p, r, a: torch.zeros(len(r), 2), r"shape \[4, 2\] for 4 responses"),
        (lambda p, r, a: [0.0, float("nan"), 0.0, 0.0], "returned nan for response 1"),
        (lambda p, r, a: "good", "returned str"),
    ],
)
def test_bad_rewards_raise_and_the_env_keeps_working(tokenizer, reward, match):
    env = TextEnv(DATA, reward, tokenizer, batch_size=4, max_prompt_tokens=6, max_new_tokens=3)
    td = answer(env, env.reset(), ["1"] * 4)
    with pytest.raises(RewardFunctionError, match=match):
        env.step(td)
    env.reward_fn = exact_match_reward
    assert env.step(answer(env, env.reset(), ["1"] * 4))["next", "reward"].shape == (4, 1)


def test_bad_construction_and_too_long_prompts(tokenizer):
    with pytest.raises(LLMError, match=r"batch_size \(6\) must be a multiple of group_size \(4\)"):
        make_env(tokenizer, batch_size=6, group_size=4)
    with pytest.raises(LLMError, match="max_turns=2 needs a followup_fn"):
        make_env(tokenizer, max_turns=2)
    with pytest.raises(LLMError, match="max_new_tokens must be an int >= 1"):
        make_env(tokenizer, max_new_tokens=0)
    env = make_env(tokenizer, max_prompt_tokens=4)
    with pytest.raises(ContextLengthError, match=r"is 5 tokens long, more than the 4 allowed"):
        env.reset()  # a batch of 4 draws all 4 prompts


def test_multi_turn_history_follow_ups_and_truncation(tokenizer):
    def followup(history, response, answer):
        return None if response == answer else ">"  # ask again until right

    data = TextDataset(["1+1="], ["2"])
    env = TextEnv(
        data,
        exact_match_reward,
        tokenizer,
        batch_size=2,
        max_prompt_tokens=12,
        max_new_tokens=2,
        max_turns=3,
        followup_fn=followup,
    )
    td = env.reset()
    td = env.step(answer(env, td, ["3", "2"]))
    nxt = td["next"]
    assert nxt["done"].squeeze(-1).tolist() == [False, True]
    assert texts(nxt, ("text", "history"))[0] == "1+1=3>"
    assert nxt["turn"].squeeze(-1).tolist() == [1, 1]
    # the wrong row goes on from its history; a partial reset restarts only the other
    td = env.maybe_reset(env.step_mdp(td))
    assert texts(td, ("text", "prompt")) == ["1+1=3>", "1+1="]
    td = env.step(answer(env, td, ["4", "2"]))
    td = env.maybe_reset(env.step_mdp(td))
    td = env.step(answer(env, td, ["5", "3"]))
    nxt = td["next"]
    # row 0: third wrong answer, the follow-up would go on: cut at max_turns
    assert nxt["truncated"][0].item() and not nxt["terminated"][0].item()
    assert nxt["done"].squeeze(-1).tolist() == [True, False]


def test_env_batch_of_a_tensordict_from_outside(tokenizer):
    env = make_env(tokenizer)
    with pytest.raises(Exception, match="batch"):
        env.step(TensorDict({}, batch_size=[3]))


def test_a_history_outgrowing_the_prompt_width_raises_and_changes_nothing(tokenizer):
    env = TextEnv(
        TextDataset(["1+1="], ["2"]),
        exact_match_reward,
        tokenizer,
        batch_size=1,
        max_prompt_tokens=6,
        max_new_tokens=3,
        max_turns=3,
        followup_fn=lambda history, response, answer: ">",
    )
    td = env.reset()
    with pytest.raises(ContextLengthError, match=r"'1\+1=12>' is 7 tokens long"):
        env.step(answer(env, td, ["12"]))
    # The conversation is where it was: a shorter answer still fits.
    out = env.step(answer(env, td, [""]))["next"]
    assert out["turn"].item() == 1
    assert texts(out, ("text", "history")) == ["1+1=>"]
