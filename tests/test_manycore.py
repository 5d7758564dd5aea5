"""CPU pinning and the main process's raw framed pipe I/O."""

from __future__ import annotations

import multiprocessing
import os
import pickle

import numpy as np
import psutil
import pytest

import shmenv
from shmenv import affinity
from shmenv.fakegames import NullGame
from shmenv.wire import header_as_int32, read_frame_into, write_frame

needs_pinning = pytest.mark.skipif(not affinity.CAN_PIN, reason="no sched_setaffinity here")


# ------------------------------------------------------------------ pinning
@needs_pinning
def test_cores_are_assigned_round_robin():
    allowed = sorted(os.sched_getaffinity(0))
    assert affinity.worker_cpus(True, 5) == [allowed[i % len(allowed)] for i in range(5)]
    assert affinity.worker_cpus([allowed[-1]], 3) == [allowed[-1]] * 3
    assert affinity.worker_cpus(np.array(allowed), len(allowed)) == allowed
    assert affinity.worker_cpus(False, 3) == [None, None, None]


@needs_pinning
def test_bad_core_lists_are_refused_by_name():
    with pytest.raises(ValueError, match=r"core\(s\) \[100000\]"):
        affinity.worker_cpus([100000], 2)
    with pytest.raises(TypeError, match="non-empty sequence"):
        affinity.worker_cpus([], 2)
    with pytest.raises(TypeError, match="core ids must be ints"):
        affinity.worker_cpus([0.5], 2)
    for bad in ("0,1", 3):
        with pytest.raises(TypeError, match="sequence of core ids"):
            affinity.worker_cpus(bad, 2)


def test_unsupported_platform_warns_and_runs_unpinned(monkeypatch, no_leaked_segments):
    monkeypatch.setattr(affinity, "CAN_PIN", False)
    with pytest.warns(RuntimeWarning, match="unpinned"):
        env = shmenv.make("Breakout", 2, seed=0, game_factory=NullGame, cpu_affinity=True)
    with env:
        assert env.worker_cpus == (None,) * env.num_workers
        obs, _ = env.reset()
        assert obs.shape == (2, 4, 84, 84)


@needs_pinning
def test_workers_run_on_their_assigned_core(no_leaked_segments):
    allowed = sorted(os.sched_getaffinity(0))
    with shmenv.make("Breakout", 4, seed=0, num_workers=4, game_factory=NullGame,
                     cpu_affinity=True) as env:
        for index, pid in enumerate(env.worker_pids):
            assert psutil.Process(pid).cpu_affinity() == [
                allowed[index % len(allowed)]]
        env.reset()
        _obs, rewards, *_ = env.step(np.full(4, 3))
        assert (rewards == 3).all()
    assert set(psutil.Process().cpu_affinity()) == set(allowed)  # the main is never pinned


# ------------------------------------------------------------------ framed pipe I/O
def test_frames_interoperate_with_connection_both_ways():
    main_end, worker_end = multiprocessing.Pipe()
    with main_end, worker_end:
        frame = np.array([header_as_int32(8), 7, -3], dtype=np.int32)
        write_frame(main_end.fileno(), memoryview(frame).cast("B"))
        received = np.zeros(2, dtype=np.int32)
        assert worker_end.recv_bytes_into(received) == 8
        assert received.tolist() == [7, -3]

        worker_end.send_bytes(b"abcdef")
        payload = bytearray(6)
        assert read_frame_into(main_end.fileno(), bytearray(4), memoryview(payload)) is None
        assert payload == b"abcdef"


def test_longer_frames_are_returned_whole_and_eof_is_reported():
    main_end, worker_end = multiprocessing.Pipe()
    with main_end:
        error = pickle.dumps(("ValueError", "x" * 40_000))  # more than one pipe buffer
        worker_end.send_bytes(error)
        returned = read_frame_into(main_end.fileno(), bytearray(4), memoryview(bytearray(28)))
        assert returned == error
        worker_end.close()
        with pytest.raises(EOFError):
            read_frame_into(main_end.fileno(), bytearray(4), memoryview(bytearray(28)))


def test_a_reply_split_across_writes_is_reassembled():
    read_fd, write_fd = os.pipe()
    try:
        message = header_as_int32(6).to_bytes(4, "little", signed=True) + b"uvwxyz"
        os.write(write_fd, message[:2])  # a writer preempted mid-frame
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.write(write_fd, message[2:7])
            os.write(write_fd, message[7:])
            os._exit(0)
        payload = bytearray(6)
        assert read_frame_into(read_fd, bytearray(4), memoryview(payload)) is None
        assert payload == b"uvwxyz"
        os.waitpid(pid, 0)
    finally:
        os.close(read_fd)
        os.close(write_fd)
