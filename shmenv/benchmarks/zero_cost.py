"""A game that costs nothing, so a benchmark measures only the coordination around it.

:class:`ZeroCostGame` has :class:`shmenv.atari.AtariGame`'s interface and goes into
``ShmVectorEnv(..., game_factory=ZeroCostGame)``; :class:`ZeroCostEnv` is the same thing as
a gymnasium ``Env`` for gymnasium's vector envs. Both produce a (4, 84, 84) uint8
observation, end an episode every ``EPISODE_STEPS`` steps (so the done path is exercised
too) and stamp the step count into the newest frame's first pixel, which lets a test see
that observations really arrive.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from shmenv.games import GameOptions

EPISODE_STEPS = 1000
NUM_ACTIONS = 4


class ZeroCostGame:
    """AtariGame's interface (step/reset/reseed/write_final_stack/lives/...) with no
    emulation and no preprocessing."""

    def __init__(self, game: str, seed: int | None, options: GameOptions | None = None,
                 stack_out: np.ndarray | None = None) -> None:
        self.options = options or GameOptions()
        if stack_out is None:
            stack_out = np.zeros(self.options.obs_shape, dtype=np.uint8)
        self.stack = stack_out
        self.game = game
        self.lives = 1
        self.num_actions = NUM_ACTIONS
        self.episode_return = 0.0
        self.episode_length = 0
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self.episode_return = 0.0
        self.episode_length = 0
        self.stack[-1, 0, 0] = 0

    def step(self, action: int) -> tuple[float, bool, bool]:
        self.episode_length += 1
        if self.episode_length >= EPISODE_STEPS:
            return 0.0, False, True
        self.stack[-1, 0, 0] = self.episode_length & 0xFF
        return 0.0, False, False

    def write_final_stack(self, out: np.ndarray) -> None:
        out[-1, 0, 0] = self.episode_length & 0xFF


class ZeroCostEnv(gym.Env):
    """The same zero-cost game as a gymnasium Env (for gymnasium's vector envs)."""

    def __init__(self, obs_shape: tuple[int, int, int] = (4, 84, 84)) -> None:
        self.observation_space = gym.spaces.Box(0, 255, obs_shape, np.uint8)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self._obs = np.zeros(obs_shape, dtype=np.uint8)
        self._length = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._length = 0
        self._obs[-1, 0, 0] = 0
        return self._obs.copy(), {}

    def step(self, action: int):
        self._length += 1
        self._obs[-1, 0, 0] = self._length & 0xFF
        # A fresh array, as gymnasium requires (callers may keep it); the copy is the
        # worker's cost, not the main process's.
        return self._obs.copy(), 0.0, False, self._length >= EPISODE_STEPS, {}
