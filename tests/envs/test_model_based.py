"""ModelBasedEnv: a learned model stepped like a real env, with the autograd graph kept."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn

from rlblocks.core.specs import Bounded, Categorical, Composite, Unbounded
from rlblocks.envs import (
    CartPoleEnv,
    EnvSpecError,
    InvalidActionError,
    ModelBasedEnv,
    PendulumEnv,
    RewardSum,
    StepCounter,
    TransformedEnv,
    UnsupportedEnvOperationError,
    check_env_specs,
)

OBS, ACT = 3, 2


class LinearDynamics(nn.Module):
    """x' = A x + B a, reward = -|x'|^2: a 'true' model with known gradients."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.A = nn.Parameter(torch.eye(OBS) * 0.9 + 0.05 * torch.randn(OBS, OBS, generator=gen))
        self.B = nn.Parameter(torch.randn(OBS, ACT, generator=gen))

    def forward(
        self, observation: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        next_obs = observation @ self.A.T + action @ self.B.T
        return next_obs, -(next_obs**2).sum(-1, keepdim=True)


def linear_model(dynamics: LinearDynamics | None = None) -> TensorDictModule:
    return TensorDictModule(
        dynamics or LinearDynamics(),
        in_keys=["observation", "action"],
        out_keys=[("next", "observation"), ("next", "reward")],
    )


def linear_env(batch: tuple[int, ...] = (), **kwargs) -> ModelBasedEnv:
    kwargs.setdefault("world_model", linear_model())
    return ModelBasedEnv(
        observation_spec=Composite(observation=Unbounded(shape=(OBS,))),  # unbatched: expanded
        action_spec=Bounded(-1.0, 1.0, shape=(*batch, ACT)),
        batch_size=batch,
        **kwargs,
    )


def make_policy(seed: int = 1) -> TensorDictModule:
    torch.manual_seed(seed)
    return TensorDictModule(
        nn.Sequential(nn.Linear(OBS, ACT), nn.Tanh()), in_keys=["observation"], out_keys=["action"]
    )


def start(batch: tuple[int, ...] = (), value: float | None = None) -> TensorDict:
    obs = torch.randn(*batch, OBS) if value is None else torch.full((*batch, OBS), value)
    return TensorDict({"observation": obs}, batch_size=batch)


def test_rollout_matches_a_hand_unrolled_loop():
    dynamics = LinearDynamics()
    env = linear_env(world_model=linear_model(dynamics))
    policy = make_policy()
    x0 = start()
    traj = env.rollout(6, policy, tensordict=x0, check=True)
    assert traj.batch_size == (6,)
    with torch.no_grad():
        x = x0["observation"]
        for t in range(6):
            a = policy.module(x)
            x_next = x @ dynamics.A.T + a @ dynamics.B.T
            torch.testing.assert_close(traj["observation"][t], x)
            torch.testing.assert_close(traj["action"][t], a)
            torch.testing.assert_close(traj["next", "observation"][t], x_next)
            torch.testing.assert_close(
                traj["next", "reward"][t], -(x_next**2).sum(-1, keepdim=True)
            )
            x = x_next
    assert not traj["next", "done"].any()
    assert not traj["next", "truncated"].any()


def test_gradients_flow_to_model_policy_and_start_states_through_a_rollout():
    dynamics = LinearDynamics()
    env = linear_env(world_model=linear_model(dynamics))
    policy = make_policy()
    x0 = torch.randn(OBS, requires_grad=True)
    traj = env.rollout(5, policy, tensordict=TensorDict({"observation": x0}, []))
    params = [dynamics.A, dynamics.B, *policy.parameters(), x0]
    got = torch.autograd.grad(traj["next", "reward"].sum(), params)
    # The same return in plain torch: the gradients must be identical.
    x, total = x0, 0.0
    for _ in range(5):
        x = x @ dynamics.A.T + policy.module(x) @ dynamics.B.T
        total = total - (x**2).sum()
    expected = torch.autograd.grad(total, params)
    for g, e in zip(got, expected):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, e)


def test_gradients_reach_actions_given_to_step():
    env = linear_env(batch=(4,))
    td = env.reset(start((4,)))
    actions = []
    for _ in range(5):
        action = torch.zeros(4, ACT, requires_grad=True)
        actions.append(action)
        td = env.step_mdp(env.step(td.set("action", action)))
    td["observation"].pow(2).sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in actions)


