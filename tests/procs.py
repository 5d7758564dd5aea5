"""Process liveness by pid, for tests that check workers are gone."""

from __future__ import annotations

import time

import psutil


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def all_gone(pids, timeout: float = 5.0) -> bool:
    """Wait up to ``timeout`` s for every process in ``pids`` to end; True if they did."""
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
