"""Case (a) of the layout suite: how a worker's stack gets to the trainer.

Pickled over a Pipe (float64 as the labml design does, or uint8), or written into shared
memory with only shmenv's command and reply record over the Pipe.
"""

from __future__ import annotations

import multiprocessing
import pickle
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from shmenv.benchmarks.layout_blocks import new_segment
from shmenv.benchmarks.layout_records import RECORD
from shmenv.benchmarks.layout_stack import STACK_BYTES, STACK_SHAPE

COMMAND_BYTES = 2 * np.dtype(np.int32).itemsize  # shmenv's step command for one env
TRANSPORTS = ("float64-pickle", "uint8-pickle", "shared-memory")


def stamped_stack(base: np.ndarray, step: int) -> np.ndarray:
    """The stack a producer shows at ``step``: ``base`` with the step stamped in."""
    stack = base.copy()
    stack[-1, 0, :8] = np.frombuffer(np.int64(step).tobytes(), dtype=np.uint8)
    return stack


def _producer(conn: Any, mode: str, base: np.ndarray, shm_name: str | None) -> None:
    shm = shared_memory.SharedMemory(name=shm_name) if shm_name else None
    stack = (np.ndarray(STACK_SHAPE, np.uint8, shm.buf) if shm else
             np.zeros(STACK_SHAPE, np.float64 if mode == "float64-pickle" else np.uint8))
    reply = bytes(RECORD.size)
    step = 0
    try:
        while conn.recv_bytes() != b"q":
            stack[...] = base
            stack[-1, 0, :8] = np.frombuffer(np.int64(step).tobytes(), dtype=np.uint8)
            if shm is not None:  # the stack is already where the trainer reads it
                conn.send_bytes(reply)
            else:
                conn.send(stack)
            step += 1
    except EOFError:
        pass
    finally:
        del stack
        if shm is not None:
            shm.close()


class Transport:
    """A producer process and this end of its Pipe; :meth:`fetch` moves one stack."""

    def __init__(self, mode: str, base: np.ndarray | None = None) -> None:
        if mode not in TRANSPORTS:
            raise ValueError(f"mode must be one of {TRANSPORTS}, got {mode!r}")
        self.mode = mode
        self._command = np.array([1, 0], np.int32).tobytes()  # [opcode, action]
        self.base = base if base is not None else np.random.default_rng(0).integers(
            0, 256, STACK_SHAPE, dtype=np.uint8)
        self._shm = None
        if mode == "shared-memory":
            self._shm = new_segment(STACK_BYTES)
            self.slot = np.ndarray(STACK_SHAPE, np.uint8, self._shm.buf)
        ctx = multiprocessing.get_context()
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_producer, daemon=True, args=(
            child, mode, self.base, self._shm.name if self._shm else None))
        self._process.start()
        child.close()

    @property
    def bytes_per_step(self) -> int:
        """Bytes through the kernel per env-step (request + reply; shared memory: shmenv's
        command and reply record, the stack's own bytes are written once, by the producer,
        and never copied)."""
        if self.mode == "shared-memory":
            return COMMAND_BYTES + RECORD.size
        dtype = np.float64 if self.mode == "float64-pickle" else np.uint8
        return 1 + len(pickle.dumps(np.zeros(STACK_SHAPE, dtype), pickle.HIGHEST_PROTOCOL))

    def fetch(self, out: np.ndarray) -> np.ndarray:
        """One env-step: ask for the next stack and make it available as uint8 in ``out``
        (pickled modes copy into ``out``, as a trainer builds its batch; shared memory
        returns the slot itself)."""
        if self._shm is not None:
            self._conn.send_bytes(self._command)
            self._conn.recv_bytes()
            return self.slot
        self._conn.send_bytes(b"s")
        out[...] = self._conn.recv()
        return out

    def close(self) -> None:
        self._conn.send_bytes(b"q")
        self._process.join(timeout=5)
        self._conn.close()
        if self._shm is not None:
            del self.slot
            self._shm.close()
            self._shm.unlink()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
