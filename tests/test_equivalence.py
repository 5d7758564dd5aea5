"""Pixel-for-pixel equivalence with the labml design's Pipe workers (shmenv.baseline).

For seeds 47-50 and a fixed random action stream, the drop-in Worker and ShmVectorEnv (two
envs per worker) must reproduce the reference's stacks (uint8 vs float64 values), rewards,
dones and episode infos on Breakout, Pong and Space Invaders, through several episode ends
(every other game: tests/test_exactness.py and bench/exact_sweep.py).

The reference runs in-process (``shmenv.baseline.Game``), in a process pool to use both cores, and
records a digest of every stack; the uint8 bytes of two stacks are equal exactly when their
digests are (BLAKE2b-128), so comparing digests is comparing every pixel. On a mismatch the
test reports the first differing step.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import shmenv
from shmenv.baseline import baseline_rollout
from tests.conftest import action_stream

SEEDS = (47, 48, 49, 50)
# Pong has no lives: an episode is a whole game (~800+ random steps), so it gets more steps.
STEPS = {"Breakout": 2000, "Pong": 3000, "SpaceInvaders": 2000}
NUM_ACTIONS = {"Breakout": 4, "Pong": 6, "SpaceInvaders": 6}
MIN_EPISODE_ENDS_PER_SEED = {"Breakout": 20, "Pong": 2, "SpaceInvaders": 3}


def _digest(stack: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(stack).tobytes(), digest_size=16).digest()


def _actions(game: str) -> np.ndarray:
    return action_stream(1234, STEPS[game], len(SEEDS), NUM_ACTIONS[game])


def _reference(game: str, env_index: int) -> list:
    """[(digest, reward, done, info)] per step, step 0 being the reset (reward None)."""
    seed = SEEDS[env_index]
    out = []
    rollout = baseline_rollout(seed, _actions(game)[:, env_index], game)
    for item in rollout:
        stack, reward, done, info = item if isinstance(item, tuple) else (item, None, None,
                                                                            None)
        assert stack.dtype == np.float64 and stack.shape == (4, 84, 84)
        as_uint8 = stack.astype(np.uint8)
        assert np.array_equal(as_uint8, stack), "reference stack holds non-integral values"
        out.append((_digest(as_uint8), reward, done, info))
    return out


@pytest.fixture(scope="module")
def references() -> dict[str, list[list]]:
    jobs = [(game, i) for game in STEPS for i in range(len(SEEDS))]
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_reference, *zip(*jobs)))
    refs: dict[str, list[list]] = {game: [] for game in STEPS}
    for (game, _), result in zip(jobs, results):
        refs[game].append(result)
    return refs


def _assert_step_equal(game, env_index, step, ref, digest, reward, done, info):
    where = f"{game} seed {SEEDS[env_index]} step {step}"
    ref_digest, ref_reward, ref_done, ref_info = ref
    assert digest == ref_digest, f"{where}: stack differs from the reference's"
    if step == 0:
        return
    assert reward == ref_reward, f"{where}: reward {reward} != reference {ref_reward}"
    assert done == ref_done, f"{where}: done {done} != reference {ref_done}"
    assert info == ref_info, f"{where}: info {info} != reference {ref_info}"


@pytest.mark.parametrize("game", list(STEPS))
def test_reference_has_several_episode_ends(references, game):
    for env_index, ref in enumerate(references[game]):
        ends = sum(bool(done) for _, _, done, _ in ref[1:])
        assert ends >= MIN_EPISODE_ENDS_PER_SEED[game], (
            f"{game} seed {SEEDS[env_index]}: only {ends} episode ends; the test would not "
            "exercise resets"
        )


@pytest.mark.parametrize("game", list(STEPS))
def test_vector_env_matches_reference(references, game, no_leaked_segments):
    actions = _actions(game)
    with shmenv.make(game, num_envs=len(SEEDS), seed=SEEDS[0], num_workers=2) as env:
        assert env.single_action_space.n == NUM_ACTIONS[game]
        obs, _ = env.reset()
        for i in range(len(SEEDS)):
            _assert_step_equal(game, i, 0, references[game][i][0], _digest(obs[i]),
                               None, None, None)
        for step, step_actions in enumerate(actions, start=1):
            obs, rewards, terminations, truncations, infos = env.step(step_actions)
            dones = terminations | truncations
            for i in range(len(SEEDS)):
                info = None
                if dones[i]:
                    assert infos["_episode"][i]
                    info = {"reward": float(infos["episode"]["r"][i]),
                            "length": int(infos["episode"]["l"][i])}
                _assert_step_equal(game, i, step, references[game][i][step],
                                   _digest(obs[i]), float(rewards[i]), bool(dones[i]), info)


@pytest.mark.parametrize("game", list(STEPS))
def test_dropin_worker_matches_reference(references, game, no_leaked_segments):
    actions = _actions(game)
    workers = [shmenv.Worker(seed, game=game) for seed in SEEDS]
    try:
        for w in workers:
            w.child.send(("reset", None))
        for i, w in enumerate(workers):
            stack = w.child.recv()
            assert stack.dtype == np.uint8 and stack.shape == (4, 84, 84)
            _assert_step_equal(game, i, 0, references[game][i][0], _digest(stack),
                               None, None, None)
        for step, step_actions in enumerate(actions, start=1):
            for w, action in zip(workers, step_actions):
                w.child.send(("step", int(action)))
            for i, w in enumerate(workers):
                stack, reward, done, info = w.child.recv()
                assert isinstance(reward, float) and isinstance(done, bool)
                _assert_step_equal(game, i, step, references[game][i][step],
                                   _digest(stack), reward, done, info)
    finally:
        for w in workers:
            w.child.send(("close", None))
    for w in workers:
        w.process.join(timeout=5)
        assert w.process.exitcode == 0
