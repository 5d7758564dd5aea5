"""Reseeding a fresh game with its own seed skips the second ROM load (start-up cost) and
changes nothing a user can see."""

from __future__ import annotations

import numpy as np

from shmenv.atari import AtariGame


class _CountingALE:
    """Forwards to a real ALEInterface, counting ROM loads."""

    def __init__(self, ale) -> None:
        self._ale = ale
        self.loads = 0

    def loadROM(self, path):  # noqa: N802 (ALE's name)
        self.loads += 1
        return self._ale.loadROM(path)

    def __getattr__(self, name):
        return getattr(self._ale, name)


def _play(game: AtariGame, actions) -> list[tuple]:
    trace = []
    for action in actions:
        reward, terminated, truncated = game.step(int(action))
        if terminated or truncated:
            game.reset()
        trace.append((reward, terminated, truncated, game.stack.copy()))
    return trace


def _same(trace_a, trace_b) -> bool:
    return all(a[:3] == b[:3] and np.array_equal(a[3], b[3]) for a, b in zip(trace_a, trace_b))


def test_same_seed_before_any_step_does_not_reload_and_plays_identically():
    actions = np.random.default_rng(0).integers(0, 4, 300)
    game = AtariGame("Breakout", 5)
    counting = game.ale = _CountingALE(game.ale)
    game.reseed(5)
    assert counting.loads == 0
    fresh = AtariGame("Breakout", 5)
    np.testing.assert_array_equal(game.stack, fresh.stack)
    assert _same(_play(game, actions), _play(fresh, actions))


def test_reseed_after_steps_or_with_another_seed_reloads():
    actions = np.random.default_rng(1).integers(0, 4, 200)
    game = AtariGame("Breakout", 5)
    counting = game.ale = _CountingALE(game.ale)
    _play(game, actions[:50])
    game.reseed(5)  # stepped since seeding: must go back to the seeded start
    assert counting.loads == 1
    assert _same(_play(game, actions), _play(AtariGame("Breakout", 5), actions))
    game.reseed(6)
    game.reseed(6)  # fresh and same seed: no second load
    assert counting.loads == 2
    game.reseed(None)  # None asks for fresh entropy: always reload
    assert counting.loads == 3