def test_step_does_not_write_into_the_callers_tensordict():
    def model(td: TensorDictBase) -> TensorDictBase:
        td["scratch"] = td["observation"] * 2  # a model writing into its own input
        td["next", "observation"] = td["observation"] + td["action"][..., :1]
        td["next", "reward"] = td["observation"].sum(-1, keepdim=True)
        return td

    env = linear_env(world_model=model)
    td = env.reset(start())
    td["action"] = torch.zeros(ACT)
    stale = TensorDict({"reward": torch.full((1,), 99.0)}, [])
    td["next"] = stale  # a re-stepped TensorDict: its old "next" must not be read
    out = env.step(td)
    assert out is td
    assert set(td.keys()) == {"observation", "action", "next", "done", "terminated", "truncated"}
    assert td["next"] is not stale and "observation" not in stale.keys()
    assert td["next", "reward"].item() == pytest.approx(td["observation"].sum().item())


def test_a_stale_next_is_not_taken_for_the_models_output():
    def model(td: TensorDictBase) -> TensorDictBase:
        td["next", "observation"] = td["observation"]  # forgets the reward
        return td

    env = linear_env(world_model=model)
    td = env.reset(start()).set("action", torch.zeros(ACT))
    td["next"] = TensorDict({"reward": torch.zeros(1)}, [])
    with pytest.raises(EnvSpecError, match=r"lacks \('next', 'reward'\)"):
        env.step(td)


def test_terminated_from_the_model_sets_done_and_stops_the_rollout():
    def model(td: TensorDictBase) -> TensorDictBase:
        x = td["observation"] + 1.0
        td["next", "observation"] = x
        td["next", "reward"] = x[..., :1]
        td["next", "terminated"] = x[..., :1] >= 3.0
        return td

    env = linear_env(world_model=model)
    traj = env.rollout(10, tensordict=start(value=0.0))
    assert traj.batch_size == (3,)  # 1, 2, 3: terminated at the third step
    assert traj["next", "terminated"].squeeze(-1).tolist() == [False, False, True]
    assert torch.equal(traj["next", "done"], traj["next", "terminated"])
    assert not traj["next", "truncated"].any()


def test_from_env_copies_the_real_envs_specs():
    real = PendulumEnv()
    env = ModelBasedEnv.from_env(real, linear_model(), batch_size=[4])
    assert env.batch_size == (4,)
    assert env.action_spec == real.action_spec.expand(4, 1)
    assert env.action_spec.high.eq(2.0).all() and env.action_spec.low.eq(-2.0).all()
    assert env.full_observation_spec == real.full_observation_spec.expand(4)
    assert env.full_reward_spec == real.full_reward_spec.expand(4)
    assert env.full_done_spec == real.full_done_spec.expand(4)
    assert env.state_keys == []  # the model's inputs are its observations
    assert ModelBasedEnv.from_env(CartPoleEnv(), linear_model()).action_spec == Categorical(2)
    assert ModelBasedEnv.from_env(real, linear_model()).batch_size == real.batch_size


def test_from_env_with_a_latent_observation_spec():
    latent = Composite(state=Unbounded(shape=(8,)), belief=Unbounded(shape=(16,)))
    env = ModelBasedEnv.from_env(
        PendulumEnv(), linear_model(), observation_spec=latent, batch_size=[5]
    )
    assert sorted(env.observation_keys) == ["belief", "state"]
    assert env.full_observation_spec["belief"].shape == (5, 16)
    assert env.action_spec.shape == (5, 1)


def test_from_env_rejects_a_batch_size_the_specs_cannot_take():
    with pytest.raises(EnvSpecError, match=r"batch shape \[3\].*batch_size \[4\]"):
        ModelBasedEnv.from_env(PendulumEnv(batch_size=[3]), linear_model(), batch_size=[4])
    # leading dims are fine: [3] -> [2, 3]
    env = ModelBasedEnv.from_env(PendulumEnv(batch_size=[3]), linear_model(), batch_size=[2, 3])
    assert env.action_spec.shape == (2, 3, 1)


