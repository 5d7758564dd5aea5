"""The worker pool: the main process's side of the worker processes, from start to stop."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from shmenv.block import RECEIVED
from shmenv.diagnosis import Diagnosis, FailureNotes, describe_envs
from shmenv.failures import POOL_TIMEOUT, PoolFailures
from shmenv.forking import ForkSafe
from shmenv.planning import check_timeout
from shmenv.processes import (
    FAILURE_GRACE_S,
    SHUTDOWN_TIMEOUT_S,
    PoolSpec,
    launch_workers,
    release,
    resynchronize,
    stop_workers,
)
from shmenv.wire import RAW_PIPES, read_frame_into, write_frame
from shmenv.worker import run_worker

# Importable from here as before: the drop-in Workers' group and other owners use them.
__all__ = ["FAILURE_GRACE_S", "RESYNC_TIMEOUT_S", "SHUTDOWN_TIMEOUT_S", "STARTUP_TIMEOUT_S",
           "FailureNotes", "WorkerPool", "describe_envs", "release", "resynchronize",
           "stop_workers"]

STARTUP_TIMEOUT_S = 120.0
RESYNC_TIMEOUT_S = 60.0  # without a timeout: a worker may be mid-reseed (~0.2 s per env)

_VECTOR_ENV_NOTES = FailureNotes()  # what a vector env's errors say became of it


class WorkerPool(PoolFailures, ForkSafe):
    """Worker processes and the main's ends of their pipes, as one object.

    It starts the workers (any start method), waits until each is ready, moves framed
    commands and replies, resynchronizes the pipes after an interrupted call, and stops
    everything. A worker that is late, dies or reports an error fails the whole pool, as
    its base :class:`shmenv.failures.PoolFailures` says (``timeout``, ``on_failure``), in
    words of :class:`shmenv.diagnosis.Diagnosis`.

    ``raw_pipes`` (default: where the platform has ``os.readv``) chooses the fast path that
    reads and writes multiprocessing's framing on the raw descriptors (see
    :mod:`shmenv.wire`); False uses ``Connection.send_bytes``/``recv_bytes_into``, which
    gives the same results.

    ``progress`` (the block's per-worker relayed-step counters) lets a relayed step that
    hangs name the worker deep in the tree that holds it up, instead of the root the main
    waits on.

    Fork safety (:class:`shmenv.forking.ForkSafe`): the pool remembers the process that
    created it. In a forked child its finalizers are detached and :meth:`check_process`
    raises :class:`ForkedEnvError`, so the child never sends the parent's workers anything.
    """

    def __init__(self, specs: Sequence[PoolSpec], *,
                 describe: Callable[[int, int | None, int, int], str] = describe_envs,
                 notes: FailureNotes = _VECTOR_ENV_NOTES, raw_pipes: bool = RAW_PIPES,
                 on_failure: Callable[[str], None] | None = None,
                 timeout: float | None = None, progress: np.ndarray | None = None,
                 target: Callable[..., None] = run_worker, daemon: bool = True) -> None:
        self.specs: tuple[PoolSpec, ...] = tuple(specs)
        # The worker process's entry point, called as target(conn, spec, fds_to_close,
        # relay_child_conns): the Atari worker, or the generic one (shmenv.anyworker).
        self._target = target
        self._daemon = daemon
        self.progress = progress
        self.relayed_steps = 0  # relayed steps sent to worker 0 (see relay_laggards)
        self.raw_pipes = raw_pipes and RAW_PIPES
        self.conns: list[Connection] = []
        self.processes: list[BaseProcess] = []
        self.fds: list[int] = []
        PoolFailures.__init__(self, Diagnosis(self.specs, self.processes, describe, notes),
                              timeout, on_failure)
        ForkSafe.__init__(self, self.processes)
        # Set before a command goes out and cleared once every reply was read: if an
        # exception (Ctrl-C) lands anywhere in between, the next call sees it set.
        self.unread_replies = False
        self._header = bytearray(4)

    # ----------------------------------------------------------------- start-up
    def start(self, context: str | None = None) -> int:
        """Start every worker and wait until all are ready; returns the game's number of
        actions. On failure raises (the caller stops the pool)."""
        self.launch(context)
        return self.wait_until_ready()

    def launch(self, context: str | None = None, name: str = "shmenv-worker-{index}") -> None:
        """Start every worker process without waiting for it (see :meth:`wait_until_ready`).
        ``context``: the start method ("fork", "spawn", "forkserver"; None: the default)."""
        launch_workers(context, self.specs, name, self.conns, self.processes,
                       target=self._target, daemon=self._daemon)
        self.fds[:] = [conn.fileno() for conn in self.conns]

    def wait_until_ready(self) -> int:
        """Wait for every worker's "ready"; returns the game's number of actions. Raises
        (without stopping anything) if one failed, died or did not start in time."""
        num_actions = 0
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for index, conn in enumerate(self.conns):
            if not conn.poll(max(deadline - time.monotonic(), 0)):
                raise self.diagnosis.not_started(index, STARTUP_TIMEOUT_S)
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                raise self.diagnosis.died_starting(index) from None
            if kind == "error":
                raise self.diagnosis.failed_to_start(index, payload)
            num_actions = payload
        return num_actions

    # ----------------------------------------------------------------- messages
    def send_frame(self, index: int, frame: memoryview, when: str = "") -> None:
        """Send worker ``index`` a prepared frame (its 4-byte header, then the payload)."""
        if not self.try_send_frame(index, frame):
            self.worker_died(index, when)

    def send_object(self, index: int, message: Any) -> None:
        """Send worker ``index`` one pickled message (the new seeds of a reseed)."""
        try:
            self.conns[index].send(message)
        except OSError:
            self.worker_died(index)

    def read_reply_into(self, index: int, view: memoryview, when: str = "") -> None:
        """Read worker ``index``'s reply into ``view``, which it must fill exactly; an error
        report instead raises it. Blocking reads sleep in the kernel; a dead worker is
        seen at once as EOF, because only that worker holds the other end of its pipe.
        The caller waits first (:meth:`wait_for_reply`) if a timeout applies."""
        try:
            if self.raw_pipes:  # one readv into the record array (see shmenv.wire)
                error_reply = read_frame_into(self.fds[index], self._header, view)
            else:
                nbytes = self.conns[index].recv_bytes_into(view)
                error_reply = None if nbytes == len(view) else bytes(view[:nbytes])
        except multiprocessing.BufferTooShort as exc:
            error_reply = exc.args[0]
        except (EOFError, OSError):
            self.worker_died(index, when)
        if error_reply is not None:
            self.raise_error_reply(index, error_reply)

    def send_to_all(self, frames: Sequence[memoryview]) -> None:
        """Send every worker its frame: one write per worker."""
        self.unread_replies = True
        for index, frame in enumerate(frames):
            self.send_frame(index, frame)

    def read_from_all(self, views: Sequence[memoryview], timeout: Any = POOL_TIMEOUT,
                      when: str = "") -> None:
        """Read every worker's reply into its view, in worker order, within ``timeout``
        seconds in all (default: the pool's; None: no limit)."""
        limit = self.timeout if timeout is POOL_TIMEOUT else check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        for index, view in enumerate(views):
            if deadline is not None and not self._readable(index, deadline):
                self.timed_out([w for w in range(index, len(views))
                                if not self._readable(w, None)], limit, when)
            self.read_reply_into(index, view)
        self.unread_replies = False

    def send_relayed(self, frame: memoryview) -> None:
        """Send a relayed step to worker 0 (see :class:`shmenv.worker.Relay`)."""
        self.unread_replies = True
        self.relayed_steps += 1  # before the write: a Ctrl-C between them is resynced
        try:
            write_frame(self.fds[0], frame)
        except OSError:
            self.worker_died(0)

    def read_relayed(self, replies: memoryview, timeout: Any = POOL_TIMEOUT) -> None:
        """Read the whole tree's reply to a relayed step into ``replies`` (one ``readv``)."""
        limit = self.timeout if timeout is POOL_TIMEOUT else check_timeout(timeout)
        if limit is not None and not self._readable(0, time.monotonic() + limit):
            self.timed_out(self.relay_laggards(), limit, "in a step")
        try:
            error_reply = read_frame_into(self.fds[0], self._header, replies)
        except (EOFError, OSError):
            self.worker_died(0)
        if error_reply is not None:
            self.raise_error_reply(0, error_reply)
        self.unread_replies = False

    def round_trip(self, frame: memoryview, replies: memoryview) -> None:
        """A relayed step: write ``frame`` to worker 0 and read the whole tree's reply into
        ``replies``: one write and one ``readv`` (see :class:`shmenv.worker.Relay`)."""
        self.send_relayed(frame)
        self.read_relayed(replies)

    def relay_laggards(self) -> list[int]:
        """The workers that hold up the relayed step in flight, wherever in the tree (see
        :meth:`shmenv.diagnosis.Diagnosis.relay_laggards`); worker 0 if unknown."""
        return self.diagnosis.relay_laggards(self.progress, self.relayed_steps)

    # ----------------------------------------------------------------- one worker alone
    # For an owner that handles each worker's failure on its own instead of failing the
    # whole pool (the drop-in Workers' pool, shmenv.pooled): nothing here stops a worker
    # or raises a shmenv error.
    def try_send_frame(self, index: int, frame: memoryview) -> bool:
        """Send worker ``index`` a prepared frame; False if its pipe is broken (it died)."""
        try:
            if self.raw_pipes:
                write_frame(self.fds[index], frame)
            else:
                self.conns[index].send_bytes(frame[4:])
        except OSError:
            return False
        return True

    def read_reply_from(self, index: int, view: memoryview) -> bytes | None:
        """Read worker ``index``'s reply into ``view`` as :meth:`read_reply_into` does, but
        return an error report's bytes instead of raising it; EOFError or OSError means the
        worker is gone."""
        try:
            if self.raw_pipes:
                return read_frame_into(self.fds[index], self._header, view)
            nbytes = self.conns[index].recv_bytes_into(view)
        except multiprocessing.BufferTooShort as exc:
            return bytes(exc.args[0])
        return None if nbytes == len(view) else bytes(view[:nbytes])

    def stop_worker(self, index: int, grace_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop worker ``index`` alone (SIGKILL after ``grace_s``) and close its pipe."""
        stop_workers([self.conns[index]], [self.processes[index]], grace_s)
        self.conns[index].close()

    # ----------------------------------------------------------------- resync, stop
    def resynchronize(self) -> None:
        """Make the pipes clean before a new command, if a call was interrupted.

        After an interrupted call (Ctrl-C), each worker still finishes the command it got,
        and its reply (or the rest of one) may sit unread in the pipe, or a command may
        never have been sent. Resynchronizing discards what is unread, so the next call
        reads its own replies.
        """
        if not self.unread_replies:
            return
        limit = self.timeout if self.timeout is not None else RESYNC_TIMEOUT_S
        for index, conn in enumerate(self.conns):
            try:
                resynchronize(conn, limit)
            except TimeoutError:  # an OSError too: caught first
                # Worker 0 may be the root of a relayed step that a worker deep in the
                # tree holds up; that one is named (and a reset's hang is worker 0's own).
                hung = self.relay_laggards() if index == 0 else [index]
                self.timed_out(hung, limit, "after an interrupted call")
            except (EOFError, OSError):
                self.worker_died(index, self.diagnosis.notes.resync_died_when)
        if self.progress is not None:  # the root answered: every relayed step it got is done
            self.relayed_steps = int(self.progress[0, RECEIVED])
        self.unread_replies = False

    def stop(self, grace_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop every worker and close the pipes (idempotent)."""
        release(self.conns, self.processes, grace_s)
