"""The pool behind drop-in Workers: their envs in one block, stepped by one process per core.

A :class:`WorkerGroup` gathers Workers (its *members*, one env each) until the first command
to any of them, then starts ``min(members, cores)`` worker processes over one shared block,
each stepping a contiguous run of members' envs. Each member keeps the reference's
one-command-one-reply protocol; the group turns those commands into few messages:

* ``send`` records the member's command (an action or a reset) in its process's next frame,
  an :data:`~shmenv.protocol.OP_EACH` command that holds one code per env;
* a frame goes out as soon as every open member of that process has a command recorded
  (the tutorial's send-to-all loop: one message per process per step), or at the first
  ``recv``/``poll`` of any member (so a Worker used alone, or a subset, never waits);
* ``recv`` reads its process's replies in order, marking every member they cover as ready;
  a later ``recv`` of those members returns at once, from the shared block.

Why: each message that wakes a process costs the main process ~20 µs of CPU on this VM;
one per Worker per step was the largest cost of 8 Workers on 2 cores.

Failures are per process, as in the reference they are per Worker: a process that dies or
whose game raises stops alone, and each of its members raises the error (naming every
member it served, with their seeds and the pid) once, then ``ClosedError``. Members of the
other processes keep running. See docs/migration.md.
"""

from __future__ import annotations

import collections
import enum
import functools
import os
import pickle
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from shmenv.block import BlockLayout, SharedBlock
from shmenv.errors import (
    ClosedError,
    ForkedEnvError,
    ShmenvError,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
    describe_exit,
)
from shmenv.game import GameFactory
from shmenv.games import GameOptions
from shmenv.planning import check_timeout, spin_budget, split_envs
from shmenv.pool import (
    FAILURE_GRACE_S,
    RESYNC_TIMEOUT_S,
    FailureNotes,
    WorkerPool,
    release,
    resynchronize,
)
from shmenv.protocol import EACH_RESET, EACH_SKIP, OP_EACH, REPLY_DTYPE, REPLY_STRUCT, ErrorReport
from shmenv.wire import header_as_int32
from shmenv.worker import WorkerSpec


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), the default process count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


@dataclass(frozen=True)
class GameConfig:
    """What members of one group must share: one game, one option set, one game factory."""

    game: str
    options: GameOptions
    game_factory: GameFactory | None

    def matches(self, other: GameConfig) -> bool:
        """Equal, counting two factories equal when they pickle alike (two
        ``functools.partial(CounterGame)`` objects are the same factory)."""
        if (self.game, self.options) != (other.game, other.options):
            return False
        a, b = self.game_factory, other.game_factory
        if a is b:
            return True
        try:
            return pickle.dumps(a) == pickle.dumps(b)
        except Exception:  # noqa: BLE001 - an unpicklable factory is only equal to itself
            return False


class GroupState(enum.Enum):
    OPEN = "open"  # taking members; nothing started
    LAUNCHED = "launched"  # sealed, block created, processes started, not known to be ready
    RUNNING = "running"
    CLOSED = "closed"


class Member(enum.Enum):
    """Where one member's command is."""

    IDLE = "idle"  # no command outstanding
    RECORDED = "recorded"  # in its process's next frame, not sent yet
    SENT = "sent"  # sent; the reply is not read yet
    READY = "ready"  # the reply was read; recv() returns it without waiting
    LOST = "lost"  # its reply was discarded after an interrupted call (Ctrl-C)
    CLOSED = "closed"  # closed, or failed (then ``errors`` holds what it raises once)


# Set by ``with WorkerGroup(...)``: Workers created inside join that group (per thread).
_current = threading.local()


def current_group() -> WorkerGroup | None:
    """The group of the innermost ``with WorkerGroup(...)`` block in this thread, if any."""
    stack = getattr(_current, "stack", None)
    return stack[-1] if stack else None


def _describe_process(seeds: Sequence[Any], ranges: Sequence[tuple[int, int]], index: int,
                      pid: int | None, _start: int = 0, _stop: int = 0) -> str:
    start, stop = ranges[index]
    listed = ", ".join(str(s) for s in seeds[start:stop])
    worker_s = "Worker" if stop - start == 1 else "Workers"
    return f"shmenv pool process {index} (pid {pid}, serving the {worker_s} of seeds {listed})"


