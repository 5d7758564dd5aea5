"""shmenv.AsyncVectorEnv's errors: gymnasium's for misuse, named ones for failures.

Misuse raises what gymnasium's AsyncVectorEnv raises (AlreadyPendingCallError,
NoAsyncCallError, ClosedEnvironmentError, ValueError for a custom space in shared memory,
TimeoutError); an env that raises names its index and shows its own traceback; a dead
worker is named; bad actions name the env and the value; nothing leaks on any of these.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError

import shmenv
from shmenv import block as block_module
from tests.any_envs import TEST_SPACES, CustomSpace, rich_env

pytestmark = pytest.mark.timeout(60)


def make(num_envs: int = 4, **kwargs):
    env_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in (
        "fail_at", "fail_in", "sleep_s", "exit_at", "observation_space", "action_space")}
    return shmenv.AsyncVectorEnv([rich_env(i, **env_kwargs) for i in range(num_envs)],
                                 num_workers=2, **kwargs)


def test_step_and_reset_during_a_pending_call_name_the_async_half_as_gymnasium(
        no_leaked_segments):
    """step() and reset() while a step is pending raise what gymnasium's own
    AsyncVectorEnv raises, message for message (they are its async pairs)."""
    from gymnasium.vector import AsyncVectorEnv as GymAsyncVectorEnv

    def messages(envs) -> list[str]:
        envs.reset(seed=0)
        envs.step_async(np.zeros(4, dtype=np.int64))
        found = []
        for misuse in (lambda: envs.step(np.zeros(4, dtype=np.int64)), envs.reset):
            with pytest.raises(AlreadyPendingCallError) as raised:
                misuse()
            found.append(str(raised.value))
        envs.step_wait()
        envs.close()
        return found

    theirs = messages(GymAsyncVectorEnv([rich_env(i) for i in range(4)]))
    assert messages(make()) == theirs
    assert "Calling `step_async`" in theirs[0] and "Calling `reset_async`" in theirs[1]


def test_async_pairs_out_of_order_raise_gymnasiums_errors(no_leaked_segments):
    envs = make()
    with pytest.raises(NoAsyncCallError, match=re.escape(
            "Calling `reset_wait` without any prior call to `reset_async`.")):
        envs.reset_wait()
    envs.reset_async(seed=0)
    with pytest.raises(AlreadyPendingCallError, match=re.escape(
            "Calling `step_async` while waiting for a pending call to `reset` to complete")):
        envs.step_async(np.zeros(4, dtype=np.int64))
    with pytest.raises(AlreadyPendingCallError):
        envs.call_async("render")
    envs.reset_wait()
    with pytest.raises(NoAsyncCallError, match=re.escape(
            "Calling `step_wait` without any prior call to `step_async`.")):
        envs.step_wait()
    envs.step_async(np.zeros(4, dtype=np.int64))
    with pytest.raises(AlreadyPendingCallError, match=re.escape(
            "Calling `reset_async` while waiting for a pending call to `step` to complete")):
        envs.reset_async()
    with pytest.raises(AlreadyPendingCallError, match="`set_attr`"):
        envs.set_attr("length", 3)
    with pytest.warns(UserWarning, match=re.escape(
            "Calling `close` while waiting for a pending call to `step` to complete.")):
        envs.close(terminate=True)
    with pytest.raises(ClosedEnvironmentError):
        envs.reset()
    envs.close()  # again: nothing happens


def test_unsupported_arguments_are_named():
    fns = [rich_env(0)]
    with pytest.raises(ValueError, match="custom `worker`"):
        shmenv.AsyncVectorEnv(fns, worker=lambda *args: None)
    with pytest.raises(ValueError, match="Invalid `observation_mode`"):
        shmenv.AsyncVectorEnv(fns, observation_mode="invalid")
    with pytest.raises(ValueError, match="must be an integer or None"):
        shmenv.AsyncVectorEnv(fns, max_concurrency=2.5)
    with pytest.raises(ValueError, match="must be a positive or None"):
        shmenv.AsyncVectorEnv(fns, max_concurrency=0)
    with pytest.raises(ValueError, match="call` with `call`|use `step` directly"):
        with shmenv.AsyncVectorEnv(fns) as envs:
            envs.call("step", 0)


def test_max_concurrency_caps_the_workers(no_leaked_segments):
    with pytest.raises(ValueError, match="num_workers=2 exceeds max_concurrency=1"):
        make(4, max_concurrency=1)  # make asks for 2 workers
    fns = [rich_env(i) for i in range(4)]
    with shmenv.AsyncVectorEnv(fns, max_concurrency=1) as envs:
        assert envs.num_workers == 1


def test_custom_space_in_shared_memory_raises_gymnasiums_value_error(no_leaked_segments):
    with pytest.raises(ValueError, match="shared_memory=False"):
        make(observation_space=CustomSpace())
    with pytest.raises(TypeError, match="dynamic shape"):
        make(observation_space=spaces.Sequence(spaces.Discrete(2)))


@pytest.mark.parametrize("fail_in", ["step", "reset"])
def test_an_env_that_raises_names_its_index_and_traceback(fail_in, no_leaked_segments):
    """The error is a shmenv.WorkerError and, as under gymnasium, the env's ValueError."""
    envs = make(4, fail_at=1 if fail_in == "step" else 12, fail_in=fail_in)
    with pytest.raises(ValueError, match=f"{fail_in} failed on purpose") as caught:
        envs.reset(seed=10)
        for _ in range(5):
            envs.step(np.zeros(4, dtype=np.int64))
    error = caught.value
    assert isinstance(error, shmenv.WorkerError)
    if fail_in == "reset":  # only env 2 got the seed 12
        assert "env 2 raised ValueError" in str(error)
    else:  # every env failed; each is logged, the last is raised (as gymnasium does)
        assert "env 3 raised ValueError" in str(error)
        assert "env(s) 0, 1, 2 raised before it" in str(error)
    assert "shmenv worker" in str(error) and f"in {fail_in}" in error.worker_traceback
    with pytest.raises(ClosedEnvironmentError):
        envs.step(np.zeros(4, dtype=np.int64))
    envs.close()


