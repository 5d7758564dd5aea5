"""The worker pool: the main process's side of the worker processes, from start to stop."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import secrets
import signal
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

import numpy as np

from shmenv.errors import WorkerDiedError, WorkerError, describe_exit
from shmenv.protocol import OP_CLOSE, ErrorReport, sync_command, sync_marker
from shmenv.wire import RAW_PIPES, read_frame_into, write_frame
from shmenv.worker import WorkerSpec, run_worker


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while starting workers.

    A child inherits the signal mask (across fork and exec), so a Ctrl-C that arrives while
    a spawned worker is still importing stays pending instead of printing a
    KeyboardInterrupt traceback from the worker; the worker discards it when it sets
    SIGINT to ignored. The main process gets its KeyboardInterrupt when the block ends.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def resynchronize(conn: Connection, timeout: float) -> None:
    """Bring a worker's reply stream back to a message boundary, discarding what is unread.

    Needed after an exception (Ctrl-C) interrupted the main process between sending a
    command and reading the whole reply: a reply, or half of one, may still be in the pipe.
    Sends a sync request and reads raw bytes until the worker's answer to its nonce, the
    last thing it sends before waiting for the next command. Raises ``EOFError`` if the
    worker is gone and ``TimeoutError`` if it does not answer within ``timeout`` seconds.
    """
    command = sync_command(secrets.randbits(31))
    marker = sync_marker(command)
    conn.send_bytes(command.tobytes())
    deadline = time.monotonic() + timeout
    unread = b""
    while not unread.endswith(marker):
        if not conn.poll(max(deadline - time.monotonic(), 0)):
            raise TimeoutError(f"no answer to a sync request within {timeout:.0f} s")
        chunk = os.read(conn.fileno(), 1 << 16)
        if not chunk:
            raise EOFError("the worker closed its pipe")
        unread = (unread + chunk)[-(len(marker) + (1 << 16)):]


def stop_workers(conns: Sequence[Connection], processes: Sequence[Any], grace_s: float) -> None:
    """Ask every worker to exit, give them ``grace_s`` in all, then SIGKILL the rest."""
    close_message = np.array([OP_CLOSE], dtype=np.int32).tobytes()
    for conn in conns:
        try:
            conn.send_bytes(close_message)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(timeout=max(deadline - time.monotonic(), 0.05))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(timeout=1.0)


STARTUP_TIMEOUT_S = 120.0
RESYNC_TIMEOUT_S = 60.0  # a worker may be in the middle of a reseed (~0.2 s per env)
SHUTDOWN_TIMEOUT_S = 2.0
FAILURE_GRACE_S = 0.5  # after a worker failed, the others get this long before SIGKILL


def describe_envs(index: int, pid: int | None, start: int, stop: int) -> str:
    """How errors name a vector env's worker: ``shmenv worker 1 (pid 42, envs 2-3)``."""
    envs = f"env {start}" if stop - start == 1 else f"envs {start}-{stop - 1}"
    return f"shmenv worker {index} (pid {pid}, {envs})"


@dataclass(frozen=True)
class FailureNotes:
    """What the owner appends to the pool's error messages: what became of it."""

    died: str = ". All workers were stopped and this env is closed; create a new one."
    died_while_starting: str = ""
    resync_timeout: str = "; all workers were stopped and this env is closed."
    resync_died_when: str = ""  # said after "exited with code 1" when a resync found EOF


