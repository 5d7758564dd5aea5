"""shmenv.ray.AsyncVectorEnv: any gymnasium env over Ray actors gives what gymnasium's
SyncVectorEnv gives on the same env functions, seeds and actions (2 actors x 2 CartPoles,
one worker each, on a local Ray cluster this module starts), also through gymnasium's
async pair (``step_async``/``step_wait``, ``reset_async``/``reset_wait``); ``call``, ``get_attr``,
``set_attr`` and ``render`` answer across actors what the local ``shmenv.AsyncVectorEnv``
and SyncVectorEnv answer, with gymnasium's errors for misuse; batches of Dict and Tuple
spaces are split among actors and laid end to end row for row."""

from __future__ import annotations

import time
from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import SyncVectorEnv

pytest.importorskip("ray", reason="Ray is not installed: pip install 'shmenv[ray]'")

import shmenv  # noqa: E402
from shmenv.ray_actors import lay_rows, take_rows  # noqa: E402
from tests.any_envs import RichEnv  # noqa: E402

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
def test_async_pair_gives_what_step_and_reset_give(ray_env, reference):
    """reset_async/reset_wait and step_async/step_wait return exactly what a twin's
    reset and step return (obs, rewards, flags, infos, env order), episode ends included."""
    twin = SyncVectorEnv(ENV_FNS)
    try:
        ray_env.reset_async(seed=SEED)
        assert data_equivalence(ray_env.reset_wait(), twin.reset(seed=SEED), exact=True)
        ends = 0
        for t in range(40):
            ray_env.step_async(reference["actions"][t])
            got = ray_env.step_wait(timeout=60)
            want = twin.step(reference["actions"][t])
            assert data_equivalence(got, want, exact=True), f"step {t}: {got} != {want}"
            ends += int(np.sum(got[2] | got[3]))
        assert ends >= 1, "no episode ended: autoreset went untested"
    finally:
        twin.close()


@needs_async
def test_async_pair_misuse_raises_gymnasium_errors(ray_env):
    """One pending step/reset/call at a time, no wait without its async half, with
    gymnasium's errors and messages; a refused call leaves the pending one intact."""
    actions = np.zeros(NUM_ENVS, dtype=int)
    ray_env.reset(seed=SEED)
    for verb in ("step", "reset"):
        with pytest.raises(NoAsyncCallError, match=f"Calling `{verb}_wait` without any "
                                                   f"prior call to `{verb}_async`"):
            getattr(ray_env, f"{verb}_wait")()
    ray_env.step_async(actions)
    pending = "while waiting for a pending call to `step` to complete"
    for misuse, what in ((lambda: ray_env.step_async(actions), "step_async"),
                         (ray_env.reset_async, "reset_async"),
                         # step() and reset() are their async pairs, named as gymnasium
                         # names them (test_any_env_errors.py asks gymnasium itself)
                         (lambda: ray_env.step(actions), "step_async"),
                         (ray_env.reset, "reset_async"),
                         (lambda: ray_env.call_async("render"), "call_async"),
                         (lambda: ray_env.send(actions), "send")):
        with pytest.raises(AlreadyPendingCallError, match=f"Calling `{what}` {pending}"):
            misuse()
    with pytest.raises(NoAsyncCallError, match="Calling `reset_wait`"):
        ray_env.reset_wait()
    with pytest.raises(ValueError, match="timeout must be None"):
        ray_env.step_wait(timeout=0)
    assert ray_env.step_wait()[0].shape == (NUM_ENVS, 4)
    ray_env.reset_async(seed=SEED)
    with pytest.raises(AlreadyPendingCallError, match="pending call to `reset`"):
        ray_env.step_async(actions)
    ray_env.reset_wait()
    ray_env.send(actions)
    with pytest.raises(RuntimeError, match="still have a step in flight from send"):
        ray_env.step_async(actions)
    ray_env.reset()  # drains the step from send()


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


def napping_env(seed: int):
    """A RichEnv that renders, made as gymnasium's tests make envs, with one more method
    (``nap``) so that a call can be slow on purpose."""

    def make() -> RichEnv:
        env = RichEnv(render_mode="rgb_array")
        env.reset(seed=seed)
        env.nap = time.sleep  # type: ignore[attr-defined]
        return env

    return make


def every_answer(env) -> list:
    """What the env answers to each call of gymnasium's vector API, in one sequence."""
    env.reset(seed=SEED)
    env.set_attr("length", 100)  # one value for every env: no episode ends below
    env.set_attr("t", [4, 3, 2, 1])  # one value per env
    answers = [env.get_attr("length"), env.get_attr("t"), env.render(),
               env.call("get_wrapper_attr", "t"), env.np_random_seed]
    env.step(np.array([0, 1, 2, 0]))
    if isinstance(env, SyncVectorEnv):  # which has no async pair
        answers.append(env.call("render"))
    else:
        env.call_async("render")
        answers.append(env.call_wait())
    answers += [env.call("_observe"), env.get_attr("resets")]
    env.set_attr("t", (7, 7, 8, 8))
    answers.append(env.get_attr("t"))
    return answers