@pytest.mark.parametrize("space", ["box", "discrete"])
def test_an_observation_that_does_not_fit_names_its_env(space, no_leaked_segments):
    """An env whose observation has the wrong shape is named, as one that raises."""
    fns = [rich_env(i, observation_space=TEST_SPACES[space], fail_in="obs",
                    fail_at=2 if i in (1, 2) else None) for i in range(4)]
    envs = shmenv.AsyncVectorEnv(fns, num_workers=1)
    envs.reset(seed=0)
    envs.step(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match=r"env 2 raised ValueError(.|\n)*env\(s\) 1 raised "
                                         "before it"):
        envs.step(np.zeros(4, dtype=np.int64))
    envs.close()


def test_errors_deep_in_the_relay_tree_name_their_origin(no_leaked_segments):
    """5 workers, fan-out 2: worker 2 answers through worker 1 and worker 0."""
    fns = [rich_env(i, fail_at=3 if i == 2 else None) for i in range(5)]
    envs = shmenv.AsyncVectorEnv(fns, num_workers=5, relay_fanout=2)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"env 2 raised ValueError: step failed on purpose"
                                         r"(.|\n)*shmenv worker 2 \(pid"):
        for _ in range(4):
            envs.step(np.zeros(5, dtype=np.int64))
    envs.close()
    envs = shmenv.AsyncVectorEnv([rich_env(i) for i in range(5)], num_workers=5,
                                 relay_fanout=2)
    envs.reset(seed=0)
    os.kill(envs.worker_pids[2], signal.SIGKILL)
    with pytest.raises(shmenv.WorkerDiedError, match=r"shmenv worker 2 \(pid \d+, env 2\)"):
        envs.step(np.zeros(5, dtype=np.int64))
    envs.close()


