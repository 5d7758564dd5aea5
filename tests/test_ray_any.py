"""shmenv.ray.AsyncVectorEnv: any gymnasium env over Ray actors gives what gymnasium's
SyncVectorEnv gives on the same env functions, seeds and actions (2 actors x 2 CartPoles,
one worker each, on a local Ray cluster this module starts); batches of Dict and Tuple
spaces are split among actors and laid end to end row for row."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import SyncVectorEnv

pytest.importorskip("ray", reason="Ray is not installed: pip install 'shmenv[ray]'")

import shmenv  # noqa: E402
from shmenv.ray_actors import lay_rows, take_rows  # noqa: E402

needs_async = pytest.mark.skipif(not hasattr(shmenv, "AsyncVectorEnv"),
                                 reason="this shmenv has no AsyncVectorEnv")
SEED = 5
STEPS = 150
NUM_ENVS = 4
ENV_FNS = [partial(gym.make, "CartPole-v1")] * NUM_ENVS


@pytest.fixture(scope="module")
def ray_env(ray_session):
    import shmenv.ray as shmenv_ray

    with shmenv_ray.AsyncVectorEnv(ENV_FNS, num_actors=2, workers_per_actor=1) as env:
        yield env


@pytest.fixture(scope="module")
def reference():
    """gymnasium's SyncVectorEnv on the same functions: the actions and every step."""
    actions = np.random.default_rng(SEED).integers(0, 2, size=(STEPS, NUM_ENVS))
    env = SyncVectorEnv(ENV_FNS)
    first_obs, _ = env.reset(seed=SEED)
    steps = [env.step(actions[t])[:4] for t in range(STEPS)]
    env.close()
    ends = sum(int(np.sum(term | trunc)) for _, _, term, trunc in steps)
    assert ends >= 4, f"only {ends} episode ends: autoreset would go untested"
    return {"actions": actions, "first_obs": first_obs, "steps": steps}


@needs_async
def test_spaces_metadata_and_actor_layout(ray_env):
    single = gym.make("CartPole-v1")
    assert ray_env.single_observation_space == single.observation_space
    assert ray_env.single_action_space == single.action_space
    assert ray_env.observation_space.shape == (NUM_ENVS, 4)
    assert ray_env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert ray_env.metadata["render_fps"] == single.metadata["render_fps"]
    assert [(a.env_start, a.env_stop) for a in ray_env.actor_infos] == [(0, 2), (2, 4)]
    assert len({a.pid for a in ray_env.actor_infos}) == 2


@needs_async
def test_trajectories_equal_gymnasium_sync(ray_env, reference):
    obs, _ = ray_env.reset(seed=SEED)
    np.testing.assert_array_equal(obs, reference["first_obs"])
    for t in range(STEPS):
        got = ray_env.step(reference["actions"][t])
        for name, mine, theirs in zip(("obs", "rewards", "terminations", "truncations"),
                                      got[:4], reference["steps"][t]):
            np.testing.assert_array_equal(mine, theirs, err_msg=f"step {t}: {name} differ")


@needs_async
def test_async_serves_every_env_its_own_trajectory(ray_env, reference):
    """Each env's k-th result under send/recv equals its k-th step in the sync run."""
    ray_env.reset(seed=SEED)
    served = np.zeros(NUM_ENVS, dtype=int)
    actions = reference["actions"]
    ray_env.send(actions[0])
    for _ in range(60):
        obs, rewards, terminations, _truncations, infos = ray_env.recv()
        env_ids = infos["env_id"]
        assert len(env_ids) in (2, 4) and len(obs) == len(env_ids)
        for row, env_id in enumerate(env_ids):
            ref_obs, ref_rewards, ref_terms, _ = reference["steps"][served[env_id]]
            np.testing.assert_array_equal(obs[row], ref_obs[env_id])
            assert rewards[row] == ref_rewards[env_id]
            assert terminations[row] == ref_terms[env_id]
        served[env_ids] += 1
        ray_env.send(actions[served[env_ids], env_ids], env_ids)
    ray_env.reset()  # drains the steps still in flight
    assert (served > 0).all(), f"some env was never served: {served}"