@pytest.mark.parametrize("batch", [(), (4,)])
def test_a_perfect_model_of_pendulum_reproduces_its_rollout(batch):
    # The real env's own step follows the world model contract: a model env around it must
    # give exactly the real env's trajectories, and pass check_env_specs.
    simulator = PendulumEnv(batch_size=batch)
    env = ModelBasedEnv.from_env(
        PendulumEnv(), simulator.step, batch_size=batch, reset_fn=lambda b: simulator.reset()
    )
    check_env_specs(env, seed=0)
    real = PendulumEnv(batch_size=batch)
    real.set_seed(3)
    simulator.set_seed(3)
    torch.manual_seed(0)
    expected = real.rollout(20, policy=lambda td: td.set("action", td["observation"][..., :1]))
    torch.manual_seed(0)
    got = env.rollout(20, policy=lambda td: td.set("action", td["observation"][..., :1]))
    assert got.batch_size == (*batch, 20)
    for key in ["observation", "state", "action", ("next", "reward"), ("next", "state")]:
        torch.testing.assert_close(got[key], expected[key])


def test_an_action_outside_the_spec_raises_invalid_action_error():
    env = ModelBasedEnv.from_env(PendulumEnv(), linear_model_pendulum())
    td = env.reset(TensorDict({"observation": torch.zeros(3), "state": torch.zeros(2)}, []))
    with pytest.raises(InvalidActionError, match="action"):
        env.step(td.set("action", torch.tensor([3.0])))
    with pytest.raises(InvalidActionError):
        env.rollout(3, lambda t: t.set("action", torch.tensor([-5.0])), tensordict=td)
    # check=False (or check_actions=False) lets the model see it.
    assert env.step(td.set("action", torch.tensor([3.0])), check=False)["next"] is not None
    unchecked = ModelBasedEnv.from_env(PendulumEnv(), linear_model_pendulum(), check_actions=False)
    out = unchecked.step(td.set("action", torch.tensor([3.0])))
    assert out["next", "state"].tolist() == [3.0, 3.0]


def linear_model_pendulum() -> TensorDictModule:
    def forward(obs, state, action):
        next_state = state + action.to(state.dtype)
        return obs, next_state, -(next_state[..., :1].float() ** 2)

    return TensorDictModule(
        forward,
        in_keys=["observation", "state", "action"],
        out_keys=[("next", "observation"), ("next", "state"), ("next", "reward")],
    )


def test_reset_returns_the_given_start_states_with_their_graph():
    env = linear_env(batch=(4,))
    x0 = torch.randn(4, OBS, requires_grad=True)
    td = TensorDict({"observation": x0, "hidden": torch.ones(4, 5)}, batch_size=[4])
    out = env.reset(td)
    assert out["observation"] is x0
    assert torch.equal(out["hidden"], torch.ones(4, 5))  # other entries are carried
    assert not out["done"].any() and out["done"].shape == (4, 1)
    assert "observation" in td.keys() and "done" not in td.keys()  # input untouched


def test_reset_without_start_states_uses_reset_fn_or_explains():
    with pytest.raises(UnsupportedEnvOperationError, match="'observation'.*reset_fn"):
        linear_env().reset()
    calls = []

    def reset_fn(batch_size: torch.Size) -> TensorDict:
        calls.append(batch_size)
        return start(tuple(batch_size), value=7.0)

    env = linear_env(batch=(4,), reset_fn=reset_fn)
    out = env.reset()
    assert calls == [torch.Size([4])]
    assert torch.equal(out["observation"], torch.full((4, OBS), 7.0))


def test_partial_reset_takes_new_start_states_only_in_masked_rows():
    env = linear_env(batch=(4,), reset_fn=lambda b: start(tuple(b), value=7.0))
    current = torch.arange(4 * OBS, dtype=torch.float32).reshape(4, OBS)
    td = TensorDict(
        {"observation": current, "_reset": torch.tensor([[True], [False], [True], [False]])},
        batch_size=[4],
    )
    out = env.reset(td)
    assert torch.equal(out["observation"][[0, 2]], torch.full((2, OBS), 7.0))
    assert torch.equal(out["observation"][[1, 3]], current[[1, 3]])
    assert "_reset" not in out.keys()
    with pytest.raises(UnsupportedEnvOperationError, match="partial reset.*reset_fn"):
        linear_env(batch=(4,)).reset(td)


