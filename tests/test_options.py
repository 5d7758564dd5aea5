"""Options of ``shmenv.make`` that had no test of their own: ``worker_spin_us``, async
reseeding, async ``copy``, and ``frame_skip=1`` against ale_py driven directly.

Sticky actions (``repeat_action_probability``) make ALE's seed matter: without them
Breakout's trajectories do not depend on the seed, and a seeding bug would go unseen.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from ale_py import ALEInterface, roms

import shmenv
from shmenv.atari import ale_seed_for
from tests.conftest import action_stream

pytestmark = pytest.mark.usefixtures("no_leaked_segments")

STICKY = {"repeat_action_probability": 0.25}


def sync_trajectory(seed: int, actions: np.ndarray, **options) -> list[list[tuple]]:
    """Per env, its (obs, reward, terminated, truncated) after reset and after each step."""
    num_envs = actions.shape[1]
    with shmenv.make("Breakout", num_envs, seed=seed, num_workers=2, copy=True,
                     **STICKY, **options) as env:
        obs, _ = env.reset()
        rows = [[(obs[e], 0.0, False, False)] for e in range(num_envs)]
        for step_actions in actions:
            obs, rewards, terminations, truncations, _ = env.step(step_actions)
            for e in range(num_envs):
                rows[e].append((obs[e], rewards[e], terminations[e], truncations[e]))
    return rows


def assert_same_rows(got: tuple, expected: tuple, where: str) -> None:
    np.testing.assert_array_equal(got[0], expected[0], err_msg=f"obs differ: {where}")
    assert tuple(map(float, got[1:])) == tuple(map(float, expected[1:])), where


# --------------------------------------------------------------------------- worker_spin_us
@pytest.mark.parametrize("bad", [-1, -0.5, "500", [500], float("-inf"), float("inf"),
                                 float("nan"), True])
def test_worker_spin_us_rejects_bad_values_naming_the_option(bad):
    with pytest.raises(ValueError, match="worker_spin_us must be a finite number >= 0"):
        shmenv.make("Breakout", 2, num_workers=1, worker_spin_us=bad)


def test_spinning_on_and_off_give_the_same_trajectories():
    """Spinning only changes how a worker waits for its next command (and a relaying
    worker for its children's replies), never what it computes."""
    actions = action_stream(5, 100, 4, 4)
    spinning = sync_trajectory(3, actions, worker_spin_us=500)
    sleeping = sync_trajectory(3, actions, worker_spin_us=0)
    for e in range(4):
        for t, (got, expected) in enumerate(zip(spinning[e], sleeping[e])):
            assert_same_rows(got, expected, f"env {e} step {t}")


# --------------------------------------------------------------------------- async reseed
RESEED_STEPS = 60


@pytest.fixture(scope="module")
def reseed_reference():
    """Actions, and the synchronous trajectories of seed 21 (the reference) and seed 99."""
    actions = action_stream(8, RESEED_STEPS, 4, 4)
    reference = sync_trajectory(21, actions)
    other = sync_trajectory(99, actions)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(reference[0], other[0])), \
        "seeds 21 and 99 play alike: the test could not see a seeding bug"
    return actions, reference


@pytest.mark.parametrize("call", ["reset", "async_reset"])
def test_async_reseed_matches_a_sync_env_made_with_that_seed(call, reseed_reference):
    """After ``reset(seed=s)`` (or ``async_reset``) an async env made with another seed
    plays every env exactly as a synchronous env made with ``seed=s``."""
    actions, reference = reseed_reference
    with shmenv.make("Breakout", 4, seed=99, batch_size=2, **STICKY) as env:
        env.reset()  # the envs run with seed 99 + i first
        for _ in range(10):
            _, _, _, _, infos = env.recv()
            env.send(np.ones(2, dtype=np.int64), infos["env_id"])
        if call == "reset":
            obs, infos = env.reset(seed=21)
            batch = (obs, np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), infos)
        else:
            env.async_reset(seed=21)
            batch = env.recv()
        served = np.zeros(4, dtype=int)  # results compared so far, per env
        while True:
            obs, rewards, terminations, truncations, infos = batch
            ids = infos["env_id"]
            for row, e in enumerate(ids):
                got = (obs[row], rewards[row], terminations[row], truncations[row])
                assert_same_rows(got, reference[e][served[e]], f"env {e} step {served[e]}")
            served[ids] += 1
            if served[ids].max() <= RESEED_STEPS:
                env.send(actions[served[ids] - 1, ids], ids)
            elif served.min() > RESEED_STEPS:
                break
            batch = env.recv()


# --------------------------------------------------------------------------- async copy
def async_rounds(env, recvs_per_env: int):
    """Yield each ``recv()``'s (obs, env ids) from ``async_reset`` on; every env is sent
    FIRE after each of its recvs but the last, so nothing is in flight at the end."""
    served = np.zeros(env.num_envs, dtype=int)
    in_flight = env.num_envs
    env.async_reset()
    while in_flight:
        obs, _, _, _, infos = env.recv()
        ids = infos["env_id"]
        in_flight -= len(ids)
        yield obs, ids.copy()
        served[ids] += 1
        if served[ids].max() < recvs_per_env:
            env.send(np.ones(len(ids), dtype=np.int64), ids)
            in_flight += len(ids)


