"""RayVectorEnv on a local Ray cluster that this module starts (``ray_session``, 8 logical CPUs).

Ray's start-up costs ~10 s on 2 busy cores, so one Ray session and one 2-actor env serve the
module; the test that kills an actor gets an env of its own, so any test order works (each
2-actor env reserves 4 logical CPUs, hence 8: both envs must fit at once). Sticky actions
(``repeat_action_probability=0.25``) make ALE's seed matter: without them Breakout's
trajectories do not depend on the seed at all, and a seeding bug (actor j not getting
``seed + j*m``) would go unseen.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'shmenv[ray]'")

import shmenv  # noqa: E402
import shmenv.ray as shmenv_ray  # noqa: E402
from tests.conftest import action_stream, shmenv_segments  # noqa: E402

SEED = 11
STEPS = 300
NUM_ENVS = 4  # k=2 actors x m=2 envs
OPTIONS = {"repeat_action_probability": 0.25}


def _digest(array: np.ndarray | None) -> bytes:
    return b"" if array is None else hashlib.blake2b(np.ascontiguousarray(array)).digest()


@pytest.fixture(scope="module")
def reference():
    """A single-machine ShmVectorEnv's trajectory: per step and env, digests and numbers."""
    actions = action_stream(SEED, STEPS, NUM_ENVS, 4)
    steps = []
    with shmenv.make("Breakout", NUM_ENVS, seed=SEED, num_workers=2, **OPTIONS) as env:
        obs, _ = env.reset()
        first_obs = [_digest(o) for o in obs]
        for t in range(STEPS):
            obs, rewards, terminations, truncations, infos = env.step(actions[t])
            final = infos.get("final_obs", np.full(NUM_ENVS, None, dtype=object))
            episode = infos.get("episode", {"r": np.zeros(NUM_ENVS), "l": np.zeros(NUM_ENVS)})
            steps.append([
                (_digest(obs[i]), float(rewards[i]), bool(terminations[i]),
                 bool(truncations[i]), int(infos["lives"][i]), _digest(final[i]),
                 float(episode["r"][i]), int(episode["l"][i]))
                for i in range(NUM_ENVS)
            ])
    ends = sum(row[i][2] or row[i][3] for row in steps for i in range(NUM_ENVS))
    assert ends >= 4, f"only {ends} episode ends: the test would not exercise final_obs"
    return {"actions": actions, "first_obs": first_obs, "steps": steps}


@pytest.fixture(scope="module")
def ray_env(ray_session):
    with shmenv_ray.make("Breakout", NUM_ENVS, num_actors=2, seed=SEED, **OPTIONS) as env:
        yield env


def _rows(obs, rewards, terminations, truncations, infos) -> list[tuple]:
    count = len(rewards)
    final = infos.get("final_obs", np.full(count, None, dtype=object))
    episode = infos.get("episode", {"r": np.zeros(count), "l": np.zeros(count)})
    return [
        (_digest(obs[row]), float(rewards[row]), bool(terminations[row]),
         bool(truncations[row]), int(infos["lives"][row]), _digest(final[row]),
         float(episode["r"][row]), int(episode["l"][row]))
        for row in range(count)
    ]


def test_layout_and_seeds_per_actor(ray_env):
    assert ray_env.num_envs == NUM_ENVS
    assert ray_env.observation_space.shape == (NUM_ENVS, 4, 84, 84)
    assert [(a.env_start, a.env_stop) for a in ray_env.actor_infos] == [(0, 2), (2, 4)]
    assert all(len(a.worker_pids) == 2 for a in ray_env.actor_infos)
    assert len({a.pid for a in ray_env.actor_infos}) == 2
    # actor j owns envs j*m .. j*m+m-1 and seeds them seed + env index
    assert [a.seeds for a in ray_env.actor_infos] == [(SEED, SEED + 1), (SEED + 2, SEED + 3)]


def test_trajectories_equal_single_machine(ray_env, reference):
    obs, _ = ray_env.reset(seed=SEED)
    assert [_digest(o) for o in obs] == reference["first_obs"]
    for t in range(STEPS):
        result = ray_env.step(reference["actions"][t])
        assert result[0].shape == (NUM_ENVS, 4, 84, 84)
        rows = _rows(*result)
        for env_id in range(NUM_ENVS):
            assert rows[env_id] == reference["steps"][t][env_id], (
                f"step {t} env {env_id}: Ray env differs from the single-machine ShmVectorEnv")


def test_async_pair_equals_the_single_machine_step_and_reset(ray_env, reference):
    """reset_async/reset_wait and step_async/step_wait give what step and reset give (the
    single-machine twin's rows: obs, rewards, flags, lives, final_obs, episode stats),
    through the reference's episode ends."""
    ray_env.reset_async(seed=SEED)
    obs, _ = ray_env.reset_wait(timeout=60)
    assert [_digest(o) for o in obs] == reference["first_obs"]
    assert [a.seeds for a in ray_env.actor_infos] == [(SEED, SEED + 1), (SEED + 2, SEED + 3)]
    for t in range(STEPS):
        ray_env.step_async(reference["actions"][t])
        rows = _rows(*ray_env.step_wait())
        assert rows == reference["steps"][t], f"step {t}: step_wait differs from step"


