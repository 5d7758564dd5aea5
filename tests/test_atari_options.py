"""The Atari options users expect (no-ops, fire reset, reward clipping, what a lost life does,
RGB and non-square frames, a step cap), the infos they read, read-only observations and
``shmenv.envpool``'s argument handling. Parity with envpool itself: test_envpool_parity.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import shmenv
from shmenv import envpool as shm_envpool
from shmenv.envpool_game import EnvpoolAtariGame
from shmenv.games import GameOptions
from shmenv.noops import NoopDraws

pytestmark = pytest.mark.usefixtures("no_leaked_segments")


# ----------------------------------------------------------------- options
@pytest.mark.parametrize("seed,expected", [(0, [16, 17, 21, 25, 18, 25]),
                                           (42, [11, 23, 28, 5, 21, 23]),
                                           (-5, [12, 17, 29, 0, 18, 18])])
def test_noop_counts_are_envpools_mt19937_draws(seed, expected):
    # envpool 1.2.5's reset RAM confirmed the first draw of seeds 0 and 42.
    draws = NoopDraws(seed, 30)
    assert [draws.draw() for _ in range(6)] == expected


def test_episodic_life_is_a_deprecated_alias_of_on_life_loss():
    with pytest.warns(DeprecationWarning, match="on_life_loss"):
        assert GameOptions(episodic_life=True).on_life_loss == "reset_game"
    with pytest.warns(DeprecationWarning, match="on_life_loss"):
        assert GameOptions.from_kwargs({"episodic_life": False}).on_life_loss == "continue"
    with pytest.raises(TypeError, match="not both"):
        GameOptions(episodic_life=True, on_life_loss="end_episode")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GameOptions().on_life_loss == "reset_game"  # the default warns nothing


@pytest.mark.parametrize("name,value,allowed", [
    ("on_life_loss", "end_game", "'reset_game', 'end_episode', 'continue'"),
    ("seeding", "numpy", "'gymnasium', 'envpool'"),
    ("maxpool", "min", "'labml', 'standard'"),
    ("noop_max", -1, "int >= 0"),
    ("noop_max", 2.5, "int >= 0"),
    ("size", (84, 84, 3), "(height, width)"),
    ("size", 0, "positive int"),
    ("max_episode_steps", 0, "positive int"),
    ("reward_clip", "yes", "True or False"),
    ("gray_scale", 0, "True or False"),
    ("fire_reset", None, "True or False"),
])
def test_bad_values_name_the_option_and_what_is_allowed(name, value, allowed):
    with pytest.raises(ValueError, match=name) as info:
        GameOptions(**{name: value})
    assert allowed in str(info.value)


def test_rgb_and_non_square_frames_set_the_observation_shape():
    assert GameOptions(size=(100, 72)).obs_shape == (4, 100, 72)
    assert GameOptions(gray_scale=False, stack=2).obs_shape == (6, 84, 84)
    with shmenv.make("Breakout", 2, seed=0, gray_scale=False, size=(100, 72), stack=2) as env:
        obs, _ = env.reset()
        assert obs.shape == (2, 6, 100, 72) and env.single_observation_space.shape == (6, 100, 72)
        for _ in range(5):
            obs, *_ = env.step([1, 1])
        # Frames are R, G, B: Breakout's coloured bricks differ between channels.
        assert not np.array_equal(obs[0, 3], obs[0, 4])


# ----------------------------------------------------------------- rules
def test_end_episode_ends_the_episode_and_the_game_goes_on():
    game = EnvpoolAtariGame("Breakout", 3, GameOptions(on_life_loss="end_episode",
                                                       fire_reset=True, noop_max=1))
    game.reset()
    rng = np.random.default_rng(0)
    for _ in range(2000):
        _, terminated, truncated = game.step(int(rng.integers(0, 4)))
        if terminated:
            break
    assert terminated and not truncated and not game.game_over
    lives, elapsed, before = game.lives, game.elapsed_step, game.stack.copy()
    assert 0 < lives < 5
    game.next_episode()
    assert game.lives == lives  # the game went on: no new game, no refilled lives
    assert game.elapsed_step == elapsed  # envpool counts steps per game
    # The stack was pushed one frame, not refilled: its older frames are the old ones.
    np.testing.assert_array_equal(game.stack[:-1], before[1:])
    game.reset()  # an explicit reset is a new game
    assert game.lives == 5 and game.elapsed_step == 0


def test_labml_noops_make_seeds_differ_and_agent_step_cap_truncates():
    options = dict(noop_max=30, fire_reset=True, max_episode_steps=7)
    with shmenv.make("Breakout", 4, seed=0, **options) as env:
        obs, _ = env.reset()
        firsts = [obs[i].tobytes() for i in range(4)]
        for _ in range(6):
            _, _, terminations, truncations, _ = env.step([0, 0, 0, 0])
            assert not (terminations | truncations).any()
        _, _, terminations, truncations, infos = env.step([0, 0, 0, 0])
        assert truncations.all() and not terminations.any()
        np.testing.assert_array_equal(infos["elapsed_step"], 7)
        np.testing.assert_array_equal(infos["episode"]["l"], 7)
    # Different no-op counts start the four envs on different frames.
    assert len(set(firsts)) > 1


# ----------------------------------------------------------------- infos
def test_reward_clip_returns_signs_and_infos_keep_the_raw_reward():
    with shmenv.make("SpaceInvaders", 2, seed=1, reward_clip=True) as env:
        env.reset()
        raw_seen = []
        for actions in np.random.default_rng(2).integers(0, 6, (300, 2)):
            _, rewards, _, _, infos = env.step(actions)
            np.testing.assert_array_equal(rewards, np.sign(infos["reward"]))
            raw_seen.extend(infos["reward"][infos["reward"] != 0].tolist())
    assert raw_seen and max(raw_seen) > 1  # aliens are worth 5 to 30 points


@pytest.mark.parametrize("autoreset_mode", ["SameStep", "NextStep"])
def test_end_episode_reports_whole_games_in_episode_stats(autoreset_mode):
    with shmenv.make("Breakout", 2, seed=4, on_life_loss="end_episode",
                     autoreset_mode=autoreset_mode) as env:
        env.reset()
        game_return = np.zeros(2)
        life_losses = games = 0
        for actions in np.random.default_rng(3).integers(0, 4, (1500, 2)):
            _, _, terminations, truncations, infos = env.step(actions)
            game_return += infos["reward"]
            dones = terminations | truncations
            over = infos["terminated"] | truncations
            life_losses += int((dones & ~over).sum())
            if "episode" in infos:
                ended = infos["_episode"]
                np.testing.assert_array_equal(ended, dones & over)
                np.testing.assert_array_equal(infos["episode"]["r"][ended], game_return[ended])
                np.testing.assert_array_equal(infos["episode"]["l"][ended],
                                              infos["elapsed_step"][ended])
                np.testing.assert_array_equal(infos["lives"][ended], 0)
                assert (infos["episode"]["t"][ended] > 0).all()
                games += int(ended.sum())
                game_return[ended] = 0
            else:
                assert not (dones & over).any()
    assert life_losses >= 4 and games >= 1


def test_observation_views_refuse_writes_and_copies_do_not():
    with shmenv.make("Breakout", 2, seed=0) as env:
        obs, _ = env.reset()
        with pytest.raises(ValueError, match="read-only"):
            obs[0, 3] = 255
        obs, *_ = env.step([0, 0])
        with pytest.raises(ValueError, match="read-only"):
            obs /= 2
    with shmenv.make("Breakout", 2, seed=0, copy=True) as env:
        obs, _ = env.reset()
        obs[0, 3] = 255  # a copy of the caller's own


# ----------------------------------------------------------------- shmenv.envpool
def test_envpool_facade_refuses_what_it_cannot_honour():
    with pytest.raises(TypeError, match="unknown envpool option.*'frameskip'"):
        shm_envpool.make_gymnasium("Breakout-v5", frameskip=4)
    with pytest.raises(ValueError, match="use_inter_area_resize=False"):
        shm_envpool.make_gymnasium("Breakout-v5", use_inter_area_resize=False)
    with pytest.raises(ValueError, match="max_num_players=2"):
        shm_envpool.make_gymnasium("Breakout-v5", max_num_players=2)
    with pytest.raises(ValueError, match="noop_max"):
        shm_envpool.make_gymnasium("Breakout-v5", noop_max=0)
    with pytest.raises(ValueError, match="'Breakout-v5'"):
        shm_envpool.make_gymnasium("ALE/Breakout-v5")
    with pytest.raises(ValueError, match="env_type"):
        shm_envpool.make("Breakout-v5", env_type="dm")


def test_envpool_gym_api_is_envpool_08s(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gym", None)  # no gym installed
    env = shm_envpool.make("Pong-v5", env_type="gym", num_envs=2, episodic_life=True,
                           reward_clip=True, seed=1)
    try:
        # CleanRL sets these on the env.
        env.num_envs = 2
        env.single_action_space = env.action_space
        env.single_observation_space = env.observation_space
        assert env.action_space.n == 6 and env.observation_space.shape == (4, 84, 84)
        obs = env.reset()
        assert obs.shape == (2, 4, 84, 84)
        obs[0, 0] = 0  # fresh arrays, as envpool's
        obs, rewards, dones, info = env.step(np.zeros(2, dtype=np.int64))
        assert rewards.dtype == np.float32 and dones.dtype == np.bool_
        assert set(info) >= {"env_id", "players", "lives", "reward", "terminated",
                             "elapsed_step", "TimeLimit.truncated"}
        assert info["terminated"].dtype == np.int32
        assert env.config["noop_max"] == 30 and env.spec.config.episodic_life
    finally:
        env.close()
    with shm_envpool.make_gymnasium("Pong-v5", num_envs=2, copy=False) as env:
        obs, _ = env.reset()
        with pytest.raises(ValueError, match="read-only"):
            obs[0, 0] = 0


def test_sb3_adapter_reports_whole_games_under_end_episode():
    pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    from shmenv.sb3 import make_vec_env

    env = make_vec_env("Breakout", 2, seed=4, on_life_loss="end_episode")
    try:
        env.reset()
        life_losses = games = 0
        for actions in np.random.default_rng(3).integers(0, 4, (1500, 2)):
            env.step_async(actions)
            _, _, dones, infos = env.step_wait()
            for i in np.flatnonzero(dones):
                if "episode" in infos[i]:
                    games += 1
                    assert infos[i]["lives"] == 0  # the game ended: every life lost
                else:
                    life_losses += 1
                    assert infos[i]["lives"] > 0 and "terminal_observation" in infos[i]
    finally:
        env.close()
    assert games >= 1 and life_losses >= 4
