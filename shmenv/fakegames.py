"""Games that cost nothing or fail on purpose: stand-ins for the emulator.

They implement :class:`shmenv.game.Game` and plug in through ``game_factory``, so they run
the real shmenv machinery (block, pipes, worker loop, autoreset) without an emulator.
Module-level, configured with ``functools.partial``, so spawn/forkserver workers can
unpickle them.

* :class:`NullGame`: the zero-cost game. Every microsecond left is the vector env's own
  (main process, pipes, worker loop); the coordination benchmarks and the async-batch tests
  run on it. Its observations still mean something, so tests can compare trajectories: each
  step writes the action and the step count into two bytes of the newest frame (O(1), no
  stack shift), the reward is the action, and an episode ends (terminated) after
  ``episode_steps`` steps. :class:`NullEnv` is the same game as a gymnasium ``Env``, for
  gymnasium's vector envs::

      shmenv.make("Breakout", 64, game_factory=NullGame)
      shmenv.make("Breakout", 64, game_factory=functools.partial(NullGame, episode_steps=40))

* :class:`CounterGame`: a deterministic game with failure knobs (slow steps, a failing
  start, an exception or an exit mid-run), for the reliability tests.
"""

from __future__ import annotations

import os
import time
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

    game_over = False  # episodes end, the game is never "over"

    @property
    def elapsed_step(self) -> int:
        return self.episode_length

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


class CounterGame:
    """Deterministic game: every step writes the env's step count (mod 256) into the whole
    stack and returns ``reward = count * NUM_ACTIONS + action``, so a reply that belongs to
    another step or another action is recognisable. An episode lasts ``episode_steps``.

    Failure knobs: ``step_delay_s``/``reset_delay_s`` (a slow emulator, to land a signal
    mid-call),
    ``start_delay_s`` (slow start-up), ``fail_on_start`` (a ROM that fails to load) and
    ``fail_at_step`` (an emulator error in the middle of a run), ``exit_at_step`` (the
    process exits with code 3, as when native code calls ``exit()``).
    """

    def __init__(self, game: str, seed: int | None, options: object, stack_out: np.ndarray,
                 *, episode_steps: int = 50, step_delay_s: float = 0.0,
                 reset_delay_s: float = 0.0, start_delay_s: float = 0.0,
                 fail_on_start: bool = False, fail_at_step: int | None = None,
                 exit_at_step: int | None = None) -> None:
        if start_delay_s:
            time.sleep(start_delay_s)
        if fail_on_start:
            raise FileNotFoundError(f"cannot load ROM for {game!r}: file is corrupt")
        self.stack = stack_out
        self.num_actions = NUM_ACTIONS
        self.lives = 3
        self.count = 0
        self.episode_steps = episode_steps
        self.step_delay_s = step_delay_s
        self.reset_delay_s = reset_delay_s
        self.fail_at_step = fail_at_step
        self.exit_at_step = exit_at_step
        self.episode_return = 0.0
        self.episode_length = 0
        self.reseed(seed)

    game_over = False

    @property
    def elapsed_step(self) -> int:
        return self.episode_length

    def reseed(self, seed: int | None) -> None:
        self.seed = seed

    def reset(self) -> None:
        if self.reset_delay_s:
            time.sleep(self.reset_delay_s)
        self.episode_return = 0.0
        self.episode_length = 0
        self.stack[...] = self.count % 256

    def step(self, action: int) -> tuple[float, bool, bool]:
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        self.count += 1
        if self.exit_at_step is not None and self.count >= self.exit_at_step:
            os._exit(3)  # like a native library calling exit(): no exception, no traceback
        if self.fail_at_step is not None and self.count >= self.fail_at_step:
            raise RuntimeError(f"emulator error at step {self.count}")
        reward = float(self.count * NUM_ACTIONS + action)
        self.episode_return += reward
        self.episode_length += 1
        self.stack[...] = self.count % 256
        return reward, self.episode_length >= self.episode_steps, False

    def write_final_stack(self, out: np.ndarray) -> None:
        out[...] = self.stack
