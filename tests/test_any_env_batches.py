"""shmenv.AsyncVectorEnv's async first-ready batches (``batch_size < num_envs``).

Whatever order the workers answer in, each env's own trajectory is the one gymnasium's
SyncVectorEnv gives for the same per-env actions; every batch is whole workers, sorted by
``infos["env_id"]``.
"""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import SyncVectorEnv

import shmenv
from tests.any_envs import TEST_SPACES, numeric_info_env, rich_env

pytestmark = pytest.mark.timeout(60)


def row(batch, index: int):
    """One env's observation out of a (nested) batch."""
    if isinstance(batch, dict):
        return {key: row(value, index) for key, value in batch.items()}
    return batch[index]


def info_of(infos: dict, index: int) -> dict:
    """One env's info out of batched infos (the keys its ``_key`` mask marks); numbers as
    floats, since a batch's dtype is that of its first env's value, which depends on which
    envs were batched together."""
    def value_of(value):
        if isinstance(value, dict):
            return info_of(value, index)
        if value.ndim == 1 and value.dtype.kind in "biuf":
            return float(value[index])
        return value[index]
    return {key: value_of(value) for key, value in infos.items()
            if key != "env_id" and not key.startswith("_") and infos[f"_{key}"][index]}


def action_of(env: int, k: int) -> int:
    return (env * 7 + k * 3) % 3


@pytest.mark.parametrize(("space", "make"), [("box", rich_env), ("dict", rich_env),
                                             ("box", numeric_info_env)])
def test_each_env_follows_its_own_trajectory(space, make, no_leaked_segments):
    """Observations, rewards, flags and infos (numbers in the block's info columns too)."""
    num_envs, steps = 6, 12
    fns = [make(i, observation_space=TEST_SPACES[space]) for i in range(num_envs)]
    trajectories: dict[int, list] = {env: [] for env in range(num_envs)}
    with shmenv.AsyncVectorEnv(fns, batch_size=2, num_workers=3) as envs:
        assert envs.worker_env_ranges == ((0, 2), (2, 4), (4, 6))
        obs, infos = envs.reset(seed=5)
        ids = infos["env_id"]
        assert len(ids) == 2 and ids.tolist() in ([0, 1], [2, 3], [4, 5])
        seen = set(ids.tolist())
        while len(seen) < num_envs:  # the other reset envs come out of recv()
            _obs, _r, _te, _tr, infos = envs.recv()
            seen |= set(infos["env_id"].tolist())
        envs.send(np.zeros(num_envs, dtype=np.int64) + [action_of(e, 0)
                                                       for e in range(num_envs)])
        counts = [0] * num_envs
        while min(counts) < steps:
            obs, rewards, terms, truncs, infos = envs.recv()
            ids = infos["env_id"]
            assert np.all(np.diff(ids) > 0) and len(ids) == 2
            for position, env in enumerate(ids.tolist()):
                trajectories[env].append((row(obs, position), rewards[position],
                                          terms[position], truncs[position],
                                          info_of(infos, position)))
                counts[env] += 1
            envs.send(np.array([action_of(e, counts[e]) for e in ids]), ids)
        envs.recv()  # drain one batch; the rest is dropped by close()
    reference = SyncVectorEnv(fns)
    reference.reset(seed=5)
    for k in range(steps):
        obs, rewards, terms, truncs, infos = reference.step(
            np.array([action_of(e, k) for e in range(num_envs)]))
        for env in range(num_envs):
            ours = trajectories[env][k]
            assert data_equivalence(ours[0], row(obs, env), exact=True), (env, k)
            assert (ours[1], ours[2], ours[3]) == (rewards[env], terms[env], truncs[env])
            assert data_equivalence(ours[4], info_of(infos, env), exact=True), (env, k)
    reference.close()


def test_batch_misuse_is_named(no_leaked_segments):
    fns = [rich_env(i) for i in range(4)]
    with shmenv.AsyncVectorEnv(fns, batch_size=2, num_workers=2) as envs:
        _obs, infos = envs.reset(seed=0)
        with pytest.raises(RuntimeError, match="in flight"):
            envs.step(np.zeros(4, dtype=np.int64))
        with pytest.raises(ValueError, match="already in flight"):
            other = np.setdiff1d(np.arange(4), infos["env_id"])
            envs.send(np.zeros(2, dtype=np.int64), other)
        with pytest.raises(ValueError, match="whole workers"):
            envs.send(np.zeros(1, dtype=np.int64), infos["env_id"][:1])
        with pytest.raises(ValueError, match=r"shape \(2,\).* env_ids of this send\(\)"):
            envs.send(np.array([0, 1, 2]), infos["env_id"])
        envs.send(np.zeros(2, dtype=np.int64), infos["env_id"])
        with pytest.raises(ValueError, match="already in flight"):  # the same ids again
            envs.send(np.zeros(2, dtype=np.int64), infos["env_id"].copy())
        envs.recv()
        envs.recv()
        with pytest.raises(RuntimeError, match="only 0 are in flight"):
            envs.recv()
