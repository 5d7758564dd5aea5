"""The worker pool's two I/O paths give the same results."""

from __future__ import annotations

import functools

import numpy as np

import shmenv
from shmenv.fakegames import NullGame
from tests.conftest import action_stream


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
