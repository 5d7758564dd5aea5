"""Stand-in games for the reliability tests, plugged in through ``game_factory``.

They run the real shmenv machinery (block, pipes, worker loop, autoreset) without an
emulator, so failure scenarios are quick and exactly controllable. Module-level and
configured with ``functools.partial`` so that spawn/forkserver workers can unpickle them.
"""

from __future__ import annotations

import os
import time

import numpy as np

NUM_ACTIONS = 4


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
