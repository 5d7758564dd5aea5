"""The Stable-Baselines3 adapter: SB3's VecEnv contract over the shared block."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
from ale_py.env import AtariEnv

torch = pytest.importorskip("torch",
                            reason="the SB3 adapter needs torch (pip install torch==2.13.0)")
pytest.importorskip("stable_baselines3",
                    reason="the SB3 adapter needs stable-baselines3 (pip install '.[sb3]')")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.preprocessing import (  # noqa: E402
    is_image_space,
    is_image_space_channels_first,
)
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402
from stable_baselines3.common.vec_env import (  # noqa: E402
    VecEnvWrapper,
    VecFrameStack,
    VecTransposeImage,
    is_vecenv_wrapped,
)

import shmenv  # noqa: E402
from shmenv.sb3 import FrameStackWarning, ShmSB3VecEnv, make_vec_env  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_leaked_segments")


class TinyCNN(BaseFeaturesExtractor):
    """A deliberately cheap image encoder: this test checks the data path, not learning,
    and NatureCNN's CPU time would be most of the test's run time."""

    def __init__(self, observation_space, features_dim: int = 32):
        super().__init__(observation_space, features_dim)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(4, 4, kernel_size=8, stride=8), torch.nn.ReLU(),
            torch.nn.Flatten(), torch.nn.Linear(4 * 10 * 10, features_dim), torch.nn.ReLU())

    def forward(self, observations):
        return self.net(observations)


class Recorder(VecEnvWrapper):
    """Keeps a copy of everything the adapter hands SB3, to compare with SB3's buffers."""

    def __init__(self, venv):
        super().__init__(venv)
        self.obs_before: list[np.ndarray] = []  # the obs SB3 acted on, per step
        self.actions: list[np.ndarray] = []
        self.rewards: list[np.ndarray] = []
        self.dones: list[np.ndarray] = []
        self.infos: list[list[dict]] = []
        self._last = None

    def reset(self):
        self._last = self.venv.reset().copy()
        return self._last

    def step_async(self, actions):
        self.actions.append(np.array(actions).copy())
        self.obs_before.append(self._last)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self._last = obs.copy()
        self.rewards.append(rewards.copy())
        self.dones.append(dones.copy())
        self.infos.append(infos)
        return obs, rewards, dones, infos


def test_sb3_ppo_rollout_buffer_holds_what_the_env_returned():
    torch.set_num_threads(1)  # the env workers need the other core
    n_envs, n_steps = 4, 128
    env = Recorder(make_vec_env("Breakout", n_envs, seed=3, num_workers=2))
    try:
        model = PPO("CnnPolicy", env, n_steps=n_steps, batch_size=256, n_epochs=1, seed=0,
                    device="cpu", policy_kwargs={"features_extractor_class": TinyCNN})
        model.learn(total_timesteps=4 * n_steps * n_envs)  # 2,048 agent steps, 4 rollouts
    finally:
        env.close()

    assert len(env.actions) == 4 * n_steps
    buffer = model.rollout_buffer
    assert buffer.generator_ready  # training flattened it env-major: (n_envs * n_steps, ...)

    def as_buffer(per_step: list[np.ndarray]) -> np.ndarray:
        """The last rollout's (n_steps, n_envs, ...) arrays in the buffer's flat order."""
        stacked = np.stack(per_step[-n_steps:])
        return stacked.swapaxes(0, 1).reshape(n_envs * n_steps, *stacked.shape[2:])

    np.testing.assert_array_equal(buffer.observations, as_buffer(env.obs_before))
    np.testing.assert_array_equal(buffer.actions[:, 0], as_buffer(env.actions))
    # No episode is truncated this early, so SB3 stores the rewards unchanged.
    assert not any(i.get("TimeLimit.truncated") for step in env.infos for i in step)
    # Rewards and episode starts are not flattened: (n_steps, n_envs).
    np.testing.assert_array_equal(buffer.rewards, np.stack(env.rewards[-n_steps:]))
    # episode_starts[t] says "the obs at t starts an episode", i.e. done at t - 1.
    np.testing.assert_array_equal(buffer.episode_starts,
                                  np.stack(env.dones[-n_steps - 1:-1]).astype(np.float32))

    # SB3's episode statistics are the episodes the env played, reward for reward.
    rewards, dones = np.stack(env.rewards), np.stack(env.dones)
    expected = []
    for e in range(n_envs):
        ends = np.flatnonzero(dones[:, e])
        starts = np.concatenate([[0], ends[:-1] + 1])
        expected += [(float(rewards[s:t + 1, e].sum()), int(t + 1 - s))
                     for s, t in zip(starts, ends)]
    assert len(expected) > 20, "random-ish play should lose many lives in 2,048 steps"
    seen = [(i["episode"]["r"], i["episode"]["l"]) for step in env.infos for i in step
            if "episode" in i]
    assert sorted(seen) == sorted(expected)
    assert [(e["r"], e["l"]) for e in model.ep_info_buffer] == seen[-len(model.ep_info_buffer):]


