"""A generic worker's end of its pipe: the main's framing, read and written on the raw fd.

``Connection.recv_bytes`` reads a command with two ``read`` calls and a ``BytesIO``, and
``send_bytes`` builds its frame through a few Python layers; a worker does both on every
step. On the raw descriptor (:mod:`shmenv.wire`) a 4-byte step command is one ``readv``
into a buffer kept for it and a reply one ``write``: a round trip of a 4-byte message took
~9 µs here where ``Connection`` took ~15, per step and worker. The framing is
``Connection``'s own, so the main (and a worker's other paths) may use either end as before.
"""

from __future__ import annotations

from multiprocessing.connection import Connection

from shmenv.wire import HEADER, RAW_PIPES, read_frame_into, write_frame

_SMALL = 1 << 16  # larger replies (pickled observations) go through Connection: no copy


class WorkerPipe:
    """``receive()`` a command and ``send(reply)`` over one worker's pipe."""

    __slots__ = ("_conn", "_fd", "_header", "_command", "_view", "_frames")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._fd = conn.fileno() if RAW_PIPES else -1
        self._header = bytearray(4)
        self._command = bytearray(4)  # a step command: its opcode only
        self._view = memoryview(self._command)
        self._frames: dict[bytes, memoryview] = {}  # the frames of the short replies

    def receive(self) -> bytes:
        """The next command (``EOFError`` if the main closed its end)."""
        if self._fd < 0:
            return self._conn.recv_bytes()
        whole = read_frame_into(self._fd, self._header, self._view)
        return bytes(self._command) if whole is None else whole

    def send(self, reply: bytes) -> None:
        if self._fd < 0 or len(reply) >= _SMALL:
            self._conn.send_bytes(reply)
            return
        frame = self._frames.get(reply) if len(reply) <= 1 else None
        if frame is None:
            frame = memoryview(HEADER.pack(len(reply)) + reply)
            if len(reply) <= 1:  # b"" and the one-byte IN_BLOCK: most steps' replies
                self._frames[reply] = frame
        write_frame(self._fd, frame)
