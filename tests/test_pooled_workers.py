"""Drop-in Workers created together share one block and at most one process per core.

Covers docs/migration.md: the pool's shape (processes, one block), the reference's numbers
through a pooled group and through a Worker used alone, closing and failures per Worker
(per process), a kept ``child`` that outlives its Worker, garbage collection, explicit
groups, and pickling.
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import os
import pickle
import signal
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import psutil
import pytest

import shmenv
from shmenv.baseline import baseline_rollout
from shmenv.block import NAME_PREFIX, SHM_DIR
from shmenv.fakegames import NUM_ACTIONS, CounterGame
from shmenv.pooled import WorkerGroup
from shmenv.sysinfo import usable_cores
from tests.conftest import action_stream
from tests.procs import all_gone
from tests.test_reliability import CHILD_ENV, assert_quiet, child_command, parse_events

pytestmark = pytest.mark.usefixtures("no_leaked_segments")
COUNTER = functools.partial(CounterGame)


def counter_workers(count: int, group: WorkerGroup | None = None, **knobs) -> list:
    factory = functools.partial(CounterGame, **knobs) if knobs else COUNTER
    return [shmenv.Worker(i, game_factory=factory, group=group) for i in range(count)]


def close_all(workers) -> None:
    for w in workers:
        w.child.send(("close", None))


def step_all(workers, actions) -> list:
    for w, action in zip(workers, actions):
        w.child.send(("step", int(action)))
    return [w.child.recv() for w in workers]


def own_segments() -> list[str]:
    return [n for n in os.listdir(SHM_DIR) if n.startswith(f"{NAME_PREFIX}{os.getpid()}_")]


def mapped_segments(pid: int) -> set[str]:
    """The shmenv segments process ``pid`` has mapped (unlinked ones included)."""
    with open(f"/proc/{pid}/maps") as maps:
        return {line.split(f"{SHM_DIR}/")[1].split()[0] for line in maps
                if f"{SHM_DIR}/{NAME_PREFIX}" in line}


# --------------------------------------------------------------------------- the pool's shape
def test_eight_workers_run_in_one_block_and_one_process_per_core():
    children_before = {c.pid for c in psutil.Process().children(recursive=True)}
    mapped_before = mapped_segments(os.getpid())  # earlier tests' views may still be alive
    workers = counter_workers(8)
    try:
        assert own_segments() == []  # nothing starts before the first command
        pids = {w.process.pid for w in workers}  # asking for a process starts the group
        assert len(pids) == min(8, usable_cores())
        assert len(own_segments()) == 1  # one block, its name kept until all are ready
        for w in workers:
            w.child.send(("reset", None))
        assert [int(w.child.recv()[0, 0, 0]) for w in workers] == [0] * 8
        assert own_segments() == []  # unlinked once every process mapped it
        ours = mapped_segments(os.getpid()) - mapped_before  # forked pools inherit the rest
        assert len(ours) == 1 and all(mapped_segments(p) - mapped_before == ours for p in pids)
        new = [c for c in psutil.Process().children(recursive=True)
               if c.pid not in children_before]
        assert len(new) <= usable_cores() + 1  # the pool (+ the resource tracker)
        results = step_all(workers, [1, 2, 3, 0, 1, 2, 3, 0])
        assert [int(r[1]) % NUM_ACTIONS for r in results] == [1, 2, 3, 0, 1, 2, 3, 0]
    finally:
        close_all(workers)
    assert all_gone(pids)


def test_num_processes_and_explicit_group():
    with WorkerGroup(num_processes=1) as group:
        workers = counter_workers(3)  # join the group of the `with` block
        assert all(w.child.group is group for w in workers)
        assert len({w.process.pid for w in workers}) == 1
        group.start()
        with pytest.raises(shmenv.ShmenvError, match="takes no new Workers"):
            shmenv.Worker(9, game_factory=COUNTER, group=group)
        assert [int(r[1]) // NUM_ACTIONS for r in step_all(workers, [0, 1, 2])] == [1] * 3
    with pytest.raises(shmenv.ClosedError):  # leaving the block closed every member
        workers[0].child.send(("reset", None))
    with pytest.raises(ValueError, match="num_processes"):
        WorkerGroup(num_processes=0)


def test_workers_join_the_open_group_until_it_starts():
    first = counter_workers(2)
    assert first[0].child.group is first[1].child.group
    pong = shmenv.Worker(5, game="Pong", game_factory=COUNTER)  # another game: another group
    assert pong.child.group is not first[0].child.group
    first[0].child.send(("reset", None))  # starts (and seals) the first group
    later = shmenv.Worker(3, game_factory=COUNTER)
    assert later.child.group is not first[0].child.group
    first[0].child.recv()
    close_all([*first, pong, later])


# --------------------------------------------------------------------------- same numbers
SEEDS = tuple(range(47, 55))
STEPS = 300


def _reference(seed: int, actions: np.ndarray) -> list:
    return list(baseline_rollout(seed, actions))


def _assert_matches(ref, got, where: str) -> None:
    if not isinstance(ref, tuple):  # a reset
        assert got.dtype == np.uint8 and np.array_equal(got, ref), f"{where}: reset stack"
        return
    stack, reward, done, info = got
    assert np.array_equal(stack, ref[0]), f"{where}: stack differs from the reference's"
    assert (reward, done, info) == ref[1:], f"{where}: {(reward, done, info)} != {ref[1:]}"


@pytest.fixture(scope="module")
def references():
    actions = action_stream(1234, STEPS, len(SEEDS), 4)
    with ProcessPoolExecutor(max_workers=2) as pool:
        refs = list(pool.map(_reference, SEEDS, actions.T))
    return actions, refs


def test_eight_pooled_workers_match_the_reference(references):
    actions, refs = references
    workers = [shmenv.Worker(seed) for seed in SEEDS]
    try:
        assert len({w.child.group for w in workers}) == 1
        for w in workers:
            w.child.send(("reset", None))
        for i, w in enumerate(workers):
            _assert_matches(refs[i][0], w.child.recv(), f"seed {SEEDS[i]} reset")
        episodes = 0
        for step, row in enumerate(actions, start=1):
            for i, got in enumerate(step_all(workers, row)):
                _assert_matches(refs[i][step], got, f"seed {SEEDS[i]} step {step}")
                episodes += got[2]
        assert episodes >= 8  # the run went through resets
    finally:
        close_all(workers)


def test_a_worker_used_alone_matches_the_reference(references):
    """Three Workers in one process, each driven alone in turn (send, then recv, before
    touching the next): every command travels in a frame of its own."""
    actions, refs = references
    workers = [shmenv.Worker(seed, group=group) for seed, group in
               zip(SEEDS[:3], [WorkerGroup(num_processes=1)] * 3)]
    try:
        for i, w in enumerate(workers):
            w.child.send(("reset", None))
            _assert_matches(refs[i][0], w.child.recv(), f"seed {SEEDS[i]} reset")
        for step, row in enumerate(actions[:150], start=1):
            for i, w in enumerate(workers):
                w.child.send(("step", int(row[i])))
                assert w.child.poll(None)
                _assert_matches(refs[i][step], w.child.recv(), f"seed {SEEDS[i]} step {step}")
    finally:
        close_all(workers)


def test_a_worker_sent_again_before_the_others_are_read_gets_its_own_replies():
    """The reference's loop, except that Worker 0 gets its next command before the others'
    replies are read: that command waits in its process's frame (the others have none) and
    goes out at the next recv() of any Worker; every reply is its Worker's own."""
    workers = counter_workers(4, WorkerGroup(num_processes=2))  # process 0: Workers 0, 1
    step_all(workers, [0] * 4)
    for w, action in zip(workers, [1, 2, 3, 0]):
        w.child.send(("step", action))
    first = workers[0].child.recv()
    workers[0].child.send(("step", 2))
    replies = [first] + [w.child.recv() for w in workers[1:]] + [workers[0].child.recv()]
    assert [divmod(int(r[1]), NUM_ACTIONS) for r in replies] == [
        (2, 1), (2, 2), (2, 3), (2, 0), (3, 2)]
    assert [int(r[0][0, 0, 0]) for r in replies] == [2, 2, 2, 2, 3]
    close_all(workers)