def test_async_pair_misuse_raises_gymnasium_errors(ray_env):
    from gymnasium.error import AlreadyPendingCallError, NoAsyncCallError

    actions = np.zeros(NUM_ENVS, dtype=int)
    ray_env.reset()
    with pytest.raises(NoAsyncCallError, match="without any prior call to `step_async`"):
        ray_env.step_wait()
    ray_env.step_async(actions)
    with pytest.raises(AlreadyPendingCallError, match="pending call to `step`"):
        ray_env.step_async(actions)
    with pytest.raises(AlreadyPendingCallError, match="pending call to `step`"):
        ray_env.reset_async()
    ray_env.step_wait()
    with pytest.raises(ValueError, match="takes no options"):
        ray_env.reset_async(options={"mode": 1})
    ray_env.reset_async()
    with pytest.raises(NoAsyncCallError, match="without any prior call to `step_async`"):
        ray_env.step_wait()
    ray_env.reset_wait()


def test_async_serves_every_env_with_its_own_trajectory(ray_env, reference):
    """Each env's t-th result under async send/recv equals its t-th step in the sync run."""
    ray_env.reset(seed=SEED)
    served = np.zeros(NUM_ENVS, dtype=int)
    actions = reference["actions"]
    ray_env.send(actions[0])
    rounds = 120
    for _ in range(rounds):
        obs, rewards, terminations, truncations, infos = ray_env.recv()
        env_ids = infos["env_id"]
        assert len(env_ids) in (2, 4) and len(obs) == len(env_ids)
        for row, env_id in enumerate(env_ids):
            assert env_ids.tolist() == sorted(env_ids.tolist())
            got = _rows(obs, rewards, terminations, truncations, infos)[row]
            assert got == reference["steps"][served[env_id]][env_id], (
                f"env {env_id} step {served[env_id]}: async result differs from sync")
        served[env_ids] += 1
        ray_env.send(actions[served[env_ids], env_ids], env_ids)
    ray_env.reset()  # drains the steps still in flight
    assert (served > 0).all(), f"some env was never served: {served}"
    assert served.sum() >= rounds * 2
    # The two actors run at similar speeds: neither should starve.
    assert served.min() >= served.max() // 4, f"an actor starved: {served}"


def test_async_rejects_partial_actors_and_double_send(ray_env):
    ray_env.reset()
    with pytest.raises(ValueError, match="whole actors"):
        ray_env.send(np.zeros(1, dtype=int), [2])
    ray_env.send(np.zeros(2, dtype=int), [2, 3])
    with pytest.raises(RuntimeError, match="actor 1 .*still stepping"):
        ray_env.send(np.zeros(2, dtype=int), [2, 3])
    with pytest.raises(RuntimeError, match="in flight"):
        ray_env.step(np.zeros(NUM_ENVS, dtype=int))
    _, _, _, _, infos = ray_env.recv()
    assert infos["env_id"].tolist() == [2, 3]
    with pytest.raises(ValueError, match="out of range"):
        ray_env.step(np.full(NUM_ENVS, 9))


def _wait_gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    """Pids still alive (zombies count as gone) after waiting up to ``timeout``."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture
def doomed_env(ray_session):
    """A 2-actor env for the test that kills one of its actors."""
    with shmenv_ray.make("Breakout", NUM_ENVS, num_actors=2, seed=SEED, **OPTIONS) as env:
        yield env


def test_killed_actor_gives_named_error_and_close_releases_everything(doomed_env, reference):
    """Kills actor 1's process (a Ray worker this module started), expects an error naming
    the actor and its envs, then checks close() frees every actor, worker and block."""
    ray_env = doomed_env
    actor = ray_env.actor_infos[1]
    pids = [pid for info in ray_env.actor_infos for pid in (info.pid, *info.worker_pids)]
    ray_env.reset()
    os.kill(actor.pid, signal.SIGKILL)
    with pytest.raises(shmenv_ray.ActorLostError) as caught:
        for _ in range(50):  # a step may already be under way when the process dies
            ray_env.step(reference["actions"][0])
    message = str(caught.value)
    assert f"actor 1 (envs 2-3, node {actor.node_ip}, pid {actor.pid})" in message
    assert "Traceback" not in message
    assert isinstance(caught.value, shmenv.WorkerDiedError)
    with pytest.raises(shmenv.ClosedError):
        ray_env.step(reference["actions"][0])
    ray_env.close()
    assert _wait_gone(pids) == [], "close() left actor or worker processes running"
    # Blocks are named shmenv_<creator pid>_...: look only at this test's (the machine may
    # be shared with other shmenv runs).
    creators = {str(info.pid) for info in ray_env.actor_infos} | {str(os.getpid())}
    mine = {name for name in shmenv_segments() if name.split("_")[1] in creators}
    assert mine == set(), f"segments left after close(): {sorted(mine)}"
