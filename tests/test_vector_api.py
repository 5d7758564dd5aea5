"""ShmVectorEnv as a gymnasium VectorEnv: spaces, returns, autoreset modes, copies, lifetime."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, VectorEnv

import shmenv
from shmenv.block import NAME_PREFIX
from tests.conftest import action_stream, shmenv_segments
from tests.procs import all_gone


@pytest.fixture(scope="module")
def env():
    with shmenv.make("Breakout", num_envs=3, seed=7, num_workers=2) as env:
        yield env


def test_spaces_and_metadata(env):
    assert isinstance(env, VectorEnv)
    assert env.num_envs == 3
    assert env.single_observation_space.shape == (4, 84, 84)
    assert env.single_observation_space.dtype == np.uint8
    assert (env.single_observation_space.low == 0).all()
    assert (env.single_observation_space.high == 255).all()
    assert env.single_action_space.n == 4
    assert env.observation_space.shape == (3, 4, 84, 84)
    assert env.action_space.shape == (3,)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP


def test_reset_and_step_return_types(env):
    obs, infos = env.reset()
    assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8
    assert obs in env.observation_space
    # A fresh episode shows its first frame in all four slots.
    assert all((obs[i] == obs[i][0]).all() for i in range(3))
    assert infos["lives"].tolist() == [5, 5, 5] and infos["_lives"].all()
    for actions in action_stream(0, 50, 3, 4):
        obs, rewards, terminations, truncations, infos = env.step(actions)
        assert obs in env.observation_space
        assert rewards.dtype == np.float64 and rewards.shape == (3,)
        assert terminations.dtype == np.bool_ and terminations.shape == (3,)
        assert truncations.dtype == np.bool_ and truncations.shape == (3,)
        assert infos["lives"].shape == (3,)
    # After 50 steps of play the stack holds distinct frames (the ball and paddle moved).
    assert any(not (obs[i] == obs[i][0]).all() for i in range(3))


def test_episode_statistics_follow_record_episode_statistics(env):
    env.reset()
    returns = np.zeros(3)
    lengths = np.zeros(3, dtype=int)
    seen = 0
    for actions in action_stream(1, 300, 3, 4):
        obs, rewards, terminations, truncations, infos = env.step(actions)
        returns += rewards
        lengths += 1
        dones = terminations | truncations
        if dones.any():
            assert infos["_episode"].tolist() == dones.tolist()
            episode = infos["episode"]
            np.testing.assert_array_equal(episode["r"], np.where(dones, returns, 0.0))
            np.testing.assert_array_equal(episode["l"], np.where(dones, lengths, 0))
            assert (episode["t"][dones] > 0).all() and (episode["t"][~dones] == 0).all()
            # One life is one episode (the seed's rule): a done loses a life, then resets.
            assert (infos["lives"][dones] == 5).all()
            # SAME_STEP: the obs is the new episode's first stack...
            for i in np.flatnonzero(dones):
                assert (obs[i] == obs[i][0]).all()
                final = infos["final_obs"][i]
                assert final.shape == (4, 84, 84) and final.dtype == np.uint8
            assert infos["_final_obs"].tolist() == dones.tolist()
            assert all(infos["final_obs"][i] is None for i in np.flatnonzero(~dones))
            returns[dones] = 0
            lengths[dones] = 0
            seen += int(dones.sum())
        else:
            assert "episode" not in infos and "final_obs" not in infos
    assert seen >= 5


def test_final_obs_is_previous_stack_shifted(env):
    """final_obs[:3] are the newest three frames of the stack shown just before the end."""
    env.reset()
    previous = None
    for actions in action_stream(2, 300, 3, 4):
        obs, _, terminations, truncations, infos = env.step(actions)
        dones = terminations | truncations
        for i in np.flatnonzero(dones):
            np.testing.assert_array_equal(infos["final_obs"][i][:3], previous[i][1:])
        previous = obs.copy()


def test_next_step_autoreset():
    with shmenv.make("Breakout", num_envs=2, seed=3, num_workers=1,
                     autoreset_mode="NextStep") as env, \
            shmenv.make("Breakout", num_envs=2, seed=3, num_workers=1) as same_step:
        assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        obs, _ = env.reset()
        same_step.reset()
        pending_reset = np.zeros(2, dtype=bool)
        checked = 0
        for actions in action_stream(4, 400, 2, 4):
            previous = obs.copy()
            obs, rewards, terminations, truncations, infos = env.step(actions)
            if pending_reset.any():
                # The step after a done only resets: reward 0, not done, a fresh stack.
                for i in np.flatnonzero(pending_reset):
                    assert rewards[i] == 0 and not terminations[i] and not truncations[i]
                    assert (obs[i] == obs[i][0]).all()
                    checked += 1
            dones = terminations | truncations
            if dones.any():
                assert "final_obs" not in infos
                for i in np.flatnonzero(dones):  # NEXT_STEP shows the final stack
                    np.testing.assert_array_equal(obs[i][:3], previous[i][1:])
            pending_reset = dones
        assert checked >= 2


def test_next_step_envs_follow_same_trajectory_as_same_step():
    """Apart from the extra reset step, NEXT_STEP plays the same game as SAME_STEP."""
    with shmenv.make("Breakout", num_envs=1, seed=5, num_workers=1,
                     autoreset_mode=AutoresetMode.NEXT_STEP, copy=True) as next_step, \
            shmenv.make("Breakout", num_envs=1, seed=5, num_workers=1, copy=True) as same:
        next_step.reset()
        same.reset()
        stream = iter(action_stream(5, 600, 1, 4))
        episodes = 0
        for actions in stream:
            obs_a, r_a, te_a, tr_a, info_a = same.step(actions)
            obs_b, r_b, te_b, tr_b, info_b = next_step.step(actions)
            assert r_a[0] == r_b[0] and te_a[0] == te_b[0]
            if te_a[0] or tr_a[0]:
                assert info_a["episode"]["r"][0] == info_b["episode"]["r"][0]
                assert info_a["episode"]["l"][0] == info_b["episode"]["l"][0]
                np.testing.assert_array_equal(info_a["final_obs"][0], obs_b[0])
                reset_obs, *_ = next_step.step(actions)  # the reset step
                np.testing.assert_array_equal(reset_obs, obs_a)
                episodes += 1
            else:
                np.testing.assert_array_equal(obs_a, obs_b)
        assert episodes >= 3


def test_same_seed_same_trajectory_and_seeding_per_env():
    def play(seed):
        with shmenv.make("SpaceInvaders", num_envs=2, seed=seed, num_workers=2,
                         repeat_action_probability=0.25, copy=True) as env:
            trajectory = [env.reset()[0]]
            for actions in action_stream(6, 150, 2, 6):
                obs, rewards, *_ = env.step(actions)
                trajectory.append((obs, rewards))
            return trajectory

    first, second, other = play(11), play(11), play(12)
    for a, b in zip(first[1:], second[1:]):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # Sticky actions draw from ALE's seeded RNG, so another seed plays differently.
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first[1:], other[1:]))


def test_reset_with_seed_reseeds_each_env_with_seed_plus_index():
    with shmenv.make("Breakout", num_envs=2, num_workers=1, copy=True,
                     repeat_action_probability=0.25) as env, \
            shmenv.make("Breakout", num_envs=2, seed=21, num_workers=2, copy=True,
                        repeat_action_probability=0.25) as reference:
        env.reset(seed=21)
        reference.reset()
        for actions in action_stream(7, 120, 2, 4):
            a = env.step(actions)
            b = reference.step(actions)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])


def test_copy_false_returns_views_of_the_block_and_copy_true_fresh_arrays():
    with shmenv.make("Breakout", num_envs=2, num_workers=1) as views, \
            shmenv.make("Breakout", num_envs=2, num_workers=1, copy=True) as copies:
        first, _ = views.reset()
        at_reset = first.copy()
        second, *_ = views.step([1, 1])
        # A view: later steps overwrite what reset() returned, in place.
        assert first is second or np.shares_memory(first, second)
        for _ in range(30):  # FIRE until the screen changes (the ball appears)
            if not np.array_equal(first, at_reset):
                break
            views.step([1, 1])
        assert not np.array_equal(first, at_reset)
        first_copy, _ = copies.reset()
        kept_at_reset = first_copy.copy()
        second_copy, *_ = copies.step([1, 1])
        for _ in range(30):
            copies.step([1, 1])
        np.testing.assert_array_equal(first_copy, kept_at_reset)  # untouched by the steps
        assert not np.shares_memory(first_copy, second_copy)
        kept = second_copy.copy()
        copies.step([2, 3])
        np.testing.assert_array_equal(second_copy, kept)


def test_names_pick_the_rom_only():
    for name in ("breakout", "ALE/Breakout-v5", "BreakoutNoFrameskip-v4"):
        with shmenv.make(name, num_envs=1, seed=1, copy=True) as env:
            obs, _ = env.reset()
            assert env.game == "breakout" and env.single_action_space.n == 4
    with pytest.raises(shmenv.UnknownGameError, match="breakout"):
        shmenv.make("Breakoutt", num_envs=1)


def test_full_action_space_option():
    with shmenv.make("Breakout", num_envs=1, full_action_space=True) as env:
        assert env.single_action_space.n == 18


def test_bad_arguments_are_rejected_before_starting(no_leaked_segments):
    with pytest.raises(ValueError, match="num_envs"):
        shmenv.make("Breakout", num_envs=0)
    with pytest.raises(ValueError, match="num_workers"):
        shmenv.make("Breakout", num_envs=2, num_workers=3)
    with pytest.raises(TypeError, match="frameskip"):
        shmenv.make("Breakout", num_envs=1, frameskip=4)
    with pytest.raises(ValueError, match="maxpool"):
        shmenv.make("Breakout", num_envs=1, maxpool="mean")


def test_close_twice_and_calls_after_close_raise(no_leaked_segments):
    env = shmenv.make("Breakout", num_envs=2, num_workers=2)
    env.reset()
    pids = env.worker_pids
    env.close()
    env.close()
    assert env.closed
    assert all_gone(pids, timeout=0)
    with pytest.raises(shmenv.ClosedError, match="closed"):
        env.step([0, 0])
    with pytest.raises(shmenv.ClosedError):
        env.reset()


def test_no_segment_after_exception_in_with_block(no_leaked_segments):
    with pytest.raises(RuntimeError, match="boom"):
        with shmenv.make("Breakout", num_envs=2) as env:
            env.reset()
            pids = env.worker_pids
            raise RuntimeError("boom")
    assert all_gone(pids, timeout=0)


def test_garbage_collection_stops_workers_and_frees_block(no_leaked_segments):
    env = shmenv.make("Breakout", num_envs=2)
    obs, _ = env.reset()
    pids = env.worker_pids
    del env, obs
    gc.collect()
    assert all_gone(pids, timeout=5)


def test_segment_is_unlinked_while_running():
    """The name is dropped once all workers mapped it: a crash can leave nothing behind."""
    ours = f"{NAME_PREFIX}{os.getpid()}_"  # other programs on the machine may have theirs
    before = shmenv_segments()
    with shmenv.make("Breakout", num_envs=2) as env:
        env.reset()
        assert {s for s in shmenv_segments() - before if s.startswith(ours)} == set()
        env.step([1, 1])


_LIFETIME_SCRIPT = textwrap.dedent("""
    import multiprocessing, sys
    import shmenv

    def main(start_method, ending):
        multiprocessing.set_start_method(start_method)
        env = shmenv.make("Breakout", num_envs=2, num_workers=2)
        env.reset()
        for _ in range(5):
            env.step([1, 2])
        w = shmenv.Worker(47)
        w.child.send(("reset", None))
        w.child.recv()
        if ending == "close":
            env.close()
            w.child.send(("close", None))
        elif ending == "del":
            del env, w
        # "exit": leave both to interpreter exit
        print("done")

    if __name__ == "__main__":
        main(*sys.argv[1:])
""")


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("ending", ["close", "del", "exit"])
def test_no_resource_tracker_warnings(start_method, ending, tmp_path, no_leaked_segments):
    script = tmp_path / "run.py"
    script.write_text(_LIFETIME_SCRIPT)
    result = subprocess.run([sys.executable, str(script), start_method, ending],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("done")
    assert "resource_tracker" not in result.stderr, result.stderr
    assert "leaked" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