# --------------------------------------------------------------------------- per Worker
def test_closing_one_worker_leaves_the_others_running():
    workers = counter_workers(4, WorkerGroup(num_processes=2))  # process 0: Workers 0, 1
    step_all(workers, [0] * 4)
    process = workers[0].process
    workers[0].child.send(("close", None))
    with pytest.raises(shmenv.ClosedError, match="close\\(\\) was called"):
        workers[0].child.send(("step", 1))
    results = step_all(workers[1:], [1, 2, 3])  # Worker 1 alone completes its process's set
    assert [int(r[1]) for r in results] == [2 * NUM_ACTIONS + a for a in (1, 2, 3)]
    assert process.is_alive()
    workers[1].child.close()  # the last Worker it served
    process.join(timeout=5)
    assert process.exitcode == 0
    assert [int(r[1]) // NUM_ACTIONS for r in step_all(workers[2:], [0, 0])] == [3, 3]
    close_all(workers)


def test_a_killed_process_names_every_worker_it_served():
    workers = [shmenv.Worker(seed, game_factory=COUNTER, group=group)
               for seed, group in zip((47, 48, 49, 50), [WorkerGroup(num_processes=2)] * 4)]
    step_all(workers, [0] * 4)
    victim = workers[0].process
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(timeout=5)
    for w in workers[2:]:
        w.child.send(("step", 1))
    messages = []
    for w in workers[:2]:  # each Worker of the killed process raises it, once
        with pytest.raises(shmenv.WorkerDiedError) as caught:
            w.child.send(("step", 1))
            w.child.recv()
        messages.append(str(caught.value))
        assert caught.value.exitcode == -signal.SIGKILL
        with pytest.raises(shmenv.ClosedError, match="its process failed"):
            w.child.send(("step", 1))
    for message in messages:
        assert f"pid {victim.pid}" in message and "SIGKILL" in message
        assert "seeds 47, 48" in message
    assert [int(r[1]) // NUM_ACTIONS for r in (w.child.recv() for w in workers[2:])] == [2, 2]
    close_all(workers)


def test_a_game_error_closes_only_its_process():
    workers = counter_workers(4, WorkerGroup(num_processes=2), fail_at_step=3)
    step_all(workers, [0] * 4)
    for w in workers[2:]:  # the second process's Workers run ahead and fail first
        w.child.send(("step", 0))
        w.child.recv()
    for w in workers[2:]:
        w.child.send(("step", 0))
    with pytest.raises(shmenv.WorkerError, match="emulator error at step 3") as caught:
        workers[2].child.recv()
    assert "Worker traceback:" in str(caught.value) and "seeds 2, 3" in str(caught.value)
    with pytest.raises(shmenv.WorkerError):
        workers[3].child.recv()
    assert [int(r[1]) // NUM_ACTIONS for r in step_all(workers[:2], [1, 1])] == [2, 2]
    close_all(workers)


def test_a_kept_child_outlives_its_worker():
    child = shmenv.Worker(47, game_factory=COUNTER).child
    gc.collect()
    child.send(("reset", None))
    child.recv()
    child.send(("step", 2))
    _stack, reward, _done, _info = child.recv()
    assert reward == NUM_ACTIONS + 2
    pid = child.group.processes[0].pid
    del child
    gc.collect()
    assert all_gone([pid])  # the last Worker of its process went: it stopped


def test_dropping_every_worker_stops_the_pool():
    workers = counter_workers(4)
    step_all(workers, [0] * 4)
    pids = [p.pid for p in workers[0].child.group.processes]
    del workers
    gc.collect()
    assert all_gone(pids)


def test_pickling_a_worker_says_what_to_do():
    worker = shmenv.Worker(47, game_factory=COUNTER)
    for obj in (worker, worker.child, worker.child.group):
        with pytest.raises(TypeError, match="cannot be pickled.*create"):
            pickle.dumps(obj)
    worker.child.close()


# --------------------------------------------------------------------------- Ctrl-C
def test_interrupt_storm_never_mixes_up_pooled_replies():
    """SIGINT every few ms while 4 Workers in 2 processes run the reference's loop: each
    interrupt may land anywhere (recording, sending, reading, recovering); every reply a
    Worker returns must still be its own, for its latest command."""
    proc = subprocess.Popen(child_command("worker-storm", "--num-envs", "4",
                                          "--num-workers", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=CHILD_ENV)
    try:
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        rng = np.random.default_rng(1)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            time.sleep(rng.uniform(0.001, 0.01))
        proc.send_signal(signal.SIGUSR1)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    end = parse_events(stdout)["end"]
    print(f"\npooled interrupt storm: {end}")
    assert end["interrupts"] > 50
    assert end["bad"] == 0, end["bad_examples"]
    assert end["replies"] > 100
    assert end["segments"] == [] and end["alive"] == []
    assert_quiet(stderr)


def test_a_forked_child_cannot_touch_the_pool_and_its_exit_leaves_it_running():
    workers = counter_workers(2)
    step_all(workers, [0, 0])
    pid = os.fork()
    if pid == 0:  # the child: every call refuses, and its exit handlers do nothing
        code = 0
        for call in (lambda: workers[0].child.send(("step", 1)), workers[1].child.close):
            try:
                call()
                code = 1
            except shmenv.ShmenvError as exc:
                code |= 0 if "a fork" in str(exc) else 1
        del workers[:]
        gc.collect()
        atexit._run_exitfuncs()  # what a plain exit runs: weakref.finalize's handler
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [int(r[1]) // NUM_ACTIONS for r in step_all(workers, [1, 2])] == [2, 2]
    close_all(workers)


def test_workers_closed_before_the_start_leave_no_idle_process():
    workers = counter_workers(4, WorkerGroup(num_processes=2))  # process 0: Workers 0, 1
    for w in workers[:2]:
        w.child.close()
    assert [int(r[1]) // NUM_ACTIONS for r in step_all(workers[2:], [1, 2])] == [1, 1]
    first, second = workers[0].child.group.processes
    first.join(timeout=5)
    assert first.exitcode == 0 and second.is_alive()
    close_all(workers)


# --------------------------------------------------------------------------- the benchmark
def test_bench_drop_in_runs_the_reference_loop_with_both_workers(monkeypatch):
    from shmenv.benchmarks import contenders, throughput
    from shmenv.cli import main

    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before measuring anything

    monkeypatch.setattr(throughput, "run", fake_run)
    assert main(["bench", "--drop-in"]) == 130
    assert [c.name for c in throughput.select(seen["only"])] == ["shmenv", "pipe", "dropin"]
    assert main(["bench", "--drop-in", "--async-pinning"]) == 2
    monkeypatch.undo()
    result = contenders.measure_dropin("Breakout", 4, seconds=0.3, warmup=0.1, seed=47)
    assert result["env_steps"] > 0 and result["env_steps"] % 4 == 0


def test_a_hung_process_times_out_and_is_named():
    group = WorkerGroup(num_processes=2, timeout=0.5)
    workers = [shmenv.Worker(seed, game_factory=COUNTER, group=group) for seed in (47, 48, 49)]
    step_all(workers, [0] * 3)
    hung = workers[0].process  # serves the Workers of seeds 47 and 48
    os.kill(hung.pid, signal.SIGSTOP)
    for w in workers:
        w.child.send(("step", 1))
    for w in workers[:2]:
        with pytest.raises(shmenv.WorkerTimeoutError, match=f"pid {hung.pid}.*seeds 47, 48"):
            w.child.recv()
    assert int(workers[2].child.recv()[1]) == 2 * NUM_ACTIONS + 1
    hung.join(timeout=5)
    assert hung.exitcode == -signal.SIGKILL
    with pytest.raises(ValueError, match="timeout"):
        WorkerGroup(timeout=0)
    close_all(workers)