class WorkerPool:
    """Worker processes and the main's ends of their pipes, as one object.

    It starts the workers (any start method), waits until each is ready, moves framed
    commands and replies, resynchronizes the pipes after an interrupted call, names a dead
    or failed worker in the error it raises, and stops everything. Errors stop every worker
    first, then tell the owner (``on_failure``, held weakly) before raising.

    ``raw_pipes`` (default: where the platform has ``os.readv``) chooses the fast path that
    reads and writes multiprocessing's framing on the raw descriptors (see
    :mod:`shmenv.wire`); False uses ``Connection.send_bytes``/``recv_bytes_into``, which
    gives the same results.
    """

    def __init__(self, specs: Sequence[WorkerSpec], *,
                 describe: Callable[[int, int | None, int, int], str] = describe_envs,
                 notes: FailureNotes = FailureNotes(), raw_pipes: bool = RAW_PIPES,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.specs = tuple(specs)
        self.raw_pipes = raw_pipes and RAW_PIPES
        self.conns: list[Connection] = []
        self.processes: list[BaseProcess] = []
        self.fds: list[int] = []
        # Set before a command goes out and cleared once every reply was read: if an
        # exception (Ctrl-C) lands anywhere in between, the next call sees it set.
        self.unread_replies = False
        self._describe = describe
        self._notes = notes
        self._on_failure: weakref.WeakMethod | None = None
        if on_failure is not None:
            self.set_on_failure(on_failure)
        self._header = bytearray(4)

    def set_on_failure(self, on_failure: Callable[[str], None]) -> None:
        """Call the bound method ``on_failure(reason)`` (held weakly, so the pool never
        keeps its owner alive) after a failure stopped the workers, before raising."""
        self._on_failure = weakref.WeakMethod(on_failure)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- start-up
    def start(self, context: str | None = None) -> int:
        """Start every worker and wait until all are ready; returns the game's number of
        actions. On failure raises (the caller stops the pool)."""
        self.launch(context)
        return self.wait_until_ready()

    def launch(self, context: str | None = None, name: str = "shmenv-worker-{index}") -> None:
        """Start every worker process without waiting for it (see :meth:`wait_until_ready`).
        ``context``: the start method ("fork", "spawn", "forkserver"; None: the default)."""
        ctx = multiprocessing.get_context(context)
        # All pipes first: a worker gets the main's ends of its relay children's pipes.
        pipes = [ctx.Pipe() for _ in self.specs]
        self.conns.extend(parent_end for parent_end, _child_end in pipes)
        try:
            self._start_processes(ctx, pipes, name)
        finally:
            for _parent_end, child_end in pipes:
                child_end.close()
        self.fds[:] = [conn.fileno() for conn in self.conns]

    def _start_processes(self, ctx: Any, pipes: list[tuple[Connection, Connection]],
                         name: str) -> None:
        forked = ctx.get_start_method() == "fork"
        for spec, (_parent_end, child_end) in zip(self.specs, pipes):
            child_conns = tuple(self.conns[child] for child, _start, _stop in
                                spec.relay_children)
            # A forked child inherits every descriptor open here; it keeps only its own end
            # and its relay children's, so that each pipe's EOF still means one worker died.
            keep = {child_end.fileno()} | {conn.fileno() for conn in child_conns}
            inherited = tuple(conn.fileno() for pipe in pipes for conn in pipe
                              if not conn.closed and conn.fileno() not in keep)
            process = ctx.Process(
                target=run_worker,
                args=(child_end, spec, inherited if forked else (), child_conns),
                name=name.format(index=spec.index), daemon=True,
            )
            with sigint_blocked():  # a Ctrl-C now must not reach a half-started worker
                process.start()
            child_end.close()
            self.processes.append(process)

    def wait_until_ready(self) -> int:
        """Wait for every worker's "ready"; returns the game's number of actions. Raises
        (without stopping anything) if one failed, died or did not start in time."""
        num_actions = 0
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for index, conn in enumerate(self.conns):
            if not conn.poll(max(deadline - time.monotonic(), 0)):
                raise WorkerDiedError(f"{self.describe(index)} did not start within "
                                      f"{STARTUP_TIMEOUT_S:.0f} s")
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):
                how, code = describe_exit(self.processes[index])
                raise WorkerDiedError(f"{self.describe(index)} {how} while starting"
                                      f"{self._notes.died_while_starting}", code) from None
            if kind == "error":
                raise WorkerError(f"{self.describe(index)} failed to start: "
                                  f"{payload.type_name}: {payload.message}\n\n"
                                  f"Worker traceback:\n{payload.traceback}",
                                  payload.type_name, payload.traceback)
            num_actions = payload
        return num_actions

    def describe(self, index: int) -> str:
        """The worker as error messages name it (index, pid, envs)."""
        spec = self.specs[index]
        pid = self.processes[index].pid if index < len(self.processes) else None
        return self._describe(index, pid, spec.env_start, spec.env_stop)

    # ----------------------------------------------------------------- messages
    def send_frame(self, index: int, frame: memoryview, when: str = "") -> None:
        """Send worker ``index`` a prepared frame (its 4-byte header, then the payload)."""
        try:
            if self.raw_pipes:
                write_frame(self.fds[index], frame)
            else:
                self.conns[index].send_bytes(frame[4:])
        except OSError:
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
        seen at once as EOF, because only that worker holds the other end of its pipe."""
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

    def read_from_all(self, views: Sequence[memoryview]) -> None:
        """Read every worker's reply into its view, in worker order."""
        for index, view in enumerate(views):
            self.read_reply_into(index, view)
        self.unread_replies = False

    def round_trip(self, frame: memoryview, replies: memoryview) -> None:
        """A relayed step: write ``frame`` to worker 0 and read the whole tree's reply into
        ``replies``: one write and one ``readv`` (see :class:`shmenv.worker.Relay`)."""
        self.unread_replies = True
        try:
            write_frame(self.fds[0], frame)
            error_reply = read_frame_into(self.fds[0], self._header, replies)
        except (EOFError, OSError):
            self.worker_died(0)
        if error_reply is not None:
            self.raise_error_reply(0, error_reply)
        self.unread_replies = False

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

    # ----------------------------------------------------------------- failures
    def raise_error_reply(self, index: int, payload: bytes) -> NoReturn:
        """Raise the error a worker sent instead of its reply (stopping every worker)."""
        report = ErrorReport.decode(payload)
        if report is None:
            self.fail(WorkerError(f"{self.describe(index)} sent a malformed reply"))
        origin = report.worker  # relayed: another worker than `index`
        if report.kind == "died":
            self.worker_died(origin)
        self.fail(WorkerError(f"{self.describe(origin)} raised {report.type_name}: "
                              f"{report.message}\n\nWorker traceback:\n{report.traceback}",
                              report.type_name, report.traceback))

    def worker_died(self, index: int, when: str = "") -> NoReturn:
        """Raise :class:`WorkerDiedError` for worker ``index`` (stopping every worker)."""
        how, code = describe_exit(self.processes[index])
        when = f" {when}" if when else ""
        self.fail(WorkerDiedError(f"{self.describe(index)} {how}{when}{self._notes.died}",
                                  code))

    def fail(self, error: Exception) -> NoReturn:
        """Stop everything, then raise: the envs' state is lost with the failed worker, so
        the others get a short grace period and are then killed (no polite 2 s wait)."""
        stop_workers(self.conns, self.processes, FAILURE_GRACE_S)
        on_failure = self._on_failure() if self._on_failure is not None else None
        if on_failure is not None:
            on_failure(f"a worker failed: {error}".splitlines()[0])
        raise error

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
        for index, conn in enumerate(self.conns):
            try:
                resynchronize(conn, RESYNC_TIMEOUT_S)
            except (EOFError, OSError):
                self.worker_died(index, self._notes.resync_died_when)
            except TimeoutError:
                self.fail(WorkerDiedError(
                    f"{self.describe(index)} did not answer within {RESYNC_TIMEOUT_S:.0f} s "
                    f"after an interrupted call{self._notes.resync_timeout}"))
        self.unread_replies = False

    def stop(self, grace_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop every worker and close the pipes (idempotent)."""
        release(self.conns, self.processes, grace_s)


def release(conns: list[Connection], processes: list[Any],
            grace_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Stop the workers and close their pipes. A module-level function over plain lists, so
    that a ``weakref.finalize`` can hold it without holding the pool's owner."""
    stop_workers(conns, processes, grace_s)
    for conn in conns:
        conn.close()
