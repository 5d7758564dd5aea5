"""Reliability: dead workers, worker exceptions, a killed parent, a full /dev/shm,
malformed actions, Ctrl-C, use after close, leaks and resource_tracker warnings.

Scenarios that kill or signal processes run in a child (tests/reliability_child.py) whose
stdout reports JSON events; its stderr (shared with its workers and the resource tracker)
must stay free of tracebacks and warnings. docs/reliability.md describes each failure mode.
No test asserts a duration; measured latencies are printed (``pytest -s``) for the docs.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import shmenv
import shmenv.fakegames
from shmenv.block import NAME_PREFIX, SHM_DIR
from shmenv.fakegames import NUM_ACTIONS, CounterGame
from tests.procs import all_gone

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "reliability_child.py"
CHILD_ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
NOISE = ("Traceback", "resource_tracker", "leaked", "Warning", "KeyboardInterrupt")
# Every scenario must leave no segment and no process behind (conftest's one leak check).
pytestmark = pytest.mark.usefixtures("no_leaked_segments")


def child_command(*args: str) -> list[str]:
    return [sys.executable, str(CHILD), *args]


def run_child(*args: str, timeout: float = 60) -> tuple[dict[str, dict], str]:
    """Run a scenario to completion; its events by name, and its stderr."""
    proc = subprocess.run(child_command(*args), capture_output=True, text=True,
                          timeout=timeout, env=CHILD_ENV)
    assert proc.returncode == 0, f"scenario failed:\n{proc.stdout}\n{proc.stderr}"
    return parse_events(proc.stdout), proc.stderr


def parse_events(stdout: str) -> dict[str, dict]:
    events = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            events[event.pop("event")] = event
    return events


def assert_quiet(stderr: str) -> None:
    """No tracebacks from workers, no resource_tracker warnings, nothing else either."""
    assert not any(word in stderr for word in NOISE), f"unexpected stderr:\n{stderr}"


def segments_of(pid: int) -> set[str]:
    """The shmenv segments in /dev/shm created by process ``pid`` (names carry it)."""
    return {n for n in os.listdir(SHM_DIR) if n.startswith(f"{NAME_PREFIX}{pid}_")}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition, timeout: float) -> float | None:
    """Seconds until ``condition()`` held, or None if it never did within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    return None


# --------------------------------------------------------------------------- 1. worker killed
@pytest.mark.parametrize("context, when, api", [
    ("fork", "step", "vector"),
    ("fork", "reset", "vector"),
    ("fork", "idle", "vector"),
    ("spawn", "step", "vector"),
    ("fork", "step", "compat"),
    ("forkserver", "idle", "compat"),
])
def test_killed_worker_raises_named_error_and_closes(context, when, api):
    events, stderr = run_child("worker-killed", "--context", context, "--when", when,
                               "--api", api)
    error = events["error"]
    print(f"\nkilled worker ({context}, {when}, {api}): error after {error['seconds']:.3f} s")
    assert error["type"] == "WorkerDiedError"
    assert error["exitcode"] == -signal.SIGKILL
    assert "SIGKILL" in error["message"]
    victim = events["ready"]["victim"]
    assert f"pid {victim}" in error["message"]
    if api == "vector":
        assert "worker 1" in error["message"] and "envs 2-3" in error["message"]
        assert events["later_reset"]["type"] == "ClosedError"
    assert events["later"]["type"] == "ClosedError"
    assert "closed" in events["later"]["message"]
    assert events["end"] == {"alive": [], "segments": []}
    assert_quiet(stderr)


# --------------------------------------------------------------------------- 2. worker raises
@pytest.mark.parametrize("context, phase, api", [
    ("fork", "start", "vector"),
    ("fork", "step", "vector"),
    ("forkserver", "step", "vector"),
    ("fork", "start", "compat"),
    ("fork", "step", "compat"),
])
def test_worker_exception_is_reraised_with_its_traceback(context, phase, api):
    events, stderr = run_child("worker-exception", "--context", context, "--phase", phase,
                               "--api", api)
    error = events["error"]
    assert error["type"] == "WorkerError"
    expected = "cannot load ROM" if phase == "start" else "emulator error at step 3"
    assert expected in error["message"]
    assert "Worker traceback:" in error["message"]
    assert "fakegames.py" in error["worker_traceback"]  # the worker's own frames
    assert error["worker_type"] == ("FileNotFoundError" if phase == "start" else "RuntimeError")
    if "later" in events:
        assert events["later"]["type"] == "ClosedError"
    assert events["end"] == {"alive": [], "segments": []}
    assert_quiet(stderr)


