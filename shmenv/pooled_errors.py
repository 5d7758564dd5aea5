"""How a drop-in group names a failed pool process: its pid and every Worker it served.

A pool process serves several Workers, and each of them raises the process's error once
(see :mod:`shmenv.pooled`): so every message names the process and the seeds of all the
Workers it served, and says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from shmenv.errors import (
    ForkedEnvError,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
    describe_exit,
)
from shmenv.pool import RESYNC_TIMEOUT_S, WorkerPool
from shmenv.protocol import ErrorReport

_CLOSED_NOW = "its Workers are closed now"


def describe_process(seeds: Sequence[Any], ranges: Sequence[tuple[int, int]], index: int,
                     pid: int | None, _start: int = 0, _stop: int = 0) -> str:
    """``shmenv pool process 0 (pid 42, serving the Workers of seeds 47, 48)``: the
    ``describe`` a :class:`~shmenv.pool.WorkerPool` of a group names its processes with."""
    start, stop = ranges[index]
    listed = ", ".join(str(s) for s in seeds[start:stop])
    worker_s = "Worker" if stop - start == 1 else "Workers"
    return f"shmenv pool process {index} (pid {pid}, serving the {worker_s} of seeds {listed})"


def died(pool: WorkerPool, p: int, when: str) -> WorkerDiedError:
    """Process ``p`` is gone (EOF or a broken pipe) ``when`` ("while running a command")."""
    how, code = describe_exit(pool.processes[p])
    return WorkerDiedError(f"{pool.describe(p)} {how} {when}; {_CLOSED_NOW}, create new ones",
                           code)


def raised(pool: WorkerPool, p: int, payload: bytes) -> WorkerError:
    """Process ``p`` sent ``payload``, an error report, in place of a reply."""
    report = ErrorReport.decode(payload)
    if report is None:
        return WorkerError(f"{pool.describe(p)} sent a malformed reply")
    return raised_report(pool, p, report)


def raised_report(pool: WorkerPool, p: int, report: ErrorReport) -> WorkerError:
    """Process ``p`` raised what ``report`` says."""
    return WorkerError(f"{pool.describe(p)} raised {report.type_name}: {report.message}"
                       f"\n\nWorker traceback:\n{report.traceback}",
                       report.type_name, report.traceback)


def hung(pool: WorkerPool, p: int, waited: float) -> WorkerTimeoutError:
    """Process ``p`` did not answer within the group's timeout (the caller killed it)."""
    return WorkerTimeoutError(f"{pool.describe(p)} did not answer within {waited:g} s; it was "
                              f"killed and {_CLOSED_NOW}, create new ones", (p,))


def hung_after_interrupt(pool: WorkerPool, p: int) -> WorkerDiedError:
    """Process ``p`` did not answer the sync request after a Ctrl-C."""
    return WorkerDiedError(f"{pool.describe(p)} did not answer within {RESYNC_TIMEOUT_S:.0f} s "
                           f"after an interrupted call; {_CLOSED_NOW}")


def forked(creator: int) -> ForkedEnvError:
    """A call from a process forked from ``creator``, the process the group belongs to."""
    return ForkedEnvError(
        f"these shmenv Workers belong to process {creator}, and this is process "
        f"{os.getpid()} (a fork): their pool cannot be used or closed from here. "
        "Create Workers in the process that uses them.")
