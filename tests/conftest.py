"""Shared test helpers."""

from __future__ import annotations

import os

import numpy as np
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
    leaked = shmenv_segments() - before
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"


def action_stream(seed: int, steps: int, num_envs: int, num_actions: int) -> np.ndarray:
    """The fixed random action stream the equivalence tests replay: (steps, num_envs)."""
    return np.random.default_rng(seed).integers(0, num_actions, size=(steps, num_envs))
