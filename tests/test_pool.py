"""The worker pool: its two I/O paths give the same results; its timeout and fork checks."""

from __future__ import annotations

import functools
import os
import signal

import numpy as np
import pytest

import shmenv
from shmenv.fakegames import NullGame
from shmenv.protocol import OP_RESET
from shmenv.wire import header_as_int32
from tests.conftest import action_stream
from tests.procs import all_gone


def run(env, actions):
    obs, _ = env.reset()
    out = [obs.copy()]
    for step_actions in actions:
        obs, rewards, terminations, truncations, infos = env.step(step_actions)
        out.append((obs.copy(), rewards, terminations, truncations, infos["lives"]))
    return out


def test_connection_fallback_equals_the_raw_pipe_path(no_leaked_segments):
    """raw_pipes=False reads and writes through multiprocessing's Connection calls."""
    game = functools.partial(NullGame, episode_steps=9)
    actions = action_stream(4, 40, 6, 4)
    results = []
    for raw in (True, False):
        with shmenv.make("Breakout", 6, num_workers=3, seed=2, game_factory=game,
                         raw_pipes=raw) as env:
            assert env.raw_pipes is raw and env.relayed is raw
            results.append(run(env, actions))
    raw_run, connection_run = results
    np.testing.assert_array_equal(raw_run[0], connection_run[0])
    for a, b in zip(raw_run[1:], connection_run[1:]):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------ the pool's mechanisms
# The drop-in Worker (shmenv.compat) builds on WorkerPool directly; these are the calls it
# uses for timeouts and fork safety.
def one_worker_pool(**kwargs):
    from shmenv.block import BlockLayout, SharedBlock
    from shmenv.pool import WorkerPool
    from shmenv.worker import WorkerSpec

    block = SharedBlock.create(BlockLayout(1, (4, 84, 84)))
    spec = WorkerSpec(index=0, block_name=block.name, layout=block.layout, env_start=0,
                      env_stop=1, game="breakout", seeds=(1,), options=shmenv.GameOptions(),
                      same_step_autoreset=True, write_final_obs=False, game_factory=NullGame)
    pool = WorkerPool([spec], raw_pipes=False, **kwargs)
    pool.start("fork")
    block.unlink()
    return pool, block


@pytest.mark.timeout(60)
def test_pool_wait_for_reply_names_and_kills_a_silent_worker(no_leaked_segments):
    pool, block = one_worker_pool(timeout=0.5)
    try:
        command = np.array([0, OP_RESET], dtype=np.int32)
        command[0] = header_as_int32(4)
        os.kill(pool.processes[0].pid, signal.SIGSTOP)
        pool.send_frame(0, command.data.cast("B"))
        with pytest.raises(shmenv.WorkerTimeoutError, match="within 0.5 s while resetting"
                           ) as info:
            pool.wait_for_reply(0, when="while resetting")
        assert f"pid {pool.processes[0].pid}" in str(info.value)
        assert info.value.workers == (0,)
        assert all_gone([pool.processes[0].pid], timeout=5)  # killed though stopped
    finally:
        pool.stop()
        block.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_pool_check_process_refuses_a_forked_child(no_leaked_segments):
    pool, block = one_worker_pool()
    try:
        pool.check_process()  # the creator: fine
        pid = os.fork()
        if pid == 0:
            try:
                pool.check_process("this Worker")
            except shmenv.ForkedEnvError as exc:
                os._exit(0 if f"belongs to process {os.getppid()}" in str(exc) else 2)
            os._exit(1)
        _pid, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not pool.forked and pool.processes[0].is_alive()
    finally:
        pool.stop()
        block.close()
