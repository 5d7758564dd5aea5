"""A zero-cost game with :class:`shmenv.atari.AtariGame`'s interface, for measuring
coordination: with no emulation and no preprocessing, every microsecond left is the
vector env's own (main process, pipes, worker loop).

Pass it as ``game_factory``::

    shmenv.make("Breakout", 64, game_factory=NullGame)
    shmenv.make("Breakout", 64, game_factory=functools.partial(NullGame, episode_steps=40))

Its observations still mean something, so tests can compare trajectories: each step writes
the action and the step count into two bytes of the newest frame (O(1), no stack shift),
the reward is the action, and an episode ends (terminated) after ``episode_steps`` steps.
"""

from __future__ import annotations

import numpy as np


class NullGame:
    """No emulator: step, reset and reseed cost a few attribute writes."""

    def __init__(self, game: str, seed: int | None, options, stack_out: np.ndarray,
                 episode_steps: int = 1000, num_actions: int = 4) -> None:
        self.stack = stack_out
        self.num_actions = num_actions
        self.episode_steps = episode_steps
        self.lives = 1
        self.episode_return = 0.0
        self.episode_length = 0
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        self.seed = 0 if seed is None else int(seed)
        self.reset()

    def reset(self) -> None:
        """Fill the stack with a frame that identifies the env's seed."""
        self.stack[:] = self.seed % 256
        self.episode_return = 0.0
        self.episode_length = 0

    def step(self, action: int) -> tuple[float, bool, bool]:
        self.episode_length += 1
        self.episode_return += action
        if self.episode_length >= self.episode_steps:
            return float(action), True, False  # stack untouched when done, as AtariGame
        newest = self.stack[-1, 0]
        newest[0] = action
        newest[1] = self.episode_length % 256
        return float(action), False, False

    def write_final_stack(self, out: np.ndarray) -> None:
        out[:] = self.stack
        out[-1, 0, 0] = 255
