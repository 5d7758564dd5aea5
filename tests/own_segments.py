"""Leak check that sees only this process's segments.

conftest's ``no_leaked_segments`` compares all of /dev/shm before and after a test, so a
segment another program creates meanwhile (other test runs on a shared machine) fails the
test. Block names start with ``shmenv_<creator pid>_``; every block these tests create is
created in the test process, so checking that prefix is exact and immune to neighbours.
"""

from __future__ import annotations

import os

import pytest
from conftest import shmenv_segments


def own_segments() -> set[str]:
    prefix = f"shmenv_{os.getpid()}_"
    return {name for name in shmenv_segments() if name.startswith(prefix)}


@pytest.fixture
def no_leaked_segments():
    """Fails the test if it leaves one of this process's shmenv segments in /dev/shm."""
    before = own_segments()
    yield
    leaked = own_segments() - before
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"