def test_adapter_matches_the_vector_env_and_reports_terminal_observations():
    """Same seed, same actions: the adapter's obs/rewards/dones are the ShmVectorEnv's, and a
    finished env's terminal_observation is its last stack shifted by one frame."""
    n_envs, steps = 3, 150
    actions = np.random.default_rng(5).integers(0, 4, size=(steps, n_envs))
    reference = shmenv.make("Breakout", n_envs, seed=11, num_workers=1, copy=True)
    adapter = make_vec_env("Breakout", n_envs, seed=11, num_workers=1)
    try:
        ref_obs, _ = reference.reset()
        obs = adapter.reset()
        np.testing.assert_array_equal(obs, ref_obs)
        finished = 0
        for t in range(steps):
            previous = obs
            ref_obs, ref_rewards, ref_term, ref_trunc, ref_info = reference.step(actions[t])
            obs, rewards, dones, infos = adapter.step(actions[t])
            np.testing.assert_array_equal(obs, ref_obs)
            np.testing.assert_array_equal(rewards, ref_rewards.astype(np.float32))
            np.testing.assert_array_equal(dones, ref_term | ref_trunc)
            assert obs is not previous and not np.shares_memory(obs, previous)
            for e in np.flatnonzero(dones):
                finished += 1
                terminal = infos[e]["terminal_observation"]
                np.testing.assert_array_equal(terminal, ref_info["final_obs"][e])
                np.testing.assert_array_equal(terminal[:-1], previous[e][1:])
                assert infos[e]["TimeLimit.truncated"] is False
                assert infos[e]["episode"]["r"] == ref_info["episode"]["r"][e]
                assert infos[e]["episode"]["l"] == ref_info["episode"]["l"][e]
                assert (obs[e] == obs[e][0]).all(), "the next episode starts with 4 equal frames"
            for e in np.flatnonzero(~dones):
                assert "terminal_observation" not in infos[e] and "episode" not in infos[e]
            assert [i["lives"] for i in infos] == ref_info["lives"].tolist()
        assert finished > 3
    finally:
        reference.close()
        adapter.close()


def test_adapter_seeding_attributes_and_errors():
    env = make_vec_env("Pong", 2, seed=0, num_workers=1)
    try:
        assert env.env_is_wrapped(Monitor) == [True, True]
        assert env.env_is_wrapped(VecEnvWrapper) == [False, False]
        assert env.get_attr("frame_skip") == [4, 4]
        assert env.get_attr("game", indices=[1]) == ["pong"]
        assert env.render_mode is None
        with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
            env.get_attr("nonexistent")
        with pytest.raises(AttributeError, match="options fixed at creation"):
            env.set_attr("frame_skip", 2)

        env.seed(123)
        first = env.reset()
        for _ in range(30):
            env.step(np.array([2, 3]))
        env.seed(123)
        again = env.reset()
        np.testing.assert_array_equal(again, first)
        assert env.vector_env.seeds == (123, 124)
        with pytest.raises(RuntimeError, match="step_async"):
            env.step_wait()
    finally:
        env.close()
    with pytest.raises(TypeError, match="wraps a shmenv.ShmVectorEnv"):
        ShmSB3VecEnv(object())
    next_step = shmenv.make("Pong", 1, seed=0, autoreset_mode="NextStep")
    try:
        with pytest.raises(ValueError, match="SAME_STEP"):
            ShmSB3VecEnv(next_step)
    finally:
        next_step.close()


