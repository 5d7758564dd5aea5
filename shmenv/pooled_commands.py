"""The drop-in Workers' commands on a started group: send, recv and poll, hot path first.

:class:`MemberCommands` speaks the reference's one-command-one-reply protocol per member over
the group's frames (:mod:`shmenv.pooled_frames`): it checks each call, recovers the pipes
after a call that Ctrl-C cut short, and closes the members of a process that failed, each to
raise the process's error once. The group (:mod:`shmenv.pooled`) starts it, holds the lock
around every call, and closes the block once :attr:`MemberCommands.stopped`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from shmenv import pooled_errors
from shmenv.errors import ShmenvError
from shmenv.pool import FAILURE_GRACE_S, WorkerPool
from shmenv.pooled_frames import GroupFrames
from shmenv.pooled_members import Member, Members
from shmenv.protocol import EACH_RESET, REPLY_DTYPE, record_struct

_RECORD_SIZE = REPLY_DTYPE.itemsize
# The fields of a record the reference's reply needs, and no others. Why: unpacking the
# whole record makes 12 objects per Worker per step where the reply uses 5.
_MEMBER_REPLY = record_struct("reward", "episode_return", "episode_length", "done",
                              "episode_end")


class MemberCommands:
    """Member commands of one started group (``stacks``: each member's view of the block)."""

    def __init__(self, pool: WorkerPool, frames: GroupFrames, members: Members,
                 stacks: list[np.ndarray], timeout: float | None) -> None:
        self._pool = pool
        self._frames = frames
        self._members = members
        self._states = members.states  # the hot path's view of the table
        self._stacks = stacks
        self._timeout = timeout
        self._creator = os.getpid()
        self.stopped = False  # no process is left: the group closes

    # ----------------------------------------------------------------- the hot path
    # The reference's loop sends to every member, then receives from every member. There,
    # send and recv skip the checks (no fork, no call cut short, the member where that loop
    # leaves it); any other case, and every error, goes through _prepare_send or
    # _prepare_recv first. Each check skipped is ~1 µs of the main's CPU per Worker per
    # step, and the main's CPU bounds the step rate (see docs/migration.md).
    def send(self, slot: int, is_reset: bool, action: int) -> None:
        """Record member ``slot``'s command: a reset, or a step with ``action`` (checked by
        the caller against the game's number of actions)."""
        frames = self._frames
        if self._pool.forked or frames.busy or self._states[slot] is not Member.IDLE:
            self._prepare_send(slot)
        frames.busy = True
        self._members.is_reset[slot] = is_reset
        frames.record(slot, EACH_RESET if is_reset else action)
        frames.busy = False
        if frames.failures:  # the frame it completed found its process dead
            self._apply_failures()
            self._members.check_open(slot)

    def recv(self, slot: int) -> Any:
        """Member ``slot``'s reply: the stack after a reset, else (stack, reward, done, info)."""
        frames = self._frames
        if (self._pool.forked or frames.busy or self._states[slot] is not Member.READY
                or any(frames.pending)):
            self._prepare_recv(slot)
        self._states[slot] = Member.IDLE
        stack = self._stacks[slot].copy()  # one copy out of the block: the caller's
        if self._members.is_reset[slot]:
            return stack
        reward, episode_return, episode_length, done, episode_end = _MEMBER_REPLY.unpack_from(
            frames.record_bytes, slot * _RECORD_SIZE)
        # The episode's statistics come with the record that ends it (every done under
        # the labml rules; only a game's end when a lost life lets the game go on).
        if episode_end:
            return stack, reward, done != 0, {"reward": episode_return,
                                              "length": episode_length}
        return stack, reward, done != 0, None

    # ----------------------------------------------------------------- the other calls
    def poll(self, slot: int, timeout: float | None) -> bool:
        """Whether member ``slot``'s ``recv()`` would return without waiting, waiting up to
        ``timeout`` seconds (None: until it would; the group's timeout still applies)."""
        self._enter(slot)
        if self._states[slot] in (Member.RECORDED, Member.SENT):
            if timeout is None:
                self._await(slot)
            else:
                self._frames.flush_all()
                self._frames.await_reply(slot, timeout, hung_after=False)
        self._frames.busy = False
        self._apply_failures()
        return self._states[slot] in (Member.READY, Member.LOST, Member.CLOSED)

    def fileno(self, slot: int) -> int:
        """The pipe of member ``slot``'s process (pending commands are sent first)."""
        self._enter(slot)
        self._frames.flush_all()
        self._after_io(slot)
        return self._pool.conns[self._frames.reply_process(slot)].fileno()

    def process_of(self, slot: int) -> int:
        """The index of the pool process serving member ``slot``."""
        return self._frames.process[slot]

    def stop_idle(self) -> None:
        """At start-up: stop the processes whose Workers were all closed before it."""
        self._frames.stop_idle()

    def leave(self, slot: int, state: Member) -> None:
        """Member ``slot`` (in ``state`` until now) was closed: see GroupFrames.leave."""
        self._frames.leave(slot, state)
        self._apply_failures()

    # ----------------------------------------------------------------- checks
    def _enter(self, slot: int) -> None:
        """Start an operation of member ``slot`` on the pipes, first recovering from one
        that Ctrl-C cut short. Raises if it is closed or failed, or called from a fork."""
        if self._pool.forked:  # set in a forked child by the pool's fork hook
            raise pooled_errors.forked(self._creator)
        self._members.check_open(slot)
        if self._frames.busy:
            self._frames.recover()
            self._apply_failures()
            self._members.check_open(slot)  # recovering may have found its process dead
        self._frames.busy = True

    def _after_io(self, slot: int) -> None:
        """After a completed step of I/O: close the members of any process that failed in
        it, and raise if member ``slot`` was one of them."""
        self._frames.busy = False
        self._apply_failures()
        self._members.check_open(slot)

    def _prepare_send(self, slot: int) -> None:
        """The checks before recording a command outside the hot path: forked, closed, a
        call cut short by Ctrl-C, or an earlier command still outstanding."""
        self._enter(slot)
        if self._states[slot] in (Member.RECORDED, Member.SENT):
            # One command at a time per Worker, as the reference's trainers use one: the
            # earlier command runs, and its reply is dropped, not returned for this one.
            self._await(slot)
            self._after_io(slot)

    def _prepare_recv(self, slot: int) -> None:
        """Make member ``slot``'s reply READY outside the hot path: send whatever else was
        recorded (it runs while this one is awaited), then wait for this one."""
        self._enter(slot)
        state = self._states[slot]
        if state is Member.IDLE:
            self._frames.busy = False
            raise RuntimeError("recv() called with no command pending; send() one first")
        if state is Member.LOST:
            self._states[slot] = Member.IDLE
            self._frames.busy = False
            raise ShmenvError(self._frames.lost_why.pop(
                slot, "the reply to the command interrupted by Ctrl-C was discarded; "
                      "send() a new command"))
        self._frames.flush_all()
        self._await(slot)
        self._after_io(slot)

    def _await(self, slot: int) -> None:
        """Send member ``slot``'s command if it is only recorded, then wait for its reply
        within the group's timeout (a process that overruns it is killed as hung)."""
        if self._states[slot] is Member.RECORDED:
            self._frames.flush_all()
        self._frames.await_reply(slot, self._timeout, hung_after=self._timeout is not None)

    # ----------------------------------------------------------------- failures
    def _apply_failures(self) -> None:
        """Stop each process the frames found failed and close its members, each to raise
        the process's error once; :attr:`stopped` once no process is left."""
        frames = self._frames
        while frames.failures:
            p, error = frames.failures.pop(0)
            self._pool.stop_worker(p, FAILURE_GRACE_S)
            self._members.fail(range(*frames.ranges[p]), error, "its process failed")
        if not any(frames.alive):
            self.stopped = True
            frames.busy = False
            self._stacks = []  # the views of the block: its mapping goes with the last one
