"""ALE games through gymnasium, with the standard Atari preprocessing as rlblocks transforms."""

from __future__ import annotations

import difflib
from typing import Any

from rlblocks.core import UnknownComponentError
from rlblocks.envs import (
    CatFrames,
    Compose,
    EndOfLifeTransform,
    FireResetEnv,
    FrameSkipTransform,
    GymWrapper,
    NoopResetEnv,
    Resize,
    SignTransform,
    TransformedEnv,
    UnsqueezeTransform,
)

__all__ = ["OBSERVATION", "atari_env_id", "list_games", "make_atari_env"]

OBSERVATION = "observation"
"""The key of the stacked frames (``[frame_stack, screen_size, screen_size]`` uint8)."""

_NAMESPACE = "ALE/"


def _gymnasium() -> Any:
    """gymnasium with the ALE's ids registered (gymnasium >= 1.0 needs it done explicitly)."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    return gym


def list_games() -> list[str]:
    """The ids of the ALE games, e.g. ``"ALE/Pong-v5"`` (104 games in ale-py 0.12)."""
    gym = _gymnasium()
    return sorted(k for k in gym.registry if k.startswith(_NAMESPACE) and "-ram" not in k)


def atari_env_id(game: str) -> str:
    """The gymnasium id of ``game``: ``"Pong"``, ``"Pong-v5"`` and ``"ALE/Pong-v5"`` all give
    ``"ALE/Pong-v5"``.

    Raises:
        UnknownComponentError: No such game; the message names the closest ids.
    """
    if not isinstance(game, str) or not game:
        raise UnknownComponentError(
            f"an Atari game is a name like 'Pong' or 'ALE/Pong-v5', got {game!r}"
        )
    env_id = game if game.startswith(_NAMESPACE) else _NAMESPACE + game
    if "-v" not in env_id:
        env_id += "-v5"
    games = list_games()
    if env_id not in _gymnasium().registry:
        close = difflib.get_close_matches(env_id, games, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownComponentError(
            f"no Atari game {game!r} (looked for {env_id!r}); {hint}"
            f"list_games() gives all {len(games)}"
        )
    return env_id


def make_atari_env(
    game: str = "Pong",
    *,
    frame_skip: int = 4,
    noop_max: int = 30,
    screen_size: int = 84,
    frame_stack: int = 4,
    fire_reset: bool | None = None,
    end_of_life: bool = True,
    sign_reward: bool = True,
    repeat_action_probability: float = 0.25,
    full_action_space: bool = False,
    device: Any = None,
    **gym_kwargs: Any,
) -> TransformedEnv:
    """An ALE game with the standard preprocessing (Mnih et al., 2015; Machado et al., 2018).

    The game runs frame by frame (``frameskip=1``) on the ALE's grayscale screen, as
    gymnasium's ``AtariPreprocessing`` reads it, and rlblocks transforms do the rest:

    1. ``NoopResetEnv(noop_max, noop_action=0)``: 1 to ``noop_max`` NOOP frames after a reset;
    2. ``FrameSkipTransform(frame_skip, max_pool=...)``: each action repeated ``frame_skip``
       frames, rewards summed, the screen max-pooled over the last two;
    3. ``FireResetEnv()`` for games whose second action is FIRE (``fire_reset=None``);
    4. ``EndOfLifeTransform()``: ``("next", "end-of-life")`` when a life is lost;
    5. ``SignTransform()``: rewards clipped to their sign;
    6. ``Resize`` to ``screen_size`` x ``screen_size`` (bilinear, antialiased, on uint8);
    7. ``CatFrames(frame_stack)``: the last ``frame_stack`` screens, ``[N, H, W]`` uint8.

    Episodes end at game over (``terminated``) or at gymnasium's frame limit
    (``truncated``), not at a lost life: give a loss ``"end-of-life"`` as its done and
    terminated keys to value each life on its own.

    Args:
        game: ``"Pong"``, ``"Pong-v5"`` or ``"ALE/Pong-v5"``.
        frame_skip: Frames per step (1: no skipping).
        noop_max: Most NOOP frames after a reset (0: none).
        screen_size: Side of the square frames.
        frame_stack: Frames stacked per observation (1: no stacking).
        fire_reset: Press FIRE after resets; ``None``: when the game's action 1 is FIRE.
        end_of_life: Add the end-of-life flag (and ``"lives"``).
        sign_reward: Clip rewards to -1, 0, 1.
        repeat_action_probability: Sticky actions (v5's default 0.25; 0 for the classic
            deterministic setting).
        full_action_space: All 18 actions instead of the game's minimal set.
        device: Device of the returned tensors.
        **gym_kwargs: More ``gymnasium.make`` arguments (``max_num_frames_per_episode``, ...).

    Raises:
        UnknownComponentError: No such game.
        TransformError: A size or count is not a positive int.

    Example:
        >>> env = make_atari_env("Pong")
        >>> env.observation_spec["observation"].shape
        torch.Size([4, 84, 84])
    """
    gym = _gymnasium()
    env_id = atari_env_id(game)
    for name in ("frameskip", "obs_type"):
        if name in gym_kwargs:
            raise TypeError(
                f"make_atari_env sets {name!r} itself (frames are skipped by frame_skip= and "
                f"read as grayscale); use GymEnv({env_id!r}, {name}=...) for a raw game"
            )
    raw = gym.make(
        env_id,
        frameskip=1,
        obs_type="grayscale",
        repeat_action_probability=repeat_action_probability,
        full_action_space=full_action_space,
        **gym_kwargs,
    )
    meanings = raw.unwrapped.get_action_meanings()
    base = GymWrapper(raw, device=device, info_keys=["lives"] if end_of_life else None)
    pixels = {"in_keys": [OBSERVATION]}
    transforms: list[Any] = []
    if noop_max:
        transforms.append(NoopResetEnv(noop_max, noop_action=0))
    transforms.append(FrameSkipTransform(frame_skip, max_pool=OBSERVATION))
    if fire_reset or (fire_reset is None and len(meanings) > 2 and meanings[1] == "FIRE"):
        transforms.append(FireResetEnv((1, 2)))
    if end_of_life:
        transforms.append(EndOfLifeTransform())
    if sign_reward:
        transforms.append(SignTransform())
    transforms += [
        UnsqueezeTransform(-3, **pixels),
        Resize(screen_size, screen_size, **pixels),
        CatFrames(frame_stack, dim=-3, **pixels),
    ]
    return TransformedEnv(base, Compose(*transforms))
