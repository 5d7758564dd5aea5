"""The drop-in group's pipes: each pool process's next frame, its frames in flight, their replies.

A pool process steps the envs of several Workers (the group's *members*). It gets
:data:`~shmenv.protocol.OP_EACH` frames, one code per env of its range (an action, a reset
or a skip), and answers each with one reply of records for its whole range:

* :meth:`GroupFrames.record` puts a member's code in its process's next frame; once every
  open member of the group has one (the tutorial's send-to-all loop), all of them go as
  one relayed frame to process 0 (:mod:`shmenv.pooled_relay`), or, where the group cannot
  relay, each process's frame goes as soon as its own members all have one;
  :meth:`GroupFrames.flush_all` sends the others (the group calls it at the first
  ``recv``/``poll`` of any member);
* :meth:`GroupFrames.await_reply` reads a process's replies in order until a member's own
  was read; every member a reply covers becomes READY, so its ``recv`` needs no I/O.

Nothing here raises for a failed process: the failure is queued in
:attr:`GroupFrames.failures` (with an error naming the process and its Workers) for the
group to close that process's members with.
"""

from __future__ import annotations

import collections
import math
import select
import time

import numpy as np

from shmenv import pooled_errors
from shmenv.pool import RESYNC_TIMEOUT_S, SHUTDOWN_TIMEOUT_S, WorkerPool, resynchronize
from shmenv.pooled_members import Member
from shmenv.pooled_relay import GroupRelay
from shmenv.protocol import EACH_SKIP, OP_EACH, REPLY_DTYPE
from shmenv.wire import header_as_int32