def test_a_dead_worker_is_named(no_leaked_segments):
    envs = make(4)
    envs.reset(seed=0)
    os.kill(envs.worker_pids[1], signal.SIGKILL)
    with pytest.raises(shmenv.WorkerDiedError, match=r"shmenv worker 1 \(pid \d+, envs 2-3\) "
                                                     "was killed by signal SIGKILL"):
        envs.step(np.zeros(4, dtype=np.int64))
    envs.close()
    envs = make(4, exit_at=2)
    envs.reset(seed=0)
    with pytest.raises(shmenv.WorkerDiedError, match="exited with code 3"):
        for _ in range(3):
            envs.step(np.zeros(4, dtype=np.int64))
    envs.close()


def test_step_wait_timeout_raises_timeout_error(no_leaked_segments):
    envs = make(4, sleep_s=0.5)
    envs.reset(seed=0)
    envs.step_async(np.zeros(4, dtype=np.int64))
    with pytest.raises(multiprocessing.TimeoutError, match="did not answer within"):
        envs.step_wait(timeout=0.1)
    envs.close(terminate=True)


@pytest.mark.parametrize(("actions", "error", "match"), [
    (np.zeros(3, dtype=np.int64), ValueError, r"shape \(4,\)"),
    (0, TypeError, "got the scalar 0"),
    (np.array([0.0, 1.0, 1.0, 0.0]), TypeError, r"must be integers .* actions\[0\] = 0.0"),
    ([0, 1, None, 0], TypeError, r"actions\[2\] = None \(env 2"),
])
def test_bad_discrete_actions_name_the_env_and_value(actions, error, match,
                                                     no_leaked_segments):
    with make(4) as envs:
        envs.reset(seed=0)
        with pytest.raises(error, match=match):
            envs.step(actions)
        envs.step(np.zeros(4, dtype=np.int64))  # nothing was sent: the env goes on


def test_actions_outside_the_space_are_the_envs_to_refuse(no_leaked_segments):
    """As under gymnasium, the env judges its action: CartPole's assertion names the env."""
    envs = shmenv.AsyncVectorEnv([lambda: gym.make("CartPole-v1")] * 4)
    envs.reset(seed=0)
    with pytest.raises(AssertionError, match=r"env 2 raised AssertionError: .*5.* invalid"):
        envs.step(np.array([0, 1, 5, 0]))
    envs.close()


@pytest.mark.parametrize(("space", "actions", "error", "match"), [
    ("multidiscrete", np.zeros((4, 2), np.int64), ValueError, r"shape \(4, 3\)"),
    ("box", np.zeros((3, 3), np.float32), ValueError, r"must hold 4 actions .* got 3"),
    ("box", [[0.0] * 3] * 5, ValueError, r"must hold 4 actions .* got 5"),
    ("box", 0.5, TypeError, r"must be a batch of 4 actions"),
    ("dict", {"pos": np.zeros(4, np.int64)}, ValueError, "has no key 'inner'"),
    ("tuple", np.zeros(4), TypeError, "must be a tuple of 2 batches"),
])
def test_bad_actions_of_other_spaces(space, actions, error, match, no_leaked_segments):
    with make(4, action_space=TEST_SPACES[space]) as envs:
        envs.reset(seed=0)
        with pytest.raises(error, match=match):
            envs.step(actions)


def test_box_actions_reach_the_env_as_given(no_leaked_segments):
    """A batch of another dtype than the space's travels pickled, so each env gets what
    gymnasium would give it (here float64 scalars for a float32 space)."""
    space = spaces.Box(0, 1, (), np.float32)
    with make(2, action_space=space) as envs:
        envs.reset(seed=0)
        envs.set_attr("length", 1000)  # no episode ends
        for actions in (np.array([0.25, 0.5]), np.array([0.25, 0.5], np.float32),
                        [0.25, 0.5]):
            envs.step(actions)
            *_, infos = envs.step(actions)  # every second step reports its action
            assert infos["action"].tolist() == [0.25, 0.5]
            assert infos["action"].dtype == np.asarray(actions).dtype


