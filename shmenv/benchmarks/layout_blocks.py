"""Cases (d), (e) and (f) of the layout suite: how the batch reaches the trainer from memory.

A view of the block or a copy (d), uint8 kept or converted to float32 (e), one block for
all workers or one per worker (f).

Blocks are laid out by shmenv's own :class:`shmenv.block.BlockLayout` and named as shmenv
names its blocks (:func:`new_segment`), so leak checks see them.
"""

from __future__ import annotations

import os
import secrets
from multiprocessing import shared_memory

import numpy as np

from shmenv.benchmarks.layout_stack import STACK_SHAPE
from shmenv.block import NAME_PREFIX, BlockLayout


def new_segment(size: int) -> shared_memory.SharedMemory:
    """A segment named as shmenv names its blocks, so leak checks see it."""
    name = f"{NAME_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    return shared_memory.SharedMemory(name=name, create=True, size=size)


def batch_view(block: np.ndarray) -> np.ndarray:
    """Zero-copy: the trainer reads the block itself (valid until the next step)."""
    return block


def batch_copy(block: np.ndarray) -> np.ndarray:
    """Copy-out: a fresh array each step, safe to keep."""
    return block.copy()


def as_float32(batch: np.ndarray) -> np.ndarray:
    """What a consumer pays to get float32 (same values, 4x the bytes)."""
    return batch.astype(np.float32)


class PerWorkerBlocks:
    """One shared-memory segment per worker, each laid out as shmenv lays out its block; a
    (num_envs, 4, 84, 84) batch for the trainer must then be assembled by concatenation (a
    copy) every step."""

    def __init__(self, num_envs: int, num_workers: int) -> None:
        bounds = np.linspace(0, num_envs, num_workers + 1).astype(int)
        self.segments = [new_segment(BlockLayout(int(b - a), STACK_SHAPE).nbytes)
                         for a, b in zip(bounds[:-1], bounds[1:])]
        self.views = [np.ndarray((int(b - a), *STACK_SHAPE), np.uint8, s.buf)
                      for s, a, b in zip(self.segments, bounds[:-1], bounds[1:])]

    def batch(self) -> np.ndarray:
        return np.concatenate(self.views)

    def close(self) -> None:
        self.views = []
        for s in self.segments:
            s.close()
            s.unlink()


class OneBlock:
    """shmenv's layout: every env's slot in one segment laid out by
    :class:`shmenv.block.BlockLayout`; the batch is a view of it."""

    def __init__(self, num_envs: int, num_workers: int) -> None:
        layout = BlockLayout(num_envs, STACK_SHAPE)
        self.segment = new_segment(layout.nbytes)
        self.obs = np.ndarray((num_envs, *STACK_SHAPE), np.uint8, self.segment.buf,
                              offset=layout.obs_offset)
        bounds = np.linspace(0, num_envs, num_workers + 1).astype(int)
        self.views = [self.obs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def batch(self) -> np.ndarray:
        return self.obs

    def close(self) -> None:
        self.views = []
        del self.obs  # drop the view before closing the segment under it
        self.segment.close()
        self.segment.unlink()
