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
the caller may keep (its values equal the reference's float64 ones). Only the command and a
36-byte reply cross the Pipe.
"""

from __future__ import annotations

import multiprocessing
import operator
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from shmenv.block import BlockLayout, SharedBlock
from shmenv.errors import ClosedError, ShmenvError, WorkerDiedError, WorkerError, describe_exit
from shmenv.games import GameOptions, resolve_game
from shmenv.pool import resynchronize, sigint_blocked, stop_workers
from shmenv.protocol import OP_RESET, OP_STEP, REPLY_DTYPE, ErrorReport
from shmenv.worker import WorkerSpec, run_worker

_COMMANDS = ("reset", "step", "close")
STARTUP_TIMEOUT_S = 120.0
RESYNC_TIMEOUT_S = 60.0


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
        # Set before an operation on the pipe starts and cleared after it ended, so that an
        # exception (Ctrl-C) landing anywhere leaves the flag set for the next call.
        self._sending = False  # a command may be half sent
        self._reading = False  # a reply may be half read
        self._command = np.zeros(2, dtype=np.int32)
        self._reply = np.zeros(1, dtype=REPLY_DTYPE)
        self._reply_bytes = memoryview(self._reply).cast("B")

    def _describe(self) -> str:
        return f"shmenv Worker(seed={self._seed}, pid {self._process.pid})"

    def _wait_ready(self) -> None:
        if self._ready:
            return
        try:
            if not self._conn.poll(STARTUP_TIMEOUT_S):
                self._fail(WorkerDiedError(f"{self._describe()} did not start within "
                                           f"{STARTUP_TIMEOUT_S:.0f} s"))
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            self._died("while starting")
        if kind == "error":
            self._fail(WorkerError(f"{self._describe()} failed to start: {payload.type_name}: "
                                   f"{payload.message}\n\nWorker traceback:\n"
                                   f"{payload.traceback}", payload.type_name, payload.traceback))
        self._num_actions = payload
        self._ready = True
        self._block.unlink()  # the worker has mapped it; nothing can leak from here on

    def _fail(self, error: Exception) -> None:
        self._shutdown()
        raise error

    def _died(self, when: str) -> None:
        how, code = describe_exit(self._process)
        self._fail(WorkerDiedError(f"{self._describe()} {how} {when}; it is closed now, "
                                   "create a new Worker", code))

    def _resync(self) -> None:
        """After Ctrl-C cut a send or a read short: discard whatever is left in the pipe
        (the interrupted command's reply is lost) so the next reply read is the right one."""
        try:
            resynchronize(self._conn, RESYNC_TIMEOUT_S)
        except (EOFError, OSError):
            self._died("after an interrupted call")
        except TimeoutError:
            self._fail(WorkerDiedError(f"{self._describe()} did not answer within "
                                       f"{RESYNC_TIMEOUT_S:.0f} s after an interrupted call"))
        self._awaiting.clear()
        self._sending = self._reading = False

    def _shutdown(self) -> None:
        self._closed = True
        _stop(self._conn, self._process, self._block)

    def send(self, message: tuple[str, Any]) -> None:
        try:
            cmd, data = message
        except (TypeError, ValueError):
            raise ValueError(f"send() takes a (command, data) pair, got {message!r}") from None
        if self._closed:
            if cmd == "close":
                return  # closing twice is harmless, as close() is
            raise ClosedError(f"{self._describe()} is closed; create a new Worker")
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
        if self._awaiting or self._sending or self._reading:
            # One command in flight at a time, as the seed's trainers use a Worker: its
            # slot holds one stack, which the new command will overwrite. A reply still
            # unread (the caller moved on, e.g. after Ctrl-C) is dropped, not returned
            # for this new command.
            self._resync()
        self._sending = True
        self._awaiting.append(cmd)
        try:
            self._conn.send_bytes(self._command)
        except OSError:
            self._died("before this command")
        self._sending = False

    def recv(self) -> Any:
        if self._closed:
            raise ClosedError(f"{self._describe()} is closed; create a new Worker")
        if self._sending or self._reading:
            self._resync()
            raise ShmenvError("the reply to the command interrupted by Ctrl-C was discarded; "
                              "send() a new command")
        if not self._awaiting:
            raise RuntimeError("recv() called with no command pending; send() one first")
        try:
            # Wait first: a Ctrl-C here leaves the reply in the pipe; recv() again reads it.
            self._conn.poll(None)
        except (EOFError, OSError):
            self._died("while running a command")
        self._reading = True
        try:
            nbytes = self._conn.recv_bytes_into(self._reply_bytes)
        except multiprocessing.BufferTooShort as exc:
            self._raise_worker_error(exc.args[0])
        except (EOFError, OSError):
            self._died("while running a command")
        if nbytes != len(self._reply_bytes):
            self._raise_worker_error(bytes(self._reply_bytes[:nbytes]))
        cmd = self._awaiting.pop(0)
        self._reading = False
        stack = self._block.obs[0].copy()
        if cmd == "reset":
            return stack
        record = self._reply[0]
        done = bool(record["terminated"] or record["truncated"])
        info = ({"reward": float(record["episode_return"]),
                 "length": int(record["episode_length"])} if done else None)
        return stack, float(record["reward"]), done, info

    def _raise_worker_error(self, payload: bytes) -> None:
        report = ErrorReport.decode(payload) or ErrorReport("Error", "malformed reply", "", 0)
        self._fail(WorkerError(f"{self._describe()} raised {report.type_name}: "
                               f"{report.message}\n\nWorker traceback:\n{report.traceback}",
                               report.type_name, report.traceback))

    def poll(self, timeout: float | None = 0.0) -> bool:
        if self._closed:
            raise ClosedError(f"{self._describe()} is closed; create a new Worker")
        return self._conn.poll(timeout)

    def fileno(self) -> int:
        if self._closed:
            raise ClosedError(f"{self._describe()} is closed; create a new Worker")
        return self._conn.fileno()

    def close(self) -> None:
        if not self._closed:
            self._shutdown()


def _as_action(data: Any, num_actions: int) -> int:
    """The action as an int: anything usable as an index (int, numpy int, a 0-d int array
    or tensor), like the seed's gym env accepts. Floats, NaN, bools, None, strings: TypeError."""
    if isinstance(data, (bool, np.bool_)):
        raise TypeError(f"a step action must be an int, got {data!r} (bool)")
    try:
        action = operator.index(data)
    except TypeError:
        raise TypeError(f"a step action must be an int, got {data!r} "
                        f"({type(data).__name__})") from None
    if not 0 <= action < num_actions:
        raise ValueError(f"action {action!r} is out of range: this game has actions "
                         f"0..{num_actions - 1}")
    return action


def _stop(conn: Connection, process: Any, block: SharedBlock) -> None:
    stop_workers([conn], [process], 2.0)
    conn.close()
    block.close()


class Worker:
    """Drop-in for the seed's ``Worker(seed)``: a process with its own shared-memory slot.

    ``.child`` speaks the seed's protocol (``("reset", None)``, ``("step", action)``,
    ``("close", None)``); ``.process`` is the ``multiprocessing.Process``. Extra keyword
    arguments are game options (see :class:`shmenv.games.GameOptions`).
    """

    def __init__(self, seed: int, game: str = "Breakout", *,
                 game_factory: Callable[..., Any] | None = None, **game_options: Any) -> None:
        options = GameOptions.from_kwargs(game_options)
        rom = resolve_game(game)
        block = SharedBlock.create(BlockLayout(1, options.obs_shape))
        parent_end, child_end = multiprocessing.Pipe()
        spec = WorkerSpec(index=0, block_name=block.name, layout=block.layout, env_start=0,
                          env_stop=1, game=rom, seeds=(seed,), options=options,
                          same_step_autoreset=True, write_final_obs=False,
                          game_factory=game_factory)
        forked = multiprocessing.get_start_method() == "fork"
        self.process = multiprocessing.Process(
            target=run_worker, args=(child_end, spec, (parent_end.fileno(),) if forked else ()),
            name=f"shmenv-Worker-{seed}", daemon=True,
        )
        try:
            with sigint_blocked():  # a Ctrl-C now must not reach the half-started worker
                self.process.start()
        except BaseException:
            block.close()
            raise
        child_end.close()
        self.child = WorkerPipe(parent_end, block, self.process, seed)
        self._finalizer = weakref.finalize(self, _stop, parent_end, self.process, block)
