"""How a worker pool meets a worker that fails to answer: late, dead, or with an error report.

The pool's reads see a dead worker (EOF) or an error report; whether a worker is late is
decided here, by deadlines on its replies. Any of the three fails the whole pool: the late
workers are killed, every other one gets a short grace period and is then killed too (the
envs' state is lost with the failed worker), the owner is told, and the error
:class:`shmenv.diagnosis.Diagnosis` words is raised.
"""

from __future__ import annotations

import math
import select
import time
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

from shmenv.diagnosis import Diagnosis
from shmenv.planning import check_timeout
from shmenv.processes import FAILURE_GRACE_S, stop_workers

POOL_TIMEOUT: Any = object()  # "use the pool's timeout" (None means no limit)


class PoolFailures:
    """The worker pool's base (:class:`shmenv.pool.WorkerPool`): what follows when a worker
    is late, dies or reports an error.

    ``timeout`` (seconds, None: no limit) bounds every wait for a reply after start-up: a
    worker that does not answer in time is killed and named in a
    :class:`WorkerTimeoutError`. Only then does a wait poll its descriptor first; without a
    timeout, reads block in the kernel. Errors stop every worker first, then tell the owner
    (``on_failure``, held weakly) before raising. While the owner closes the pool
    (``closing``, set from another thread), a worker that goes away did not fail: the
    waiting call gets :class:`ClosedError`.
    """

    # The pool's own lists, filled as the workers start.
    conns: list[Connection]
    fds: list[int]
    processes: list[BaseProcess]

    def __init__(self, diagnosis: Diagnosis, timeout: float | None,
                 on_failure: Callable[[str], None] | None) -> None:
        self.diagnosis = diagnosis
        self.timeout = check_timeout(timeout)
        # Why the owner is closing the pool (None while open): a worker that exits while a
        # call waits on it is then reported as ClosedError, not as a death.
        self.closing: str | None = None
        self._pollers: dict[int, Any] = {}
        self._on_failure: weakref.WeakMethod | None = None
        if on_failure is not None:
            self.set_on_failure(on_failure)

    def set_on_failure(self, on_failure: Callable[[str], None]) -> None:
        """Call the bound method ``on_failure(reason)`` (held weakly, so the pool never
        keeps its owner alive) after a failure stopped the workers, before raising."""
        self._on_failure = weakref.WeakMethod(on_failure)  # type: ignore[arg-type]

    def describe(self, index: int) -> str:
        """The worker as error messages name it (index, pid, envs)."""
        return self.diagnosis.describe(index)

    # ----------------------------------------------------------------- deadlines
    def wait_for_reply(self, index: int, timeout: Any = POOL_TIMEOUT,
                       when: str = "") -> None:
        """Return once worker ``index`` has a reply to read, or raise
        :class:`WorkerTimeoutError` after ``timeout`` seconds (default: the pool's).
        Without a limit it returns at once: the blocking read that follows waits."""
        limit = self.timeout if timeout is POOL_TIMEOUT else check_timeout(timeout)
        if limit is not None and not self._readable(index, time.monotonic() + limit):
            self.timed_out([index], limit, when)

    def _readable(self, index: int, deadline: float | None) -> bool:
        """Whether worker ``index``'s pipe has something to read by ``deadline`` (a
        ``time.monotonic()`` time; None: now, without waiting). Sleeps in ``poll``."""
        left = 0.0 if deadline is None else max(deadline - time.monotonic(), 0.0)
        poller = self._pollers.get(index)
        if poller is None:
            if not hasattr(select, "poll"):
                return self.conns[index].poll(left)
            poller = self._pollers[index] = select.poll()
            poller.register(self.fds[index], select.POLLIN)
        return bool(poller.poll(math.ceil(left * 1000)))

    # ----------------------------------------------------------------- failures
    def timed_out(self, workers: Sequence[int], waited: float | None, when: str = "",
                  ) -> NoReturn:
        """Kill ``workers`` (they did not answer within ``waited`` seconds), stop the rest
        and raise :class:`WorkerTimeoutError` naming each one and its process state."""
        self._raise_if_closing()
        workers = list(workers) or [0]
        error = self.diagnosis.timed_out(workers, waited, when)
        for index in workers:
            self.processes[index].kill()  # SIGKILL also ends a stopped process
        self.fail(error)

    def raise_error_reply(self, index: int, payload: bytes) -> NoReturn:
        """Raise the error a worker sent instead of its reply (stopping every worker)."""
        self._raise_if_closing()
        self.fail(self.diagnosis.error_reply(index, payload))

    def worker_died(self, index: int, when: str = "") -> NoReturn:
        """Raise :class:`WorkerDiedError` for worker ``index`` (stopping every worker)."""
        self._raise_if_closing()
        self.fail(self.diagnosis.died(index, when))

    def fail(self, error: Exception) -> NoReturn:
        """Stop everything, then raise: the envs' state is lost with the failed worker, so
        the others get a short grace period and are then killed (no polite 2 s wait)."""
        self._raise_if_closing()
        stop_workers(self.conns, self.processes, FAILURE_GRACE_S)
        on_failure = self._on_failure() if self._on_failure is not None else None
        if on_failure is not None:
            on_failure(f"a worker failed: {error}".splitlines()[0])
        raise error

    def _raise_if_closing(self) -> None:
        """Another thread is closing the env: the worker it stopped did not fail."""
        if self.closing is not None:
            raise self.diagnosis.closed_while_waiting(self.closing)