class GroupFrames(GroupRelay):
    """The frames of one launched group, per pool process, and the replies' record array.

    ``members`` is the group's list of member states, shared: frames move members from
    RECORDED to SENT to READY (or LOST); the group moves them to and from IDLE and CLOSED.
    ``progress``: the block's per-process progress rows, which a relaying group needs.
    """

    def __init__(self, pool: WorkerPool, ranges: list[tuple[int, int]],
                 members: list[Member], progress: np.ndarray | None = None) -> None:
        self.pool = pool
        self.ranges = ranges
        self.members = members
        # Per member: its process and its env's index in that process's range.
        self.process = [p for p, (start, stop) in enumerate(ranges) for _ in range(start, stop)]
        self.local = [slot - ranges[p][0] for slot, p in enumerate(self.process)]
        # Per process.
        self.open_members = [sum(members[slot] is not Member.CLOSED
                                 for slot in range(start, stop)) for start, stop in ranges]
        self.pending: list[list[int]] = [[] for _ in ranges]  # members in the next frame
        self.in_flight: list[collections.deque[list[int]]] = [
            collections.deque() for _ in ranges]  # members covered by each frame sent
        self.alive = [True] * len(ranges)
        self.failures: list[tuple[int, BaseException]] = []  # for the group to apply
        self.lost_why: dict[int, str] = {}  # why a LOST member's reply is gone, if not Ctrl-C
        # An operation on the pipes sets this first and clears it when it completed: if it
        # is still set at the next one, Ctrl-C cut that short (see recover).
        self.busy = False
        # Each process's next frame: [pipe header, OP_EACH, one code per env of its range].
        frames = []
        for start, stop in ranges:
            frame = np.full(2 + stop - start, EACH_SKIP, dtype=np.int32)
            frame[:2] = header_as_int32(4 * (1 + stop - start)), OP_EACH
            frames.append(frame)
        self._frame_bytes = [frame.data.cast("B") for frame in frames]
        self.codes = [frame[2:] for frame in frames]
        # Replies are read straight into one record array; a skipped env's record in a
        # reply repeats its last one, so a reply never changes a record waiting for recv().
        self.records = np.zeros(len(members), dtype=REPLY_DTYPE)
        self.record_bytes = self.records.data.cast("B")
        size = REPLY_DTYPE.itemsize
        self._reply_views = [self.record_bytes[size * start:size * stop]
                             for start, stop in ranges]
        # One poll object per pipe, made once. Why: ``Connection.poll`` builds a selector
        # per call, ~20 Python calls per wait of the hot path.
        self._pollers: list[select.poll] = []
        for conn in pool.conns:
            poller = select.poll()
            poller.register(conn.fileno(), select.POLLIN)
            self._pollers.append(poller)
        self.init_relay(progress)

    # ----------------------------------------------------------------- sending
    def record(self, slot: int, code: int) -> None:
        """Put member ``slot``'s command in its process's next frame; send the frame if
        every open member of that process has one now."""
        p = self.process[slot]
        self.codes[p][self.local[slot]] = code
        self.members[slot] = Member.RECORDED
        pending = self.pending[p]
        pending.append(slot)
        if len(pending) == self.open_members[p]:
            self.complete(p)

    def complete(self, p: int) -> None:
        """Process ``p``'s frame has every open member's command: send it, or hold it until
        every process's frame is complete and send them all as one relayed frame."""
        if not self.can_relay():
            self.flush(p)
        elif all(len(pending) == count
                 for pending, count in zip(self.pending, self.open_members)):
            self.flush_relayed()

    def flush(self, p: int) -> None:
        """Send process ``p`` its recorded commands, one frame."""
        sent = self.pending[p]
        self.pending[p] = []
        ok = self.pool.try_send_frame(p, self._frame_bytes[p])
        self.codes[p][:] = EACH_SKIP
        if not ok:
            self.fail(p, pooled_errors.died(self.pool, p, "before a command"))
            return
        for slot in sent:
            self.members[slot] = Member.SENT
        self.in_flight[p].append(sent)

    def flush_all(self) -> None:
        """Send every recorded command, so that all of them run while one is waited for."""
        for p, pending in enumerate(self.pending):
            if pending and self.alive[p]:
                self.flush(p)

    # ----------------------------------------------------------------- receiving
    def await_reply(self, slot: int, limit: float | None, hung_after: bool) -> None:
        """Read the replies of member ``slot``'s process until its own was read, ``limit``
        seconds passed (None: no limit) or the process failed. ``hung_after``: a process
        that overruns ``limit`` is killed as hung (the group's timeout; not a ``poll``'s)."""
        deadline = None if limit is None else time.monotonic() + limit
        while self.members[slot] is Member.SENT and self.alive[self.process[slot]]:
            p = self.reply_process(slot)
            wait_ms = (-1 if deadline is None
                       else math.ceil(max(deadline - time.monotonic(), 0.0) * 1000))
            # Waiting is not "busy": a Ctrl-C here leaves the reply in the pipe for the
            # next call to read, as the reference's would.
            self.busy = False
            ready = self._pollers[p].poll(wait_ms)
            self.busy = True
            if not ready:
                if hung_after and self.relayed is not None:
                    self.relay_timed_out(limit or 0.0)
                    # Its command may have been sent again to its own process: wait anew.
                    deadline = None if limit is None else time.monotonic() + limit
                    continue
                if hung_after:
                    self.pool.processes[p].kill()  # SIGKILL also ends a stopped process
                    self.fail(p, pooled_errors.hung(self.pool, p, limit or 0.0))
                return
            self.read_reply(p)

    def read_reply(self, p: int) -> None:
        """Read process ``p``'s oldest unread reply; the members it covers become READY."""
        if self.relayed is not None:  # then it is process 0's answer for every process
            self.read_relayed()
            return
        try:
            error_reply = self.pool.read_reply_from(p, self._reply_views[p])
        except (EOFError, OSError):
            self.fail(p, pooled_errors.died(self.pool, p, "while running a command"))
            return
        covered = self.in_flight[p].popleft()
        if error_reply is not None:
            self.fail(p, pooled_errors.raised(self.pool, p, error_reply))
            return
        for slot in covered:
            if self.members[slot] is Member.SENT:
                self.members[slot] = Member.READY

    # ----------------------------------------------------------------- members leaving
    def leave(self, slot: int, state: Member) -> None:
        """Member ``slot`` (in ``state`` until now) was closed: the others of its process
        no longer wait for its command, and the process stops with its last open member."""
        p = self.process[slot]
        if state is Member.RECORDED:
            self.codes[p][self.local[slot]] = EACH_SKIP
            self.pending[p].remove(slot)
        self.open_members[p] -= 1
        if not self.alive[p]:
            return
        if self.open_members[p] == 0:
            if self.relayed is not None:  # its part of the relayed frame must be read first
                self.await_relayed()
            if self.alive[p]:
                self.alive[p] = False
                self.pool.stop_worker(p)
            self.flush_held()  # frames held for a relayed frame, which cannot go now
        elif self.pending[p] and len(self.pending[p]) == self.open_members[p]:
            self.complete(p)  # the others of its process were waiting for this one

    def await_relayed(self) -> None:
        """Wait for the relayed frame's answer (at most SHUTDOWN_TIMEOUT_S: then the
        processes holding it up are failed as hung)."""
        if self._pollers[0].poll(math.ceil(SHUTDOWN_TIMEOUT_S * 1000)):
            self.read_relayed()
        else:
            self.relay_timed_out(SHUTDOWN_TIMEOUT_S)

    def flush_held(self) -> None:
        """Send the complete frames held back for a relayed frame, once none can go."""
        if self.can_relay():
            return
        for p, pending in enumerate(self.pending):
            if pending and self.alive[p] and len(pending) == self.open_members[p]:
                self.flush(p)

    def stop_idle(self) -> None:
        """At start-up: stop the processes whose Workers were all closed before it."""
        for p, count in enumerate(self.open_members):
            if count == 0:
                self.alive[p] = False
                self.pool.stop_worker(p)

    def fail(self, p: int, error: BaseException) -> None:
        """Process ``p`` failed: forget its frames and queue ``error`` for the group."""
        if not self.alive[p]:
            return
        self.alive[p] = False
        self.in_flight[p].clear()
        self.pending[p] = []
        self.open_members[p] = 0
        self.failures.append((p, error))

    def recover(self) -> None:
        """After Ctrl-C cut an operation short: bring every process's pipe back to a
        message boundary (discarding unread replies) and mark the members whose replies
        were lost; their recv() says so."""
        self.relayed = None  # process 0 is resynchronized first: it finishes the relay
        for p in range(len(self.ranges)):
            if not self.alive[p]:
                continue
            self.codes[p][:] = EACH_SKIP
            self.pending[p] = []
            self.in_flight[p].clear()
            try:
                resynchronize(self.pool.conns[p], RESYNC_TIMEOUT_S)
            except (EOFError, OSError):
                self.fail(p, pooled_errors.died(self.pool, p, "after an interrupted call"))
            except TimeoutError:
                self.fail(p, pooled_errors.hung_after_interrupt(self.pool, p))
        for slot, state in enumerate(self.members):
            if state in (Member.RECORDED, Member.SENT):
                self.members[slot] = Member.LOST
        self.busy = False
