"""Async batches (send/recv): fairness, per-env equivalence with sync stepping, envpool's
reset convention, views vs gathers, and the errors a misuse gets."""

from __future__ import annotations

import collections
import functools
import os
import time

import numpy as np
import pytest

import shmenv
from shmenv.fakegames import NullGame
from shmenv.planning import check_batch_size, plan_async_workers
from tests.conftest import action_stream


class SlowNullGame(NullGame):
    """A NullGame whose env 3 (seed 3) takes 3 ms per step: a straggler."""

    def step(self, action: int) -> tuple[float, bool, bool]:
        if self.seed == 3:
            time.sleep(0.003)
        return super().step(action)


def null_env(num_envs: int, batch_size: int | None, **kwargs) -> shmenv.ShmVectorEnv:
    kwargs.setdefault("game_factory", NullGame)
    return shmenv.make("Breakout", num_envs, seed=0, batch_size=batch_size, **kwargs)


# ------------------------------------------------------------------ planning
@pytest.mark.parametrize(("num_envs", "batch_size", "cores", "workers"), [
    (16, 8, 2, 2),     # two workers of 8: a batch is one worker
    (64, 32, 2, 2),
    (64, 8, 64, 64),   # one env per worker when cores demand it
    (12, 6, 4, 4),     # sizes must divide 6: 3 envs per worker gives 4 workers
    (16, 15, 2, 16),   # gcd 1: one env per worker
])
def test_plan_picks_the_largest_workers_that_keep_every_core_busy(num_envs, batch_size,
                                                                   cores, workers):
    assert plan_async_workers(num_envs, batch_size, None, cores) == workers
    size = num_envs // workers
    assert num_envs % workers == 0 and batch_size % size == 0


def test_plan_rejects_worker_counts_that_cannot_make_whole_batches():
    assert plan_async_workers(16, 8, 4, 2) == 4
    with pytest.raises(ValueError, match=r"Valid num_workers: \[2, 4, 8, 16\]"):
        plan_async_workers(16, 8, 3, 2)
    for bad in (0, 17, 2.5, True, "4"):
        with pytest.raises(ValueError, match="batch_size must be an int"):
            check_batch_size(bad, 16)
    assert check_batch_size(None, 16) == 16


# ------------------------------------------------------------------ fairness
def wait_until_all_in_flight_replied(env) -> None:
    """Test-side barrier: block until every in-flight worker's reply is readable, so the
    choice recv() makes no longer depends on scheduling."""
    env.batcher.wait_until_replied()


