"""The drop-in group's relayed frames: one frame to process 0 carries every process's commands.

When every open Worker of the group has a command recorded (the reference's send-to-all
loop), :class:`GroupRelay` sends one :data:`~shmenv.protocol.OP_EACH` frame with
:data:`~shmenv.protocol.RELAY` to process 0, which forwards each other process its part
(:class:`shmenv.worker.Relay`), steps its own envs, reads the others' replies and answers
for all of them. Why: the main then writes one frame, sleeps once and reads one reply per
step, as ``shmenv.make`` does; with a frame per process it wakes once per process, and on
this VM each wake-up is tens of µs on the step's critical path (docs/migration.md has the
figures: a few percent of the step rate). The tree is one level deep: process 0 relays to at most
the group's ``relay_fanout`` others (default 8); larger groups, and ``relay_fanout=0``,
send a frame per process.

Failures stay per process, as the reference's stay per Worker:

* a process that raises or dies in a relayed step is named in process 0's answer
  (:class:`~shmenv.protocol.RelayedParts`); the other processes' replies in it are good;
* if process 0 itself dies or hangs, each other process's reply is salvaged from its own
  pipe (:meth:`GroupRelay.salvage`): read if it is still there, re-sent directly if the
  process never got its command, and only if process 0 read it before dying is it lost
  (its Workers' ``recv()`` says so; their next command runs as usual).

Once any process has stopped, the group sends a frame per process, as before.
"""

from __future__ import annotations

import math
import secrets
import select
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection

import numpy as np

from shmenv import pooled_errors
from shmenv.block import RECEIVED
from shmenv.planning import DEFAULT_RELAY_FANOUT
from shmenv.pool import FAILURE_GRACE_S, RESYNC_TIMEOUT_S, WorkerPool
from shmenv.pooled_members import Member
from shmenv.protocol import (
    EACH_SKIP,
    OP_EACH,
    RELAY,
    REPLY_DTYPE,
    ErrorReport,
    RelayedParts,
    sync_command,
    sync_marker,
)
from shmenv.wire import header_as_int32

_LOST_WITH_PROCESS_0 = ("the reply to this Worker's command was lost: {root} relayed it and "
                        "failed after reading it (the command ran); send() a new command")


def relay_children(ranges: list[tuple[int, int]],
                   fanout: int = DEFAULT_RELAY_FANOUT) -> tuple[tuple[int, int, int], ...]:
    """Process 0's relay children, ``(process, first env, env stop)`` each: every other
    process, if there are 1 to ``fanout`` of them; none otherwise (a frame per process)."""
    if not 2 <= len(ranges) <= 1 + fanout:
        return ()
    return tuple((p, start, stop) for p, (start, stop) in enumerate(ranges) if p)


def capture_reply(conn: Connection, timeout: float) -> bytes | None:
    """The message a worker sent before it answered a sync request sent now, if any.

    Why: after process 0 failed during a relayed step, another process's reply to it may be
    in that process's pipe, unread. The sync request runs after any command the process got,
    so whatever it sent before the sync answer is its reply to that command. Raises
    ``EOFError`` if the process is gone and ``TimeoutError`` if it does not answer in time.
    """
    command = sync_command(secrets.randbits(31))
    marker = sync_marker(command)
    conn.send_bytes(command.tobytes())
    deadline = time.monotonic() + timeout
    reply = None
    while True:
        if not conn.poll(max(deadline - time.monotonic(), 0)):
            raise TimeoutError(f"no answer to a sync request within {timeout:.0f} s")
        message = conn.recv_bytes()
        if message == marker:
            return reply
        reply = message


