"""The pool behind drop-in Workers: their envs in one block, stepped by one process per core.

A :class:`WorkerGroup` gathers Workers (its *members*, one env each) until the first command
to any of them, then starts ``min(members, cores)`` worker processes over one shared block,
each stepping a contiguous run of members' envs. Each member keeps the reference's
one-command-one-reply protocol; the group turns those commands into few messages (see
:mod:`shmenv.pooled_frames`): ``send`` records a command in its process's next frame, a
frame goes out once every open member of its process has one, or at the first
``recv``/``poll`` of any member (so a Worker used alone, or a subset, never waits), and one
reply makes all the members it covers ready.

Why: each message that wakes a process costs the main process ~20 µs of CPU on this VM;
one per Worker per step was the largest cost of 8 Workers on 2 cores.

Failures are per process, as in the reference they are per Worker: a process that dies or
whose game raises stops alone, and each of its members raises the error (naming every
member it served, with their seeds and the pid; see :mod:`shmenv.pooled_errors`) once,
then ``ClosedError``. Members of the other processes keep running. See docs/migration.md.
"""

from __future__ import annotations

import enum
import functools
import os
import pickle
import threading
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from shmenv.block import BlockLayout, SharedBlock
from shmenv.errors import ClosedError, ForkedEnvError, ShmenvError
from shmenv.game import GameFactory
from shmenv.games import GameOptions
from shmenv.planning import check_timeout, spin_budget, split_envs
from shmenv.pool import FAILURE_GRACE_S, FailureNotes, WorkerPool, release
from shmenv.pooled_errors import describe_process
from shmenv.pooled_frames import GroupFrames, Member
from shmenv.protocol import EACH_RESET, REPLY_STRUCT
from shmenv.worker import WorkerSpec

_RECORD_SIZE = REPLY_STRUCT.size


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


# Set by ``with WorkerGroup(...)``: Workers created inside join that group (per thread).
_current = threading.local()


