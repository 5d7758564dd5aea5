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


@pytest.fixture
def no_leaked_segments():
    """Fails the test if it leaves a shmenv segment behind in /dev/shm."""
    before = shmenv_segments()
    yield
    leaked = {name for name in shmenv_segments() - before if not _made_elsewhere(name)}
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"


def _made_elsewhere(name: str) -> bool:
    """A segment another live process is creating right now (names carry the creator's
    pid): on a machine shared with other test runs, that is not this test's leak."""
    try:
        creator = int(name[len(NAME_PREFIX):].split("_")[0])
    except ValueError:
        return False
    return creator != os.getpid() and psutil.pid_exists(creator)


def action_stream(seed: int, steps: int, num_envs: int, num_actions: int) -> np.ndarray:
    """The fixed random action stream the equivalence tests replay: (steps, num_envs)."""
    return np.random.default_rng(seed).integers(0, num_actions, size=(steps, num_envs))
