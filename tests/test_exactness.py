"""Exact on every game: shmenv's paths replay the reference step for step, and the check that
says so can fail.

The CI subset is four fixed games (two that need real resets, Qbert, Breakout) plus eight
more that rotate weekly through every NoFrameskip-v4 game (``SHMENV_EXACT_GAMES=A,B,...``
picks others); ``bench/exact_sweep.py`` runs all of them for 3,000 steps (docs/exactness.md).
"""

from __future__ import annotations

import datetime
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import shmenv
from shmenv.atari import AtariGame
from shmenv.baseline import Game
from shmenv.exactness import (
    actions_for,
    compare_paths,
    first_difference,
    game_trace,
    reference_trace,
    registered_games,
)
from shmenv.games import REAL_RESET_ROMS, GameOptions

FIXED = ("Seaquest", "Berzerk", "Qbert", "Breakout")
ROTATING = 8
CI_STEPS = 800
SEED = 47


def _ci_games() -> list[str]:
    chosen = os.environ.get("SHMENV_EXACT_GAMES")
    if chosen:
        return [g.strip() for g in chosen.split(",") if g.strip()]
    others = [g for g in registered_games() if g not in FIXED]
    week = datetime.date.today().isocalendar()[1]
    start = week * ROTATING % len(others)
    return list(FIXED) + [others[(start + i) % len(others)] for i in range(ROTATING)]


CI_PATHS = ("dropin", "vector-same", "vector-next")


def _compare(game: str) -> dict:
    return compare_paths(game, (SEED,), CI_STEPS, CI_PATHS)


@pytest.fixture(scope="module")
def ci_results() -> dict[str, dict]:
    """Every CI game compared, two games at a time (one per core)."""
    games = _ci_games()
    with ProcessPoolExecutor(max_workers=2) as pool:
        return dict(zip(games, pool.map(_compare, games)))


@pytest.mark.parametrize("game", _ci_games())
def test_every_path_replays_the_reference(game, ci_results):
    result = ci_results[game]
    assert result["paths"] == {"dropin": None, "vector-same": None, "vector-next": None}, (
        f"{game} ({result['reset_kind']}) differs from the reference: {result['paths']}")


class _ForcedRestore(AtariGame):
    """A game that takes the restore shortcut on every ROM, exact or not."""

    def _restore_is_exact(self) -> bool:
        return True


@pytest.mark.parametrize("game", ["Seaquest", "Berzerk"])
def test_a_restore_where_it_is_not_exact_is_caught(game):
    actions = actions_for(SEED, CI_STEPS, AtariGame(game, SEED).num_actions)
    reference = reference_trace(game, SEED, actions)
    forced = game_trace(game, SEED, actions, make_game=_ForcedRestore)
    assert first_difference(reference, forced) is not None
    honest = game_trace(game, SEED, actions)
    assert first_difference(reference, honest) is None


def test_reset_kind_is_visible_and_fast_reset_only_allows_the_exact_shortcut():
    assert AtariGame("Breakout", 1).reset_kind == "restore"
    assert AtariGame("Seaquest", 1).reset_kind == "reset_game"
    assert "seaquest" in REAL_RESET_ROMS and "breakout" not in REAL_RESET_ROMS
    assert AtariGame("Breakout", 1, GameOptions(fast_reset=False)).reset_kind == "reset_game"
    sticky = GameOptions(repeat_action_probability=0.25, fast_reset=True)
    assert AtariGame("Breakout", 1, sticky).reset_kind == "reset_game"


class _PushesAfterDone(Game):
    """Wrong: pushes the pooled frame onto the reset stack after a done."""

    def step(self, action):
        stack, reward, done, info = super().step(action)
        if done:
            self.obs_4 = stack = self.obs_4.copy()
            stack[:-1] = stack[1:]
            stack[-1] = self.obs_2_max.max(axis=0)
        return stack, reward, done, info


class _ReseedsEveryReset(Game):
    """Wrong: seeds every reset (reloading the ROM) instead of only the first."""

    def reset(self):
        self._seeded = False
        return super().reset()


class _SkipsFirstReset(Game):
    """Wrong: resets twice at the start, as constructing a game and then resetting it would."""

    def reset(self):
        if not self._seeded:
            super().reset()
        return super().reset()


@pytest.mark.parametrize("wrong, game", [(_PushesAfterDone, "Breakout"),
                                         (_ReseedsEveryReset, "Seaquest"),
                                         (_SkipsFirstReset, "Seaquest")])
def test_the_check_catches_a_wrong_reference(wrong, game):
    actions = actions_for(SEED, 600, AtariGame(game, SEED).num_actions)
    shmenv_trace = game_trace(game, SEED, actions)
    assert first_difference(reference_trace(game, SEED, actions), shmenv_trace) is None
    assert first_difference(reference_trace(game, SEED, actions, wrong), shmenv_trace) \
        is not None


def _play_both(env, reference: Game, actions) -> int:
    """Step a 1-env vector env and the reference alike; returns the episode ends seen."""
    ends = 0
    for step, action in enumerate(actions):
        obs, rewards, terms, truncs, _ = env.step(np.array([action]))
        stack, reward, done, _ = reference.step(int(action))
        assert (float(rewards[0]), bool(terms[0] or truncs[0])) == (reward, done), f"step {step}"
        np.testing.assert_array_equal(obs[0], stack, err_msg=f"step {step}")
        ends += done
    return ends


def test_vector_resets_in_a_row_and_reseeds_after_steps_follow_the_reference(
        no_leaked_segments):
    """Seaquest starts its episodes from ALE's random generator: a reset more or less than
    the reference would show within a few episodes."""
    actions = actions_for(SEED, 800, 18)
    with shmenv.make("Seaquest", 1, seed=SEED) as env:
        env.reset()
        obs, _ = env.reset()  # the reference: Game(seed).reset() twice
        reference = Game(SEED, "Seaquest")
        reference.reset()
        np.testing.assert_array_equal(obs[0], reference.reset())
        assert _play_both(env, reference, actions) >= 3
        obs, _ = env.reset(seed=SEED)  # after steps: a fresh seeded start
        reference = Game(SEED, "Seaquest")
        np.testing.assert_array_equal(obs[0], reference.reset())
        assert _play_both(env, reference, actions) >= 3