# --------------------------------------------------------------------------- 3. parent killed
DEEP_RELAY = ("--num-envs", "7", "--num-workers", "7", "--relay-fanout", "2")  # 3 levels


@pytest.mark.parametrize("context, phase, api, extra", [
    ("fork", "running", "vector", ()),
    ("spawn", "running", "vector", ()),
    ("fork", "startup", "vector", ()),
    ("forkserver", "startup", "vector", ()),
    ("fork", "unstarted", "compat", ()),
    ("spawn", "running", "compat", ()),
    ("fork", "running", "vector", DEEP_RELAY),
    ("spawn", "startup", "vector", DEEP_RELAY),
])
def test_parent_sigkill_leaves_no_worker_and_no_segment(context, phase, api, extra):
    """SIGKILL the main process; its workers must exit and its segment vanish on their own.

    ``startup``: the workers take a second to construct their games, and the kill lands
    while the block's name still exists (before the parent unlinked it). ``unstarted``:
    drop-in Workers that were never sent a command (their names also still exist).
    ``DEEP_RELAY``: a worker deep in the relay tree also holds pipe ends of its relay
    children, so it sees EOF only when its relay parent exits; the exits must cascade.
    """
    proc = subprocess.Popen(child_command("parent-sigkill", "--context", context,
                                          "--phase", phase, "--api", api, *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=CHILD_ENV)
    try:
        if phase == "startup":
            # Kill as soon as the segment exists and every worker is running (2 workers and
            # the resource tracker or forkserver, or DEEP_RELAY's 7 workers and one more).
            # Then wait a little: spawn writes each child's start-up data after creating it,
            # and a parent killed mid-write makes multiprocessing itself print an EOFError.
            processes = 8 if extra else 3
            started = wait_until(lambda: segments_of(proc.pid) and len(
                psutil.Process(proc.pid).children(recursive=True)) >= processes, 60)
            assert started is not None, "the child never started its workers"
            time.sleep(0.2 if extra else 0.0)
            assert segments_of(proc.pid), "the name must still exist when the kill lands"
        else:
            line = proc.stdout.readline()
            assert json.loads(line)["event"] == "ready", line
            if api == "compat" and phase == "unstarted":
                assert len(segments_of(proc.pid)) == 1  # the three Workers' one block
        descendants = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(timeout=10)
        workers_exit = segment_gone = None
        while time.monotonic() - killed_at < 20 and (workers_exit is None
                                                     or segment_gone is None):
            if segment_gone is None and not segments_of(proc.pid):
                segment_gone = time.monotonic() - killed_at
            if workers_exit is None and all(gone(p.pid) for p in descendants):
                workers_exit = time.monotonic() - killed_at
            time.sleep(0.01)
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(f"\nparent SIGKILL ({context}, {phase}, {api}): {len(descendants)} descendants "
          f"gone after {workers_exit} s, segment gone after {segment_gone} s")
    assert workers_exit is not None, "workers outlived their killed parent"
    assert segment_gone is not None, f"segment left behind: {segments_of(proc.pid)}"
    assert_quiet(stderr)


# --------------------------------------------------------------------------- 4. /dev/shm full
def _private_tiny_shm_works() -> bool:
    try:
        probe = subprocess.run(["unshare", "--mount", "sh", "-c",
                                f"mount -t tmpfs -o size=64k tmpfs {SHM_DIR}"],
                               capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _private_tiny_shm_works(),
                    reason="needs root and unshare(1) to mount a tiny tmpfs on /dev/shm")
def test_tiny_dev_shm_gives_clear_error_before_any_worker_starts():
    """A real 64 KiB /dev/shm in a private mount namespace (the Docker default is 64 MiB)."""
    script = (f"mount -t tmpfs -o size=64k tmpfs {SHM_DIR} && "
              f"exec {sys.executable} {CHILD} shm-too-small --num-envs 8")
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True,
                          text=True, timeout=60, env=CHILD_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = {}
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        events.setdefault(event.pop("event"), []).append(event)
    free = events["free"][0]["free"]
    # The child's env: 8 envs on 2 workers with relayed steps (one progress row each).
    needed = shmenv.block.BlockLayout(8, (4, 84, 84), num_workers=2).nbytes
    for error in events["error"]:  # statvfs reading, then reservation (reading faked)
        assert error["type"] == "SharedMemorySpaceError", error
        assert f"{needed:,} bytes" in error["message"]
        assert "--shm-size" in error["message"]
        assert error["children"] == 0 and error["mp_children"] == 0  # no worker started
    assert f"only {free:,} bytes" in events["error"][0]["message"]
    assert events["filled"][0]["free"] < 4096
    assert events["full_worker"][0]["steps_ok"] == 20  # reserved pages: no SIGBUS when full
    assert events["worker_error"][0]["type"] == "SharedMemorySpaceError"
    assert events["end"][0]["segments"] == []
    assert_quiet(proc.stderr)


def test_injected_free_space_reading_stops_make_and_worker(no_leaked_segments):
    layout = shmenv.block.BlockLayout(16, (4, 84, 84))
    with pytest.raises(shmenv.SharedMemorySpaceError) as info:
        shmenv.block.SharedBlock.create(layout, free_bytes=100_000)
    message = str(info.value)
    assert f"{layout.nbytes:,} bytes" in message and "100,000 bytes" in message
    assert "--shm-size" in message
    assert isinstance(info.value, OSError)


# --------------------------------------------------------------------------- 5. bad actions
BAD_ACTIONS = [
    # (actions for 3 envs, exception, text the message must contain)
    ([0, 1], ValueError, "got 2 actions"),
    ([0, 1, 2, 3], ValueError, "got 4 actions"),
    (np.zeros((3, 1), dtype=np.int64), ValueError, "shape (3, 1)"),
    ([[0, 1], 2, 3], ValueError, "flat sequence"),
    (np.array([0, 1.5, 2]), TypeError, "actions[1] = 1.5"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "actions[0] = 0.0"),
    ([0, float("nan"), 1], TypeError, "actions[1] = nan"),
    ([0, -1, 1], ValueError, "actions[1] = -1"),
    ([0, 1, 99], ValueError, "actions[2] = 99"),
    (np.array([0, 1, 2**40], dtype=np.int64), ValueError, f"actions[2] = {2**40}"),
    ([0, 1, 2**70], ValueError, f"actions[2] = {2**70}"),
    (np.array([0, 1, 255], dtype=np.uint8), ValueError, "actions[2] = 255"),
    ([0, "1", 2], TypeError, "actions[0] = '0'"),
    ("012", TypeError, "'012'"),
    ([0, None, 1], TypeError, "actions[1] = None"),
    (None, TypeError, "got None"),
    ([True, False, True], TypeError, "actions[0] = True"),
]


@pytest.fixture(scope="module")
def breakout_pair():
    """Two identical real-Breakout envs (3 envs, 1 worker each): one gets the bad actions."""
    envs = [shmenv.make("Breakout", 3, num_workers=1, seed=11, context="fork")
            for _ in range(2)]
    for env in envs:
        env.reset()
    yield envs
    for env in envs:
        env.close()


@pytest.mark.parametrize("actions, error, text", BAD_ACTIONS,
                         ids=[repr(a)[:30] for a, _, _ in BAD_ACTIONS])
def test_malformed_actions_raise_naming_index_and_value(breakout_pair, actions, error, text):
    env, _ = breakout_pair
    with pytest.raises(error) as info:
        env.step(actions)
    assert text in str(info.value)


def test_envs_unchanged_by_rejected_actions(breakout_pair):
    """The env that saw every bad action steps exactly like its untouched twin."""
    bad_env, twin = breakout_pair
    for actions, error, _ in BAD_ACTIONS:
        with pytest.raises(error):
            bad_env.step(actions)
    good = np.random.default_rng(3).integers(0, bad_env.single_action_space.n, (30, 3))
    for actions in good:
        got, expected = bad_env.step(actions), twin.step(actions)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[2], expected[2])


