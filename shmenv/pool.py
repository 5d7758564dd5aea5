"""The worker pool: the main process's side of the worker processes, from start to stop."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import secrets
import select
import signal
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn, Protocol

import numpy as np

from shmenv.block import RECEIVED, REPLIED
from shmenv.errors import (
    ClosedError,
    ForkedEnvError,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
    describe_exit,
)
from shmenv.planning import check_timeout
from shmenv.protocol import OP_CLOSE, ErrorReport, sync_command, sync_marker
from shmenv.wire import RAW_PIPES, read_frame_into, write_frame
from shmenv.worker import run_worker


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
RESYNC_TIMEOUT_S = 60.0  # without a timeout: a worker may be mid-reseed (~0.2 s per env)
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
    resync_timeout: str = ""  # unused since timeouts name the hung worker (timed_out)
    resync_died_when: str = ""  # said after "exited with code 1" when a resync found EOF
    timed_out: str = ("; the workers that did not answer were killed, all others stopped, "
                      "and this env is closed; create a new one.")
    # The error a call gets when another thread closed the env while it waited.
    closed_while_waiting: str = ("this ShmVectorEnv was closed ({reason}) while this call "
                                 "waited for its workers; create a new one with "
                                 "shmenv.make(...)")


# A worker's state from /proc/<pid>/stat, for the timeout error: why it did not answer.
_PROC_STATES = {"T": "stopped by a signal", "t": "stopped by a debugger", "R": "running",
                "S": "sleeping", "D": "in uninterruptible sleep (disk or swap)",
                "Z": "exited"}


def process_state(pid: int | None) -> str:
    """``"stopped by a signal"`` etc. for a Linux process, or "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""
    return _PROC_STATES.get(state, "")


# Every live pool in this process, for the fork hook below.
_LIVE_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _disown_pools_after_fork() -> None:
    for pool in list(_LIVE_POOLS):
        pool.forked_away()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_pools_after_fork)

_POOL_TIMEOUT: Any = object()  # "use the pool's timeout" (None means no limit)


