"""Relayed steps for the generic workers: one command down the relay tree, one reply up.

The same tree as the Atari workers' (:class:`shmenv.worker.Relay`, docs/architecture.md):
the main writes one ``OP_STEP | RELAY`` command to worker 0 and reads one reply, however
many workers there are. The actions are already in the block, so a relaying worker
forwards the same 4-byte command to each child, steps its own envs, then reads its
children's replies and sends the whole subtree's up.

Replies of generic workers vary in length (pickled infos), so a relayed reply is ``b""``
when no worker of the subtree has anything to say (the common case: no infos), else the
entries ``[uint32 worker][uint32 nbytes][payload]`` of the workers that do, in worker order
(which is env order): a relaying worker prepends its own entry to its children's replies as
they came. An error report replaces the whole reply, after every child's reply was read, so no pipe
is left half-read: it carries every env error of the subtree (:func:`combine_errors`).
"""

from __future__ import annotations

import select
import struct
from multiprocessing.connection import Connection
from time import perf_counter

from shmenv.protocol import ERROR_MAGIC, OP_STEP, RELAY, ErrorReport
from shmenv.wire import HEADER, read_frame_into, write_frame

OP_RELAYED_STEP = OP_STEP | RELAY
ENTRY = struct.Struct("<II")  # worker index, payload bytes


class AnyRelay:
    """A generic worker's part of the relay tree: its children's pipes."""

    def __init__(self, index: int, children: tuple[tuple[int, int, int], ...],
                 child_conns: tuple[Connection, ...]) -> None:
        self.index = index
        self._conns = child_conns  # keeps the descriptors open
        self._children = [(worker, conn.fileno())
                          for (worker, _start, _stop), conn in zip(children, child_conns)]
        self._frame = memoryview(HEADER.pack(4) + struct.pack("<i", OP_RELAYED_STEP))
        self._header = bytearray(4)
        self._empty = memoryview(bytearray(0))
        self._pollers = {}
        for _worker, fd in self._children:
            self._pollers[fd] = select.poll()
            self._pollers[fd].register(fd, select.POLLIN)

    def forward(self) -> list[bool]:
        """Send every child the relayed step; per child, whether it got through."""
        reached = []
        for _worker, fd in self._children:
            try:
                write_frame(fd, self._frame)
            except OSError:
                reached.append(False)
                continue
            reached.append(True)
        return reached

    def collect(self, reached: list[bool], own: bytes, spin_until: float) -> bytes:
        """The subtree's reply: ``own`` (this worker's reply payload, or its error report)
        and every reached child's. Until ``spin_until`` (a ``perf_counter`` time) a child's
        reply is polled for instead of slept on, as the worker's own wait does."""
        errors = [own] if own.startswith(ERROR_MAGIC) else []
        parts = [ENTRY.pack(self.index, len(own)), own] if own and not errors else []
        for (worker, fd), got_command in zip(self._children, reached):
            if not got_command:
                errors.append(ErrorReport.died(worker).encode(0))
                continue
            poll = self._pollers[fd].poll
            while not poll(0) and perf_counter() < spin_until:
                pass
            try:
                payload = read_frame_into(fd, self._header, self._empty)
            except (EOFError, OSError):
                errors.append(ErrorReport.died(worker).encode(0))
                continue
            if payload:
                if payload.startswith(ERROR_MAGIC):
                    errors.append(payload)
                else:
                    parts.append(payload)
        if errors:
            return combine_errors(errors)
        return b"".join(parts)


def split_relayed(payload: bytes, num_workers: int) -> list[bytes]:
    """Each worker's reply payload out of a relayed reply (``b""`` for the silent ones)."""
    payloads = [b""] * num_workers
    offset = 0
    while offset < len(payload):
        worker, size = ENTRY.unpack_from(payload, offset)
        offset += ENTRY.size
        payloads[worker] = payload[offset:offset + size]
        offset += size
    return payloads


def combine_errors(payloads: list[bytes]) -> bytes:
    """One error reply for several workers' (in worker order): every env error they carry,
    the last raised first in line; a dead or confused worker's report alone, as it is what
    stopped the step."""
    reports = [ErrorReport.decode(payload) for payload in payloads]
    for report, payload in zip(reports, payloads):
        if report is None or report.kind != "raised":
            return payload
    raised = [each for report in reports if report is not None for each in report.every()]
    return ErrorReport.combine(raised).encode(0)
