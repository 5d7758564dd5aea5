"""Small gymnasium envs for the AsyncVectorEnv conformance tests (tests/test_any_env*.py).

Their episodes end at seeded random lengths (terminated or truncated), their infos are
rich (ints, floats, strings, arrays, nested dicts, some steps none at all) and their
observations are samples of whatever space they are given, so a run through
``shmenv.AsyncVectorEnv`` can be compared value for value with gymnasium's
``SyncVectorEnv`` on the same env functions.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CustomSpace(gym.Space):
    """A space gymnasium cannot batch into arrays: observations travel pickled."""

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        return f"sample-{int(self.np_random.integers(0, 10))}"

    def contains(self, x: Any) -> bool:
        return isinstance(x, str)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CustomSpace)


class RichEnv(gym.Env):
    """An env with any spaces, seeded random episode lengths and rich infos."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 17}

    def __init__(self, observation_space: spaces.Space | None = None,
                 action_space: spaces.Space | None = None, render_mode: str | None = None,
                 fail_at: int | None = None, fail_in: str = "step", sleep_s: float = 0.0,
                 exit_at: int | None = None) -> None:
        # Copies: a space shared by the envs of one process would share its random draws.
        self.observation_space = copy.deepcopy(observation_space
                                               or spaces.Box(-1, 1, (3,), np.float32))
        self.action_space = copy.deepcopy(action_space or spaces.Discrete(3))
        self.render_mode = render_mode
        self.fail_at = fail_at
        self.fail_in = fail_in
        self.sleep_s = sleep_s
        self.exit_at = exit_at
        self.t = 0
        self.length = 5
        self.resets = 0

    def _observe(self) -> Any:
        return self.observation_space.sample()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        self.t = 0
        self.length = int(self.np_random.integers(2, 9))
        self.resets += 1
        if self.fail_in == "reset" and self.fail_at is not None and seed == self.fail_at:
            raise ValueError(f"reset failed on purpose with seed {seed}")
        info: dict[str, Any] = {}
        if self.length % 3 == 0:
            info["start_length"] = self.length
        if options:
            info["options"] = dict(options)
        return self._observe(), info

    def step(self, action: Any):
        self.t += 1
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail_in == "step" and self.fail_at is not None and self.t >= self.fail_at:
            raise ValueError(f"step failed on purpose at t={self.t}")
        if self.exit_at is not None and self.t >= self.exit_at:
            os._exit(3)
        reward = float(self.np_random.normal())
        ended = self.t >= self.length
        terminated = ended and self.length % 2 == 0
        truncated = ended and not terminated
        info: dict[str, Any] = {}
        if self.t % 2 == 0:
            info["count"] = self.t
            info["action"] = action
        if self.t % 3 == 0:
            info["value"] = reward
            info["tag"] = f"t{self.t}"
            info["nested"] = {"arr": np.arange(3) * self.t, "flag": bool(self.t % 2)}
        obs = self._observe()
        if self.fail_in == "obs" and self.fail_at is not None and self.t >= self.fail_at:
            obs = np.zeros(2, np.float32)  # not of the observation space's shape
        return obs, reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        return np.full((4, 4, 3), self.t, dtype=np.uint8)


class NumericInfoEnv(RichEnv):
    """Infos of a few numbers and a small array every step, as MuJoCo's envs return them,
    with the changes a worker's info columns must notice: an episode whose infos have one
    key more, a step whose value is of another type, a reset whose info has fewer keys."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = super().reset(seed=seed, options=options)
        return obs, {**info, "x": 0.0, "pos": np.zeros(2)}

    def step(self, action: Any):
        obs, reward, terminated, truncated, _info = super().step(action)
        info: dict[str, Any] = {"x": reward, "n": self.t, "f": np.float32(self.t / 4),
                                "pos": np.array([reward, -self.t])}
        if self.t == 3:
            info["n"] = float(self.t)  # the same key, another type
        if self.resets % 3 == 0:
            info["late"] = np.int16(self.resets)
        return obs, reward, terminated, truncated, info


def numeric_info_env(seed: int, **kwargs: Any):
    """A :class:`NumericInfoEnv` function, seeded as :func:`rich_env`'s."""
    return rich_env(seed, env_class=NumericInfoEnv, **kwargs)


def rich_env(seed: int, env_class: type[RichEnv] = RichEnv, **kwargs: Any):
    """An env function as gymnasium's tests write them: seeds the env when it is made."""

    def make() -> RichEnv:
        env = env_class(**kwargs)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env

    return make


TEST_SPACES = {
    "box": spaces.Box(-1, 1, (3,), np.float32),
    "image": spaces.Box(0, 255, (6, 5, 3), np.uint8),
    "scalar_box": spaces.Box(0, 255, (), np.uint8),
    "float16": spaces.Box(-1, 1, (2,), np.float16),
    "discrete": spaces.Discrete(5, start=-2),
    "multidiscrete": spaces.MultiDiscrete([3, 4, 5]),
    "multibinary": spaces.MultiBinary(6),
    "dict": spaces.Dict({"pos": spaces.Discrete(7),
                         "vel": spaces.Box(0, 1, (2,), np.float64),
                         "inner": spaces.Dict({"x": spaces.MultiBinary(2)})}),
    "tuple": spaces.Tuple((spaces.Discrete(3),
                           spaces.Tuple((spaces.Box(0, 1, (2,), np.float32),
                                         spaces.MultiDiscrete([2, 2]))))),
    "text": spaces.Text(5),
}