def test_every_env_is_served_and_the_oldest_ready_win(no_leaked_segments):
    with null_env(16, 4, num_workers=8) as env:
        served = collections.Counter()
        _obs, infos = env.reset()
        for _ in range(200):  # free-running: whoever is ready first
            ids = infos["env_id"]
            assert len(ids) == 4 and len(set(ids.tolist())) == 4
            served.update(ids.tolist())
            _obs, _rewards, _terms, _truncs, infos = env.step(np.ones(4, dtype=np.int64), ids)
        assert sorted(served) == list(range(16))

        # With every reply ready, the batch is the oldest sends: strict round-robin, so a
        # ready env never waits more than num_envs / batch_size rounds.
        env.send(np.ones(4, dtype=np.int64), infos["env_id"])
        served.clear()
        for _ in range(400):
            oldest = env.batcher.in_flight_workers[:2]
            wait_until_all_in_flight_replied(env)
            _obs, _rewards, _terms, _truncs, infos = env.recv()
            assert sorted(set((infos["env_id"] // 2).tolist())) == sorted(oldest)
            served.update(infos["env_id"].tolist())
            env.send(np.ones(4, dtype=np.int64), infos["env_id"])
    assert set(served.values()) == {100}


def test_a_straggler_is_served_and_never_starves(no_leaked_segments):
    with null_env(4, 1, num_workers=4, game_factory=SlowNullGame) as env:
        served = collections.Counter()
        _obs, infos = env.reset()
        for _ in range(3000):
            served.update(infos["env_id"].tolist())
            if served[3] >= 4:
                break
            _obs, _r, _te, _tr, infos = env.step(np.zeros(1, dtype=np.int64), infos["env_id"])
    # env 3 is ready only every 3 ms while the others always are; a lowest-index-first
    # choice would never pick it
    assert served[3] >= 4, served


# ------------------------------------------------------------------ equivalence
def run_sync(env, actions):
    """Per env, the list of (obs, reward, terminated, truncated, final_obs) after each step."""
    steps, num_envs = actions.shape
    obs, _ = env.reset()
    trajectory = {e: [(obs[e].copy(), 0.0, False, False, None)] for e in range(num_envs)}
    for t in range(steps):
        obs, rewards, terms, truncs, infos = env.step(actions[t])
        for e in range(num_envs):
            final = infos["final_obs"][e] if infos.get("_final_obs", [False] * num_envs)[e] \
                else None
            trajectory[e].append((obs[e].copy(), rewards[e], terms[e], truncs[e], final))
    return trajectory


def run_async(env, actions):
    """The same per-env record, driving env ``e``'s t-th step with ``actions[t, e]``."""
    steps, num_envs = actions.shape
    trajectory = {e: [] for e in range(num_envs)}
    obs, infos = env.reset()
    rewards = np.zeros(len(obs))
    terms = truncs = np.zeros(len(obs), dtype=bool)
    while True:
        ids = infos["env_id"]
        for j, e in enumerate(ids):
            if len(trajectory[e]) <= steps:
                final = infos["final_obs"][j] if infos.get("_final_obs", [False] * len(ids))[j] \
                    else None
                trajectory[e].append((obs[j].copy(), rewards[j], terms[j], truncs[j], final))
        if all(len(t) > steps for t in trajectory.values()):
            return trajectory
        taken = [len(trajectory[e]) - 1 for e in ids]
        batch_actions = np.array([actions[t, e] if t < steps else 0 for t, e in zip(taken, ids)])
        obs, rewards, terms, truncs, infos = env.step(batch_actions, ids)


def assert_same_trajectories(sync, asynchronous):
    assert sync.keys() == asynchronous.keys()
    for env_id in sync:
        assert len(sync[env_id]) == len(asynchronous[env_id])
        for t, (a, b) in enumerate(zip(sync[env_id], asynchronous[env_id])):
            where = f"env {env_id}, step {t}"
            np.testing.assert_array_equal(a[0], b[0], err_msg=where)
            assert a[1:4] == b[1:4], where
            assert (a[4] is None) == (b[4] is None), where
            if a[4] is not None:
                np.testing.assert_array_equal(a[4], b[4], err_msg=where)


def test_async_trajectories_equal_sync_on_breakout(no_leaked_segments):
    steps, num_envs = 60, 6
    with shmenv.make("Breakout", num_envs, seed=7, num_workers=2) as env:
        actions = action_stream(1, steps, num_envs, env.single_action_space.n)
        sync = run_sync(env, actions)
    # 3 workers of 2 envs, batches of 2 workers: views (workers 0+1, 1+2) and gathers (0+2)
    with shmenv.make("Breakout", num_envs, seed=7, batch_size=4, num_workers=3) as env:
        asynchronous = run_async(env, actions)
    assert_same_trajectories(sync, asynchronous)
    ended = sum(1 for t in sync.values() for step in t if step[2] or step[3])
    assert ended > 0, "no episode ended: the test would not cover autoreset"


@pytest.mark.parametrize("autoreset_mode", ["SameStep", "NextStep"])
def test_async_trajectories_equal_sync_with_short_episodes(autoreset_mode, no_leaked_segments):
    steps, num_envs = 40, 12
    factory = functools.partial(NullGame, episode_steps=7)
    options = dict(game_factory=factory, autoreset_mode=autoreset_mode)
    actions = action_stream(2, steps, num_envs, 4)
    with null_env(num_envs, None, num_workers=3, **options) as env:
        sync = run_sync(env, actions)
    with null_env(num_envs, 6, num_workers=6, **options) as env:
        asynchronous = run_async(env, actions)
    assert_same_trajectories(sync, asynchronous)


# ------------------------------------------------------------------ reset, views, errors
def test_reset_follows_envpool_and_drops_results_in_flight(no_leaked_segments):
    with null_env(8, 4, num_workers=2) as env:
        obs, infos = env.reset()
        first = infos["env_id"].tolist()
        assert len(first) == 4 and infos["lives"].shape == (4,)
        _obs, rewards, _te, _tr, infos = env.recv()  # the other half, still from the reset
        assert sorted(first + infos["env_id"].tolist()) == list(range(8))
        assert not rewards.any()

        env.send(np.full(8, 3), np.arange(8))  # both workers in flight...
        obs, infos = env.reset()  # ...and dropped by the reset
        _obs2, rewards, _te, _tr, infos2 = env.recv()
        for batch_obs, ids in ((obs, infos["env_id"]), (_obs2, infos2["env_id"])):
            for j, e in enumerate(ids):  # a fresh reset frame is the env's seed everywhere
                assert (batch_obs[j] == e).all()
        assert not rewards.any()

        # nothing in flight now: a plain synchronous step still works
        obs, rewards, *_ = env.step(np.full(8, 2))
        assert obs.shape == (8, 4, 84, 84) and (rewards == 2).all()


def test_obs_is_a_view_when_contiguous_and_one_gather_otherwise(no_leaked_segments):
    with null_env(4, 2, num_workers=4) as env:
        env.reset()
        env.recv()
        assert env.envs_in_flight == 0
        env.send(np.array([1]), np.array([0]))
        env.send(np.array([2, 3]), np.array([1, 2]))
        wait_until_all_in_flight_replied(env)
        obs, rewards, _te, _tr, infos = env.recv()  # envs 0 and 1: adjacent
        assert infos["env_id"].tolist() == [0, 1] and rewards.tolist() == [1, 2]
        first_batch, kept = obs, obs.copy()
        env.send(np.array([1, 2]), np.array([3, 0]))  # in flight: 0, 2, 3 (2 is oldest)
        wait_until_all_in_flight_replied(env)
        obs, rewards, _te, _tr, infos = env.recv()
        assert infos["env_id"].tolist() == [0, 2] and rewards.tolist() == [2, 3]
        # The first batch was a view: env 0's new step shows through it; this one is a
        # gather, which the steps of envs 2 and 3 below leave alone.
        assert first_batch[0, -1, 0, 0] == 2 and kept[0, -1, 0, 0] == 1
        gathered = obs.copy()
        env.send(np.array([0, 0]), infos["env_id"])
        env.send(np.array([1]), np.array([1]))
        env.batcher.wait_until_replied()
        np.testing.assert_array_equal(obs, gathered)
        assert obs[0, -1, 0, 0] == 2 and obs[1, -1, 0, 0] == 3  # each env's own action


def test_misuse_gets_clear_errors(no_leaked_segments):
    with null_env(8, 4, num_workers=4) as env:
        _obs, infos = env.reset()
        with pytest.raises(RuntimeError, match="in flight"):
            env.step(np.zeros(8, dtype=np.int64))
        with pytest.raises(ValueError, match="already in flight"):
            env.send(np.zeros(4, dtype=np.int64), np.setdiff1d(np.arange(8), infos["env_id"]))
        with pytest.raises(ValueError, match="whole workers"):
            env.send(np.zeros(1, dtype=np.int64), infos["env_id"][:1])
        with pytest.raises(ValueError, match="more than once"):
            env.send(np.zeros(2, dtype=np.int64), np.array([0, 0]))
        with pytest.raises(ValueError, match="out of range"):
            env.send(np.zeros(1, dtype=np.int64), np.array([8]))
        with pytest.raises(ValueError, match="out of range"):
            env.send(np.full(4, 99), infos["env_id"])
        with pytest.raises(ValueError, match="shape"):
            env.send(np.zeros(3, dtype=np.int64), infos["env_id"])
        env.recv()
        with pytest.raises(RuntimeError, match="only 0 are in flight"):
            env.recv()


DEATH_SCRIPT = """
import os, signal, time, numpy as np, shmenv
from shmenv.fakegames import NullGame

class HangingGame(NullGame):
    def step(self, action):
        if action == 3:
            time.sleep(60)  # killed long before this returns
        return super().step(action)

if __name__ == "__main__":
    env = shmenv.make("Breakout", 4, seed=0, batch_size=2, num_workers=2,
                      game_factory=HangingGame)
    env.reset()
    env.recv()  # both workers idle now
    env.send(np.full(2, 3), np.array([2, 3]))  # worker 1 hangs in its step
    time.sleep(0.2)
    os.kill(env.worker_pids[1], signal.SIGKILL)
    try:
        env.recv()
    except shmenv.WorkerDiedError as exc:
        print("raised:", exc)
"""


def test_a_worker_killed_while_in_flight_is_reported_not_waited_for(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "death.py"
    script.write_text(DEATH_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, env={**os.environ})
    assert "raised: shmenv worker 1" in result.stdout, result.stderr
    assert "SIGKILL" in result.stdout
