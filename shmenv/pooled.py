"""The pool behind drop-in Workers: their envs in one block, stepped by one process per core.

A :class:`WorkerGroup` gathers Workers (its *members*, one env each; see
:mod:`shmenv.pooled_members`) until the first command to any of them, then starts
``min(members, cores)`` worker processes over one shared block, each stepping a contiguous
run of members' envs. Each member keeps the reference's one-command-one-reply protocol; the
group turns those commands into few messages (see :mod:`shmenv.pooled_frames`): ``send``
records a command in its process's next frame, a frame goes out once every open member of
its process has one, or at the first ``recv``/``poll`` of any member (so a Worker used
alone, or a subset, never waits), and one reply makes all the members it covers ready.

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
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from shmenv import pooled_errors
from shmenv.block import BlockLayout, SharedBlock
from shmenv.errors import ClosedError, ShmenvError
from shmenv.planning import check_timeout, spin_budget, split_envs
from shmenv.pool import FailureNotes, WorkerPool, release
from shmenv.pooled_commands import MemberCommands
from shmenv.pooled_frames import GroupFrames
from shmenv.pooled_members import GameConfig, Member, Members, enter_group, leave_group
from shmenv.worker import WorkerSpec


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), the default process count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


class GroupState(enum.Enum):
    OPEN = "open"  # taking members; nothing started
    LAUNCHED = "launched"  # sealed, block created, processes started, not known to be ready
    RUNNING = "running"
    CLOSED = "closed"


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


def _new_pool(block: SharedBlock, config: GameConfig, seeds: list[Any],
              ranges: list[tuple[int, int]], spin_us: float) -> WorkerPool:
    """The pool (not launched yet): each process steps a run of members' envs with the labml
    design's same-step reset (a done returns the fresh reset stack), no final stacks."""
    specs = [WorkerSpec(index=p, block_name=block.name, layout=block.layout, env_start=start,
                        env_stop=stop, game=config.game, seeds=tuple(seeds[start:stop]),
                        options=config.options, same_step_autoreset=True,
                        write_final_obs=False, game_factory=config.game_factory,
                        spin_us=spin_us)
             for p, (start, stop) in enumerate(ranges)]
    describe = functools.partial(pooled_errors.describe_process, tuple(seeds), tuple(ranges))
    return WorkerPool(specs, describe=describe, notes=FailureNotes())


