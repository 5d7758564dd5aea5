"""CPU pinning: which core each worker runs on, and pinning a process to it.

Pinning keeps a worker's emulator state in one core's caches and stops the scheduler from
moving workers around; whether it helps depends on the machine (docs/scaling.md has what
it did here). The main process is never pinned: it should run wherever a core is free.
"""

from __future__ import annotations

import operator
import os
import warnings
from collections.abc import Iterable

CAN_PIN = hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


def worker_cpus(cpu_affinity: bool | Iterable[int], num_workers: int) -> list[int | None]:
    """The core for each worker (None = unpinned), assigned round-robin.

    ``True`` uses the cores this process may run on, in order; a sequence (or array) of
    core ids uses those. ``False`` pins nothing. Where pinning is unsupported a
    ``RuntimeWarning`` is issued and nothing is pinned.
    """
    if cpu_affinity is False or cpu_affinity is None:
        return [None] * num_workers
    if not CAN_PIN:
        warnings.warn("cpu_affinity was requested but this platform has no "
                      "os.sched_setaffinity; the workers run unpinned", RuntimeWarning,
                      stacklevel=3)
        return [None] * num_workers
    allowed = sorted(os.sched_getaffinity(0))
    if cpu_affinity is True:
        cores = allowed
    else:
        try:
            requested = [] if isinstance(cpu_affinity, (str, bytes)) else list(cpu_affinity)
        except TypeError:
            requested = []
        if not requested:
            raise TypeError("cpu_affinity must be True, False or a non-empty sequence of "
                            f"core ids, got {cpu_affinity!r}")
        cores = []
        for core in requested:
            if isinstance(core, bool):
                raise TypeError(f"cpu_affinity core ids must be ints, got {core!r}")
            try:
                cores.append(operator.index(core))
            except TypeError:
                raise TypeError(f"cpu_affinity core ids must be ints, got {core!r}") from None
        unavailable = sorted(set(cores) - set(allowed))
        if unavailable:
            raise ValueError(f"cpu_affinity names core(s) {unavailable} this process may not "
                             f"run on; available cores: {allowed}")
    return [cores[i % len(cores)] for i in range(num_workers)]


def pin_current_process(cpu: int | None) -> None:
    """Pin the calling process to one core (a worker calls this first thing)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