@needs_async
def test_reset_mask_resets_only_the_masked_envs(ray_env, reference):
    sync = SyncVectorEnv(ENV_FNS)
    try:
        sync.reset(seed=SEED)
        ray_env.reset(seed=SEED)
        for t in range(3):
            expected = sync.step(reference["actions"][t])[0]
            ray_env.step(reference["actions"][t])
        mask = np.array([False, False, True, False])  # actor 0 has nothing to reset
        expected, _ = sync.reset(seed=SEED + 100, options={"reset_mask": mask})
        obs, _ = ray_env.reset(seed=SEED + 100, options={"reset_mask": mask})
        np.testing.assert_array_equal(obs, expected)
        assert not np.array_equal(obs[2], reference["first_obs"][2])
    finally:
        sync.close()
    with pytest.raises(ValueError, match="at least one True"):
        ray_env.reset(options={"reset_mask": np.zeros(NUM_ENVS, dtype=bool)})
    with pytest.raises(TypeError, match="numpy array"):
        ray_env.reset(options={"reset_mask": [True] * NUM_ENVS})


@needs_async
def test_bad_actions_are_refused_before_any_actor_steps(ray_env):
    ray_env.reset(seed=SEED)
    with pytest.raises(TypeError, match=r"actions\[2\] = 0.5 \(env 2"):
        ray_env.step(np.array([0, 0, 0.5, 0], dtype=object))  # CartPole takes ints
    with pytest.raises(ValueError, match="actions must have shape"):
        ray_env.send(np.zeros(3, dtype=int), [0, 1])
    ray_env.step(np.zeros(NUM_ENVS, dtype=int))  # still open


@needs_async
def test_an_env_that_raises_names_its_actor_and_closes_the_env(ray_session):
    import shmenv.ray as shmenv_ray

    def make_exploding():  # local: cloudpickle ships it by value to the actor's workers
        env = gym.make("CartPole-v1")

        def step(action):
            raise RuntimeError("the exploding env's step")
        env.step = step
        return env

    env = shmenv_ray.AsyncVectorEnv([*ENV_FNS[:3], make_exploding], num_actors=2,
                                    workers_per_actor=1)
    try:
        env.reset(seed=SEED)
        with pytest.raises(shmenv_ray.ActorError) as caught:
            env.step(np.zeros(NUM_ENVS, dtype=int))
        message = str(caught.value)
        assert "shmenv Ray actor 1 (envs 2-3" in message
        assert "its AsyncVectorEnv (envs numbered from 0 within the actor)" in message
        assert "env 1 raised RuntimeError: the exploding env's step" in message  # 1 of 2-3
        assert "Env traceback" in message and "create a new one" in message
        assert isinstance(caught.value, shmenv.WorkerError)
        with pytest.raises(shmenv.ClosedError):
            env.step(np.zeros(NUM_ENVS, dtype=int))
    finally:
        env.close()


def test_dict_and_tuple_batches_split_and_join_row_for_row():
    batch = {"pos": np.arange(12).reshape(6, 2), "flags": (np.arange(6) % 2 == 0,
                                                         np.arange(6) * 10)}
    parts = [take_rows(batch, slice(0, 2)), take_rows(batch, np.array([2, 3, 4])),
             take_rows(batch, slice(5, 6))]
    assert parts[1]["flags"][1].tolist() == [20, 30, 40]
    joined = lay_rows(parts)
    np.testing.assert_array_equal(joined["pos"], batch["pos"])
    np.testing.assert_array_equal(joined["flags"][1], batch["flags"][1])
    out = {"pos": np.full((6, 2), -1), "flags": (np.zeros(6, bool), np.full(6, -1))}
    lay_rows([parts[2], parts[0]], out, starts=[5, 0])  # only the rows given are written
    assert out["pos"][:, 0].tolist() == [0, 2, -1, -1, -1, 10]
    assert out["flags"][1].tolist() == [0, 10, -1, -1, -1, 50]
