"""A game with AtariGame's interface that does no work, so that a benchmark run with
``game_factory=ZeroGame`` measures only the coordination around the games.

It lives in its own module (not in the benchmark script) because ``game_factory`` is
pickled by reference into spawned worker processes, inside Ray actors: its module must be
importable there, and a script's ``__main__`` is not.
"""

from __future__ import annotations

import numpy as np

EPISODE_STEPS = 500


class ZeroGame:
    """Writes a step counter into one pixel and truncates every ``EPISODE_STEPS`` steps,
    so the episode-end path (final_obs, episode infos) is exercised too."""

    num_actions = 4
    lives = 1

    def __init__(self, game: str, seed: int | None, options: object,
                 stack_out: np.ndarray) -> None:
        self.stack = stack_out
        self.episode_return = 0.0
        self.episode_length = 0

    def reseed(self, seed: int | None) -> None:
        self.reset()

    def reset(self) -> None:
        self.episode_length = 0
        self.stack[-1, 0, 0] = 0

    def step(self, action: int) -> tuple[float, bool, bool]:
        self.episode_length += 1
        self.stack[-1, 0, 0] = self.episode_length & 0xFF
        return 0.0, False, self.episode_length >= EPISODE_STEPS

    def write_final_stack(self, out: np.ndarray) -> None:
        out[-1, 0, 0] = self.episode_length & 0xFF
