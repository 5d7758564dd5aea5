"""shmenv.sb3.SubprocVecEnv: SB3's VecEnv contract for any env, checked against SB3's own
DummyVecEnv (the same semantics as its SubprocVecEnv, in one process) on the same env
functions, seeds and actions."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("torch", reason="the SB3 adapter needs torch (pip install torch==2.13.0)")
pytest.importorskip("stable_baselines3",
                    reason="the SB3 adapter needs stable-baselines3 (pip install '.[sb3]')")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

from shmenv.sb3 import SubprocVecEnv  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_leaked_segments")
NUM_ENVS = 4


def monitored_cartpole(max_episode_steps: int = 500) -> gym.Env:
    return Monitor(gym.make("CartPole-v1", max_episode_steps=max_episode_steps))


def _same_info(mine: dict, theirs: dict, where: str) -> None:
    assert set(mine) == set(theirs), f"{where}: info keys {set(mine)} != {set(theirs)}"
    for key, value in theirs.items():
        if key == "episode":  # Monitor's wall-clock "t" differs between two runs
            assert (mine[key]["r"], mine[key]["l"]) == (value["r"], value["l"]), where
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(mine[key], value, err_msg=where)
        else:
            assert mine[key] == value, f"{where}: {key}"


def test_steps_equal_sb3s_own_vec_env():
    # a short time limit so that truncations, not only terminations, end episodes
    fns = [partial(monitored_cartpole, 12 + 3 * i) for i in range(NUM_ENVS)]
    actions = np.random.default_rng(1).integers(0, 2, size=(120, NUM_ENVS))
    mine, theirs = SubprocVecEnv(fns, num_workers=2), DummyVecEnv(fns)
    try:
        for env in (mine, theirs):
            env.seed(7)
        np.testing.assert_array_equal(mine.reset(), theirs.reset())
        ends = {"terminated": 0, "truncated": 0}
        for t, row in enumerate(actions):
            got, want = mine.step(row), theirs.step(row)
            for name, a, b in zip(("obs", "rewards", "dones"), got[:3], want[:3]):
                np.testing.assert_array_equal(a, b, err_msg=f"step {t}: {name}")
            assert got[1].dtype == np.float32
            for i in range(NUM_ENVS):
                _same_info(got[3][i], want[3][i], f"step {t} env {i}")
                if want[2][i]:
                    truncated = want[3][i]["TimeLimit.truncated"]
                    ends["truncated" if truncated else "terminated"] += 1
                    _same_info(mine.reset_infos[i], theirs.reset_infos[i], f"reset {t} {i}")
        assert min(ends.values()) >= 2, f"too few of each episode end: {ends}"
        assert mine.get_attr("spec", [1])[0].max_episode_steps == 15
        mine.set_attr("note", "all")
        mine.set_attr("note", "hello", indices=[2])
        assert mine.get_attr("note") == ["all", "all", "hello", "all"]
        with pytest.raises(ValueError, match="indices=None"):
            mine.env_method("render", indices=[0])
    finally:
        mine.close()
        theirs.close()


def test_ppo_learns_through_it_and_logs_monitor_episodes():
    import torch

    torch.set_num_threads(1)
    env = SubprocVecEnv([monitored_cartpole] * NUM_ENVS, num_workers=2)
    try:
        model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0,
                    device="cpu")
        model.learn(total_timesteps=2 * 64 * NUM_ENVS)
    finally:
        env.close()
    assert model.num_timesteps == 2 * 64 * NUM_ENVS
    # Monitor's "episode" infos came through the workers into SB3's episode buffer.
    assert len(model.ep_info_buffer) >= 5
    assert all(info["l"] >= 1 and info["r"] == info["l"] for info in model.ep_info_buffer)