def current_group() -> WorkerGroup | None:
    """The group of the innermost ``with WorkerGroup(...)`` block in this thread, if any."""
    stack = getattr(_current, "stack", None)
    return stack[-1] if stack else None


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
    _frames: GroupFrames
    _block: SharedBlock
    _stacks: list[np.ndarray]  # per member, a view of its slot of the block

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
            return self._pool.processes[self._frames.process[slot]]

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
        ranges = split_envs(count, min(count, self._max_processes or usable_cores()))
        block_box: list[SharedBlock] = []
        try:
            block = SharedBlock.create(BlockLayout(count, config.options.obs_shape))
            block_box.append(block)
            self._block = block
            self._stacks = list(block.obs)  # made once: recv copies out of them
            spin_us = spin_budget(self._spin_us, len(ranges))
            specs = [WorkerSpec(index=p, block_name=block.name, layout=block.layout,
                                env_start=start, env_stop=stop, game=config.game,
                                seeds=tuple(self.seeds[start:stop]), options=config.options,
                                same_step_autoreset=True, write_final_obs=False,
                                game_factory=config.game_factory, spin_us=spin_us)
                     for p, (start, stop) in enumerate(ranges)]
            describe = functools.partial(describe_process, tuple(self.seeds), tuple(ranges))
            self._pool = WorkerPool(specs, describe=describe, notes=FailureNotes())
            self._frames = GroupFrames(self._pool, ranges, self._members)
            # Detached in a forked child (see WorkerPool.forked_away): its exit leaves the
            # parent's pool running.
            self._finalizer = self._pool.finalize(self, _release_all, self._pool.conns,
                                                  self._pool.processes, block_box)
            self._pool.launch(self._context, name="shmenv-Workers-{index}")
            self._frames.watch()
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
        self._frames.stop_idle()  # processes whose Workers were all closed before this

    def num_actions_for(self, slot: int) -> int:
        """The game's number of actions, to check member ``slot``'s step action with
        (starts the group if needed)."""
        with self._lock:
            self._start_for(slot)
            return self._num_actions

    # ----------------------------------------------------------------- member commands
    # The hot path: the reference's loop sends to every member, then receives from every
    # member. There, send and recv skip the checks (a running group, no call cut short, the
    # member where that loop leaves it); any other case, and every error, goes through
    # _prepare_send or _prepare_recv first. Each check skipped is ~1 µs of the main's CPU
    # per Worker per step, and the main's CPU bounds the step rate (see docs/migration.md).
    def send(self, slot: int, is_reset: bool, action: int) -> None:
        """Record member ``slot``'s command: a reset, or a step with ``action`` (checked by
        the caller against :attr:`num_actions`)."""
        with self._lock:
            if (self._state is not GroupState.RUNNING or self._pool.forked
                    or self._frames.busy or self._members[slot] is not Member.IDLE):
                self._prepare_send(slot)
            frames = self._frames
            frames.busy = True
            self._is_reset[slot] = is_reset
            frames.record(slot, EACH_RESET if is_reset else action)
            frames.busy = False
            if frames.failures:  # the frame it completed found its process dead
                self._apply_failures()
                self.check_open(slot)

    def recv(self, slot: int) -> Any:
        """Member ``slot``'s reply: the stack after a reset, else (stack, reward, done, info)."""
        with self._lock:
            if (self._state is not GroupState.RUNNING or self._pool.forked
                    or self._frames.busy or self._members[slot] is not Member.READY
                    or any(self._frames.pending)):
                self._prepare_recv(slot)
            self._members[slot] = Member.IDLE
            # One copy out of the block: the fresh array the caller gets.
            stack = self._stacks[slot].copy()
            if self._is_reset[slot]:
                return stack
            (reward, episode_return, _time, episode_length, _lives, _raw_reward, _elapsed,
             _terminated, _truncated, done, _game_over, episode_end) = REPLY_STRUCT.unpack_from(
                self._frames.record_bytes, slot * _RECORD_SIZE)
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
            frames = self._frames
            if self._members[slot] is Member.RECORDED:
                frames.flush_all()
            if self._members[slot] is Member.SENT:
                if timeout is None:  # until it would: the group's timeout still applies
                    self._await(slot)
                else:
                    frames.await_reply(slot, timeout, hung_after=False)
            frames.busy = False
            self._apply_failures()
            return self._members[slot] in (Member.READY, Member.LOST, Member.CLOSED)

    def fileno(self, slot: int) -> int:
        """The pipe of member ``slot``'s process (pending commands are sent first)."""
        with self._lock:
            self._enter(slot)
            self._frames.flush_all()
            self._after_io(slot)
            return self._pool.conns[self._frames.process[slot]].fileno()

    def close_member(self, slot: int, reason: str = "close() was called") -> None:
        """Close member ``slot``: its process stops with its last open member, the block
        with the group's last. Closing twice, or a failed member, is harmless."""
        with self._lock:
            self._check_process()
            state = self._members[slot]
            if state is Member.CLOSED:
                self._errors[slot] = None  # closing a failed Worker needs no error
                return
            self._members[slot] = Member.CLOSED
            self._closed_reasons[slot] = reason
            if self._state is GroupState.OPEN:
                # Nothing started. An open group with no open member takes no new ones.
                if all(m is Member.CLOSED for m in self._members):
                    self._state = GroupState.CLOSED
                return
            if self._state is GroupState.CLOSED:
                return
            self._frames.leave(slot, state)
            self._apply_failures()  # closes the group once no process is left

    def close(self) -> None:
        """Close every member (their processes stop; the block is released)."""
        with self._lock:
            self._check_process()
            for slot in range(self.num_members):
                self.close_member(slot)
            if self._state is GroupState.OPEN:
                self._state = GroupState.CLOSED

    # ----------------------------------------------------------------- checks
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
        first recovering from one that Ctrl-C cut short."""
        self._start_for(slot)
        frames = self._frames
        if frames.busy:
            frames.recover()
            self._apply_failures()
            self.check_open(slot)  # recovering may have found its process dead
        frames.busy = True

    def _after_io(self, slot: int) -> None:
        """After a completed step of I/O: close the members of any process that failed in
        it, and raise if member ``slot`` was one of them."""
        self._frames.busy = False
        self._apply_failures()
        self.check_open(slot)

    def _prepare_send(self, slot: int) -> None:
        """The checks before recording a command outside the hot path: closed, forked, not
        started, a call cut short by Ctrl-C, or an earlier command still outstanding."""
        self._enter(slot)
        if self._members[slot] in (Member.RECORDED, Member.SENT):
            # One command at a time per Worker, as the reference's trainers use one: the
            # earlier command runs, and its reply is dropped, not returned for this one.
            self._await(slot)
            self._after_io(slot)

    def _prepare_recv(self, slot: int) -> None:
        """Make member ``slot``'s reply READY outside the hot path: send whatever else was
        recorded (it runs while this one is awaited), then wait for this one."""
        self._enter(slot)
        state = self._members[slot]
        if state is Member.IDLE:
            self._frames.busy = False
            raise RuntimeError("recv() called with no command pending; send() one first")
        if state is Member.LOST:
            self._members[slot] = Member.IDLE
            self._frames.busy = False
            raise ShmenvError("the reply to the command interrupted by Ctrl-C was "
                              "discarded; send() a new command")
        self._frames.flush_all()
        self._await(slot)
        self._after_io(slot)

    def _await(self, slot: int) -> None:
        """Send member ``slot``'s command if it is only recorded, then wait for its reply
        within the group's timeout (a process that overruns it is killed as hung)."""
        if self._members[slot] is Member.RECORDED:
            self._frames.flush_all()
        self._frames.await_reply(slot, self._timeout, hung_after=self._timeout is not None)

    # ----------------------------------------------------------------- failures
    def _apply_failures(self) -> None:
        """Stop each process the frames found failed and close its members, each to raise
        the process's error once."""
        frames = self._frames
        while frames.failures:
            p, error = frames.failures.pop(0)
            self._pool.stop_worker(p, FAILURE_GRACE_S)
            reason = f"its process failed: {str(error).splitlines()[0]}"
            for slot in range(*frames.ranges[p]):
                if self._members[slot] is not Member.CLOSED:
                    self._members[slot] = Member.CLOSED
                    self._errors[slot] = error
                    self._closed_reasons[slot] = reason
        if not any(frames.alive):
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
        self._stacks = []  # the views of the block: its mapping goes with the last one
        frames = getattr(self, "_frames", None)
        if frames is not None:
            frames.busy = False
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