def drop_member(group: WorkerGroup, slot: int) -> None:
    """A member's finalizer: close it when its pipe is garbage-collected (not in a fork,
    where the parent's pool must keep running)."""
    if os.getpid() == group._creator:
        group.close_member(slot, "the Worker was garbage-collected")


def _release_all(conns: list, processes: list, block_box: list) -> None:
    """Stop every process and close the block: a module-level function over plain lists, so
    that the group's ``weakref.finalize`` does not keep the group alive."""
    release(conns, processes)
    for block in block_box:
        block.close()


class WorkerGroup:
    """Drop-in Workers that share one shared-memory block and a pool of processes.

    Workers join a group when they are created; the group starts at the first command sent
    to any member (or :meth:`start`) and takes no members after that. By default, Workers
    created one after another join one group until it starts, so the reference's
    ``[Worker(47 + i) for i in range(8)]`` gets one group without any change. For control::

        with shmenv.WorkerGroup(num_processes=2) as group:
            workers = [shmenv.Worker(47 + i) for i in range(8)]  # join `group`
            group.start()  # optional: pay the start-up now, not at the first command
            ...
        # leaving the block closes every member

    ``num_processes``: at most this many processes (default: the usable cores,
    ``len(os.sched_getaffinity(0))``); the group runs ``min(members, num_processes)``.
    ``context``: the multiprocessing start method (default: the platform's).
    ``worker_spin_us``: see :class:`shmenv.ShmVectorEnv`.
    ``timeout`` (seconds; default None, no limit): a member's ``recv()`` that waits longer
    for its process kills that process and raises :class:`shmenv.WorkerTimeoutError`
    naming it and its Workers, each of which raises it once, as for a dead process.
    """

    _pool: WorkerPool  # set when the group starts
    _block: SharedBlock

    def __init__(self, num_processes: int | None = None, *, context: str | None = None,
                 worker_spin_us: float | None = None, timeout: float | None = None) -> None:
        if num_processes is not None and (isinstance(num_processes, bool)
                                          or not isinstance(num_processes, (int, np.integer))
                                          or num_processes < 1):
            raise ValueError(f"num_processes must be an int >= 1 or None, got "
                             f"{num_processes!r}")
        if worker_spin_us is not None:
            spin_budget(worker_spin_us, 1)  # the one check of the value
        self._timeout = check_timeout(timeout)
        self._max_processes = int(num_processes) if num_processes else None
        self._context = context
        self._spin_us = worker_spin_us
        self._creator = os.getpid()
        self._lock = threading.RLock()
        self._state = GroupState.OPEN
        self._config: GameConfig | None = None
        self.seeds: list[Any] = []  # one per member, in member order
        # Per member (its slot: its index in the group, its env in the block).
        self._members: list[Member] = []
        self._is_reset: list[bool] = []  # the outstanding command is a reset
        self._errors: list[BaseException | None] = []  # raised once by a failed member
        self._closed_reasons: list[str] = []
        # An operation on the pipes sets this first and clears it when it completed: if
        # it is still set at the next one, Ctrl-C cut that short (see _recover).
        self._busy = False

    # ----------------------------------------------------------------- membership
    @property
    def num_members(self) -> int:
        return len(self.seeds)

    @property
    def open(self) -> bool:
        """True while the group still takes members (before it started)."""
        return self._state is GroupState.OPEN

    def accepts(self, config: GameConfig) -> bool:
        """Whether a Worker with ``config`` may join now (open, same game, this process)."""
        return (self._state is GroupState.OPEN and os.getpid() == self._creator
                and (self._config is None or self._config.matches(config)))

    def join(self, seed: Any, config: GameConfig) -> int:
        """Add a member; returns its slot. Raises if the group started or runs another game."""
        with self._lock:
            if self._state is not GroupState.OPEN:
                raise ShmenvError("this WorkerGroup has started (or closed) and takes no new "
                                  "Workers; create a new WorkerGroup (or leave group= unset)")
            if self._config is not None and not self._config.matches(config):
                raise ValueError(
                    f"this WorkerGroup runs {self._config.game} with {self._config.options} "
                    f"and game_factory={self._config.game_factory!r}; a Worker of another "
                    "game or options needs its own WorkerGroup")
            self._config = self._config or config
            self.seeds.append(seed)
            self._members.append(Member.IDLE)
            self._is_reset.append(False)
            self._errors.append(None)
            self._closed_reasons.append("")
            return len(self.seeds) - 1

    def __enter__(self) -> WorkerGroup:
        stack = getattr(_current, "stack", None)
        if stack is None:
            stack = _current.stack = []
        stack.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _current.stack.remove(self)
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("a WorkerGroup owns processes and shared memory and cannot be "
                        "pickled; create Workers in the process that uses them")

    # ----------------------------------------------------------------- start-up
    def start(self) -> None:
        """Start the processes now and wait until every game is loaded (otherwise the first
        command to any member does it). Seals the group."""
        with self._lock:
            self._check_process()
            if self._state is GroupState.CLOSED:
                raise ClosedError("this WorkerGroup is closed; create a new one")
            self._ensure_running()

    def process_of(self, slot: int) -> BaseProcess:
        """The process serving member ``slot``; launches the group if it was still open."""
        with self._lock:
            try:
                self._launch()
            except BaseException:
                self._errors[slot] = None
                raise
            if not hasattr(self, "_pool"):  # it failed to start before any process ran
                self.check_open(slot)
            return self._pool.processes[self._process[slot]]

    @property
    def processes(self) -> list[BaseProcess]:
        """The group's processes (empty until it starts)."""
        pool = getattr(self, "_pool", None)
        return list(pool.processes) if pool is not None else []

    def _launch(self) -> None:
        """Seal the group, create its block and start its processes, without waiting."""
        if self._state is not GroupState.OPEN:
            return
        if self._config is None:
            raise ValueError("this WorkerGroup has no Workers to start")
        self._state = GroupState.LAUNCHED
        config, count = self._config, self.num_members
        num_processes = min(count, self._max_processes or usable_cores())
        ranges = split_envs(count, num_processes)
        self._ranges = ranges
        self._process = [p for p, (start, stop) in enumerate(ranges) for _ in range(start, stop)]
        self._local = [slot - ranges[p][0] for slot, p in enumerate(self._process)]
        self._open_members = [sum(self._members[slot] is not Member.CLOSED
                                  for slot in range(start, stop)) for start, stop in ranges]
        self._pending = [0] * num_processes  # members of each process with a recorded command
        self._in_flight: list[collections.deque[list[int]]] = [
            collections.deque() for _ in ranges]  # members covered by each frame sent
        self._alive = [True] * num_processes
        # Each process's next frame: [pipe header, OP_EACH, one code per env of its range].
        self._frames = []
        for start, stop in ranges:
            frame = np.full(2 + stop - start, EACH_SKIP, dtype=np.int32)
            frame[:2] = header_as_int32(4 * (1 + stop - start)), OP_EACH
            self._frames.append(frame)
        self._frame_bytes = [frame.data.cast("B") for frame in self._frames]
        self._codes = [frame[2:] for frame in self._frames]
        # Replies are read straight into one record array; a skipped env's record in a
        # reply repeats its last one, so a reply never changes a record waiting for recv().
        self._records = np.zeros(count, dtype=REPLY_DTYPE)
        self._record_bytes = self._records.data.cast("B")
        size = REPLY_DTYPE.itemsize
        self._reply_views = [self._record_bytes[size * start:size * stop]
                             for start, stop in ranges]

        block_box: list[SharedBlock] = []
        try:
            block = SharedBlock.create(BlockLayout(count, config.options.obs_shape))
            block_box.append(block)
            self._block = block
            spin_us = spin_budget(self._spin_us, num_processes)
            specs = [WorkerSpec(index=p, block_name=block.name, layout=block.layout,
                                env_start=start, env_stop=stop, game=config.game,
                                seeds=tuple(self.seeds[start:stop]), options=config.options,
                                same_step_autoreset=True, write_final_obs=False,
                                game_factory=config.game_factory, spin_us=spin_us)
                     for p, (start, stop) in enumerate(ranges)]
            describe = functools.partial(_describe_process, tuple(self.seeds), tuple(ranges))
            self._pool = WorkerPool(specs, describe=describe, notes=FailureNotes())
            # Detached in a forked child (see WorkerPool.forked_away): its exit leaves the
            # parent's pool running.
            self._finalizer = self._pool.finalize(self, _release_all, self._pool.conns,
                                                  self._pool.processes, block_box)
            self._pool.launch(self._context, name="shmenv-Workers-{index}")
        except BaseException as exc:
            self._fail_all(exc, "it failed to start")
            raise

    def _ensure_running(self) -> None:
        if self._state is GroupState.RUNNING:
            return
        self._launch()
        if self._state is GroupState.CLOSED:
            return
        try:
            self._num_actions = self._pool.wait_until_ready()
        except BaseException as exc:  # a game failed to load, or Ctrl-C during start-up
            self._fail_all(exc, "it failed to start")
            raise
        self._block.unlink()  # every process has mapped it: nothing can leak from here on
        self._state = GroupState.RUNNING
        for p, count in enumerate(self._open_members):
            if count == 0:  # all its Workers were closed before the group started
                self._alive[p] = False
                self._pool.stop_worker(p)

    def num_actions_for(self, slot: int) -> int:
        """The game's number of actions, to check member ``slot``'s step action with
        (starts the group if needed)."""
        with self._lock:
            self._start_for(slot)
            return self._num_actions

    # ----------------------------------------------------------------- member commands
    def check_open(self, slot: int) -> None:
        """Raise what a call on member ``slot`` must raise if it is closed or failed."""
        if self._members[slot] is not Member.CLOSED:
            return
        error = self._errors[slot]
        if error is not None:  # a failure it has not reported yet: once, then ClosedError
            self._errors[slot] = None
            raise error
        raise ClosedError(f"shmenv Worker(seed={self.seeds[slot]!r}) is closed "
                          f"({self._closed_reasons[slot]}); create a new Worker")

    def send(self, slot: int, is_reset: bool, action: int) -> None:
        """Record member ``slot``'s command: a reset, or a step with ``action`` (checked by
        the caller against :attr:`num_actions`)."""
        with self._lock:
            self._enter(slot)
            if self._members[slot] in (Member.RECORDED, Member.SENT):
                # One command at a time per Worker, as the reference's trainers use one: the
                # earlier command runs, and its reply is dropped, not returned for this one.
                self._await(slot)
                self._check_after_io(slot)
            p = self._process[slot]
            self._codes[p][self._local[slot]] = EACH_RESET if is_reset else action
            self._members[slot] = Member.RECORDED
            self._is_reset[slot] = is_reset
            self._pending[p] += 1
            if self._pending[p] == self._open_members[p]:
                self._flush(p)
            self._busy = False
            self.check_open(slot)

    def recv(self, slot: int) -> Any:
        """Member ``slot``'s reply: the stack after a reset, else (stack, reward, done, info)."""
        with self._lock:
            self._enter(slot)
            state = self._members[slot]
            if state is Member.IDLE:
                self._busy = False
                raise RuntimeError("recv() called with no command pending; send() one first")
            if state is Member.LOST:
                self._members[slot] = Member.IDLE
                self._busy = False
                raise ShmenvError("the reply to the command interrupted by Ctrl-C was "
                                  "discarded; send() a new command")
            self._flush_all()  # whatever else was recorded runs while this one is awaited
            self._await(slot)
            self._check_after_io(slot)
            self._members[slot] = Member.IDLE
            self._busy = False
            stack = self._block.obs[slot].copy()
            if self._is_reset[slot]:
                return stack
            (reward, episode_return, _time, episode_length, _lives, _raw_reward, _elapsed,
             _terminated, _truncated, done, _game_over, episode_end) = REPLY_STRUCT.unpack_from(
                self._record_bytes, slot * REPLY_STRUCT.size)
            # The episode's statistics come with the record that ends it (every done under
            # the labml rules; only a game's end when a lost life lets the game go on).
            info = ({"reward": episode_return, "length": episode_length} if episode_end
                    else None)
            return stack, reward, bool(done), info

    def poll(self, slot: int, timeout: float | None) -> bool:
        """Whether member ``slot``'s ``recv()`` would return without waiting, waiting up to
        ``timeout`` seconds (None: until it would)."""
        with self._lock:
            self._enter(slot)
            if self._members[slot] in (Member.RECORDED, Member.SENT):
                self._await(slot, timeout)
            self._busy = False
            return self._members[slot] in (Member.READY, Member.LOST, Member.CLOSED)

    def fileno(self, slot: int) -> int:
        """The pipe of member ``slot``'s process (pending commands are sent first)."""
        with self._lock:
            self._enter(slot)
            self._flush_all()
            self._check_after_io(slot)
            self._busy = False
            return self._pool.conns[self._process[slot]].fileno()

    def close_member(self, slot: int, reason: str = "close() was called") -> None:
        """Close member ``slot``: its process stops with its last open member, the block
        with the group's last. Closing twice, or a failed member, is harmless."""
        with self._lock:
            self._check_process()
            if self._members[slot] is Member.CLOSED:
                self._errors[slot] = None  # closing a failed Worker needs no error
                return
            state = self._members[slot]
            self._members[slot] = Member.CLOSED
            self._closed_reasons[slot] = reason
            if self._state is GroupState.OPEN:
                # Nothing started. An open group with no open member takes no new ones.
                if all(m is Member.CLOSED for m in self._members):
                    self._state = GroupState.CLOSED
                return
            if self._state is GroupState.CLOSED:
                return
            p = self._process[slot]
            if state is Member.RECORDED:
                self._codes[p][self._local[slot]] = EACH_SKIP
                self._pending[p] -= 1
            self._open_members[p] -= 1
            if self._alive[p] and self._open_members[p] == 0:
                self._alive[p] = False
                self._pool.stop_worker(p)
            elif self._alive[p] and 0 < self._pending[p] == self._open_members[p]:
                self._flush(p)  # the others of its process were waiting for this one
            if not any(self._alive):
                self._close_group()

    def close(self) -> None:
        """Close every member (their processes stop; the block is released)."""
        with self._lock:
            self._check_process()
            for slot in range(self.num_members):
                self.close_member(slot)
            if self._state is GroupState.OPEN:
                self._state = GroupState.CLOSED

    # ----------------------------------------------------------------- frames and replies
    def _flush(self, p: int) -> None:
        """Send process ``p`` its recorded commands, one frame."""
        members = [slot for slot in range(*self._ranges[p])
                   if self._members[slot] is Member.RECORDED]
        sent = self._pool.try_send_frame(p, self._frame_bytes[p])
        self._codes[p][:] = EACH_SKIP
        self._pending[p] = 0
        if not sent:
            self._process_died(p, "before a command")
            return
        for slot in members:
            self._members[slot] = Member.SENT
        self._in_flight[p].append(members)

    def _flush_all(self) -> None:
        """Send every recorded command, so that all of them run while one is waited for."""
        for p, pending in enumerate(self._pending):
            if pending and self._alive[p]:
                self._flush(p)

    def _await(self, slot: int, timeout: float | None = None) -> None:
        """Send, then read replies of member ``slot``'s process until its own was read (or
        ``timeout`` passed, or the process failed). Without ``timeout``, the group's
        ``timeout`` applies, and a process that overruns it is killed as hung."""
        if self._members[slot] is Member.RECORDED:
            self._flush_all()
        p = self._process[slot]
        limit = timeout if timeout is not None else self._timeout
        deadline = None if limit is None else time.monotonic() + limit
        conn = self._pool.conns[p]
        while self._members[slot] is Member.SENT:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            # Waiting is not "busy": a Ctrl-C here leaves the reply in the pipe for the next
            # call to read, as the reference's would.
            self._busy = False
            ready = conn.poll(remaining)
            self._busy = True
            if not ready:
                if timeout is None:  # the group's timeout ran out: the process hangs
                    self._pool.processes[p].kill()  # SIGKILL also ends a stopped process
                    self._fail_process(p, WorkerTimeoutError(
                        f"{self._pool.describe(p)} did not answer within {limit:g} s; it was "
                        "killed and its Workers are closed now, create new ones", (p,)))
                return
            self._read_reply(p)

    def _read_reply(self, p: int) -> None:
        """Read process ``p``'s oldest unread reply; the members it covers become ready."""
        try:
            error_reply = self._pool.read_reply_from(p, self._reply_views[p])
        except (EOFError, OSError):
            self._process_died(p, "while running a command")
            return
        members = self._in_flight[p].popleft()
        if error_reply is not None:
            report = ErrorReport.decode(error_reply)
            where = self._pool.describe(p)
            if report is None:
                error = WorkerError(f"{where} sent a malformed reply")
            else:
                error = WorkerError(f"{where} raised {report.type_name}: {report.message}"
                                    f"\n\nWorker traceback:\n{report.traceback}",
                                    report.type_name, report.traceback)
            self._fail_process(p, error)
            return
        for slot in members:
            if self._members[slot] is Member.SENT:
                self._members[slot] = Member.READY

    # ----------------------------------------------------------------- failures
    def _check_process(self) -> None:
        if os.getpid() != self._creator:
            raise ForkedEnvError(
                f"these shmenv Workers belong to process {self._creator}, and this is process "
                f"{os.getpid()} (a fork): their pool cannot be used or closed from here. "
                "Create Workers in the process that uses them.")

    def _start_for(self, slot: int) -> None:
        """Raise if member ``slot`` is closed or failed; start the group if needed."""
        self._check_process()
        self.check_open(slot)
        try:
            self._ensure_running()
        except BaseException:
            self._errors[slot] = None  # the caller gets the error now, not again later
            raise

    def _enter(self, slot: int) -> None:
        """Start an operation of member ``slot`` on the pipes (see :meth:`_start_for`),
        first recovering from an interrupted one."""
        self._start_for(slot)
        if self._busy:
            self._recover()
            self.check_open(slot)  # recovering may have found its process dead
        self._busy = True

    def _check_after_io(self, slot: int) -> None:
        """After a completed step of I/O: raise if member ``slot``'s process failed in it."""
        if self._members[slot] is Member.CLOSED:
            self._busy = False
            self.check_open(slot)

    def _recover(self) -> None:
        """After Ctrl-C cut an operation short: bring every process's pipe back to a
        message boundary (discarding unread replies) and mark the members whose replies
        were lost; their recv() says so."""
        for p in range(len(self._ranges)):
            if not self._alive[p]:
                continue
            self._codes[p][:] = EACH_SKIP
            self._pending[p] = 0
            self._in_flight[p].clear()
            try:
                resynchronize(self._pool.conns[p], RESYNC_TIMEOUT_S)
            except (EOFError, OSError):
                self._process_died(p, "after an interrupted call")
            except TimeoutError:
                self._fail_process(p, WorkerDiedError(
                    f"{self._pool.describe(p)} did not answer within {RESYNC_TIMEOUT_S:.0f} s "
                    "after an interrupted call; its Workers are closed now"))
        for slot, state in enumerate(self._members):
            if state in (Member.RECORDED, Member.SENT):
                self._members[slot] = Member.LOST
        self._busy = False

    def _process_died(self, p: int, when: str) -> None:
        how, code = describe_exit(self._pool.processes[p])
        self._fail_process(p, WorkerDiedError(
            f"{self._pool.describe(p)} {how} {when}; its Workers are closed now, create new "
            "ones", code))

    def _fail_process(self, p: int, error: BaseException) -> None:
        """Stop process ``p`` and close its members, each to raise ``error`` once."""
        self._alive[p] = False
        self._pool.stop_worker(p, FAILURE_GRACE_S)
        self._in_flight[p].clear()
        self._pending[p] = 0
        self._open_members[p] = 0
        reason = f"its process failed: {str(error).splitlines()[0]}"
        for slot in range(*self._ranges[p]):
            if self._members[slot] is not Member.CLOSED:
                self._members[slot] = Member.CLOSED
                self._errors[slot] = error
                self._closed_reasons[slot] = reason
        if not any(self._alive):
            self._close_group()

    def _fail_all(self, error: BaseException, why: str) -> None:
        """A start-up failure: release everything; every member raises ``error`` once."""
        if not isinstance(error, Exception):  # Ctrl-C: the caller gets it, members ClosedError
            error = ClosedError(f"the Workers' start-up was interrupted ({why})")
        reason = f"{why}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        for slot in range(self.num_members):
            if self._members[slot] is not Member.CLOSED:
                self._members[slot] = Member.CLOSED
                self._errors[slot] = error
                self._closed_reasons[slot] = reason
        self._close_group()

    def _close_group(self) -> None:
        self._state = GroupState.CLOSED
        self._busy = False
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