def per_env(env, rounds: int, scribble: bool) -> dict[int, list[np.ndarray]]:
    """Each env's observations in the order recv() returned them."""
    seen: dict[int, list[np.ndarray]] = {e: [] for e in range(env.num_envs)}
    for obs, ids in async_rounds(env, rounds):
        for row, e in enumerate(ids):
            seen[e].append(obs[row].copy())
        if scribble:
            obs[:] = 0
    return seen


def test_async_copy_true_obs_are_arrays_of_your_own():
    """Writing into a returned obs changes nothing the env returns afterwards (it plays
    exactly like an untouched twin), and later recv() calls leave earlier obs alone."""
    with shmenv.make("Breakout", 4, seed=1, batch_size=2, copy=True) as scribbled, \
            shmenv.make("Breakout", 4, seed=1, batch_size=2, copy=True) as twin:
        got, expected = per_env(scribbled, 20, scribble=True), per_env(twin, 20, False)
        kept = [(obs, obs.copy()) for obs, _ in async_rounds(twin, 20)]
    for e in range(4):
        assert len(got[e]) == len(expected[e]) == 20
        for t, (a, b) in enumerate(zip(got[e], expected[e])):
            np.testing.assert_array_equal(a, b, err_msg=f"env {e}, its recv {t}")
    assert any(not np.array_equal(kept[0][1], s) for _, s in kept), "frames never changed"
    for t, (obs, snapshot) in enumerate(kept):
        np.testing.assert_array_equal(obs, snapshot, err_msg=f"recv {t}'s obs changed later")


def test_async_copy_false_obs_are_views_a_later_step_overwrites():
    """With copy=False (the default) a returned obs shows its envs' newest frames once
    they were stepped again: keep a copy if you need the old ones."""
    with shmenv.make("Breakout", 4, seed=1, batch_size=2) as env:
        rounds = async_rounds(env, 20)
        first, first_ids = next(rounds)
        snapshot = first.copy()
        latest = {}
        for obs, ids in rounds:
            latest[tuple(ids)] = obs.copy()
        newest = latest[tuple(first_ids)]
        assert not np.array_equal(newest, snapshot), "frames never changed"
        np.testing.assert_array_equal(first, newest)


# --------------------------------------------------------------------------- frame_skip=1
def ale_trajectory(seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breakout with one emulator frame per step, computed with ale_py directly: gray,
    INTER_AREA to 84x84, a stack of 4, one life per episode, sticky actions as STICKY.
    Returns each step's stack (T+1, 4, 84, 84) and reward (T,)."""
    ale = ALEInterface()
    ale.setFloat("repeat_action_probability", STICKY["repeat_action_probability"])
    ale.setInt("random_seed", ale_seed_for(seed))
    ale.loadROM(roms.get_rom_path("breakout"))
    action_set = ale.getMinimalActionSet()

    def frame() -> np.ndarray:
        return cv2.resize(ale.getScreenGrayscale(), (84, 84), interpolation=cv2.INTER_AREA)

    def new_episode() -> tuple[np.ndarray, int]:
        ale.reset_game()
        return np.stack([frame()] * 4), ale.lives()

    stack, lives = new_episode()
    stacks, rewards = [stack], []
    for action in actions:
        rewards.append(ale.act(action_set[action]))
        if ale.game_over() or ale.lives() < lives:
            stack, lives = new_episode()
        else:
            stack = np.concatenate([stack[1:], frame()[None]])
        stacks.append(stack)
    return np.array(stacks), np.array(rewards)


def test_frame_skip_1_emulates_one_frame_per_step():
    steps = 400
    actions = action_stream(4, steps, 2, 4)
    with shmenv.make("Breakout", 2, seed=30, num_workers=1, frame_skip=1, **STICKY) as env:
        obs, _ = env.reset()
        got_obs, got_rewards, dones = [obs.copy()], [], 0
        for step_actions in actions:
            obs, rewards, terminations, truncations, _ = env.step(step_actions)
            got_obs.append(obs.copy())
            got_rewards.append(rewards.copy())
            dones += int((terminations | truncations).sum())
    got_obs, got_rewards = np.array(got_obs), np.array(got_rewards)
    assert dones >= 1, "no episode ended: the reset path went untested"
    for e in range(2):
        stacks, rewards = ale_trajectory(30 + e, actions[:, e])
        for t in range(steps + 1):
            np.testing.assert_array_equal(got_obs[t, e], stacks[t], err_msg=f"env {e} step {t}")
        np.testing.assert_array_equal(got_rewards[:, e], rewards, err_msg=f"env {e}")
    assert got_rewards.sum() > 0, "no reward in the run: rewards went untested"
