"""The pool behind drop-in Workers: their envs in one block, stepped by one process per core.

A :class:`WorkerGroup` gathers Workers (its *members*, one env each; see
:mod:`shmenv.pooled_members`) until the first command to any of them, then starts
``min(members, cores)`` worker processes over one shared block, each stepping a contiguous
run of members' envs. Each member keeps the reference's one-command-one-reply protocol; the
group turns those commands into few messages (see :mod:`shmenv.pooled_frames`): ``send``
records a command; once every open member has one, all go as one frame relayed by process 0
to the others (:mod:`shmenv.pooled_relay`); otherwise a process's frame goes at the first
``recv``/``poll`` of any member (so a Worker used alone, or a subset, never waits), and one
reply makes all the members it covers ready.

Why: each message that wakes a process costs the main process ~20 µs of CPU on this VM;
one per Worker per step was the largest cost of 8 Workers on 2 cores, and a wake-up per
process still cost the step rate a few percent against one for the group (docs/migration.md).

Failures are per process, as in the reference they are per Worker: a process that dies or
whose game raises stops alone, and each of its members raises the error (naming every
member it served, with their seeds and the pid; see :mod:`shmenv.pooled_errors`) once,
then ``ClosedError``. Members of the other processes keep running. See docs/migration.md.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from shmenv.errors import ShmenvError
from shmenv.planning import DEFAULT_RELAY_FANOUT, check_relay_fanout, check_timeout, spin_budget
from shmenv.pooled_commands import MemberCommands
from shmenv.pooled_members import GameConfig, Member, Members
from shmenv.pooled_start import GroupStart, GroupState

# Set by ``with WorkerGroup(...)``: Workers created inside join that group (per thread).
_current = threading.local()


def current_group() -> WorkerGroup | None:
    """The group of the innermost ``with WorkerGroup(...)`` block in this thread, if any."""
    stack = getattr(_current, "stack", None)
    return stack[-1] if stack else None


def enter_group(group: WorkerGroup) -> None:
    """``with group:`` starts: Workers created in this thread join ``group``."""
    stack = getattr(_current, "stack", None)
    if stack is None:
        stack = _current.stack = []
    stack.append(group)


def leave_group(group: WorkerGroup) -> None:
    _current.stack.remove(group)


def drop_member(group: WorkerGroup, slot: int) -> None:
    """A member's finalizer: close it when its pipe is garbage-collected (not in a fork,
    where the parent's pool must keep running)."""
    if os.getpid() == group._creator:
        group.close_member(slot, "the Worker was garbage-collected")


def _check_num_processes(num_processes: int | None) -> None:
    if num_processes is not None and (isinstance(num_processes, bool)
                                      or not isinstance(num_processes, (int, np.integer))
                                      or num_processes < 1):
        raise ValueError(f"num_processes must be an int >= 1 or None, got {num_processes!r}")


class WorkerGroup(GroupStart):
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

    Once every member has a command (the reference's send-to-all loop), the commands go as
    one message to process 0, which passes each other process its part and answers for all:
    the trainer writes one message and reads one per step, whatever the process count (up
    to ``1 + relay_fanout`` processes; larger groups get a message per process).

    ``num_processes``: at most this many processes (default: the usable cores,
    ``len(os.sched_getaffinity(0))``); the group runs ``min(members, num_processes)``.
    ``context``: the multiprocessing start method (default: the platform's).
    ``worker_spin_us``: see :class:`shmenv.ShmVectorEnv`.
    ``relay_fanout``: how many other processes process 0 relays to (default 8); a group of
    more processes than ``1 + relay_fanout``, or ``relay_fanout=0``, sends a message per
    process instead.
    ``timeout`` (seconds; default None, no limit): a member's ``recv()`` that waits longer
    for its process kills that process and raises :class:`shmenv.WorkerTimeoutError`
    naming it and its Workers, each of which raises it once, as for a dead process.
    """

    def __init__(self, num_processes: int | None = None, *, context: str | None = None,
                 worker_spin_us: float | None = None, timeout: float | None = None,
                 relay_fanout: int = DEFAULT_RELAY_FANOUT) -> None:
        _check_num_processes(num_processes)
        self._relay_fanout = check_relay_fanout(relay_fanout)
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

    def _start_for(self, slot: int) -> None:
        """Raise if member ``slot`` is closed or failed; start the group if needed."""
        self._check_process()
        self._members.check_open(slot)
        try:
            self._ensure_running()
        except BaseException:
            self._members.reported(slot)  # the caller gets the error now, not again later
            raise
