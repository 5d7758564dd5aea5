"""The main process's side of the worker processes: start them, resynchronize, stop them."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from shmenv.protocol import OP_CLOSE, sync_command, sync_marker


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while starting workers.

    A child inherits the signal mask (across fork and exec), so a Ctrl-C that arrives while
    a spawned worker is still importing stays pending instead of printing a
    KeyboardInterrupt traceback from the worker; the worker discards it when it sets
    SIGINT to ignored. The main process gets its KeyboardInterrupt when the block ends.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def resynchronize(conn: Connection, timeout: float) -> None:
    """Bring a worker's reply stream back to a message boundary, discarding what is unread.

    Needed after an exception (Ctrl-C) interrupted the main process between sending a
    command and reading the whole reply: a reply, or half of one, may still be in the pipe.
    Sends a sync request and reads raw bytes until the worker's answer to its nonce, the
    last thing it sends before waiting for the next command. Raises ``EOFError`` if the
    worker is gone and ``TimeoutError`` if it does not answer within ``timeout`` seconds.
    """
    command = sync_command(secrets.randbits(31))
    marker = sync_marker(command)
    conn.send_bytes(command)
    deadline = time.monotonic() + timeout
    unread = b""
    while not unread.endswith(marker):
        if not conn.poll(max(deadline - time.monotonic(), 0)):
            raise TimeoutError(f"no answer to a sync request within {timeout:.0f} s")
        chunk = os.read(conn.fileno(), 1 << 16)
        if not chunk:
            raise EOFError("the worker closed its pipe")
        unread = (unread + chunk)[-(len(marker) + (1 << 16)):]


def stop_workers(conns: Sequence[Connection], processes: Sequence[Any], grace_s: float) -> None:
    """Ask every worker to exit, give them ``grace_s`` in all, then SIGKILL the rest."""
    close_message = np.array([OP_CLOSE], dtype=np.int32).tobytes()
    for conn in conns:
        try:
            conn.send_bytes(close_message)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(timeout=max(deadline - time.monotonic(), 0.05))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(timeout=1.0)
