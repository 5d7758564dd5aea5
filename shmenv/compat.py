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
the caller may keep (its values equal the reference's float64 ones). Workers created
together share one block and at most one process per core (a
:class:`~shmenv.pooled.WorkerGroup`); this module decides which group a new Worker joins
and speaks the reference's protocol on its end of it.
"""

from __future__ import annotations

import operator
import threading
import weakref
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from shmenv.game import GameFactory
from shmenv.games import GameOptions, resolve_game
from shmenv.pooled import WorkerGroup, current_group, drop_member
from shmenv.pooled_members import GameConfig

_COMMANDS = ("reset", "step", "close")
_PICKLE_HINT = ("it drives processes that belong to the process that created it; create "
                "the Worker in the process that uses it (a pickled Worker could not reach "
                "them)")


class WorkerPipe:
    """The trainer's end of a shmenv Worker: ``send((cmd, data))`` and ``recv()`` as on the
    reference's Pipe; the observation is read from shared memory.

    It keeps its group (and so its process) alive on its own: code that keeps only
    ``Worker(seed).child`` keeps a working Worker, as with the reference.
    """

    def __init__(self, group: WorkerGroup, slot: int) -> None:
        self._group = group
        self._slot = slot
        self._num_actions = 0  # known once the group has started
        # Dropped without close(): its env goes idle, and its process stops with the last
        # Worker it serves. Interpreter exit is the group's own finalizer's job.
        finalizer = weakref.finalize(self, drop_member, group, slot)
        finalizer.atexit = False

    @property
    def group(self) -> WorkerGroup:
        return self._group

    @property
    def slot(self) -> int:
        """This Worker's index in its group (and its env's slot in the group's block)."""
        return self._slot

    def send(self, message: tuple[str, Any]) -> None:
        try:
            cmd, data = message
        except (TypeError, ValueError):
            raise ValueError(f"send() takes a (command, data) pair, got {message!r}") from None
        if cmd == "step":  # the hot path first
            if type(data) is int and 0 <= data < self._num_actions:
                action = data  # a plain in-range int needs no other check
            else:
                if not self._num_actions:
                    self._num_actions = self._group.num_actions_for(self._slot)
                action = _as_action(data, self._num_actions)
            self._group.send(self._slot, False, action)
        elif cmd == "reset":
            self._group.send(self._slot, True, 0)
        elif cmd == "close":
            self._group.close_member(self._slot)  # closing twice is harmless, as close() is
        else:
            self._group.check_open(self._slot)
            raise NotImplementedError(f"unknown Worker command {cmd!r}; "
                                      f"the commands are {', '.join(map(repr, _COMMANDS))}")

    def recv(self) -> Any:
        return self._group.recv(self._slot)

    def poll(self, timeout: float | None = 0.0) -> bool:
        return self._group.poll(self._slot, timeout)

    def fileno(self) -> int:
        """The pipe of this Worker's pool process, readable when it has a reply for any
        of the Workers it serves: use :meth:`poll` to ask about this Worker alone."""
        return self._group.fileno(self._slot)

    def close(self) -> None:
        self._group.close_member(self._slot)

    def __reduce__(self) -> Any:
        raise TypeError(f"a shmenv Worker's child cannot be pickled: {_PICKLE_HINT}")


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


# The group that Workers created without ``group=`` join while it is open: Workers created
# one after another share it until the first command to any of them starts it.
_open_group: weakref.ref[WorkerGroup] | None = None
_open_group_lock = threading.Lock()


def _group_for(config: GameConfig) -> WorkerGroup:
    global _open_group
    current = current_group()
    if current is not None:
        return current
    with _open_group_lock:
        group = _open_group() if _open_group is not None else None
        if group is None or not group.accepts(config):
            group = WorkerGroup()
            _open_group = weakref.ref(group)
        return group


class Worker:
    """Drop-in for the reference's ``Worker(seed)``: one game whose stack is written into
    a shared-memory slot, driven through ``.child`` with the reference's protocol
    (``("reset", None)``, ``("step", action)``, ``("close", None)``).

    Workers created one after another share one :class:`~shmenv.pooled.WorkerGroup`: one
    block and at most one process per usable core, started at the first command sent to
    any of them (see docs/migration.md). ``group=`` joins an explicit ``WorkerGroup``
    instead, as does creating Workers inside ``with WorkerGroup(...):``. ``.process`` is
    the process that serves this Worker (shared with the others it serves; asking for it
    starts the group). Extra keyword arguments are game options (see
    :class:`shmenv.games.GameOptions`); Workers of different games or options get
    different groups.
    """

    def __init__(self, seed: int, game: str = "Breakout", *, group: WorkerGroup | None = None,
                 game_factory: GameFactory | None = None, **game_options: Any) -> None:
        config = GameConfig(resolve_game(game), GameOptions.from_kwargs(game_options),
                            game_factory)
        group = group if group is not None else _group_for(config)
        self.child = WorkerPipe(group, group.join(seed, config))

    @property
    def process(self) -> BaseProcess:
        return self.child.group.process_of(self.child.slot)

    def __reduce__(self) -> Any:
        raise TypeError(f"a shmenv Worker cannot be pickled: {_PICKLE_HINT}")
