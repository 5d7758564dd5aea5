"""Relayed synchronous steps (shmenv.worker.Relay): the tree's shape, results identical to
the main process talking to every worker itself, and failures deep in the tree reported
with the right worker's name."""

from __future__ import annotations

import functools
import os
import signal

import numpy as np
import pytest

import shmenv
from shmenv.errors import ClosedError, WorkerDiedError, WorkerError
from shmenv.fakegames import NullGame
from shmenv.planning import relay_tree
from tests.conftest import action_stream
from tests.procs import all_gone

# 7 workers with fan-out 2: 0 -> (1, 4), 1 -> (2, 3), 4 -> (5, 6); three levels.
DEEP = {"num_workers": 7, "relay_fanout": 2}


def subtree(children: list[list[int]], root: int) -> list[int]:
    found = [root]
    for child in children[root]:
        found += subtree(children, child)
    return found


@pytest.mark.parametrize("fanout", [1, 2, 3, 8])
@pytest.mark.parametrize("num_workers", [1, 2, 5, 8, 9, 23, 64])
def test_relay_tree_is_a_balanced_preorder_tree(num_workers, fanout):
    children = relay_tree(num_workers, fanout)
    parents = [p for p, kids in enumerate(children) for _ in kids]
    assert sorted(c for kids in children for c in kids) == list(range(1, num_workers))
    assert len(parents) == num_workers - 1  # each worker but the root has one parent
    for worker, kids in enumerate(children):
        assert len(kids) <= fanout
        # Pre-order: a subtree is a run of consecutive workers, hence of consecutive envs.
        assert subtree(children, worker) == list(
            range(worker, worker + len(subtree(children, worker))))
        sizes = [len(subtree(children, k)) for k in kids]
        assert not sizes or max(sizes) - min(sizes) <= 1
    assert relay_tree(64, 8)[0] == [1, 9, 17, 25, 33, 41, 49, 57]  # two levels under 0


def run(env: shmenv.ShmVectorEnv, actions: np.ndarray) -> list:
    """Every output of ``reset`` and each step, copied."""
    obs, infos = env.reset()
    out = [obs.copy(), infos["lives"].copy()]
    for step_actions in actions:
        obs, rewards, terminations, truncations, infos = env.step(step_actions)
        out += [obs.copy(), rewards, terminations, truncations, infos["lives"]]
        if "episode" in infos:
            out += [infos["_episode"], *infos["episode"].values()][:3]  # r and l, not t
            if "final_obs" in infos:
                out += [f if f is None else f.copy() for f in infos["final_obs"]]
    return out


@pytest.mark.parametrize("autoreset_mode", ["SameStep", "NextStep"])
def test_relayed_steps_equal_the_main_talking_to_every_worker(autoreset_mode):
    """13 envs on 7 uneven workers: a direct star, a three-level tree, a one-level tree."""
    game = functools.partial(NullGame, episode_steps=17)
    actions = action_stream(3, 120, 13, 4)
    results = []
    for fanout in (0, 2, 8):
        with shmenv.make("Breakout", 13, num_workers=7, seed=5, game_factory=game,
                         relay_fanout=fanout, autoreset_mode=autoreset_mode) as env:
            assert env.relayed == (fanout > 0)
            results.append(run(env, actions))
    direct, deep, flat = results
    assert len(direct) == len(deep) == len(flat) > 120 * 5
    for a, b, c in zip(direct, deep, flat):
        if a is None:
            assert b is None and c is None
        else:
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)


def test_relayed_breakout_matches_direct_pixel_for_pixel():
    actions = action_stream(8, 150, 5, 4)
    results = []
    for fanout in (0, 2):
        with shmenv.make("Breakout", 5, num_workers=5, seed=21, relay_fanout=fanout,
                         repeat_action_probability=0.25) as env:
            results.append(run(env, actions))
    assert len(results[0]) == len(results[1])
    for a, b in zip(*results):
        if a is None:
            assert b is None
        else:
            np.testing.assert_array_equal(a, b)


class FailsInOneEnv(NullGame):
    """The env seeded 7 (env 7: worker 3 of 13 envs on 7 workers) raises at its 3rd step."""

    def step(self, action: int) -> tuple[float, bool, bool]:
        if self.seed == 7 and self.episode_length == 2:
            raise RuntimeError("emulator error in env 7")
        return super().step(action)


def test_exception_deep_in_the_tree_names_its_worker(no_leaked_segments):
    env = shmenv.make("Breakout", 13, seed=0, context="fork", game_factory=FailsInOneEnv,
                      **DEEP)
    assert env.worker_env_ranges[3] == (6, 8) and relay_tree(7, 2)[1] == [2, 3]  # a grandchild
    env.reset()
    with pytest.raises(WorkerError) as caught:
        for _ in range(5):
            env.step(np.zeros(13, dtype=np.int64))
    message = str(caught.value)
    assert "worker 3 " in message and "envs 6-7" in message
    assert "emulator error in env 7" in message and caught.value.worker_type == "RuntimeError"
    assert "test_relay.py" in caught.value.worker_traceback  # the worker's own frames
    with pytest.raises(ClosedError):
        env.step(np.zeros(13, dtype=np.int64))
    assert all_gone(env.worker_pids, timeout=0)


@pytest.mark.timeout(30)  # a death missed anywhere in the tree would hang the step
@pytest.mark.parametrize("victim", [6, 4, 0])  # a leaf, a relaying worker, the root
def test_killed_worker_anywhere_in_the_tree_is_named(victim, no_leaked_segments):
    env = shmenv.make("Breakout", 13, seed=0, context="fork", game_factory=NullGame,
                      **DEEP)
    env.reset()
    env.step(np.zeros(13, dtype=np.int64))
    pid = env.worker_pids[victim]
    os.kill(pid, signal.SIGKILL)
    assert all_gone([pid])
    with pytest.raises(WorkerDiedError) as caught:
        env.step(np.zeros(13, dtype=np.int64))
    assert f"worker {victim} (pid {pid}" in str(caught.value)
    assert "SIGKILL" in str(caught.value)
    with pytest.raises(ClosedError):
        env.reset()
    assert all_gone(env.worker_pids, timeout=0)


def test_relay_fanout_is_checked_and_async_mode_talks_to_each_worker():
    for bad in (-1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="relay_fanout must be an int >= 0"):
            shmenv.make("Breakout", 4, game_factory=NullGame, relay_fanout=bad)
    with shmenv.make("Breakout", 8, batch_size=4, game_factory=NullGame) as env:
        assert not env.relayed  # send/recv address workers one by one
