"""Case (b) of the layout suite: one env's frame stack and ways of pushing a frame onto it.

The stack's shape and size are shmenv's own (``GameOptions``, ``BlockLayout``); the other
layout cases measure with them too.
"""

from __future__ import annotations

import numpy as np

from shmenv.block import BlockLayout
from shmenv.games import GameOptions

STACK_SHAPE: tuple[int, int, int] = GameOptions().obs_shape
STACK_BYTES = BlockLayout(1, STACK_SHAPE).slot_bytes
FRAME_BYTES = STACK_BYTES // STACK_SHAPE[0]


def push_roll(stack: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """The labml design's way: a new array rolled by one, newest frame last."""
    stack = np.roll(stack, shift=-1, axis=0)
    stack[-1] = frame
    return stack


def push_shift(stack: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """shmenv's way: shift in place (memmove of 3 frames), write the newest."""
    stack[:-1] = stack[1:]
    stack[-1] = frame
    return stack


class RingStack:
    """Frames in a ring plus the index of the oldest: a push writes one frame, but a
    consumer that wants the frames in order must reorder them (:meth:`read_ordered`)."""

    def __init__(self, first_frame: np.ndarray, depth: int = 4) -> None:
        self.frames = np.repeat(first_frame[None], depth, axis=0)
        self.oldest = 0

    def push(self, frame: np.ndarray) -> None:
        self.frames[self.oldest] = frame
        self.oldest = (self.oldest + 1) % len(self.frames)

    def read_ordered(self, out: np.ndarray) -> np.ndarray:
        depth = len(self.frames) - self.oldest
        out[:depth] = self.frames[self.oldest:]
        out[depth:] = self.frames[:self.oldest]
        return out