def _check_num_processes(num_processes: int | None) -> None:
    if num_processes is not None and (isinstance(num_processes, bool)
                                      or not isinstance(num_processes, (int, np.integer))
                                      or num_processes < 1):
        raise ValueError(f"num_processes must be an int >= 1 or None, got {num_processes!r}")


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
    _commands: MemberCommands
    _block: SharedBlock

    def __init__(self, num_processes: int | None = None, *, context: str | None = None,
                 worker_spin_us: float | None = None, timeout: float | None = None) -> None:
        _check_num_processes(num_processes)
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
        self._members = Members()
        self.seeds = self._members.seeds  # one per member, in member order

    # ----------------------------------------------------------------- membership
    @property
    def num_members(self) -> int:
        return len(self._members)

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
            if self._config is not None:
                self._config.check_joins(config)
            self._config = self._config or config
            return self._members.add(seed)

    def __enter__(self) -> WorkerGroup:
        enter_group(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        leave_group(self)
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
                self._members.reported(slot)
                raise
            if not hasattr(self, "_commands"):  # it failed to start before any process ran
                self.check_open(slot)
            return self._pool.processes[self._commands.process_of(slot)]

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
        count = self.num_members
        ranges = split_envs(count, min(count, self._max_processes or usable_cores()))
        try:
            self._block = SharedBlock.create(BlockLayout(count, self._config.options.obs_shape))
            self._pool = _new_pool(self._block, self._config, self.seeds, ranges,
                                   spin_budget(self._spin_us, len(ranges)))
            # Detached in a forked child (see WorkerPool.forked_away): its exit leaves the
            # parent's pool running.
            self._finalizer = self._pool.finalize(self, _release_all, self._pool.conns,
                                                  self._pool.processes, [self._block])
            self._pool.launch(self._context, name="shmenv-Workers-{index}")
            frames = GroupFrames(self._pool, ranges, self._members.states)
            self._commands = MemberCommands(self._pool, frames, self._members,
                                            list(self._block.obs), self._timeout)
        except BaseException as exc:
            self._fail_all(exc)
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
            self._fail_all(exc)
            raise
        self._block.unlink()  # every process has mapped it: nothing can leak from here on
        self._state = GroupState.RUNNING
        self._commands.stop_idle()  # processes whose Workers were all closed before this

    def num_actions_for(self, slot: int) -> int:
        """The game's number of actions, to check member ``slot``'s step action with
        (starts the group if needed)."""
        with self._lock:
            self._start_for(slot)
            return self._num_actions

    # ----------------------------------------------------------------- member commands
    # Each starts the group if needed and runs on its MemberCommands (the hot path is
    # there); a call that finds no process left closes the group.
    def send(self, slot: int, is_reset: bool, action: int) -> None:
        """Record member ``slot``'s command: a reset, or a step with ``action`` (checked by
        the caller against :meth:`num_actions_for`)."""
        with self._lock:
            if self._state is not GroupState.RUNNING:
                self._start_for(slot)
            try:
                self._commands.send(slot, is_reset, action)
            finally:
                if self._commands.stopped:
                    self._close_group()

    def recv(self, slot: int) -> Any:
        """Member ``slot``'s reply: the stack after a reset, else (stack, reward, done, info)."""
        with self._lock:
            if self._state is not GroupState.RUNNING:
                self._start_for(slot)
            try:
                return self._commands.recv(slot)
            finally:
                if self._commands.stopped:
                    self._close_group()

    def poll(self, slot: int, timeout: float | None) -> bool:
        """Whether member ``slot``'s ``recv()`` would return without waiting, waiting up to
        ``timeout`` seconds (None: until it would; the group's timeout still applies)."""
        return self._call(slot, MemberCommands.poll, timeout)

    def fileno(self, slot: int) -> int:
        """The pipe of member ``slot``'s process (pending commands are sent first)."""
        return self._call(slot, MemberCommands.fileno)

    def _call(self, slot: int, command: Callable[..., Any], *args: Any) -> Any:
        """``command(commands, slot, *args)`` on the started group (send and recv inline
        this: they are the hot path)."""
        with self._lock:
            self._start_for(slot)
            try:
                return command(self._commands, slot, *args)
            finally:
                if self._commands.stopped:
                    self._close_group()

    def close_member(self, slot: int, reason: str = "close() was called") -> None:
        """Close member ``slot``: its process stops with its last open member, the block
        with the group's last. Closing twice, or a failed member, is harmless."""
        with self._lock:
            self._check_process()
            state = self._members.close(slot, reason)
            if state is Member.CLOSED or self._state is GroupState.CLOSED:
                return
            if self._state is GroupState.OPEN:
                # Nothing started. An open group with no open member takes no new ones.
                if self._members.all_closed():
                    self._state = GroupState.CLOSED
                return
            if not hasattr(self, "_commands"):  # launching: the frames count it closed
                return
            self._commands.leave(slot, state)
            if self._commands.stopped:
                self._close_group()

    def close(self) -> None:
        """Close every member (their processes stop; the block is released)."""
        with self._lock:
            self._check_process()
            for slot in range(self.num_members):
                self.close_member(slot)
            if self._state is GroupState.OPEN:
                self._state = GroupState.CLOSED

    # ----------------------------------------------------------------- checks, failures
    def check_open(self, slot: int) -> None:
        """Raise what a call on member ``slot`` must raise if it is closed or failed."""
        self._members.check_open(slot)

    def _check_process(self) -> None:
        if os.getpid() != self._creator:
            raise pooled_errors.forked(self._creator)

    def _start_for(self, slot: int) -> None:
        """Raise if member ``slot`` is closed or failed; start the group if needed."""
        self._check_process()
        self._members.check_open(slot)
        try:
            self._ensure_running()
        except BaseException:
            self._members.reported(slot)  # the caller gets the error now, not again later
            raise

    def _fail_all(self, error: BaseException) -> None:
        """A start-up failure: release everything; every member raises ``error`` once."""
        why = "it failed to start"
        if not isinstance(error, Exception):  # Ctrl-C: the caller gets it, members ClosedError
            error = ClosedError(f"the Workers' start-up was interrupted ({why})")
        self._members.fail(range(self.num_members), error, why)
        self._close_group()

    def _close_group(self) -> None:
        self._state = GroupState.CLOSED
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
        elif hasattr(self, "_block"):  # it failed between creating the block and the pool
            self._block.close()
