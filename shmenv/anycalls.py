"""The generic env's calls in flight: gymnasium's async life cycle and the workers' replies.

:class:`CallState` is gymnasium's ``AsyncState`` machine (one pending ``*_async`` call at a
time, with gymnasium's error types and messages); :class:`Replies` sends one command to
every worker and reads every reply, turning an error report into an error that names the
env, its worker and the env's own traceback.
"""

from __future__ import annotations

import enum
import pickle
import struct
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from gymnasium import logger
from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

from shmenv.errors import env_error
from shmenv.planning import check_timeout
from shmenv.pool import WorkerPool
from shmenv.protocol import ERROR_MAGIC, ErrorReport
from shmenv.wire import HEADER


class AsyncState(enum.Enum):
    """Where gymnasium's async pair stands; the values are gymnasium's ``AsyncState``'s,
    used in its error messages."""

    DEFAULT = "default"
    WAITING_RESET = "reset"
    WAITING_STEP = "step"
    WAITING_CALL = "call"


class CallState:
    """The one pending ``*_async`` call; :meth:`begin` and :meth:`end` are the only moves."""

    def __init__(self) -> None:
        self.state = AsyncState.DEFAULT

    @property
    def pending(self) -> bool:
        return self.state is not AsyncState.DEFAULT

    def check_idle(self, what: str) -> None:
        """Raise ``AlreadyPendingCallError`` if a call waits for its ``*_wait``."""
        if self.state is not AsyncState.DEFAULT:
            raise AlreadyPendingCallError(
                f"Calling `{what}` while waiting for a pending call to `{self.state.value}` "
                "to complete.", self.state.value)

    def begin(self, state: AsyncState) -> None:
        """A ``*_async`` sent its commands (the caller checked :meth:`check_idle`)."""
        self.state = state

    def end(self, state: AsyncState) -> None:
        """A ``*_wait`` is about to read its replies: ``NoAsyncCallError`` if its
        ``*_async`` is not the pending call. Cleared before reading, so an interrupted
        wait loses the call (the pool resynchronizes the pipes before the next one)."""
        if self.state is not state:
            verb = state.value
            raise NoAsyncCallError(f"Calling `{verb}_wait` without any prior call to "
                                   f"`{verb}_async`.", verb)
        self.state = AsyncState.DEFAULT


def command_frame(opcode: int, payload: bytes = b"") -> memoryview:
    """A whole pipe frame (multiprocessing's length header, the opcode, the payload)."""
    return memoryview(HEADER.pack(4 + len(payload)) + struct.pack("<i", opcode) + payload)


class Replies:
    """Commands out to every worker and their replies back, for the generic env."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._count = len(pool.specs)
        self._empty = memoryview(bytearray(0))  # what an empty reply fills
        self.payloads: list[bytes] = [b""] * self._count

    def send(self, frames: Sequence[memoryview]) -> None:
        """One frame to each worker (after resynchronizing an interrupted call's pipes)."""
        self._pool.resynchronize()
        self._pool.send_to_all(frames)

    def read(self, timeout: float | None, when: str) -> list[bytes]:
        """Every worker's reply payload (``b""`` when empty), in worker order, within
        ``timeout`` seconds in all (None: the env's own timeout)."""
        pool = self._pool
        limit = pool.timeout if timeout is None else check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        payloads = self.payloads
        for index in range(self._count):
            if deadline is not None:
                pool.wait_for_reply(index, max(deadline - time.monotonic(), 1e-3), when)
            try:
                payload = pool.read_reply_from(index, self._empty)
            except (EOFError, OSError):
                pool.worker_died(index, when)
            if payload is None:
                payload = b""
            elif payload.startswith(ERROR_MAGIC):
                self._raise(index, payload)
            payloads[index] = payload
        pool.unread_replies = False
        return payloads

    def read_objects(self, timeout: float | None, when: str) -> list[Any]:
        """Every worker's pickled reply, unpickled and concatenated (call, get_attr)."""
        results: list[Any] = []
        for payload in self.read(timeout, when):
            results.extend(pickle.loads(payload))
        return results

    def _raise(self, index: int, payload: bytes) -> NoReturn:
        """Stop every worker and raise what an env raised (or the worker's own error)."""
        report = ErrorReport.decode(payload)
        if report is None or report.env is None:
            self._pool.raise_error_reply(index, payload)
        # gymnasium's AsyncVectorEnv logs these three lines; scripts that read them still can.
        logger.error(f"Received the following error from Worker-{report.env} - "
                     "Shutting it down")
        logger.error(report.traceback)
        logger.error("Raising the last exception back to the main process.")
        message = (f"env {report.env} raised {report.type_name}: {report.message}\n"
                   f"(in {self._pool.describe(report.worker)}; all workers were stopped and "
                   "this env is closed: create a new one)\n\n"
                   f"Env traceback:\n{report.traceback}")
        self._pool.fail(env_error(message, report.type_name, report.traceback))
