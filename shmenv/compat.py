"""The drop-in ``Worker`` for Pipe-based training loops (the reference's protocol).

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

import functools
import operator
import weakref
from typing import Any

import numpy as np

from shmenv.block import BlockLayout, SharedBlock
from shmenv.errors import ClosedError, ShmenvError
from shmenv.game import GameFactory
from shmenv.games import GameOptions, resolve_game
from shmenv.pool import FailureNotes, WorkerPool, release
from shmenv.protocol import OP_RESET, OP_STEP, REPLY_DTYPE
from shmenv.wire import header_as_int32
from shmenv.worker import WorkerSpec

_COMMANDS = ("reset", "step", "close")
_NOTES = FailureNotes(died="; it is closed now, create a new Worker",
                      died_while_starting="; it is closed now, create a new Worker",
                      resync_timeout="", resync_died_when="after an interrupted call")


def _describe(seed: int, _index: int, pid: int | None, _start: int, _stop: int) -> str:
    return f"shmenv Worker(seed={seed}, pid {pid})"


class WorkerPipe:
    """The trainer's end of a shmenv Worker: ``send((cmd, data))`` and ``recv()`` as on the
    reference's Pipe; the observation is read from shared memory."""

    def __init__(self, pool: WorkerPool, block: SharedBlock) -> None:
        self._pool = pool
        self._block = block
        self._ready = False
        self._closed = False
        self._num_actions = 0
        self._awaiting: list[str] = []
        # Set before an operation on the pipe starts and cleared after it ended, so that an
        # exception (Ctrl-C) landing anywhere leaves the flag set for the next call.
        self._sending = False  # a command may be half sent
        self._reading = False  # a reply may be half read
        self._command = np.zeros(3, dtype=np.int32)  # [pipe header, opcode, action]
        self._command[0] = header_as_int32(8)
        self._frame = self._command.data.cast("B")
        self._reply = np.zeros(1, dtype=REPLY_DTYPE)
        self._reply_bytes = self._reply.data.cast("B")

    def _describe(self) -> str:
        return self._pool.describe(0)

    def _wait_ready(self) -> None:
        if self._ready:
            return
        try:
            self._num_actions = self._pool.wait_until_ready()
        except BaseException:
            self._shutdown()
            raise
        self._ready = True
        self._block.unlink()  # the worker has mapped it; nothing can leak from here on

    def _resync(self) -> None:
        """After Ctrl-C cut a send or a read short: discard whatever is left in the pipe
        (the interrupted command's reply is lost) so the next reply read is the right one."""
        self._pool.unread_replies = True
        self._pool.resynchronize()
        self._awaiting.clear()
        self._sending = self._reading = False

    def _shutdown(self, _reason: str = "") -> None:
        self._closed = True
        release(self._pool.conns, self._pool.processes)
        self._block.close()

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
            self._command[1], self._command[2] = OP_STEP, action
        else:
            self._command[1] = OP_RESET
        if self._awaiting or self._sending or self._reading:
            # One command in flight at a time, as the reference's trainers use a Worker: its
            # slot holds one stack, which the new command will overwrite. A reply still
            # unread (the caller moved on, e.g. after Ctrl-C) is dropped, not returned
            # for this new command.
            self._resync()
        self._sending = True
        self._awaiting.append(cmd)
        self._pool.send_frame(0, self._frame, "before this command")
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
            self._pool.conns[0].poll(None)
        except (EOFError, OSError):
            self._pool.worker_died(0, "while running a command")
        self._reading = True
        self._pool.read_reply_into(0, self._reply_bytes, "while running a command")
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

    def poll(self, timeout: float | None = 0.0) -> bool:
        if self._closed:
            raise ClosedError(f"{self._describe()} is closed; create a new Worker")
        return self._pool.conns[0].poll(timeout)

    def fileno(self) -> int:
        if self._closed:
            raise ClosedError(f"{self._describe()} is closed; create a new Worker")
        return self._pool.conns[0].fileno()

    def close(self) -> None:
        if not self._closed:
            self._shutdown()


def _as_action(data: Any, num_actions: int) -> int:
    """The action as an int: anything usable as an index (int, numpy int, a 0-d int array
    or tensor), like the reference's gym env accepts. Floats, NaN, bools, None, strings:
    TypeError."""
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


def _release(conns: list, processes: list, block: SharedBlock) -> None:
    release(conns, processes)
    block.close()


class Worker:
    """Drop-in for the reference's ``Worker(seed)``: a process with its own shared-memory
    slot.

    ``.child`` speaks the reference's protocol (``("reset", None)``, ``("step", action)``,
    ``("close", None)``); ``.process`` is the ``multiprocessing.Process``. Extra keyword
    arguments are game options (see :class:`shmenv.games.GameOptions`).
    """

    def __init__(self, seed: int, game: str = "Breakout", *,
                 game_factory: GameFactory | None = None, **game_options: Any) -> None:
        options = GameOptions.from_kwargs(game_options)
        rom = resolve_game(game)
        block = SharedBlock.create(BlockLayout(1, options.obs_shape))
        spec = WorkerSpec(index=0, block_name=block.name, layout=block.layout, env_start=0,
                          env_stop=1, game=rom, seeds=(seed,), options=options,
                          same_step_autoreset=True, write_final_obs=False,
                          game_factory=game_factory)
        pool = WorkerPool([spec], describe=functools.partial(_describe, seed), notes=_NOTES,
                          raw_pipes=False)
        self.child = WorkerPipe(pool, block)
        pool.set_on_failure(self.child._shutdown)
        try:
            pool.launch(name=f"shmenv-Worker-{seed}")
        except BaseException:
            release(pool.conns, pool.processes)
            block.close()
            raise
        self.process = pool.processes[0]
        self._finalizer = weakref.finalize(self, _release, pool.conns, pool.processes, block)
