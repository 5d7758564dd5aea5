"""The zero-cost game behind the coordination benchmark obeys AtariGame's interface."""

from __future__ import annotations

import inspect

import numpy as np
from gymnasium.utils.env_checker import check_env

from shmenv.atari import AtariGame
from shmenv.benchmarks.zero_cost import EPISODE_STEPS, ZeroCostEnv, ZeroCostGame
from shmenv.vector import ShmVectorEnv

METHODS = ("__init__", "step", "reset", "reseed", "write_final_stack")
ATTRIBUTES = ("lives", "episode_return", "episode_length", "num_actions", "stack")


def test_same_methods_and_signatures_as_atari_game():
    for name in METHODS:
        assert list(inspect.signature(getattr(ZeroCostGame, name)).parameters) == list(
            inspect.signature(getattr(AtariGame, name)).parameters), name


def test_behaves_like_a_game():
    stack = np.full((4, 84, 84), 7, dtype=np.uint8)
    game = ZeroCostGame("Breakout", 3, None, stack)
    assert game.stack is stack
    for name in ATTRIBUTES:
        assert hasattr(game, name), name
    assert isinstance(game.lives, int) and isinstance(game.num_actions, int)
    reward, terminated, truncated = game.step(0)
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert game.episode_length == 1 and stack[-1, 0, 0] == 1
    for _ in range(EPISODE_STEPS - 2):
        assert game.step(1) == (0.0, False, False)
    assert game.step(1) == (0.0, False, True)
    assert game.episode_length == EPISODE_STEPS
    final = np.zeros_like(stack)
    game.write_final_stack(final)
    assert final[-1, 0, 0] == EPISODE_STEPS & 0xFF
    game.reset()
    assert game.episode_length == 0 and stack[-1, 0, 0] == 0


def test_runs_through_shm_vector_env(no_leaked_segments):
    env = ShmVectorEnv("Breakout", 3, seed=0, num_workers=2, game_factory=ZeroCostGame)
    try:
        obs, _ = env.reset()
        assert env.single_action_space.n == 4
        for t in range(1, EPISODE_STEPS):
            obs, rewards, terminations, truncations, infos = env.step(np.array([0, 1, 2]))
            if t < 4:
                assert (obs[:, -1, 0, 0] == t).all()
        assert not truncations.any() and not terminations.any()
        obs, rewards, terminations, truncations, infos = env.step(np.array([0, 1, 2]))
        assert truncations.all() and not terminations.any()
        assert (infos["episode"]["l"] == EPISODE_STEPS).all()
        assert (obs[:, -1, 0, 0] == 0).all()  # SAME_STEP autoreset happened in the worker
    finally:
        env.close()


def test_gymnasium_env_passes_the_env_checker():
    env = ZeroCostEnv()
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    *_, truncated, _ = env.step(0)
    assert not truncated