# ----------------------------------------------------------------- SB3's own wrappers
def test_vec_frame_stack_over_stacked_frames_warns_once():
    """SB3's VecFrameStack over shmenv's (4, 84, 84) stacks gives 16 channels of 7 frames:
    the adapter says so when the wrapper's reset reaches it, through other wrappers too."""
    env = make_vec_env("Breakout", 2, seed=0, num_workers=1)
    try:
        stacked = VecFrameStack(Recorder(env), 4)
        with pytest.warns(FrameStackWarning, match=r"\(16, 84, 84\).*7 distinct frames"):
            obs = stacked.reset()
        assert obs.shape == (2, 16, 84, 84)  # SB3's own result, as the warning says
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            stacked.reset()  # once per env is enough
            env.reset()  # a direct call has no wrapper to warn about
    finally:
        env.close()


def test_vec_frame_stack_over_single_frames_is_shmenvs_stack():
    """stack=1 + VecFrameStack(env, 4) is the supported way to let SB3 stack: no warning,
    and once SB3's zero-filled start has scrolled out (SB3 starts a stack with zeros,
    shmenv repeats the first frame) its stacks are shmenv's own stack=4 stacks."""
    actions = np.random.default_rng(1).integers(0, 4, size=(40, 2))
    single = VecFrameStack(make_vec_env("Breakout", 2, seed=5, num_workers=1, stack=1), 4)
    own = make_vec_env("Breakout", 2, seed=5, num_workers=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            obs = single.reset()
        own_obs = own.reset()
        assert (obs[:, :3] == 0).all()
        np.testing.assert_array_equal(obs[:, 3], own_obs[:, 3])
        since_done = np.zeros(2, dtype=int)
        for row in actions:
            obs, rewards, dones, _ = single.step(row)
            own_obs, own_rewards, own_dones, _ = own.step(row)
            np.testing.assert_array_equal(rewards, own_rewards)
            np.testing.assert_array_equal(dones, own_dones)
            since_done = np.where(dones, 0, since_done + 1)
            full = since_done >= 3  # SB3's stack holds no zeros any more
            np.testing.assert_array_equal(obs[full], own_obs[full])
        assert full.any()
    finally:
        single.close()
        own.close()
    last_axis = make_vec_env("Breakout", 1, seed=0, num_workers=1, stack=1)
    try:
        with pytest.warns(FrameStackWarning, match="channel-first"):
            VecFrameStack(last_axis, 4, channels_order="last").reset()
    finally:
        last_axis.close()


@pytest.mark.parametrize("options,shape", [({}, (4, 84, 84)),
                                           ({"gray_scale": False}, (12, 84, 84)),
                                           ({"size": (100, 72), "stack": 2}, (2, 100, 72))])
def test_observations_are_channel_first_for_sb3_and_need_no_transpose(options, shape):
    """SB3 reads shmenv's observations as channel-first images: its algorithms add no
    VecTransposeImage, and adding one by hand fails SB3's own channel-last check."""
    env = make_vec_env("Breakout", 1, seed=0, num_workers=1, **options)
    try:
        assert env.observation_space.shape == shape
        assert is_image_space(env.observation_space)
        assert is_image_space_channels_first(env.observation_space)
        with pytest.raises(AssertionError, match="channel last"):
            VecTransposeImage(env)
        passthrough = VecTransposeImage(env, skip=True)
        assert passthrough.observation_space.shape == shape
        model_env = PPO("CnnPolicy", env, n_steps=8, batch_size=8, device="cpu").get_env()
        assert model_env is not None and not is_vecenv_wrapped(model_env, VecTransposeImage)
    finally:
        env.close()


# ----------------------------------------------------------------- SB3's VecEnv API
def test_get_attr_env_method_spec_and_lives():
    env = make_vec_env("Breakout", 2, seed=7, num_workers=1, on_life_loss="end_episode",
                       noop_max=30)
    wrapped = Recorder(env)  # SB3's wrappers forward these calls: use them through one
    try:
        meanings = AtariEnv("breakout").get_action_meanings()  # gymnasium's Atari env
        assert meanings == ["NOOP", "FIRE", "RIGHT", "LEFT"]
        assert wrapped.env_method("get_action_meanings") == [meanings, meanings]
        assert wrapped.env_method("get_action_meanings", indices=1) == [meanings]
        assert wrapped.env_method("get_wrapper_attr", "noop_max") == [30, 30]
        with pytest.raises(AttributeError, match="get_action_meanings"):
            wrapped.env_method("reset")
        assert wrapped.has_attr("lives") and wrapped.has_attr("spec")
        assert not wrapped.has_attr("ale")
        assert wrapped.get_attr("on_life_loss") == ["end_episode"] * 2
        assert wrapped.get_attr("action_space")[0] == env.action_space

        # spec: gymnasium rebuilds the same envs from it.
        spec = wrapped.get_attr("spec", indices=[0])[0]
        assert spec.id == "shmenv/breakout" and spec.kwargs["noop_max"] == 30
        obs = wrapped.reset()
        rebuilt = gymnasium.make_vec(spec, num_envs=2, seed=7)
        try:
            assert rebuilt.options == env.vector_env.options
            np.testing.assert_array_equal(rebuilt.reset()[0], obs)
        finally:
            rebuilt.close()

        # lives: each env's lives now; after a game over, the new game's.
        assert wrapped.get_attr("lives") == [5, 5]
        assert env.reset_infos == [{"lives": 5}, {"lives": 5}]
        games = life_losses = 0
        for row in np.random.default_rng(0).integers(0, 4, size=(1500, 2)):
            _, _, dones, infos = wrapped.step(row)
            lives = wrapped.get_attr("lives")
            for i in range(2):
                if dones[i] and infos[i]["lives"] == 0:
                    games += 1
                    assert lives[i] == 5
                else:
                    life_losses += int(dones[i])
                    assert lives[i] == infos[i]["lives"]
        assert games >= 1 and life_losses >= 4
    finally:
        env.close()


def test_full_action_space_meanings_are_gymnasiums():
    env = make_vec_env("Pong", 1, seed=0, num_workers=1, full_action_space=True)
    try:
        ale = AtariEnv("pong", full_action_space=True)
        assert env.env_method("get_action_meanings")[0] == ale.get_action_meanings()
        assert len(env.env_method("get_action_meanings")[0]) == 18
    finally:
        env.close()


def test_evaluate_policy_counts_whole_games_under_end_episode():
    """SB3's evaluate_policy trusts Monitor's "episode" over "done" (lost lives): with
    on_life_loss="end_episode" it reports whole games, the sums of every reward between
    two game overs, though each lost life ended an episode."""
    env = Recorder(make_vec_env("Breakout", 2, seed=2, num_workers=1,
                                on_life_loss="end_episode"))
    rng = np.random.default_rng(4)

    class RandomPolicy:
        def predict(self, observation, state=None, episode_start=None, deterministic=False):
            return rng.integers(0, 4, size=len(observation)), state

    try:
        returns, lengths = evaluate_policy(RandomPolicy(), env, n_eval_episodes=4,
                                           return_episode_rewards=True)
    finally:
        env.close()
    rewards, dones = np.stack(env.rewards), np.stack(env.dones)
    lives = np.array([[info["lives"] for info in step] for step in env.infos])
    games = []
    for e in range(2):  # evaluate_policy counts each env's first two games
        ends = np.flatnonzero(dones[:, e] & (lives[:, e] == 0))[:2]
        starts = np.concatenate([[0], ends[:-1] + 1])
        games += [(float(rewards[s:t + 1, e].sum()), int(t + 1 - s))
                  for s, t in zip(starts, ends)]
    assert sorted(zip(returns, lengths)) == sorted(games)
    assert len(games) == 4 and dones.sum() > 4 * 3  # every life lost ended an episode
