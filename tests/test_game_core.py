"""The game core: names, options, the standard max-pool order, the drop-in Worker's protocol."""

from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np
import pytest

import shmenv
from shmenv.atari import AtariGame, ale_seed_for
from shmenv.games import GameOptions, UnknownGameError, known_games, resolve_game
from tests.conftest import action_stream


@pytest.mark.parametrize(
    "name, rom",
    [
        ("Breakout", "breakout"),
        ("breakout", "breakout"),
        ("ALE/Breakout-v5", "breakout"),
        ("BreakoutNoFrameskip-v4", "breakout"),
        ("BreakoutDeterministic-v4", "breakout"),
        ("SpaceInvaders", "space_invaders"),
        ("ALE/MontezumaRevenge-v5", "montezuma_revenge"),
        ("space_invaders", "space_invaders"),
        ("PongNoFrameskip-v4", "pong"),
    ],
)
def test_resolve_game_spellings(name, rom):
    assert resolve_game(name) == rom


def test_unknown_game_lists_closest_names():
    with pytest.raises(UnknownGameError) as info:
        resolve_game("SpaceInvader")
    assert "space_invaders" in str(info.value)
    with pytest.raises(UnknownGameError, match="known_games"):
        resolve_game("Tetris3D")
    assert "breakout" in known_games() and len(known_games()) > 50


def test_game_options_validation():
    assert GameOptions().as_dict()["frame_skip"] == 4
    with pytest.raises(TypeError, match="frameskip"):
        GameOptions.from_kwargs({"frameskip": 4})
    for bad in ({"frame_skip": 0}, {"size": -1}, {"stack": 1.5}, {"maxpool": "avg"},
                {"repeat_action_probability": 2.0}):
        with pytest.raises(ValueError):
            GameOptions.from_kwargs(bad)
    # Sticky actions consume ALE's RNG, which a restored state would rewind.
    assert GameOptions(repeat_action_probability=0.25).fast_reset is False


def test_maxpool_seed_is_a_deprecated_alias_of_labml():
    with pytest.warns(DeprecationWarning, match='"labml"'):
        options = GameOptions(maxpool="seed")
    assert options.maxpool == "labml" == GameOptions().maxpool
    old, new = AtariGame("Breakout", 2, options), AtariGame("Breakout", 2)
    for action in action_stream(2, 30, 1, 4)[:, 0]:
        assert old.step(int(action)) == new.step(int(action))
    np.testing.assert_array_equal(old.stack, new.stack)


def test_seed_matches_gymnasium_seeding():
    """ALE is seeded as gymnasium's AtariEnv.reset(seed=...) would seed it."""
    env = gym.make("ALE/Breakout-v5")
    _, info = env.reset(seed=123)
    assert np.int32(info["seeds"][1]) == ale_seed_for(123)
    env.close()


def test_stack_is_written_in_place_into_the_given_view():
    block = np.zeros((3, 4, 84, 84), dtype=np.uint8)
    game = AtariGame("Breakout", 1, stack_out=block[1])
    assert game.stack.base is block or np.shares_memory(game.stack, block)
    game.step(1)
    game.step(2)
    assert block[1].any() and not block[0].any() and not block[2].any()


def test_fast_reset_matches_full_reset():
    fast = AtariGame("Breakout", 3, GameOptions(fast_reset=True))
    full = AtariGame("Breakout", 3, GameOptions(fast_reset=False))
    resets = 0
    for action in action_stream(3, 400, 1, 4)[:, 0]:
        a, b = fast.step(int(action)), full.step(int(action))
        assert a == b
        if a[1] or a[2]:
            fast.reset()
            full.reset()
            resets += 1
        np.testing.assert_array_equal(fast.stack, full.stack)
    assert resets >= 5


