"""The zero-cost game: :class:`shmenv.atari.AtariGame`'s interface with no emulation and no
preprocessing, so every microsecond left is the vector env's own (main process, pipes,
worker loop). The coordination benchmarks and the async-batch tests run on it.

Pass it as ``game_factory``::

    shmenv.make("Breakout", 64, game_factory=NullGame)
    shmenv.make("Breakout", 64, game_factory=functools.partial(NullGame, episode_steps=40))

Its observations still mean something, so tests can compare trajectories: each step writes
the action and the step count into two bytes of the newest frame (O(1), no stack shift),
the reward is the action, and an episode ends (terminated) after ``episode_steps`` steps.
:class:`NullEnv` is the same game as a gymnasium ``Env``, for gymnasium's vector envs.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

EPISODE_STEPS = 1000
NUM_ACTIONS = 4


class NullGame:
    """No emulator: step, reset and reseed cost a few attribute writes."""

    def __init__(self, game: str, seed: int | None, options, stack_out: np.ndarray,
                 episode_steps: int = EPISODE_STEPS, num_actions: int = NUM_ACTIONS) -> None:
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


class NullEnv(gym.Env):
    """:class:`NullGame` as a gymnasium ``Env``: the same observations, rewards and episode
    ends, for a like-for-like coordination benchmark against gymnasium's vector envs."""

    def __init__(self, obs_shape: tuple[int, int, int] = (4, 84, 84),
                 episode_steps: int = EPISODE_STEPS) -> None:
        self.observation_space = gym.spaces.Box(0, 255, obs_shape, np.uint8)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self._stack = np.zeros(obs_shape, dtype=np.uint8)
        self._game = NullGame("null", 0, None, self._stack, episode_steps=episode_steps)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._game.reseed(seed)
        return self._stack.copy(), {}

    def step(self, action: int):
        reward, terminated, truncated = self._game.step(int(action))
        # A fresh array, as gymnasium requires (callers may keep it); the copy is the
        # worker's cost, not the main process's.
        return self._stack.copy(), reward, terminated, truncated, {}
