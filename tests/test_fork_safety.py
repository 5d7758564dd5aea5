"""An env belongs to the process that created it (docs/reliability.md, "Forks").

A child forked from that process (``os.fork``, a fork-started DataLoader worker) must neither
break the parent's env when it exits nor step the parent's workers: every call raises
``ForkedEnvError``, and the parent's env keeps stepping exactly like an identical twin.
Children report their findings through a pipe and leave with ``os._exit``.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import tempfile

import numpy as np
import pytest

import shmenv
from shmenv.fakegames import CounterGame
from tests.conftest import action_stream
from tests.procs import pid_alive

pytestmark = [pytest.mark.usefixtures("no_leaked_segments"),
              pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")]


def make_twins(**kwargs) -> tuple[shmenv.ShmVectorEnv, shmenv.ShmVectorEnv]:
    """Two identical envs (4 envs on 2 workers, relayed steps unless told otherwise)."""
    game = functools.partial(CounterGame, episode_steps=7)
    return tuple(shmenv.make("Breakout", 4, num_workers=2, seed=3, game_factory=game,
                             context="fork", **kwargs) for _ in range(2))


def in_forked_child(check) -> dict:
    """Run ``check()`` in a child forked now; returns the dict it returned (as JSON)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            result = check()
            os.write(write_end, json.dumps(result).encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(write_end, json.dumps({"crash": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    _pid, status = os.waitpid(pid, 0)
    result = json.loads(data or b"{}")
    assert os.waitstatus_to_exitcode(status) == 0, result
    return result


def assert_twins_agree(env, twin, steps: int = 30) -> None:
    """Both envs step on from where they are and give the same results."""
    for actions in action_stream(5, steps, env.num_envs, 4):
        got, expected = env.step(actions), twin.step(actions)
        for a, b in zip(got[:4], expected[:4]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("relay_fanout", [8, 0])
def test_forked_child_exiting_leaves_the_parents_env_alone(relay_fanout):
    """The child runs every exit handler (weakref finalizers, multiprocessing's), as a
    normal interpreter exit would; before, they sent the parent's workers the close
    command or SIGTERM and the parent's next step raised WorkerDiedError."""
    env, twin = make_twins(relay_fanout=relay_fanout)
    env.reset()
    twin.reset()
    env.step([1, 2, 3, 0])
    twin.step([1, 2, 3, 0])
    pids = env.worker_pids
    stderr = tempfile.TemporaryFile()

    def exit_normally() -> dict:
        os.dup2(stderr.fileno(), 2)  # what the exit handlers print
        atexit._run_exitfuncs()
        return {"alive": [pid_alive(pid) for pid in pids]}

    result = in_forked_child(exit_normally)
    assert result == {"alive": [True, True]}
    stderr.seek(0)
    printed = stderr.read().decode()
    assert "Traceback" not in printed and "can only join" not in printed, printed
    assert all(pid_alive(pid) for pid in pids)
    assert_twins_agree(env, twin)
    env.close()
    twin.close()


def test_env_used_from_forked_child_raises_and_parent_is_unharmed():
    env, twin = make_twins()
    env.reset()
    twin.reset()
    parent = os.getpid()

    def use_env() -> dict:
        errors = {}
        calls = {
            "step": lambda: env.step([0, 1, 2, 3]),
            "reset": env.reset,
            "reset_seed": lambda: env.reset(seed=1),
            "step_async": lambda: env.step_async([0, 1, 2, 3]),
            "reset_async": env.reset_async,
            "send": lambda: env.send([0, 1, 2, 3]),
            "recv": env.recv,
        }
        for name, call in calls.items():
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                errors[name] = [type(exc).__name__, str(exc)]
            else:
                errors[name] = [None, ""]
        env.close()  # releases nothing here: the workers are the parent's
        del calls
        return {"errors": errors, "child": os.getpid()}

    result = in_forked_child(use_env)
    for name, (kind, message) in result["errors"].items():
        assert kind == "ForkedEnvError", (name, kind, message)
        assert f"belongs to process {parent}" in message
        assert f"used from process {result['child']}" in message
        assert "spawn" in message and "in the child" in message
    assert issubclass(shmenv.ForkedEnvError, shmenv.ShmenvError)
    assert_twins_agree(env, twin)
    env.close()
    twin.close()
