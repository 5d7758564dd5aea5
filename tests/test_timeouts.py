"""A hung worker times out (docs/reliability.md, "A worker hangs"), and gymnasium's async pair.

A worker stopped with SIGSTOP stands for any hang (a deadlocked env, a swapped-out VM).
With ``timeout`` set, the call that waits on it raises ``WorkerTimeoutError`` naming that
worker (index, pid, envs) and how long it waited, wherever the worker sits in the relay
tree; the worker is killed, the env closed, and nothing is left behind. Durations are
printed (``pytest -s``) and only bounded generously.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time

import numpy as np
import pytest
from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

import shmenv
import shmenv.pool
from shmenv.fakegames import NullGame
from tests.conftest import action_stream
from tests.procs import all_gone

pytestmark = pytest.mark.usefixtures("no_leaked_segments")

GAME = functools.partial(NullGame, episode_steps=9)
# 7 workers with fan-out 2: 0 -> (1, 4), 1 -> (2, 3), 4 -> (5, 6); three levels.
DEEP = {"num_workers": 7, "relay_fanout": 2}
TIMEOUT = 1.0
MARGIN = 5.0  # the issue asks for ~timeout + 1 s; a loaded CI machine gets more


def make(num_envs: int = 7, **kwargs) -> shmenv.ShmVectorEnv:
    return shmenv.make("Breakout", num_envs, game_factory=GAME, seed=1, **kwargs)


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def assert_names(message: str, env: shmenv.ShmVectorEnv, worker: int) -> None:
    start, stop_ = env.worker_env_ranges[worker]
    envs = f"env {start}" if stop_ - start == 1 else f"envs {start}-{stop_ - 1}"
    assert f"worker {worker} (pid {env.worker_pids[worker]}, {envs})" in message, message


def assert_all_gone(env: shmenv.ShmVectorEnv) -> None:
    started = time.monotonic()
    env.close()  # already closed by the failure: returns at once
    print(f"close() took {time.monotonic() - started:.4f} s")
    assert env.closed
    assert all_gone(env.worker_pids, timeout=5)
    with pytest.raises(shmenv.ClosedError):
        env.step([0] * env.num_envs)


# --------------------------------------------------------------------------- timeouts
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kwargs, victim", [
    (DEEP, 6),  # a leaf two levels down
    (DEEP, 4),  # an inner node: its subtree never gets the step
    (DEEP, 0),  # the root
    ({"num_workers": 7, "relay_fanout": 0}, 3),  # the main talks to every worker
], ids=["relay-leaf", "relay-inner", "relay-root", "direct"])
def test_stopped_worker_in_step_times_out_naming_it(kwargs, victim):
    env = make(timeout=TIMEOUT, **kwargs)
    assert env.timeout == TIMEOUT and env.relayed == (kwargs["relay_fanout"] > 0)
    env.reset()
    for actions in action_stream(1, 5, 7, 4):
        env.step(actions)
    stop(env.worker_pids[victim])
    started = time.monotonic()
    with pytest.raises(shmenv.WorkerTimeoutError) as info:
        env.step([1] * 7)
    waited = time.monotonic() - started
    print(f"\n{info.value}\nraised after {waited:.3f} s (timeout {TIMEOUT} s)")
    message = str(info.value)
    assert_names(message, env, victim)
    assert message.count("pid ") == 1  # only the hung worker, not its relay ancestors
    assert f"within {TIMEOUT:g} s" in message and "stopped by a signal" in message
    assert info.value.workers == (victim,)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, shmenv.ShmenvError)
    assert waited < TIMEOUT + MARGIN
    assert_all_gone(env)


class HangingGame(NullGame):
    """NullGame whose env with seed ``hang_seed`` blocks for good at its third step: a
    deadlocked env, asleep and not stopped, so only the relay's progress counters can
    tell which worker holds the step up."""

    def __init__(self, *args, hang_seed: int = -1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hang_seed = hang_seed

    def step(self, action: int) -> tuple[float, bool, bool]:
        if self.seed == self.hang_seed and self.episode_length >= 2:
            threading.Event().wait()  # never set
        return super().step(action)


@pytest.mark.timeout(60)
def test_deadlocked_env_deep_in_the_relay_tree_is_named():
    env = shmenv.make("Breakout", 7, seed=1, timeout=TIMEOUT, context="fork",
                      game_factory=functools.partial(HangingGame, hang_seed=1 + 5), **DEEP)
    env.reset()
    env.step([1] * 7)
    env.step([1] * 7)
    with pytest.raises(shmenv.WorkerTimeoutError) as info:
        env.step([1] * 7)  # env 5 (worker 5, a leaf under worker 4) hangs in this one
    print(f"\n{info.value}")
    assert_names(str(info.value), env, 5)
    assert str(info.value).count("pid ") == 1
    assert "worker 5 is sleeping" in str(info.value)  # not stopped: found by the counters
    assert_all_gone(env)


@pytest.mark.timeout(60)
def test_stopped_worker_in_reset_times_out():
    env = make(timeout=TIMEOUT, **DEEP)
    env.reset()
    stop(env.worker_pids[5])
    with pytest.raises(shmenv.WorkerTimeoutError, match="in a reset") as info:
        env.reset()
    assert_names(str(info.value), env, 5)
    assert_all_gone(env)


@pytest.mark.timeout(60)
def test_async_recv_times_out_naming_every_silent_worker():
    """3 workers of one env, batches of 2: with two of them stopped no batch can form."""
    env = make(3, num_workers=3, batch_size=2, timeout=TIMEOUT)
    pids = env.worker_pids
    stop(pids[0])
    stop(pids[2])
    with pytest.raises(shmenv.WorkerTimeoutError) as info:
        env.reset()  # async mode: reset every env, recv the first batch
    message = str(info.value)
    assert_names(message, env, 0)
    assert_names(message, env, 2)
    assert f"pid {pids[1]}" not in message
    assert sorted(info.value.workers) == [0, 2]
    assert_all_gone(env)


@pytest.mark.timeout(60)
def test_step_wait_timeout_applies_without_an_env_timeout():
    """gymnasium's spelling: step_wait(timeout=...) on an env that has none of its own."""
    env = make(**DEEP)
    assert env.timeout is None
    env.reset()
    stop(env.worker_pids[3])
    env.step_async([1] * 7)
    started = time.monotonic()
    with pytest.raises(shmenv.WorkerTimeoutError) as info:
        env.step_wait(timeout=0.5)
    print(f"\nstep_wait(timeout=0.5) raised after {time.monotonic() - started:.3f} s")
    assert "within 0.5 s" in str(info.value)
    assert_names(str(info.value), env, 3)
    assert_all_gone(env)