class GroupRelay:
    """Relayed frames for :class:`shmenv.pooled_frames.GroupFrames` (its base; it reads the
    frames' per-process state: ``ranges``, ``codes``, ``pending``, ``alive``, ...)."""

    pool: WorkerPool
    ranges: list[tuple[int, int]]
    members: list[Member]
    process: list[int]
    codes: list[np.ndarray]
    pending: list[list[int]]
    in_flight: list
    alive: list[bool]
    record_bytes: memoryview
    _pollers: list[select.poll]
    lost_why: dict[int, str]
    fail: Callable[[int, BaseException], None]
    flush: Callable[[int], None]

    def init_relay(self, progress: np.ndarray | None) -> None:
        """``progress``: the block's per-process progress rows (None: no relay)."""
        self.relay = bool(self.pool.specs[0].relay_children) and progress is not None
        self._progress = progress
        self.relayed: list[int] | None = None  # the members of the relayed frame in flight
        self.relayed_frames = 0  # relayed frames sent: what each process's RECEIVED reaches
        total = self.ranges[-1][1]
        self._relay_frame = np.full(2 + total, EACH_SKIP, dtype=np.int32)
        self._relay_frame[:2] = header_as_int32(4 * (1 + total)), OP_EACH | RELAY
        self._relay_bytes = self._relay_frame.data.cast("B")

    def can_relay(self) -> bool:
        """Whether the next frames may go as one relayed frame: every process runs, and
        none has a frame in flight (its reply would be read by process 0 as the new one's)."""
        return self.relay and all(self.alive) and not any(self.in_flight)

    def reply_process(self, slot: int) -> int:
        """The process whose pipe carries member ``slot``'s next reply."""
        return 0 if self.relayed is not None else self.process[slot]

    def flush_relayed(self) -> None:
        """Send every process's recorded commands as one relayed frame to process 0."""
        codes = self._relay_frame[2:]
        for p, (start, stop) in enumerate(self.ranges):
            codes[start:stop] = self.codes[p]
        if not self.pool.try_send_frame(0, self._relay_bytes):
            self.fail(0, pooled_errors.died(self.pool, 0, "before a command"))
            for p in range(1, len(self.ranges)):  # the others' commands go to them directly
                self.flush(p)
            return
        sent = []
        for p, pending in enumerate(self.pending):
            self.codes[p][:] = EACH_SKIP
            sent += pending
            self.pending[p] = []
        for slot in sent:
            self.members[slot] = Member.SENT
        self.relayed = sent
        self.relayed_frames += 1

    def read_relayed(self) -> None:
        """Read process 0's answer to the relayed frame; each part's members become READY,
        or their process is failed with its own error."""
        covered, self.relayed = self.relayed or [], None
        try:
            error_reply = self.pool.read_reply_from(0, self.record_bytes)
        except (EOFError, OSError):
            self.relay_root_failed(
                pooled_errors.died(self.pool, 0, "while running a command"), covered)
            return
        if error_reply is None:  # every process's records are in
            for slot in covered:
                if self.members[slot] is Member.SENT:
                    self.members[slot] = Member.READY
            return
        parts = RelayedParts.decode(error_reply)
        if parts is None:  # not process 0's answer for its parts: nothing in it can be trusted
            self.relay_root_failed(pooled_errors.raised(self.pool, 0, error_reply), covered)
            return
        size = REPLY_DTYPE.itemsize
        good = []
        for p, (start, stop) in enumerate(self.ranges):
            report = parts.errors.get(p)
            if report is None:
                self.record_bytes[size * start:size * stop] = parts.records[size * start:
                                                                            size * stop]
                good.append(p)
            elif self.alive[p]:  # a process stopped on purpose may be "died" here
                self.fail(p, _part_error(self.pool, p, report))
        self._ready(covered, good)

    def relay_timed_out(self, waited: float) -> None:
        """The relayed frame overran the group's timeout: kill the processes holding it up
        (found from the block's progress counters) and fail them as hung. Afterwards no
        member of the frame is left waiting on process 0: each is READY, failed, LOST or
        sent again to its own process."""
        laggards = self.pool.diagnosis.relay_laggards(self._progress, self.relayed_frames)
        for p in laggards:
            self.pool.processes[p].kill()  # SIGKILL also ends a stopped process
        for p in laggards:
            if p:
                self.fail(p, pooled_errors.hung(self.pool, p, waited))
        if 0 not in laggards:
            # Process 0 sees its killed children's pipes close and answers for all.
            if self._pollers[0].poll(math.ceil(FAILURE_GRACE_S * 1000)):
                self.read_relayed()
                return
            self.pool.processes[0].kill()
        covered, self.relayed = self.relayed or [], None
        self.relay_root_failed(pooled_errors.hung(self.pool, 0, waited), covered)

    def relay_root_failed(self, error: BaseException, covered: list[int]) -> None:
        """Process 0 failed with the relayed frame of members ``covered`` in flight: fail
        it, and salvage the other processes' parts."""
        self.fail(0, error)
        for p in range(1, len(self.ranges)):
            if self.alive[p]:
                self.salvage(p, [slot for slot in covered if self.process[slot] == p])

    def salvage(self, p: int, slots: list[int]) -> None:
        """Get process ``p``'s reply to the relayed frame after process 0 failed: read it
        from ``p``'s pipe if it is there; re-send ``p`` its commands if it never got them;
        else process 0 read it before failing, and ``slots`` become LOST."""
        start, stop = self.ranges[p]
        try:
            reply = capture_reply(self.pool.conns[p], RESYNC_TIMEOUT_S)
        except (EOFError, OSError):
            self.fail(p, pooled_errors.died(self.pool, p, "while running a command"))
            return
        except TimeoutError:
            self.pool.processes[p].kill()
            self.fail(p, pooled_errors.hung_after_interrupt(self.pool, p))
            return
        size = REPLY_DTYPE.itemsize
        if reply is not None and len(reply) == size * (stop - start):
            self.record_bytes[size * start:size * stop] = reply
            self._ready(slots, [p])
        elif reply is not None:
            self.fail(p, pooled_errors.raised(self.pool, p, reply))
        elif self._progress is not None and self._progress[p, RECEIVED] >= self.relayed_frames:
            why = _LOST_WITH_PROCESS_0.format(root=self.pool.describe(0))
            for slot in slots:
                self.members[slot] = Member.LOST
                self.lost_why[slot] = why
        else:  # it never got them: they run now, as if process 0 had been slow
            self.codes[p][:] = self._relay_frame[2 + start:2 + stop]
            self.pending[p] = slots
            self.flush(p)

    def _ready(self, slots: list[int], processes: Iterable[int]) -> None:
        """The members in ``slots`` of the listed processes have their replies read."""
        good = set(processes)
        for slot in slots:
            if self.process[slot] in good and self.members[slot] is Member.SENT:
                self.members[slot] = Member.READY



def _part_error(pool: WorkerPool, p: int, report: ErrorReport) -> BaseException:
    """The error a process named in a :class:`RelayedParts` is failed with."""
    if report.kind == "died":
        return pooled_errors.died(pool, p, "while running a command")
    return pooled_errors.raised_report(pool, p, report)
