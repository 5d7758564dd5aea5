"""Resets are counted as the reference counts them, and reseeding a fresh game with its own
seed skips the second ROM load (start-up cost) without changing anything a user can see.

ALE's random generator moves on with every ``reset_game()``; on ROMs that read the RAM it
fills (Seaquest) one reset more or less changes how every later episode starts."""

from __future__ import annotations

import numpy as np

from shmenv.atari import AtariGame


class _CountingALE:
    """Forwards to a real ALEInterface, counting ROM loads and real resets."""

    def __init__(self, ale) -> None:
        self._ale = ale
        self.loads = 0
        self.resets = 0

    def loadROM(self, path):  # noqa: N802 (ALE's name)
        self.loads += 1
        return self._ale.loadROM(path)

    def reset_game(self):
        self.resets += 1
        return self._ale.reset_game()

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


def test_construct_then_reset_is_one_seeded_reset_and_later_resets_are_real():
    """The reference: Game(seed) then reset() seeds and resets once; every reset() after that
    (two in a row, or after a done) is one reset_game()."""
    game = AtariGame("Seaquest", 5)  # the seeded reset: load + reset_game
    assert game.reset_kind == "reset_game"
    counting = game.ale = _CountingALE(game.ale)
    start = game.stack.copy()
    game.reset()  # the seeded start itself: no emulator call
    assert (counting.loads, counting.resets) == (0, 0)
    np.testing.assert_array_equal(game.stack, start)
    game.reset()  # a second reset in a row is a real one
    assert (counting.loads, counting.resets) == (0, 1)
    game.step(0)
    game.reset()
    assert (counting.loads, counting.resets) == (0, 2)


def test_reseed_then_reset_is_one_seeded_reset():
    """The vector path's reset(seed=s) runs reseed(s) then reset(): one load, one reset."""
    game = AtariGame("Seaquest", 5)
    counting = game.ale = _CountingALE(game.ale)
    game.reset()
    game.step(1)
    game.reseed(7)
    game.reset()
    assert (counting.loads, counting.resets) == (1, 1)
    game.reseed(7)  # same seed, emulator still at the seeded start: nothing to redo
    game.reset()
    assert (counting.loads, counting.resets) == (1, 1)
    game.reset()  # but the reset after that is real
    assert (counting.loads, counting.resets) == (1, 2)
    game.reseed(7)  # the seeded start is gone: reload, so the generator restarts too
    assert (counting.loads, counting.resets) == (2, 3)


def test_seaquest_resets_in_a_row_follow_the_reference():
    """make(seed) + reset() + reset(), then play: the reference's Game(seed).reset() twice."""
    from shmenv.baseline import Game

    actions = np.random.default_rng(2).integers(0, 18, 700)
    reference = Game(5, "Seaquest")
    reference.reset()
    reference.reset()
    game = AtariGame("Seaquest", 5)
    game.reset()
    game.reset()
    np.testing.assert_array_equal(game.stack, reference.obs_4)
    resets = 0
    for step, action in enumerate(actions):
        stack, reward, done, _ = reference.step(int(action))
        got, terminated, truncated = game.step(int(action))
        if terminated or truncated:
            game.reset()
            resets += 1
        assert (got, terminated or truncated) == (reward, done), f"step {step}"
        np.testing.assert_array_equal(game.stack, stack, err_msg=f"step {step}")
    assert resets >= 3


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