def test_reset_mask_checks_follow_gymnasium(no_leaked_segments):
    with make(3) as envs:
        with pytest.raises(TypeError, match="must be a numpy array"):
            envs.reset(options={"reset_mask": [True, False, True]})
        with pytest.raises(ValueError, match=r"must have shape `\(3,\)`"):
            envs.reset(options={"reset_mask": np.array([True])})
        with pytest.raises(TypeError, match="dtype=np.bool_"):
            envs.reset(options={"reset_mask": np.array([1, 0, 1])})
        with pytest.raises(ValueError, match="at least one True"):
            envs.reset(options={"reset_mask": np.zeros(3, dtype=bool)})
        with pytest.raises(ValueError, match="got 2 seeds for 3 envs"):
            envs.reset(seed=[1, 2])
        envs.reset(seed=1)  # none of the above left a call pending


def test_full_dev_shm_is_a_clear_error(monkeypatch, no_leaked_segments):
    monkeypatch.setattr(block_module, "shm_free_bytes", lambda path=block_module.SHM_DIR: 100)
    with pytest.raises(shmenv.SharedMemorySpaceError, match="--shm-size"):
        make(4)


def test_forked_child_cannot_use_the_parents_env(no_leaked_segments):
    envs = make(2)
    envs.reset(seed=0)
    pid = os.fork()
    if pid == 0:  # the child: any call must refuse, and exiting must not touch the workers
        try:
            envs.step(np.zeros(2, dtype=np.int64))
        except shmenv.ForkedEnvError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    envs.step(np.zeros(2, dtype=np.int64))  # the parent's env still works
    envs.close()


def test_the_env_cannot_be_pickled(no_leaked_segments):
    import pickle

    with make(2) as envs:
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(envs)


def test_spawned_workers_run_lambdas(no_leaked_segments):
    """env_fns are cloudpickled, as gymnasium does: lambdas work under spawn too."""
    with shmenv.AsyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2,
                               context="spawn") as envs:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (2, 4)


def _broken_env():
    raise RuntimeError("cannot make this env")


def test_an_env_that_cannot_be_made_is_named(no_leaked_segments):
    fns = [rich_env(0), rich_env(1), _broken_env, rich_env(3)]
    with pytest.raises(shmenv.WorkerError, match=r"shmenv worker 1 \(pid \d+, envs 2-3\) failed "
                                                 "to start: RuntimeError: cannot make this env"):
        shmenv.AsyncVectorEnv(fns, num_workers=2)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
def test_cpu_affinity_pins_each_worker(no_leaked_segments):
    cores = sorted(os.sched_getaffinity(0))
    with make(4, cpu_affinity=True) as envs:
        pinned = [os.sched_getaffinity(pid) for pid in envs.worker_pids]
        assert pinned == [{cores[i % len(cores)]} for i in range(2)]


_CHILD = """
import os, signal, sys
import gymnasium as gym
import numpy as np
import shmenv
ending = sys.argv[1]
envs = shmenv.AsyncVectorEnv([lambda: gym.make("CartPole-v1")] * 4)
envs.reset(seed=0)
envs.step(np.zeros(4, dtype=np.int64))
print(os.getpid(), " ".join(map(str, envs.worker_pids)), flush=True)
if ending == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
envs.step_async(np.zeros(4, dtype=np.int64))  # "exit": leave a call pending, never close
"""


@pytest.mark.parametrize("ending", ["kill", "exit"])
def test_nothing_outlives_a_main_process_that_dies(ending, tmp_path):
    """SIGKILLed or exiting without close(): the workers go, and so does the block's name."""
    import subprocess
    import sys

    from shmenv.block import NAME_PREFIX, SHM_DIR
    from tests.procs import all_gone

    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    child = subprocess.run([sys.executable, str(script), ending], capture_output=True,
                           text=True, timeout=60, env={**os.environ})
    main_pid, *workers = (int(pid) for pid in child.stdout.split())
    assert len(workers) == 2, child.stderr
    assert all_gone(workers, timeout=10)
    left = [name for name in os.listdir(SHM_DIR) if name.startswith(f"{NAME_PREFIX}{main_pid}_")]
    assert not left and "Traceback" not in child.stderr, child.stderr
