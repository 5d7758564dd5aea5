"""The spin-then-sleep wait of a worker for its next command, shared by both worker kinds."""

from __future__ import annotations

from multiprocessing.connection import Connection
from time import perf_counter

SPIN_BACKOFF_STEPS = 8


class SpinWait:
    """The spin-then-sleep wait of a worker for its next command (and of a relaying worker
    for its children's replies), shared by the Atari and the generic workers.

    A sleeping worker on an idle core (above all in a VM) takes tens to hundreds of µs to
    wake, on every step's critical path. So after replying, a worker polls for up to a
    window (at most ``spin_us`` and 10% of the step just computed) before sleeping. A spin
    that ends empty-handed means the trainer does other work between steps: then it sleeps
    at once for the next ``SPIN_BACKOFF_STEPS`` waits, so at most ~1% of a core is wasted.
    """

    __slots__ = ("_cap", "_window", "_skip", "_replied_at")

    def __init__(self, spin_us: float) -> None:
        self._cap = spin_us * 1e-6
        self._window = 0.0
        self._skip = 0
        self._replied_at = perf_counter()

    def wait(self, conn: Connection) -> None:
        """Return when ``conn`` has a command, or when the spin window is over."""
        if self._skip:
            self._skip -= 1
        elif self._window:
            deadline = self._replied_at + self._window
            while not conn.poll(0):
                if perf_counter() > deadline:
                    self._skip = SPIN_BACKOFF_STEPS
                    break

    def spin_until(self, arrived: float) -> float:
        """Until when a relaying worker polls for its children's replies (a
        ``perf_counter`` time; 0.0 without a spin budget)."""
        if not self._cap:
            return 0.0
        now = perf_counter()
        return now + min(self._cap, 0.1 * (now - arrived))

    def replied(self, arrived: float) -> None:
        """A reply went out for the command that arrived at ``arrived``."""
        self._replied_at = perf_counter()
        self._window = min(self._cap, 0.1 * (self._replied_at - arrived))
