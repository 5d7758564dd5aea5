"""The drop-in Worker with the Atari options: the reference's protocol, the option's effect.

A Worker takes every :class:`shmenv.GameOptions` field as a keyword. For the options a
Pipe-based trainer can use (no-op starts, fire reset, reward clipping, what a lost life
does, a step cap, frame size and colour), Workers with seeds 47.. must hand back exactly
what ``shmenv.make(seed=47, **options)`` returns for its envs 0..: the same stacks, rewards
and dones, and an info dict exactly when ``infos["episode"]`` reports an episode, holding
its ``r`` and ``l``.
"""

from __future__ import annotations

import numpy as np
import pytest

import shmenv

pytestmark = pytest.mark.usefixtures("no_leaked_segments")

SEEDS = (47, 48, 49, 50)


def run_workers(game: str, actions: np.ndarray, **options) -> list[list[tuple]]:
    """[(stack, reward, done, info)] per step per Worker, the reset first (reward None)."""
    workers = [shmenv.Worker(seed, game=game, **options) for seed in SEEDS]
    steps: list[list[tuple]] = []
    try:
        for w in workers:
            w.child.send(("reset", None))
        steps.append([(w.child.recv(), None, None, None) for w in workers])
        for row in actions:
            for w, action in zip(workers, row):
                w.child.send(("step", int(action)))
            steps.append([w.child.recv() for w in workers])
    finally:
        for w in workers:
            w.child.send(("close", None))
    return steps


def run_vector_env(game: str, actions: np.ndarray, **options) -> list[list[tuple]]:
    """The same from ``shmenv.make``, with the drop-in's info: {"reward", "length"} from
    ``infos["episode"]`` for the envs it marks, else None."""
    steps: list[list[tuple]] = []
    with shmenv.make(game, len(SEEDS), seed=SEEDS[0], copy=True, **options) as env:
        obs, _ = env.reset()
        steps.append([(obs[i], None, None, None) for i in range(len(SEEDS))])
        for row in actions:
            obs, rewards, terminations, truncations, infos = env.step(row)
            dones = terminations | truncations
            ended = infos.get("_episode", np.zeros(len(SEEDS), dtype=bool))
            steps.append([
                (obs[i], float(rewards[i]), bool(dones[i]),
                 {"reward": float(infos["episode"]["r"][i]),
                  "length": int(infos["episode"]["l"][i])} if ended[i] else None)
                for i in range(len(SEEDS))])
    return steps


def assert_same_outputs(game: str, worker_steps: list, env_steps: list) -> None:
    for t, (by_worker, by_env) in enumerate(zip(worker_steps, env_steps)):
        for i, (got, want) in enumerate(zip(by_worker, by_env)):
            where = f"{game} seed {SEEDS[i]} step {t}"
            np.testing.assert_array_equal(got[0], want[0], err_msg=f"{where}: stack")
            assert got[1:] == want[1:], f"{where}: (reward, done, info) {got[1:]} != {want[1:]}"


def outputs(game: str, steps: int, **options) -> tuple[list, list]:
    actions = np.random.default_rng(9).integers(
        0, {"Breakout": 4, "SpaceInvaders": 6}[game], size=(steps, len(SEEDS)))
    worker_steps = run_workers(game, actions, **options)
    assert_same_outputs(game, worker_steps, run_vector_env(game, actions, **options))
    return worker_steps, actions


def infos_of(steps: list, i: int) -> list[dict]:
    return [step[i][3] for step in steps[1:] if step[i][3] is not None]


def test_noop_starts_give_each_seed_its_own_start():
    """With the reference's defaults the four seeds start on the same frame; with no-op
    starts each Worker plays its own number of NOOP frames, drawn from its seed."""
    plain = run_workers("Breakout", np.zeros((0, 4), dtype=int))
    assert len({stack.tobytes() for stack, *_ in plain[0]}) == 1
    steps, _ = outputs("Breakout", 300, noop_max=30, fire_reset=True)
    assert len({stack.tobytes() for stack, *_ in steps[0]}) > 1


def test_reward_clip_returns_signs_and_the_episode_info_keeps_the_raw_score():
    steps, _ = outputs("SpaceInvaders", 600, reward_clip=True)
    rewards = np.array([[r for _, r, _, _ in step] for step in steps[1:]])
    assert set(np.unique(rewards)) <= {0.0, 1.0} and rewards.sum() > 0
    # An episode's info is its raw score (aliens are worth 5 to 30 points), as Monitor's.
    scores = [info["reward"] for i in range(4) for info in infos_of(steps, i)]
    assert scores and max(scores) > 1 and all(s == int(s) for s in scores)


def test_end_episode_ends_on_a_lost_life_and_reports_the_whole_game():
    steps, _ = outputs("Breakout", 1200, on_life_loss="end_episode")
    for i in range(4):
        dones = [step[i][2] for step in steps[1:]]
        games = infos_of(steps, i)
        assert sum(dones) > len(games) >= 1  # lost lives ended episodes, not games
        # A game's length counts every agent step since the last game ended.
        ends = [t for t, step in enumerate(steps[1:]) if step[i][3] is not None]
        assert games[0]["length"] == ends[0] + 1


def test_step_cap_and_frame_options():
    steps, _ = outputs("Breakout", 120, max_episode_steps=50, size=(100, 72),
                       gray_scale=False, stack=2)
    assert steps[0][0][0].shape == (6, 100, 72)
    lengths = [info["length"] for i in range(4) for info in infos_of(steps, i)]
    assert max(lengths) == 50  # the cap truncated episodes that no lost life ended sooner
