"""Shared test helpers."""

from __future__ import annotations

import os
import time

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


# multiprocessing's helpers outlive the envs that started them, by design.
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _new_children(before: set[int]) -> list[psutil.Process]:
    """This process's descendants started since ``before``, minus multiprocessing helpers."""
    found = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in before:
            continue
        try:
            if any(helper in part for part in child.cmdline() for helper in _HELPERS):
                continue
        except psutil.Error:
            continue  # exited meanwhile
        found.append(child)
    return found


def _segments_left(before: set[str], grace_s: float = 3.0) -> set[str]:
    """Segments that appeared since ``before`` and are not a live stranger's. A segment
    whose creator died moments ago may be another program's, about to be removed by its
    own resource tracker (pids are recycled fast here): only what outlasts ``grace_s``
    counts. Nothing removes a segment this process leaked, so grace hides no leak of ours."""
    deadline = time.monotonic() + grace_s
    while True:
        left = {s for s in shmenv_segments() - before if not _created_by_a_stranger(s)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def no_leaked_segments():
    """Fails the test if it leaves a shmenv segment in /dev/shm or a child process running.

    Segments of live programs that are not this process or its descendants (another shmenv
    user on the machine) are ignored; children get a few seconds to finish exiting.
    """
    segments_before = shmenv_segments()
    children_before = {c.pid for c in psutil.Process().children(recursive=True)}
    yield
    leaked = _segments_left(segments_before)
    assert not leaked, f"test leaked shared-memory segments: {sorted(leaked)}"
    new = _new_children(children_before)
    deadline = time.monotonic() + 5
    while (running := [p.pid for p in new if _running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running, f"test left child processes running: {running}"


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie; never waits on it (that would reap it under the feet of
    multiprocessing, which reads the exit code itself)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def action_stream(seed: int, steps: int, num_envs: int, num_actions: int) -> np.ndarray:
    """The fixed random action stream the equivalence tests replay: (steps, num_envs)."""
    return np.random.default_rng(seed).integers(0, num_actions, size=(steps, num_envs))


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray cluster for one test module (8 logical CPUs: each 2-actor env of the Ray
    tests reserves up to 4, and a module may hold two at once). Ray's start-up costs ~10 s
    on 2 busy cores, so a module shares one."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'shmenv[ray]'")
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 2**20, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()
