"""The zero-cost game behind the coordination benchmarks obeys AtariGame's interface, and
its gymnasium twin produces the same trajectory."""

from __future__ import annotations

import functools
import inspect

import numpy as np
from gymnasium.utils.env_checker import check_env

from shmenv.atari import AtariGame
from shmenv.fakegames import NUM_ACTIONS, NullEnv, NullGame
from shmenv.vector import ShmVectorEnv

METHODS = ("__init__", "step", "reset", "reseed", "write_final_stack")
ATTRIBUTES = ("lives", "episode_return", "episode_length", "num_actions", "stack")


def test_same_methods_and_signatures_as_atari_game():
    for name in METHODS:
        atari = list(inspect.signature(getattr(AtariGame, name)).parameters)
        null = list(inspect.signature(getattr(NullGame, name)).parameters)
        assert null[:len(atari)] == atari, name  # NullGame may add keyword knobs after them


def test_behaves_like_a_game():
    stack = np.full((4, 84, 84), 7, dtype=np.uint8)
    game = NullGame("Breakout", 3, None, stack, episode_steps=5)
    assert game.stack is stack and (stack == 3).all()  # reset frame identifies the seed
    for name in ATTRIBUTES:
        assert hasattr(game, name), name
    assert isinstance(game.lives, int) and game.num_actions == NUM_ACTIONS
    assert game.step(2) == (2.0, False, False)
    assert game.episode_length == 1 and stack[-1, 0, 0] == 2 and stack[-1, 0, 1] == 1
    for _ in range(3):
        assert game.step(1) == (1.0, False, False)
    assert game.step(3) == (3.0, True, False)
    assert game.episode_length == 5 and game.episode_return == 8.0
    final = np.zeros_like(stack)
    game.write_final_stack(final)
    assert final[-1, 0, 0] == 255 and (final[:-1] == stack[:-1]).all()
    game.reset()
    assert game.episode_length == 0 and (stack == 3).all()


def test_gymnasium_twin_matches_the_vector_env(no_leaked_segments):
    check_env(NullEnv(), skip_render_check=True)
    actions = np.random.default_rng(0).integers(0, NUM_ACTIONS, size=(12, 3))
    twins = [NullEnv(episode_steps=5) for _ in range(3)]
    env = ShmVectorEnv("Breakout", 3, seed=0, num_workers=2,
                       game_factory=functools.partial(NullGame, episode_steps=5),
                       autoreset_mode="NextStep")
    try:
        obs, _ = env.reset()
        expected = [twin.reset(seed=i)[0] for i, twin in enumerate(twins)]
        np.testing.assert_array_equal(obs, np.stack(expected))
        for row in actions:
            obs, rewards, terminations, _, _ = env.step(row)
            for i, (twin, action) in enumerate(zip(twins, row)):
                if twin._game.episode_length == 5:  # NEXT_STEP: this step resets
                    twin_obs, twin_reward, twin_done = twin.reset(seed=i)[0], 0.0, False
                else:
                    twin_obs, twin_reward, twin_done, _, _ = twin.step(action)
                assert rewards[i] == twin_reward and terminations[i] == twin_done
                if not twin_done:  # a done step's obs is the final stack in both
                    np.testing.assert_array_equal(obs[i], twin_obs)
    finally:
        env.close()