def test_standard_maxpool_equals_max_then_resize():
    """maxpool="standard": max of the two raw gray frames, then one INTER_AREA resize."""
    game = AtariGame("Breakout", 9, GameOptions(maxpool="standard"))
    reference = gym.make("BreakoutNoFrameskip-v4")
    reference.reset(seed=9)
    ale = reference.unwrapped.ale
    compared = 0
    for action in action_stream(9, 200, 1, 4)[:, 0]:
        raw = []
        done = False
        lives = ale.lives()
        for _ in range(4):
            screen, _, terminated, truncated, _ = reference.step(int(action))
            raw.append(cv2.cvtColor(screen, cv2.COLOR_RGB2GRAY))
            if ale.lives() < lives or terminated or truncated:
                done = True
                break
        _, terminated, truncated = game.step(int(action))
        assert done == (terminated or truncated)
        if done:
            reference.reset()
            game.reset()
            continue
        expected = cv2.resize(np.maximum(raw[2], raw[3]), (84, 84), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(game.stack[-1], expected)
        compared += 1
    assert compared > 150


def test_standard_and_labml_maxpool_give_different_pixels():
    labml_order = AtariGame("Breakout", 2)
    standard = AtariGame("Breakout", 2, GameOptions(maxpool="standard"))
    differs = False
    for action in action_stream(2, 60, 1, 4)[:, 0]:
        labml_order.step(int(action))
        standard.step(int(action))
        differs |= not np.array_equal(labml_order.stack[-1], standard.stack[-1])
    assert differs


def test_episodic_life_off_ends_episodes_at_game_over_only():
    game = AtariGame("Breakout", 4, GameOptions(episodic_life=False))
    lives_seen = {game.lives}
    for action in action_stream(4, 3000, 1, 4)[:, 0]:
        _, terminated, truncated = game.step(int(action))
        lives_seen.add(game.lives)
        if terminated or truncated:
            assert terminated and game.ale.game_over()
            break
    else:
        pytest.fail("no game over in 3000 steps")
    assert {1, 2, 3, 4, 5} <= lives_seen


def test_episode_cap_truncates():
    game = AtariGame("Pong", 5, GameOptions(max_episode_frames=400))
    steps = 0
    terminated = truncated = False
    while not (terminated or truncated) and steps < 200:
        _, terminated, truncated = game.step(0)
        steps += 1
    assert truncated and not terminated
    assert steps == 100  # 400 frames / frame_skip 4


def test_worker_unknown_command_and_fresh_arrays(no_leaked_segments):
    worker = shmenv.Worker(47)
    try:
        with pytest.raises(NotImplementedError, match="'jump'"):
            worker.child.send(("jump", None))
        with pytest.raises(ValueError, match="out of range"):
            worker.child.send(("step", 4))
        worker.child.send(("reset", None))
        first = worker.child.recv()
        worker.child.send(("step", 1))
        second, reward, done, info = worker.child.recv()
        assert not np.shares_memory(first, second)
        kept = second.copy()
        second[:] = 0  # the caller owns it: writing must not touch the worker's slot
        worker.child.send(("step", 1))
        third, *_ = worker.child.recv()
        np.testing.assert_array_equal(third[:3], kept[1:])
    finally:
        worker.child.send(("close", None))
    worker.process.join(timeout=5)
    assert worker.process.exitcode == 0
    with pytest.raises(shmenv.ClosedError):
        worker.child.send(("reset", None))


def test_sticky_actions_drive_the_emulator_as_gymnasium_does():
    """No reference exists for sticky actions: "exact" there means ALE runs as gymnasium's
    NoFrameskip-v4 env with the same option and seed, resets included (real ones: the sticky
    draws come from ALE's random generator)."""
    game = AtariGame("Seaquest", 3, GameOptions(repeat_action_probability=0.25,
                                                episodic_life=False))
    assert game.reset_kind == "reset_game"
    env = gym.make("SeaquestNoFrameskip-v4", repeat_action_probability=0.25)
    env.reset(seed=3)
    ale = env.unwrapped.ale
    resets = 0
    for step, action in enumerate(action_stream(3, 1200, 1, game.num_actions)[:, 0]):
        reward, terminated, truncated = game.step(int(action))
        expected = 0.0
        for _ in range(4):
            _, r, env_terminated, env_truncated, _ = env.step(int(action))
            expected += r
            if env_terminated or env_truncated:
                break
        assert reward == expected, f"step {step}"
        np.testing.assert_array_equal(game.ale.getRAM(), ale.getRAM(), err_msg=f"step {step}")
        if terminated or truncated:
            game.reset()
            env.reset()
            resets += 1
    assert resets >= 1
    env.close()
