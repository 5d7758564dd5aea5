"""The drop-in ``Worker`` for Pipe-based training loops (the seed's protocol).

Change ``from game import Worker`` to ``from shmenv import Worker`` and nothing else::

    workers = [Worker(47 + i) for i in range(8)]
    for w in workers:
        w.child.send(("reset", None))
    stacks = [w.child.recv() for w in workers]          # (4, 84, 84) uint8 each
    for w in workers:
        w.child.send(("step", action))
    stack, reward, done, info = workers[0].child.recv()  # info None or {"reward", "length"}

The stack comes out of a shared-memory slot, never through the Pipe, as a fresh uint8 array
the caller may keep (its values equal the seed's float64 ones). Only the command and a
28-byte reply cross the Pipe.
"""

from __future__ import annotations

import multiprocessing
import weakref
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from shmenv.block import BlockLayout, SharedBlock
from shmenv.errors import ClosedError, WorkerDiedError, WorkerError
from shmenv.games import GameOptions, resolve_game
from shmenv.worker import (
    OP_CLOSE,
    OP_RESET,
    OP_STEP,
    REPLY_DTYPE,
    WorkerSpec,
    parse_error_payload,
    run_worker,
)

_COMMANDS = ("reset", "step", "close")


class WorkerPipe:
    """The trainer's end of a shmenv Worker: ``send((cmd, data))`` and ``recv()`` as on the
    seed's Pipe; the observation is read from shared memory."""

    def __init__(self, conn: Connection, block: SharedBlock, process: Any, seed: int) -> None:
        self._conn = conn
        self._block = block
        self._process = process
        self._seed = seed
        self._ready = False
        self._closed = False
        self._num_actions = 0
        self._awaiting: list[str] = []
        self._command = np.zeros(2, dtype=np.int32)
        self._reply = np.zeros(1, dtype=REPLY_DTYPE)
        self._reply_bytes = memoryview(self._reply).cast("B")

    def _describe(self) -> str:
        return f"shmenv Worker(seed={self._seed}, pid {self._process.pid})"

    def _wait_ready(self) -> None:
        if self._ready:
            return
        try:
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            self._fail(WorkerDiedError(f"{self._describe()} died while starting "
                                       f"(exit code {self._process.exitcode})"))
        if kind == "error":
            type_name, message, trace = payload
            self._fail(WorkerError(f"{self._describe()} failed to start: {type_name}: "
                                   f"{message}\n\nWorker traceback:\n{trace}"))
        self._num_actions = payload
        self._ready = True
        self._block.unlink()  # the worker has mapped it; nothing can leak from here on

    def _fail(self, error: Exception) -> None:
        self._shutdown()
        raise error

    def _shutdown(self) -> None:
        self._closed = True
        _stop(self._conn, self._process, self._block)

    def send(self, message: tuple[str, Any]) -> None:
        if self._closed:
            raise ClosedError(f"{self._describe()} is closed; create a new Worker")
        try:
            cmd, data = message
        except (TypeError, ValueError):
            raise ValueError(f"send() takes a (command, data) pair, got {message!r}") from None
        if cmd not in _COMMANDS:
            raise NotImplementedError(f"unknown Worker command {cmd!r}; "
                                      f"the commands are {', '.join(map(repr, _COMMANDS))}")
        if cmd == "close":
            self._shutdown()
            return
        self._wait_ready()
        if cmd == "step":
            action = _as_action(data, self._num_actions)
            self._command[0], self._command[1] = OP_STEP, action
        else:
            self._command[0] = OP_RESET
        self._conn.send_bytes(self._command)
        self._awaiting.append(cmd)

    def recv(self) -> Any:
        if self._closed:
            raise ClosedError(f"{self._describe()} is closed; create a new Worker")
        if not self._awaiting:
            raise RuntimeError("recv() called with no command pending; send() one first")
        try:
            nbytes = self._conn.recv_bytes_into(self._reply_bytes)
        except multiprocessing.BufferTooShort as exc:
            self._raise_worker_error(exc.args[0])
        except (EOFError, OSError):
            self._process.join(timeout=1.0)
            self._fail(WorkerDiedError(f"{self._describe()} died (exit code "
                                       f"{self._process.exitcode}); create a new Worker"))
        if nbytes != len(self._reply_bytes):
            self._raise_worker_error(bytes(self._reply_bytes[:nbytes]))
        cmd = self._awaiting.pop(0)
        stack = self._block.obs[0].copy()
        if cmd == "reset":
            return stack
        record = self._reply[0]
        done = bool(record["terminated"] or record["truncated"])
        info = ({"reward": float(record["episode_return"]),
                 "length": int(record["episode_length"])} if done else None)
        return stack, float(record["reward"]), done, info

    def _raise_worker_error(self, payload: bytes) -> None:
        parsed = parse_error_payload(payload) or ("Error", "malformed reply", "")
        type_name, message, trace = parsed
        self._fail(WorkerError(f"{self._describe()} raised {type_name}: {message}\n\n"
                               f"Worker traceback:\n{trace}"))

    def poll(self, timeout: float | None = 0.0) -> bool:
        return self._conn.poll(timeout)

    def fileno(self) -> int:
        return self._conn.fileno()

    def close(self) -> None:
        if not self._closed:
            self._shutdown()


def _as_action(data: Any, num_actions: int) -> int:
    if isinstance(data, (bool, np.bool_)) or not isinstance(data, (int, np.integer)):
        if isinstance(data, np.ndarray) and data.shape == () and data.dtype.kind in "iu":
            data = int(data)
        else:
            raise TypeError(f"a step action must be an int, got {data!r} "
                            f"({type(data).__name__})")
    if not 0 <= data < num_actions:
        raise ValueError(f"action {data!r} is out of range: this game has actions "
                         f"0..{num_actions - 1}")
    return int(data)


def _stop(conn: Connection, process: Any, block: SharedBlock) -> None:
    try:
        conn.send_bytes(np.array([OP_CLOSE], dtype=np.int32))
    except (OSError, ValueError):
        pass
    process.join(timeout=2.0)
    if process.is_alive():
        process.kill()
        process.join(timeout=1.0)
    conn.close()
    block.close()


class Worker:
    """Drop-in for the seed's ``Worker(seed)``: a process with its own shared-memory slot.

    ``.child`` speaks the seed's protocol (``("reset", None)``, ``("step", action)``,
    ``("close", None)``); ``.process`` is the ``multiprocessing.Process``. Extra keyword
    arguments are game options (see :class:`shmenv.games.GameOptions`).
    """

    def __init__(self, seed: int, game: str = "Breakout", **game_options: Any) -> None:
        options = GameOptions.from_kwargs(game_options)
        rom = resolve_game(game)
        block = SharedBlock.create(BlockLayout(1, options.obs_shape))
        parent_end, child_end = multiprocessing.Pipe()
        spec = WorkerSpec(index=0, block_name=block.name, layout=block.layout, env_start=0,
                          env_stop=1, game=rom, seeds=(seed,), options=options,
                          same_step_autoreset=True, write_final_obs=False)
        forked = multiprocessing.get_start_method() == "fork"
        self.process = multiprocessing.Process(
            target=run_worker, args=(child_end, spec, (parent_end.fileno(),) if forked else ()),
            name=f"shmenv-Worker-{seed}", daemon=True,
        )
        try:
            self.process.start()
        except BaseException:
            block.close()
            raise
        child_end.close()
        self.child = WorkerPipe(parent_end, block, self.process, seed)
        self._finalizer = weakref.finalize(self, _stop, parent_end, self.process, block)
