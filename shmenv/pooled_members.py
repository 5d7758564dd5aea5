"""Who belongs to a drop-in group: each member's seed, command state and what it raises.

A :class:`~shmenv.pooled.WorkerGroup`'s members are Workers (one env each) that share one
game configuration (:class:`GameConfig`). :class:`Members` is their table, one row per
member (its *slot*: its index in the group and its env in the block); the group and its
frames (:mod:`shmenv.pooled_frames`) move a member through the :class:`Member` states.
"""

from __future__ import annotations

import enum
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shmenv.errors import ClosedError
from shmenv.game import GameFactory
from shmenv.games import GameOptions


@dataclass(frozen=True)
class GameConfig:
    """What members of one group must share: one game, one option set, one game factory."""

    game: str
    options: GameOptions
    game_factory: GameFactory | None

    def matches(self, other: GameConfig) -> bool:
        """Equal, counting two factories equal when they pickle alike (two
        ``functools.partial(CounterGame)`` objects are the same factory)."""
        if (self.game, self.options) != (other.game, other.options):
            return False
        a, b = self.game_factory, other.game_factory
        if a is b:
            return True
        try:
            return pickle.dumps(a) == pickle.dumps(b)
        except Exception:  # noqa: BLE001 - an unpicklable factory is only equal to itself
            return False

    def check_joins(self, other: GameConfig) -> None:
        """Raise unless a Worker of ``other`` may join a group of this configuration."""
        if not self.matches(other):
            raise ValueError(
                f"this WorkerGroup runs {self.game} with {self.options} and "
                f"game_factory={self.game_factory!r}; a Worker of another game or options "
                "needs its own WorkerGroup")


class Member(enum.Enum):
    """Where one member's command is."""

    IDLE = "idle"  # no command outstanding
    RECORDED = "recorded"  # in its process's next frame, not sent yet
    SENT = "sent"  # sent; the reply is not read yet
    READY = "ready"  # the reply was read; recv() returns it without waiting
    LOST = "lost"  # its reply was discarded after an interrupted call (Ctrl-C)
    CLOSED = "closed"  # closed, or failed (then it raises its error once)


class Members:
    """The members' table. ``states`` is read and written directly on the hot path."""

    def __init__(self) -> None:
        self.seeds: list[Any] = []
        self.states: list[Member] = []
        self.is_reset: list[bool] = []  # the outstanding command is a reset
        self._errors: list[BaseException | None] = []  # raised once by a failed member
        self._reasons: list[str] = []  # why a member is closed

    def __len__(self) -> int:
        return len(self.seeds)

    def add(self, seed: Any) -> int:
        """A new member; returns its slot."""
        self.seeds.append(seed)
        self.states.append(Member.IDLE)
        self.is_reset.append(False)
        self._errors.append(None)
        self._reasons.append("")
        return len(self.seeds) - 1

    def all_closed(self) -> bool:
        return all(state is Member.CLOSED for state in self.states)

    def check_open(self, slot: int) -> None:
        """Raise what a call on member ``slot`` must raise if it is closed or failed: a
        failure it has not reported yet (once), then ``ClosedError``."""
        if self.states[slot] is not Member.CLOSED:
            return
        error = self._errors[slot]
        if error is not None:
            self._errors[slot] = None
            raise error
        raise ClosedError(f"shmenv Worker(seed={self.seeds[slot]!r}) is closed "
                          f"({self._reasons[slot]}); create a new Worker")

    def reported(self, slot: int) -> None:
        """Member ``slot``'s caller got its error now: it is not raised again later."""
        self._errors[slot] = None

    def close(self, slot: int, reason: str) -> Member:
        """Close member ``slot`` (closing twice is harmless); returns its state before."""
        state = self.states[slot]
        if state is Member.CLOSED:
            self._errors[slot] = None  # closing a failed Worker needs no error
        else:
            self.states[slot] = Member.CLOSED
            self._reasons[slot] = reason
        return state

    def fail(self, slots: Iterable[int], error: BaseException, why: str) -> None:
        """Close the open members of ``slots``: each raises ``error`` once."""
        reason = f"{why}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        for slot in slots:
            if self.states[slot] is not Member.CLOSED:
                self.states[slot] = Member.CLOSED
                self._errors[slot] = error
                self._reasons[slot] = reason
