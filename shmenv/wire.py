"""Framed pipe I/O for the main process's hot path, without ``Connection``'s overhead.

The main process talks to each worker through a ``multiprocessing`` Pipe, whose messages are
framed as a 4-byte big-endian length followed by the payload. ``Connection.send_bytes``
builds a new ``header + payload`` bytes object per message, and ``recv_bytes_into`` makes
two ``read`` calls (header, then payload into a fresh ``BytesIO``) and one more copy. At
64 envs over 8 workers that was about half of the main process's CPU per step (profiled
with cProfile and ``getrusage``; see docs/scaling.md).

These helpers speak the same framing on the raw file descriptor, so the worker side keeps
using its ``Connection`` unchanged:

* :func:`write_frame` sends a buffer that already holds its header (one ``write``);
* :func:`read_frame_into` reads header and payload with one ``readv`` straight into the
  caller's buffers, and falls back to a loop only for split or unexpected frames.

POSIX only (``os.readv``); :data:`RAW_PIPES` says whether they can be used.
"""

from __future__ import annotations

import os
import struct
import sys

HEADER = struct.Struct("!i")
"""The 4-byte length prefix ``multiprocessing.connection`` puts before every message."""

RAW_PIPES = sys.platform != "win32" and hasattr(os, "readv")


def header_as_int32(payload_nbytes: int) -> int:
    """The header for a payload of ``payload_nbytes``, as a little-endian int32's value,
    so it can be stored in the same int32 array as the payload that follows it."""
    return int.from_bytes(HEADER.pack(payload_nbytes), "little", signed=True)


def write_frame(fd: int, frame: memoryview) -> None:
    """Write a whole frame (header and payload) to ``fd``; usually one ``write`` call."""
    written = os.write(fd, frame)
    while written < len(frame):  # only a full pipe or socket buffer splits a write
        written += os.write(fd, frame[written:])


def _read_exactly(fd: int, view: memoryview) -> None:
    got = 0
    while got < len(view):
        nbytes = os.readv(fd, [view[got:]])
        if nbytes == 0:
            raise OSError("got end of file during message")
        got += nbytes


def read_frame_into(fd: int, header: bytearray, payload: memoryview) -> bytes | None:
    """Read one frame whose payload is expected to fill ``payload`` exactly.

    Returns None when it did (the common case: one ``readv``). A frame of any other length
    (a worker's error report) is read whole and returned as bytes, leaving ``payload``
    unspecified. Raises ``EOFError`` if the other end closed before a frame started.
    """
    expected = len(payload)
    nbytes = os.readv(fd, [header, payload])
    if nbytes == 4 + expected and HEADER.unpack(header)[0] == expected:
        return None
    if nbytes == 0:
        raise EOFError
    if nbytes < 4:
        _read_exactly(fd, memoryview(header)[nbytes:])
        nbytes = 4
    (size,) = HEADER.unpack(header)
    if size == expected:  # a split but well-formed reply: finish it in place
        _read_exactly(fd, payload[nbytes - 4:])
        return None
    if size < 0:
        raise OSError(f"unsupported frame header {size} from a worker")
    body = bytearray(size)
    already = min(nbytes - 4, size)
    body[:already] = payload[:already]
    _read_exactly(fd, memoryview(body)[already:])
    return bytes(body)