@pytest.mark.parametrize("action, error", [
    (-1, ValueError), (4, ValueError), (1.0, TypeError), (float("nan"), TypeError),
    ("1", TypeError), (None, TypeError), (True, TypeError), (np.array([1, 2]), TypeError),
])
def test_compat_worker_rejects_malformed_action(action, error, no_leaked_segments):
    worker = shmenv.Worker(7, game_factory=functools.partial(CounterGame))
    try:
        worker.child.send(("reset", None))
        worker.child.recv()
        with pytest.raises(error) as info:
            worker.child.send(("step", action))
        assert repr(action) in str(info.value) or str(action) in str(info.value)
        for accepted in (2, np.int64(3), np.array(1)):  # still in step with its replies
            worker.child.send(("step", accepted))
            _stack, reward, _done, _info = worker.child.recv()
            assert int(reward) % NUM_ACTIONS == int(accepted)
    finally:
        worker.child.close()


def test_compat_worker_checks_actions_after_it_has_stepped(no_leaked_segments):
    """Once the Worker knows its game's actions (a plain in-range int then skips the other
    checks), a bool, an out-of-range int and a float are still refused, and the Worker
    stays in step with its replies."""
    worker = shmenv.Worker(7, game_factory=functools.partial(CounterGame))
    try:
        worker.child.send(("step", 1))
        worker.child.recv()
        for action, error in ((True, TypeError), (NUM_ACTIONS, ValueError), (-1, ValueError),
                              (2.0, TypeError)):
            with pytest.raises(error, match="action"):
                worker.child.send(("step", action))
        for accepted in (3, np.int64(0), 2):
            worker.child.send(("step", accepted))
            _stack, reward, _done, _info = worker.child.recv()
            assert int(reward) % NUM_ACTIONS == int(accepted)
    finally:
        worker.child.close()