class PoolSpec(Protocol):
    """What the pool reads of a worker's start-up spec (:class:`shmenv.worker.WorkerSpec`,
    :class:`shmenv.anyworker.AnyWorkerSpec`)."""

    @property
    def index(self) -> int: ...

    @property
    def env_start(self) -> int: ...

    @property
    def env_stop(self) -> int: ...

    @property
    def relay_children(self) -> tuple[tuple[int, int, int], ...]: ...


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

    ``timeout`` (seconds, None: no limit) bounds every wait for a reply after start-up:
    a worker that does not answer in time is killed and named in a
    :class:`WorkerTimeoutError`. Only then does a wait poll its descriptor first; without a
    timeout, reads block in the kernel exactly as before. ``progress`` (the block's
    per-worker relayed-step counters) lets a relayed step that hangs name the worker deep
    in the tree that holds it up, instead of the root the main waits on.

    Fork safety: the pool remembers the process that created it. In a forked child its
    finalizers are detached and :meth:`check_process` raises :class:`ForkedEnvError`,
    so the child never sends the parent's workers anything (see :meth:`forked_away`).
    """

    def __init__(self, specs: Sequence[PoolSpec], *,
                 describe: Callable[[int, int | None, int, int], str] = describe_envs,
                 notes: FailureNotes = FailureNotes(), raw_pipes: bool = RAW_PIPES,
                 on_failure: Callable[[str], None] | None = None,
                 timeout: float | None = None, progress: np.ndarray | None = None,
                 target: Callable[..., None] = run_worker, daemon: bool = True) -> None:
        self.specs: tuple[PoolSpec, ...] = tuple(specs)
        # The worker process's entry point, called as target(conn, spec, fds_to_close,
        # relay_child_conns): the Atari worker, or the generic one (shmenv.anyworker).
        self._target = target
        self._daemon = daemon
        self.timeout = check_timeout(timeout)
        self.creator_pid = os.getpid()
        self.forked = False
        # Why the owner is closing the pool (None while open): a worker that exits while a
        # call waits on it is then reported as ClosedError, not as a death.
        self.closing: str | None = None
        self.progress = progress
        self.relayed_steps = 0  # relayed steps sent to worker 0 (see relay_laggards)
        self._parents: list[int | None] = [None] * len(self.specs)
        for spec in self.specs:
            for child, _start, _stop in spec.relay_children:
                self._parents[child] = spec.index
        self._pollers: dict[int, Any] = {}
        self._finalizers: list[weakref.finalize] = []
        self._on_fork: weakref.WeakMethod | None = None
        _LIVE_POOLS.add(self)
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

    # ----------------------------------------------------------------- fork safety
    def finalize(self, owner: object, release_owned: Callable[..., Any],
                 *args: Any) -> weakref.finalize:
        """``weakref.finalize(owner, release_owned, *args)``, the owner's one clean-up (at
        close, garbage collection or interpreter exit), detached in forked children."""
        finalizer = weakref.finalize(owner, release_owned, *args)
        self._finalizers.append(finalizer)
        return finalizer

    def set_on_fork(self, on_fork: Callable[[], None]) -> None:
        """Call the bound method ``on_fork()`` (held weakly) in a forked child, after
        :meth:`forked_away`, so the owner can refuse every later call cheaply."""
        self._on_fork = weakref.WeakMethod(on_fork)  # type: ignore[arg-type]

    def forked_away(self) -> None:
        """Disown the workers in a child forked from the process that created the pool
        (run by ``os.register_at_fork``; also in forked workers, where it is harmless).

        The workers answer only their creator: here the finalizers are detached, so the
        child's exit sends them nothing, and they leave multiprocessing's list of this
        process's children, whose exit handler would otherwise SIGTERM the parent's daemon
        workers and fail to join them ("can only join a child process").
        """
        self.forked = True
        for finalizer in self._finalizers:
            finalizer.detach()
        children = getattr(multiprocessing.process, "_children", None)
        if children is not None:
            for process in self.processes:
                children.discard(process)
        on_fork = self._on_fork() if self._on_fork is not None else None
        if on_fork is not None:
            on_fork()

    def check_process(self, what: str = "this env") -> None:
        """Raise :class:`ForkedEnvError` if called in another process than the creator's."""
        if self.forked or os.getpid() != self.creator_pid:
            raise ForkedEnvError(
                f"{what} belongs to process {self.creator_pid} and was used from process "
                f"{os.getpid()}, forked from it: its workers answer only the process that "
                "started them, and commands from here would desync the parent's env. "
                "Create envs in the child itself (after the fork), or start child "
                "processes with the 'spawn' method (multiprocessing.get_context('spawn')).")

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
                target=self._target,
                args=(child_end, spec, inherited if forked else (), child_conns),
                name=name.format(index=spec.index), daemon=self._daemon,
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

    def read_from_all(self, views: Sequence[memoryview], timeout: Any = _POOL_TIMEOUT,
                      when: str = "") -> None:
        """Read every worker's reply into its view, in worker order, within ``timeout``
        seconds in all (default: the pool's; None: no limit)."""
        limit = self.timeout if timeout is _POOL_TIMEOUT else check_timeout(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        for index, view in enumerate(views):
            if deadline is not None and not self._readable(index, deadline):
                self.timed_out([w for w in range(index, len(views))
                                if not self._readable(w, None)], limit, when)
            self.read_reply_into(index, view)
        self.unread_replies = False

    def wait_for_reply(self, index: int, timeout: Any = _POOL_TIMEOUT,
                       when: str = "") -> None:
        """Return once worker ``index`` has a reply to read, or raise
        :class:`WorkerTimeoutError` after ``timeout`` seconds (default: the pool's).
        Without a limit it returns at once: the blocking read that follows waits."""
        limit = self.timeout if timeout is _POOL_TIMEOUT else check_timeout(timeout)
        if limit is not None and not self._readable(index, time.monotonic() + limit):
            self.timed_out([index], limit, when)

    def send_relayed(self, frame: memoryview) -> None:
        """Send a relayed step to worker 0 (see :class:`shmenv.worker.Relay`)."""
        self.unread_replies = True
        self.relayed_steps += 1  # before the write: a Ctrl-C between them is resynced
        try:
            write_frame(self.fds[0], frame)
        except OSError:
            self.worker_died(0)

    def read_relayed(self, replies: memoryview, timeout: Any = _POOL_TIMEOUT) -> None:
        """Read the whole tree's reply to a relayed step into ``replies`` (one ``readv``)."""
        limit = self.timeout if timeout is _POOL_TIMEOUT else check_timeout(timeout)
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

    # ----------------------------------------------------------------- timeouts
    def _readable(self, index: int, deadline: float | None) -> bool:
        """Whether worker ``index``'s pipe has something to read by ``deadline`` (a
        ``time.monotonic()`` time; None: now, without waiting). Sleeps in ``poll``."""
        left = 0.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
        poller = self._pollers.get(index)
        if poller is None:
            if not hasattr(select, "poll"):
                return self.conns[index].poll(left)
            poller = self._pollers[index] = select.poll()
            poller.register(self.fds[index], select.POLLIN)
        return bool(poller.poll(math.ceil(left * 1000)))

    def relay_laggards(self) -> list[int]:
        """The workers that hold up the relayed step in flight, wherever in the tree.

        Each worker counts in the block the relayed steps it received (after forwarding
        them to its children) and replied to. A worker holds the step up if it has not
        replied and either it received the step and all its children replied (it is stuck
        in its own envs or stopped), or it never received it though its parent did (it
        is stopped and cannot read its pipe). Falls back to worker 0, the root.
        """
        if self.progress is None:
            return [0]
        step = self.relayed_steps
        received = self.progress[:, RECEIVED] >= step
        replied = self.progress[:, REPLIED] >= step
        children: list[list[int]] = [[] for _ in self.specs]
        for child, parent in enumerate(self._parents):
            if parent is not None:
                children[parent].append(child)
        laggards = []
        for index, parent in enumerate(self._parents):
            if replied[index]:
                continue
            if received[index]:
                if all(replied[child] for child in children[index]):
                    laggards.append(index)
            elif parent is None or received[parent]:
                laggards.append(index)
        return laggards or [0]

    def timed_out(self, workers: Sequence[int], waited: float | None, when: str = "",
                  ) -> NoReturn:
        """Kill ``workers`` (they did not answer within ``waited`` seconds), stop the rest
        and raise :class:`WorkerTimeoutError` naming each one and its process state."""
        self._raise_if_closing()
        workers = list(workers) or [0]
        names = " and ".join(self.describe(index) for index in workers)
        states = [f"worker {index} is {state}" for index in workers
                  if (state := process_state(self.processes[index].pid))]
        when = f" {when}" if when else ""
        states_text = f" ({', '.join(states)})" if states else ""
        message = (f"{names} did not answer within {waited:g} s{when}{states_text}"
                   f"{self._notes.timed_out}")
        for index in workers:
            self.processes[index].kill()  # SIGKILL also ends a stopped process
        self.fail(WorkerTimeoutError(message, tuple(workers)))

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
    def _raise_if_closing(self) -> None:
        """Another thread is closing the env: the worker it stopped did not fail."""
        if self.closing is not None:
            raise ClosedError(self._notes.closed_while_waiting.format(reason=self.closing))

    def raise_error_reply(self, index: int, payload: bytes) -> NoReturn:
        """Raise the error a worker sent instead of its reply (stopping every worker)."""
        self._raise_if_closing()
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
        self._raise_if_closing()
        how, code = describe_exit(self.processes[index])
        when = f" {when}" if when else ""
        self.fail(WorkerDiedError(f"{self.describe(index)} {how}{when}{self._notes.died}",
                                  code))

    def fail(self, error: Exception) -> NoReturn:
        """Stop everything, then raise: the envs' state is lost with the failed worker, so
        the others get a short grace period and are then killed (no polite 2 s wait)."""
        self._raise_if_closing()
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
                self.worker_died(index, self._notes.resync_died_when)
        if self.progress is not None:  # the root answered: every relayed step it got is done
            self.relayed_steps = int(self.progress[0, RECEIVED])
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