def test_reset_fn_returning_the_wrong_thing_raises():
    env = linear_env(batch=(4,), reset_fn=lambda b: start((3,)))
    with pytest.raises(EnvSpecError, match=r"batch size \[3\]"):
        env.reset()
    env = linear_env(reset_fn=lambda b: TensorDict({"x": torch.zeros(3)}, []))
    with pytest.raises(EnvSpecError, match="no 'observation'"):
        env.reset()


def test_transformed_model_env_with_step_counter_and_reward_sum():
    env = TransformedEnv(
        linear_env(batch=(2,), reset_fn=lambda b: start(tuple(b), value=0.5)), StepCounter(3)
    )
    env.append_transform(RewardSum())
    traj = env.rollout(7, make_policy(), break_when_any_done=False)
    assert traj.batch_size == (2, 7)
    truncated = traj["next", "truncated"][0].squeeze(-1).tolist()
    assert truncated == [False, False, True, False, False, True, False]
    # The episode sum restarts after each truncation (a reset through reset_fn).
    reward = traj["next", "reward"][0, :3].cumsum(0)
    torch.testing.assert_close(traj["next", "episode_reward"][0, :3], reward)
    assert torch.equal(traj["observation"][:, 3], torch.full((2, OBS), 0.5))


def test_batched_model_env_steps_all_rows():
    env = linear_env(batch=(4,), reset_fn=lambda b: start(tuple(b)))
    check_env_specs(env)
    traj = env.rollout(5, make_policy())
    assert traj.batch_size == (4, 5)
    assert traj["next", "reward"].shape == (4, 5, 1)
    assert torch.equal(traj["observation"][:, 1:], traj["next", "observation"][:, :-1])


def test_model_output_missing_next_keys_raises_naming_them():
    def model(td: TensorDictBase) -> TensorDictBase:
        td["next", "reward"] = td["observation"][..., :1]
        return td

    env = linear_env(world_model=model)
    td = env.reset(start()).set("action", torch.zeros(ACT))
    with pytest.raises(EnvSpecError, match=r"\('next', 'observation'\).*under 'next'"):
        env.step(td)
    env = linear_env(world_model=lambda td: td)
    with pytest.raises(EnvSpecError, match=r"\('next', 'observation'\), \('next', 'reward'\)"):
        env.step(td)


def test_reward_of_the_wrong_shape_raises_naming_both_shapes():
    def model(td: TensorDictBase) -> TensorDictBase:
        td["next", "observation"] = td["observation"]
        td["next", "reward"] = td["observation"].sum(-1)  # [4], not [4, 1]
        return td

    env = linear_env(batch=(4,), world_model=model)
    td = env.reset(start((4,))).set("action", torch.zeros(4, ACT))
    with pytest.raises(EnvSpecError, match=r"shape \[4\].*shape is \[4, 1\]"):
        env.step(td)


def test_terminated_must_be_a_bool_flag():
    def model(td: TensorDictBase) -> TensorDictBase:
        td["next", "observation"] = td["observation"]
        td["next", "reward"] = td["observation"][..., :1]
        td["next", "terminated"] = td["observation"][..., :1]  # float, not bool
        return td

    env = linear_env(world_model=model)
    td = env.reset(start()).set("action", torch.zeros(ACT))
    with pytest.raises(EnvSpecError, match="torch.float32.*bool"):
        env.step(td)


def test_constructor_rejects_bad_arguments():
    with pytest.raises(TypeError, match="world_model must be callable"):
        linear_env(world_model=3)
    with pytest.raises(TypeError, match="reset_fn must be callable"):
        linear_env(reset_fn="zeros")
    with pytest.raises(EnvSpecError, match="observation_spec must be a Composite"):
        ModelBasedEnv(linear_model(), observation_spec=Unbounded(shape=(3,)), action_spec=None)
    with pytest.raises(EnvSpecError, match=r"does not start with the env's batch_size \[4\]"):
        ModelBasedEnv(
            linear_model(),
            observation_spec=Composite(observation=Unbounded(shape=(3,))),
            action_spec=Bounded(-1.0, 1.0, shape=(ACT,)),
            batch_size=[4],
        )


def test_set_seed_is_accepted_and_changes_nothing():
    env = linear_env(batch=(2,), reset_fn=lambda b: start(tuple(b), value=1.0))
    assert env.set_seed(5) == 7  # one seed per row, as for every env
    assert torch.equal(env.reset(seed=0)["observation"], torch.ones(2, OBS))
