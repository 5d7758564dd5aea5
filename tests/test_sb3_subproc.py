"""shmenv.sb3.SubprocVecEnv: SB3's VecEnv contract for any env, checked against SB3's own
DummyVecEnv (the same semantics as its SubprocVecEnv, in one process) on the same env
functions, seeds and actions, and against SB3's SubprocVecEnv for what its workers answer
(get_attr, set_attr, has_attr, env_method and env_is_wrapped with indices, seed, render)."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.classic_control import CartPoleEnv
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.wrappers import TimeLimit

pytest.importorskip("torch", reason="the SB3 adapter needs torch (pip install torch==2.13.0)")
pytest.importorskip("stable_baselines3",
                    reason="the SB3 adapter needs stable-baselines3 (pip install '.[sb3]')")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402
from stable_baselines3.common.vec_env import SubprocVecEnv as SB3SubprocVecEnv  # noqa: E402

from shmenv.sb3 import SubprocVecEnv  # noqa: E402
from tests.any_envs import rich_env  # noqa: E402

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


def differently_wrapped(which: int) -> gym.Env:
    """Env ``which`` of four CartPoles: Monitor + gym.make's wrappers (TimeLimit among
    them), gym.make's alone, the bare env, and Monitor over TimeLimit over the bare env."""
    if which == 0:
        return Monitor(gym.make("CartPole-v1"))
    if which == 1:
        return gym.make("CartPole-v1")
    if which == 2:
        return CartPoleEnv()
    return Monitor(TimeLimit(CartPoleEnv(), 50))


def worker_answers(venv) -> list:
    """What a VecEnv's workers answer, in one sequence of SB3 calls with indices."""
    venv.seed(3)
    answers = [venv.reset(),
               venv.env_is_wrapped(Monitor), venv.env_is_wrapped(TimeLimit, [3, 0]),
               venv.env_is_wrapped(TimeLimit, 2), venv.env_is_wrapped(gym.Wrapper),
               venv.get_attr("x_threshold", [1, 3]), venv.has_attr("x_threshold")]
    venv.set_attr("note", "n1", indices=1)
    answers += [venv.has_attr("note"), venv.has_attr("no_such_attribute"),
                venv.get_attr("note", [1])]
    venv.set_attr("note", "all")
    # SB3 sets the outermost wrapper's attribute: the CartPole inside Monitor keeps 2.4
    venv.set_attr("x_threshold", 1.0, indices=[0, 2])
    answers += [venv.get_attr("note"), venv.get_attr("x_threshold"),
                venv.env_method("get_wrapper_attr", "x_threshold", indices=[0]),
                [env.x_threshold for env in venv.get_attr("unwrapped")],
                [callable(method) for method in venv.get_attr("reset", [2])],
                # env 1 twice: it resets twice, the second seed wins
                venv.env_method("reset", seed=11, indices=[1, 2, 1]),
                venv.env_method("reset", indices=3, seed=4)]
    return answers


def test_worker_commands_answer_as_sb3s_own_subproc_vec_env():
    fns = [partial(differently_wrapped, i) for i in range(NUM_ENVS)]
    mine = SubprocVecEnv(fns, num_workers=2)
    theirs = SB3SubprocVecEnv(fns, "fork")  # SB3's default, forkserver, starts slower
    try:
        want = worker_answers(theirs)
        assert want[1:5] == [[True, False, False, True], [True, True], [False],
                             [True, True, False, True]]  # the test's premise
        got = worker_answers(mine)
        for k, (a, b) in enumerate(zip(got, want, strict=True)):
            assert data_equivalence(a, b, exact=True), f"answer {k}: {a} != {b}"
        step = [venv.step(np.array([0, 1, 0, 1])) for venv in (mine, theirs)]
        np.testing.assert_array_equal(step[0][0], step[1][0])  # the envs still step alike
    finally:
        mine.close()
        theirs.close()


def test_render_and_get_images_as_sb3s_own_subproc_vec_env():
    fns = [rich_env(i, render_mode="rgb_array") for i in range(2)]
    mine, theirs = SubprocVecEnv(fns, num_workers=2), SB3SubprocVecEnv(fns, "fork")
    plain = [SubprocVecEnv([rich_env(0)] * 2, num_workers=1),
             SB3SubprocVecEnv([rich_env(0)] * 2, "fork")]
    try:
        for venv in (mine, theirs):
            venv.reset()
            venv.set_attr("t", 5, indices=[1])
        assert mine.render_mode == theirs.render_mode == "rgb_array"
        images = [venv.get_images() for venv in (mine, theirs)]
        assert data_equivalence(images[0], images[1], exact=True)
        assert [int(image[0, 0, 0]) for image in images[0]] == [0, 5]
        tiled = [venv.render(mode="rgb_array") for venv in (mine, theirs)]
        np.testing.assert_array_equal(tiled[0], tiled[1])
        for venv in (mine, theirs):
            with pytest.warns(UserWarning, match="has to be the same as the environment "
                                                 "render mode"):
                assert venv.render(mode="ansi") is None
        for venv in plain:  # render_mode None: a warning and no images, as in SB3
            with pytest.warns(UserWarning, match="The render mode is None"):
                assert venv.get_images() == [None, None]
    finally:
        for venv in (mine, theirs, *plain):
            venv.close()


def test_envs_given_different_reset_options_get_their_own_as_in_sb3():
    fns = [rich_env(i) for i in range(NUM_ENVS)]
    mine, theirs = SubprocVecEnv(fns, num_workers=2), DummyVecEnv(fns)
    try:
        answers = []
        for venv in (mine, theirs):
            venv.seed(9)
            venv.set_options([{"level": 1}, {}, {"level": 1}, {"level": 2}])
            first = (venv.reset(), list(venv.reset_infos))
            again = (venv.reset(), list(venv.reset_infos))  # options are used once
            answers.append((*first, *again))
        for k in (0, 2):  # observations, then every env's reset info
            np.testing.assert_array_equal(answers[0][k], answers[1][k])
            for i in range(NUM_ENVS):
                _same_info(answers[0][k + 1][i], answers[1][k + 1][i], f"reset {k} env {i}")
        assert [info.get("options") for info in answers[1][1]] == [
            {"level": 1}, None, {"level": 1}, {"level": 2}]
    finally:
        mine.close()
        theirs.close()
