"""Worker processes and their pipes at the OS level, as plain functions a finalizer can run.

Starting (with Ctrl-C held off), resynchronizing a pipe after an interrupted call, and
stopping (a polite close, then SIGKILL) need no pool object: ``weakref.finalize`` holds
:func:`release` over plain lists, so that it never keeps an env alive.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from shmenv.protocol import OP_CLOSE, sync_command, sync_marker
from shmenv.worker import WorkerSpec, run_worker

SHUTDOWN_TIMEOUT_S = 2.0
FAILURE_GRACE_S = 0.5  # after a worker failed, the others get this long before SIGKILL


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


def launch_workers(context: str | None, specs: Sequence[WorkerSpec], name: str,
                   conns: list[Connection], started: list[BaseProcess]) -> None:
    """Start one worker per spec (``context``: the start method; None: the default),
    appending the main's end of each pipe to ``conns`` first and each process to
    ``started`` as soon as it runs, so that a failure half-way leaves the caller all to
    stop."""
    ctx: Any = multiprocessing.get_context(context)
    # All pipes first: a worker gets the main's ends of its relay children's pipes.
    pipes = [ctx.Pipe() for _ in specs]
    conns.extend(parent_end for parent_end, _child_end in pipes)
    try:
        forked = ctx.get_start_method() == "fork"
        for spec, (_parent_end, child_end) in zip(specs, pipes):
            child_conns = tuple(pipes[child][0] for child, _start, _stop in spec.relay_children)
            # A forked child inherits every descriptor open here; it keeps only its own end
            # and its relay children's, so that each pipe's EOF still means one worker died.
            keep = {child_end.fileno()} | {conn.fileno() for conn in child_conns}
            inherited = tuple(conn.fileno() for pipe in pipes for conn in pipe
                              if not conn.closed and conn.fileno() not in keep)
            process = ctx.Process(
                target=run_worker,
                args=(child_end, spec, inherited if forked else (), child_conns),
                name=name.format(index=spec.index), daemon=True,
            )
            with sigint_blocked():  # a Ctrl-C now must not reach a half-started worker
                process.start()
            child_end.close()
            started.append(process)
    finally:
        for _parent_end, child_end in pipes:
            child_end.close()


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
    conn.send_bytes(command.tobytes())
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


def release(conns: list[Connection], processes: list[Any],
            grace_s: float = SHUTDOWN_TIMEOUT_S) -> None:
    """Stop the workers and close their pipes. A module-level function over plain lists, so
    that a ``weakref.finalize`` can hold it without holding the pool's owner."""
    stop_workers(conns, processes, grace_s)
    for conn in conns:
        conn.close()