@needs_async
def test_calls_answer_across_actors_as_local_and_sync_envs_do(ray_session):
    """call/get_attr/set_attr/render over 2 actors give what shmenv.AsyncVectorEnv and
    SyncVectorEnv give on the same env functions, in env order; an env's error in a call
    is still the env's type, names its actor and closes the env, as locally."""
    import shmenv.ray as shmenv_ray

    fns = [napping_env(i) for i in range(NUM_ENVS)]
    sync = SyncVectorEnv(fns)
    local = shmenv.AsyncVectorEnv(fns, num_workers=2)
    remote = shmenv_ray.AsyncVectorEnv(fns, num_actors=2, workers_per_actor=1)
    try:
        assert remote.render_mode == local.render_mode == sync.render_mode == "rgb_array"
        want = every_answer(sync)
        assert [int(frame[0, 0, 0]) for frame in want[2]] == [4, 3, 2, 1]  # env order
        for name, env in (("local", local), ("ray", remote)):
            got = every_answer(env)
            assert all(isinstance(answer, tuple) for answer in got)
            assert data_equivalence(got, want, exact=True), f"{name}: {got} != {want}"
        with pytest.raises(AttributeError, match="no_such_attribute") as caught:
            remote.get_attr("no_such_attribute")
        assert isinstance(caught.value, shmenv_ray.ActorError)
        assert "shmenv Ray actor 0 (envs 0-1" in str(caught.value)
        with pytest.raises(AttributeError, match="no_such_attribute"):
            local.get_attr("no_such_attribute")
        for env in (local, remote):  # both closed by the env's error
            for method, args in (("call", ("render",)), ("call_async", ("render",)),
                                 ("call_wait", ()), ("get_attr", ("t",)),
                                 ("set_attr", ("t", 0)), ("render", ())):
                with pytest.raises(ClosedEnvironmentError):
                    getattr(env, method)(*args)
    finally:
        sync.close()
        local.close()
        remote.close()


@needs_async
def test_call_misuse_raises_gymnasium_errors(ray_env):
    """The same errors, with the same messages, as the local shmenv.AsyncVectorEnv (and
    gymnasium's AsyncVectorEnv): one pending call at a time, no wait without a call,
    step() and reset() named by their async halves as gymnasium names them, one value
    per env."""
    ray_env.reset(seed=SEED)
    with pytest.raises(NoAsyncCallError, match="Calling `call_wait` without any prior "
                                               "call to `call_async`"):
        ray_env.call_wait()
    ray_env.call_async("get_wrapper_attr", "spec")
    pending = "while waiting for a pending call to `call` to complete"
    with pytest.raises(AlreadyPendingCallError, match=f"Calling `call_async` {pending}"):
        ray_env.call_async("render")
    for misuse, what in ((lambda: ray_env.step(np.zeros(NUM_ENVS, dtype=int)),
                          "step_async"),
                         (ray_env.reset, "reset_async"), (lambda: ray_env.set_attr("a", 1),
                                                          "set_attr"),
                         (lambda: ray_env.send(np.zeros(NUM_ENVS, dtype=int)), "send")):
        with pytest.raises(AlreadyPendingCallError, match=f"Calling `{what}` {pending}"):
            misuse()
    specs = ray_env.call_wait()
    assert [spec.id for spec in specs] == ["CartPole-v1"] * NUM_ENVS
    for name in ("step", "reset", "close"):
        with pytest.raises(ValueError, match=f"use `{name}` directly"):
            ray_env.call(name)
    with pytest.raises(ValueError, match="Got `3` values for 4 environments"):
        ray_env.set_attr("gravity", [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="timeout must be None"):
        ray_env.call_async("render")
        ray_env.call_wait(timeout=-1)
    ray_env.step(np.zeros(NUM_ENVS, dtype=int))  # nothing above left the env unusable


@needs_async
@pytest.mark.parametrize("kind", ["call", "step", "reset after send"])
def test_a_wait_past_its_timeout_closes_the_env(ray_session, kind):
    """call_wait, step_wait and reset_wait past their ``timeout`` name the late actor and
    close the env (every actor released), as a local worker that does not answer does;
    reset_async returns at once even with a slow step still in flight from send()."""
    import shmenv.ray as shmenv_ray

    env = shmenv_ray.AsyncVectorEnv([napping_env(0), napping_env(1)], num_actors=2,
                                    workers_per_actor=1)
    try:
        env.reset(seed=SEED)
        if kind == "call":
            assert env.call("nap", 0) == (None, None)
            env.call_async("nap", 3)  # closing waits for the actors to finish it
            wait = env.call_wait
        elif kind == "step":
            env.set_attr("sleep_s", 3)
            env.step_async(np.zeros(2, dtype=int))
            wait = env.step_wait
        else:
            env.set_attr("sleep_s", 3)
            env.send(np.zeros(2, dtype=int))
            env.reset_async(seed=SEED)  # the steps are still running: it must not wait
            wait = env.reset_wait
        with pytest.raises(shmenv.WorkerTimeoutError,
                           match=r"shmenv Ray actor \d \(env \d.* did not answer within 0.5 s"
                           ) as caught:
            wait(timeout=0.5)
        assert isinstance(caught.value, TimeoutError)
        with pytest.raises(ClosedEnvironmentError):
            env.call("render")
        for method, args in (("step_async", (np.zeros(2, dtype=int),)), ("step_wait", ()),
                             ("reset_async", ()), ("reset_wait", ())):
            with pytest.raises(ClosedEnvironmentError):
                getattr(env, method)(*args)
    finally:
        env.close()


@needs_async
def test_close_warns_of_a_pending_call(ray_session):
    import shmenv.ray as shmenv_ray

    env = shmenv_ray.AsyncVectorEnv(ENV_FNS[:2], num_actors=2, workers_per_actor=1)
    env.call_async("get_wrapper_attr", "spec")
    with pytest.warns(UserWarning, match="Calling `close` while waiting for a pending call "
                                         "to `call` to complete"):
        env.close()
    with pytest.raises(ClosedEnvironmentError):
        env.call_wait()


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