@pytest.mark.timeout(60)
def test_reset_wait_timeout():
    env = make(num_workers=7, relay_fanout=0)
    env.reset()
    stop(env.worker_pids[2])
    env.reset_async(seed=3)
    with pytest.raises(shmenv.WorkerTimeoutError) as info:
        env.reset_wait(timeout=0.5)
    assert_names(str(info.value), env, 2)
    assert_all_gone(env)


def interrupt_main_after(seconds: float) -> threading.Timer:
    """A Ctrl-C (SIGINT to the main thread, interrupting its blocking read) in ``seconds``."""
    timer = threading.Timer(seconds, signal.pthread_kill,
                            (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    return timer


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [None, TIMEOUT])
def test_resync_after_ctrl_c_names_the_hung_leaf(timeout, monkeypatch):
    """Ctrl-C while a leaf deep in the relay tree hangs: the next step's resynchronization
    waits the env's timeout (or the resync limit, shortened here from 60 s) and names the
    leaf, not worker 0 the main was talking to."""
    monkeypatch.setattr(shmenv.pool, "RESYNC_TIMEOUT_S", 1.5)
    env = make(timeout=timeout, **DEEP)
    env.reset()
    env.step([1] * 7)
    stop(env.worker_pids[6])
    timer = interrupt_main_after(0.3)
    with pytest.raises(KeyboardInterrupt):
        env.step([2] * 7)
    timer.join()
    started = time.monotonic()
    with pytest.raises(shmenv.WorkerTimeoutError, match="after an interrupted call") as info:
        env.step([3] * 7)
    waited = time.monotonic() - started
    limit = 1.5 if timeout is None else timeout
    print(f"\n{info.value}\nresync gave up after {waited:.3f} s (limit {limit} s)")
    assert f"within {limit:g} s" in str(info.value)
    assert_names(str(info.value), env, 6)
    assert str(info.value).count("pid ") == 1
    assert waited < limit + MARGIN
    assert_all_gone(env)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "5"])
def test_bad_timeout_is_rejected_before_anything_starts(bad):
    with pytest.raises(ValueError, match="timeout must be None"):
        make(timeout=bad)


def test_timeout_leaves_results_unchanged():
    """With a timeout the waits poll first; the results are the same as without."""
    results = []
    for timeout in (None, 30.0):
        for relay_fanout in (0, 2):
            with make(timeout=timeout, num_workers=7, relay_fanout=relay_fanout) as env:
                out = [env.reset()[0].copy()]
                for actions in action_stream(2, 20, 7, 4):
                    obs, rewards, *_ = env.step(actions)
                    out += [obs.copy(), rewards]
                results.append(out)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- async pair
@pytest.mark.parametrize("kwargs", [DEEP, {"num_workers": 3, "relay_fanout": 0}])
def test_step_async_and_wait_equal_step(kwargs):
    with make(**kwargs) as env, make(**kwargs) as twin:
        env.reset_async()
        obs, infos = env.reset_wait()
        expected_obs, expected_infos = twin.reset()
        np.testing.assert_array_equal(obs, expected_obs)
        np.testing.assert_array_equal(infos["lives"], expected_infos["lives"])
        for actions in action_stream(3, 25, 7, 4):
            env.step_async(actions)
            got = env.step_wait()
            expected = twin.step(actions)
            for a, b in zip(got[:4], expected[:4]):
                np.testing.assert_array_equal(a, b)
        env.reset_async(seed=9)
        obs, _ = env.reset_wait(timeout=30)
        np.testing.assert_array_equal(obs, twin.reset(seed=9)[0])


def test_async_pair_misuse_raises_gymnasiums_errors():
    with make(3, num_workers=3) as env:
        env.reset()
        with pytest.raises(NoAsyncCallError, match="step_async"):
            env.step_wait()
        with pytest.raises(NoAsyncCallError, match="reset_async"):
            env.reset_wait()
        env.step_async([0, 1, 2])
        for call in (lambda: env.step_async([0, 1, 2]), env.reset_async,
                     lambda: env.step([0, 1, 2]), env.reset):
            with pytest.raises(AlreadyPendingCallError, match="step_async"):
                call()
        with pytest.raises(NoAsyncCallError, match="reset_async"):
            env.reset_wait()
        obs, rewards, *_ = env.step_wait()
        np.testing.assert_array_equal(rewards, [0.0, 1.0, 2.0])
        env.close()
        with pytest.raises(shmenv.ClosedError):
            env.step_async([0, 1, 2])
        from gymnasium.error import ClosedEnvironmentError
        with pytest.raises(ClosedEnvironmentError):
            env.step_wait()
