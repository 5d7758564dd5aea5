"""Shared test helpers."""

from __future__ import annotations

import os

import numpy as np
import psutil
import pytest

from shmenv.block import NAME_PREFIX, SHM_DIR


def shmenv_segments() -> set[str]:
    """Names of shmenv's segments currently in /dev/shm."""
    try:
        return {n for n in os.listdir(SHM_DIR) if n.startswith(NAME_PREFIX)}
    except FileNotFoundError:
        return set()


def _created_by_a_stranger(segment: str) -> bool:
    """True for a segment whose creator (its name holds the pid) is alive and not ours:
    another program's live env, not a leak of this test."""
    try:
        pid = int(segment[len(NAME_PREFIX):].split("_")[0])
        process = psutil.Process(pid)
        ours = os.getpid() == pid or any(p.pid == os.getpid() for p in process.parents())
    except (ValueError, psutil.Error):
        return False
    return not ours


@pytest.fixture
def no_leaked_segments():
    """Fails the test if it leaves a shmenv segment behind in /dev/shm."""
    before = shmenv_segments()
    yield
    leaked = {s for s in shmenv_segments() - before if not _created_by_a_stranger(s)}
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"



def action_stream(seed: int, steps: int, num_envs: int, num_actions: int) -> np.ndarray:
    """The fixed random action stream the equivalence tests replay: (steps, num_envs)."""
    return np.random.default_rng(seed).integers(0, num_actions, size=(steps, num_envs))
