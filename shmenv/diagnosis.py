"""The errors that name a failed, dead or hung worker: who it is, what became of it, and why.

The worker pool decides when a worker failed and what to do about it (kill, stop, tell
the owner); this module only words the error, from what the pool knows: each worker's
spec and process, the exit status, ``/proc``, the error report a worker sent, and for a
relayed step that hangs, the block's per-worker progress counters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from shmenv.block import RECEIVED, REPLIED
from shmenv.errors import (
    ClosedError,
    WorkerDiedError,
    WorkerError,
    WorkerTimeoutError,
    describe_exit,
)
from shmenv.protocol import ErrorReport
from shmenv.worker import WorkerSpec


def describe_envs(index: int, pid: int | None, start: int, stop: int) -> str:
    """How errors name a vector env's worker: ``shmenv worker 1 (pid 42, envs 2-3)``."""
    envs = f"env {start}" if stop - start == 1 else f"envs {start}-{stop - 1}"
    return f"shmenv worker {index} (pid {pid}, {envs})"


@dataclass(frozen=True)
class FailureNotes:
    """What the owner appends to the pool's error messages: what became of it."""

    died: str = ". All workers were stopped and this env is closed; create a new one."
    died_while_starting: str = ""
    resync_timeout: str = ""  # unused since timeouts name the hung worker (timed_out)
    resync_died_when: str = ""  # said after "exited with code 1" when a resync found EOF
    timed_out: str = ("; the workers that did not answer were killed, all others stopped, "
                      "and this env is closed; create a new one.")
    # The error a call gets when another thread closed the env while it waited.
    closed_while_waiting: str = ("this ShmVectorEnv was closed ({reason}) while this call "
                                 "waited for its workers; create a new one with "
                                 "shmenv.make(...)")


# A worker's state from /proc/<pid>/stat, for the timeout error: why it did not answer.
_PROC_STATES = {"T": "stopped by a signal", "t": "stopped by a debugger", "R": "running",
                "S": "sleeping", "D": "in uninterruptible sleep (disk or swap)",
                "Z": "exited"}


def process_state(pid: int | None) -> str:
    """``"stopped by a signal"`` etc. for a Linux process, or "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""
    return _PROC_STATES.get(state, "")


class Diagnosis:
    """Words the errors of one pool's workers: it returns them, the pool raises them.

    ``processes`` is the pool's own list, filled as the workers start; ``describe``
    names worker ``index`` from its pid and env range (:func:`describe_envs` by default).
    """

    def __init__(self, specs: Sequence[WorkerSpec], processes: Sequence[BaseProcess],
                 describe: Callable[[int, int | None, int, int], str],
                 notes: FailureNotes) -> None:
        self.specs = specs
        self.processes = processes
        self.notes = notes
        self._describe = describe
        # Each worker's parent in the relay tree (None: the root, or not relayed).
        self.parents: list[int | None] = [None] * len(specs)
        for spec in specs:
            for child, _start, _stop in spec.relay_children:
                self.parents[child] = spec.index

    def describe(self, index: int) -> str:
        """The worker as error messages name it (index, pid, envs)."""
        spec = self.specs[index]
        pid = self.processes[index].pid if index < len(self.processes) else None
        return self._describe(index, pid, spec.env_start, spec.env_stop)

    # ----------------------------------------------------------------- start-up
    def not_started(self, index: int, waited: float) -> WorkerDiedError:
        return WorkerDiedError(f"{self.describe(index)} did not start within {waited:.0f} s")

    def died_starting(self, index: int) -> WorkerDiedError:
        how, code = describe_exit(self.processes[index])
        return WorkerDiedError(f"{self.describe(index)} {how} while starting"
                               f"{self.notes.died_while_starting}", code)

    def failed_to_start(self, index: int, report: Any) -> WorkerError:
        return WorkerError(f"{self.describe(index)} failed to start: "
                           f"{report.type_name}: {report.message}\n\n"
                           f"Worker traceback:\n{report.traceback}",
                           report.type_name, report.traceback)

    # ----------------------------------------------------------------- after start-up
    def died(self, index: int, when: str = "") -> WorkerDiedError:
        """Worker ``index``'s pipe reported EOF: how its process ended."""
        how, code = describe_exit(self.processes[index])
        when = f" {when}" if when else ""
        return WorkerDiedError(f"{self.describe(index)} {how}{when}{self.notes.died}", code)

    def error_reply(self, index: int, payload: bytes) -> WorkerError | WorkerDiedError:
        """The error a worker sent instead of its reply (relayed: it may name another)."""
        report = ErrorReport.decode(payload)
        if report is None:
            return WorkerError(f"{self.describe(index)} sent a malformed reply")
        origin = report.worker  # relayed: another worker than `index`
        if report.kind == "died":
            return self.died(origin)
        return WorkerError(f"{self.describe(origin)} raised {report.type_name}: "
                           f"{report.message}\n\nWorker traceback:\n{report.traceback}",
                           report.type_name, report.traceback)

    def timed_out(self, workers: Sequence[int], waited: float | None,
                  when: str = "") -> WorkerTimeoutError:
        """``workers`` did not answer within ``waited`` seconds: each one named, with its
        process state (stopped, in uninterruptible sleep...) where ``/proc`` tells it."""
        names = " and ".join(self.describe(index) for index in workers)
        states = [f"worker {index} is {state}" for index in workers
                  if (state := process_state(self.processes[index].pid))]
        when = f" {when}" if when else ""
        states_text = f" ({', '.join(states)})" if states else ""
        return WorkerTimeoutError(f"{names} did not answer within {waited:g} s{when}"
                                  f"{states_text}{self.notes.timed_out}", tuple(workers))

    def closed_while_waiting(self, reason: str) -> ClosedError:
        """Another thread closed the env: the worker it stopped did not fail."""
        return ClosedError(self.notes.closed_while_waiting.format(reason=reason))

    def relay_laggards(self, progress: np.ndarray | None, step: int) -> list[int]:
        """The workers that hold up relayed step number ``step``, wherever in the tree.

        Each worker counts in the block (``progress``) the relayed steps it received (after
        forwarding them to its children) and replied to. A worker holds the step up if it
        has not replied and either it received the step and all its children replied (it
        is stuck in its own envs or stopped), or it never received it though its parent did
        (it is stopped and cannot read its pipe). Falls back to worker 0, the root.
        """
        if progress is None:
            return [0]
        received = progress[:, RECEIVED] >= step
        replied = progress[:, REPLIED] >= step
        children: list[list[int]] = [[] for _ in self.specs]
        for child, parent in enumerate(self.parents):
            if parent is not None:
                children[parent].append(child)
        laggards = []
        for index, parent in enumerate(self.parents):
            if replied[index]:
                continue
            if received[index]:
                if all(replied[child] for child in children[index]):
                    laggards.append(index)
            elif parent is None or received[parent]:
                laggards.append(index)
        return laggards or [0]