# --------------------------------------------------------------------------- 6. Ctrl-C
def test_ctrl_c_during_step_reaches_caller_and_env_keeps_working():
    """SIGINT to the whole process group, as a terminal's Ctrl-C: workers included."""
    proc = subprocess.Popen(child_command("ctrl-c"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=CHILD_ENV,
                            start_new_session=True)
    try:
        assert json.loads(proc.stdout.readline())["event"] == "ready"
        time.sleep(0.2)  # the step is waiting for its 0.3 s-per-env workers now
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stdout + stderr
    events = parse_events(stdout)
    assert "interrupted" in events
    step = events["next_step"]
    assert step["rewards_mod"] == step["actions"]  # the next step read its own replies
    assert events["end"] == {"alive": [], "segments": []}
    assert_quiet(stderr)


def test_interrupt_storm_never_mixes_up_replies():
    """SIGINT every few ms while stepping flat out: each interrupt may land anywhere in
    step (sending, reading, half-way through a reply); every completed step must still
    carry its own replies, and the env and the Worker must keep working."""
    proc = subprocess.Popen(child_command("interrupt-storm", "--num-envs", "6",
                                          "--num-workers", "3"),
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
    print(f"\ninterrupt storm: {end['interrupts']} interrupts, {end['steps']} env steps, "
          f"{end['worker_steps']} Worker steps, {end['worker_lost']} Worker replies lost")
    assert end["interrupts"] > 50
    assert end["bad"] == 0, end["bad_examples"]
    assert end["steps"] > 100 and end["worker_steps"] > 100
    assert end["segments"] == [] and end["alive"] == []
    assert_quiet(stderr)


# --------------------------------------------------------------------------- 7. after close
@pytest.fixture
def counter_env(no_leaked_segments):
    env = shmenv.make("Breakout", 4, num_workers=2, context="fork",
                      game_factory=functools.partial(CounterGame))
    yield env
    env.close()


def test_every_call_after_close_raises_closed_error(counter_env):
    env = counter_env
    env.reset()
    env.close()
    env.close()  # idempotent
    for call in (lambda: env.step([0] * 4), env.reset, lambda: env.reset(seed=1)):
        with pytest.raises(shmenv.ClosedError, match="close\\(\\) was called"):
            call()
    assert env.closed
    assert all_gone(env.worker_pids, timeout=0)


def test_calls_after_a_worker_failure_raise_closed_error(counter_env):
    env = counter_env
    env.reset()
    os.kill(env.worker_pids[0], signal.SIGKILL)
    with pytest.raises(shmenv.WorkerDiedError):
        env.step([0] * 4)
    with pytest.raises(shmenv.ClosedError, match="a worker failed"):
        env.step([0] * 4)
    env.close()  # still fine


def test_worker_exit_code_is_named(no_leaked_segments):
    env = shmenv.make("Breakout", 2, num_workers=2, context="fork",
                      game_factory=functools.partial(CounterGame, exit_at_step=2))
    env.reset()
    env.step([0, 0])
    with pytest.raises(shmenv.WorkerDiedError, match="worker 0 .*env 0\\) exited with code 3"
                       ) as info:
        env.step([0, 0])
    assert info.value.exitcode == 3
    assert all_gone(env.worker_pids, timeout=0)  # the other worker was stopped


def mapped_file(array: np.ndarray) -> str | None:
    """The file this process maps at ``array``'s first byte, as /proc/self/maps names it
    (None: nothing is mapped there)."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, stop = (int(bound, 16) for bound in fields[0].split("-"))
            if start <= address < stop:
                return fields[5].strip() if len(fields) > 5 else ""
    return None


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_obs_view_stays_readable_after_close_and_is_released_when_dropped(no_leaked_segments):
    env = shmenv.make("Breakout", 3, num_workers=1, context="fork",
                      game_factory=functools.partial(CounterGame))
    env.reset()
    obs, *_ = env.step([1, 2, 3])
    row = obs[1]  # a view of a view
    segment = mapped_file(obs)
    assert segment is not None and segment.startswith(f"{SHM_DIR}/{NAME_PREFIX}")
    path = segment.split()[0]  # without " (deleted)": the name was unlinked at start
    env.close()
    assert mapped_file(obs) == segment  # still mapped: the caller holds views
    assert int(obs.sum()) == obs.size and int(row[0, 0, 0]) == 1  # count 1 everywhere
    del obs, row
    with open("/proc/self/maps") as maps:
        assert path not in maps.read()  # the last view went: the mapping was closed


def test_compat_worker_after_close(no_leaked_segments):
    worker = shmenv.Worker(1, game_factory=functools.partial(CounterGame))
    worker.child.send(("reset", None))
    worker.child.recv()
    worker.child.send(("close", None))
    worker.child.send(("close", None))  # idempotent, like close()
    worker.child.close()
    for call in (lambda: worker.child.send(("step", 0)), worker.child.recv,
                 worker.child.poll, worker.child.fileno):
        with pytest.raises(shmenv.ClosedError):
            call()
    worker.process.join(timeout=5)
    assert worker.process.exitcode == 0


def test_gc_and_interpreter_exit_clean_up_everything():
    """Envs dropped without close() (also in a reference cycle), an obs view read after
    close, and an env plus two Workers left open when the interpreter exits."""
    proc = subprocess.run(child_command("gc-exit"), capture_output=True, text=True,
                          timeout=60, env=CHILD_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = parse_events(proc.stdout)["report"]
    assert report["dropped_alive"] == [] and report["cycle_alive"] == []
    assert report["view_after_close"] == 4  # every env's stack holds count 1
    assert report["segments_before_exit"] == []
    leftovers = report["exit_workers"] + report["tracker"]
    assert wait_until(lambda: all(gone(p) for p in leftovers), 10) is not None
    assert not segments_of(report["pid"])
    assert_quiet(proc.stderr)


def test_close_from_another_thread_gives_the_stepping_thread_closed_error(
        no_leaked_segments):
    """close() while another thread steps flat out through the relay tree: the stepping
    thread must see ClosedError, never the workers' exit as a death (before: 5 of 30
    tries raised "WorkerDiedError: ... exited with code 0")."""
    game = functools.partial(shmenv.fakegames.NullGame, episode_steps=9)
    outcomes = []
    for _attempt in range(30):
        env = shmenv.make("Breakout", 4, num_workers=4, relay_fanout=2, game_factory=game)
        env.reset()
        errors: list[BaseException] = []

        def step_until_closed(env=env, errors=errors) -> None:
            try:
                while True:
                    env.step([1, 2, 3, 0])
            except Exception as exc:  # noqa: BLE001 - checked below
                errors.append(exc)

        stepper = threading.Thread(target=step_until_closed)
        stepper.start()
        time.sleep(0.02)
        env.close()
        stepper.join(timeout=30)
        assert not stepper.is_alive()
        outcomes.append(f"{type(errors[0]).__name__}: {errors[0]}")
    wrong = [outcome for outcome in outcomes if not outcome.startswith("ClosedError")]
    assert not wrong, wrong[:3]


def test_env_cannot_be_pickled_and_says_what_to_do_instead(counter_env):
    with pytest.raises(TypeError, match="cannot be pickled") as info:
        pickle.dumps(counter_env)
    assert "shmenv.make" in str(info.value) and "shmenv.ray" in str(info.value)
    counter_env.reset()  # unharmed
    counter_env.step([0, 1, 2, 3])


# --------------------------------------------------------------------------- 8. soak
@pytest.mark.slow
def test_soak_rss_stays_flat():
    """>= 200k env-steps through the whole machinery (block, pipes, replies, autoreset,
    final_obs, infos) with the emulator replaced by CounterGame; RSS of the main process
    and of every worker grows < 5% after warm-up. bench/soak.py does 1M real Atari steps."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--fake", "--env-steps", "200000",
         "--num-envs", "16", "--num-workers", "2", "--json"],
        capture_output=True, text=True, timeout=300, env=CHILD_ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nsoak: {result}")
    assert result["env_steps"] >= 200_000
    for name, growth in result["rss_growth"].items():
        assert growth < 0.05, f"{name} RSS grew {growth:.1%}"
    assert_quiet(proc.stderr)
