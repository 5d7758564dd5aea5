"""The Stable-Baselines3 adapter: SB3's VecEnv contract over the shared block."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch",
                            reason="the SB3 adapter needs torch (pip install torch==2.13.0)")
pytest.importorskip("stable_baselines3",
                    reason="the SB3 adapter needs stable-baselines3 (pip install '.[sb3]')")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402
from stable_baselines3.common.vec_env import VecEnvWrapper  # noqa: E402

import shmenv  # noqa: E402
from shmenv.sb3 import ShmSB3VecEnv, make_vec_env  # noqa: E402

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
