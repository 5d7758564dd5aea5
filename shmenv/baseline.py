"""The labml design (the reference), kept only as the comparison baseline.

This is a faithful, in-project implementation of the annotated PPO tutorial's Pipe-based
workers: a gymnasium-made ``BreakoutNoFrameskip-v4`` per process, a float64 (4, 84, 84)
stack, and every observation pickled through a ``multiprocessing.Pipe``. shmenv's
equivalence tests and every benchmark compare against it. Do not optimise it: its cost
is the point.

The only adaptations are the ones the world forced: gymnasium's five-value ``step`` and
``(obs, info)`` reset, seeding through ``reset(seed=...)`` once (the first reset; every later
one is unseeded, as the tutorial's ``env.seed(seed)`` once then ``reset()`` was), and a game
over or the episode cap ending the 4-frame repeat just like a lost life (the tutorial's loop
breaks only on a lost life and takes gym's done flag of its last frame; docs/exactness.md).
The frame stack is pushed only while the episode goes on: after a done the fresh reset stack
is returned untouched.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from typing import Any

import cv2
import gymnasium as gym
import numpy as np

from shmenv.games import resolve_game


def _gym_id(game: str) -> str:
    rom = resolve_game(game)
    return "".join(part.capitalize() for part in rom.split("_")) + "NoFrameskip-v4"


class Game:
    """The reference's game: one gymnasium Atari env with its preprocessing and frame stack."""

    def __init__(self, seed: int, game: str = "Breakout") -> None:
        import ale_py

        gym.register_envs(ale_py)
        self.env = gym.make(_gym_id(game))
        self.seed = seed
        self._seeded = False
        self.obs_4 = np.zeros((4, 84, 84))
        self.obs_2_max = np.zeros((2, 84, 84))
        self.rewards: list[float] = []
        self.lives = 0

    def step(self, action: int) -> tuple[np.ndarray, float, bool, dict | None]:
        reward = 0.0
        done = False
        for i in range(4):
            obs, r, terminated, truncated, _info = self.env.step(action)
            if i >= 2:
                self.obs_2_max[i % 2] = self._process_obs(obs)
            reward += float(r)
            lives = self.env.unwrapped.ale.lives()  # type: ignore[attr-defined]
            if lives < self.lives or terminated or truncated:
                done = True
                break

        self.rewards.append(reward)
        if done:
            episode_info = {"reward": sum(self.rewards), "length": len(self.rewards)}
            self.reset()
        else:
            episode_info = None
            obs = self.obs_2_max.max(axis=0)
            self.obs_4 = np.roll(self.obs_4, shift=-1, axis=0)
            self.obs_4[-1] = obs
        return self.obs_4, reward, done, episode_info

    def reset(self) -> np.ndarray:
        if self._seeded:
            obs, _info = self.env.reset()
        else:
            obs, _info = self.env.reset(seed=self.seed)
            self._seeded = True
        obs = self._process_obs(obs)
        for i in range(4):
            self.obs_4[i] = obs
        self.rewards = []
        self.lives = self.env.unwrapped.ale.lives()  # type: ignore[attr-defined]
        return self.obs_4

    @staticmethod
    def _process_obs(obs: np.ndarray) -> np.ndarray:
        obs = cv2.cvtColor(obs, cv2.COLOR_RGB2GRAY)
        return cv2.resize(obs, (84, 84), interpolation=cv2.INTER_AREA)


def worker_process(remote: multiprocessing.connection.Connection, seed: int,
                   game: str = "Breakout") -> None:
    """The reference's worker loop: one command per message, every reply pickled whole."""
    env = Game(seed, game)
    while True:
        cmd, data = remote.recv()
        if cmd == "step":
            remote.send(env.step(data))
        elif cmd == "reset":
            remote.send(env.reset())
        elif cmd == "close":
            remote.close()
            break
        else:
            raise NotImplementedError


class Worker:
    """The reference's worker: a process and the trainer's end of its Pipe (``.child``)."""

    def __init__(self, seed: int, game: str = "Breakout") -> None:
        self.child, parent = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=worker_process, args=(parent, seed, game))
        self.process.start()


def baseline_rollout(seed: int, actions: Any, game: str = "Breakout"):
    """Play ``actions`` in one in-process reference :class:`Game`, yielding each step's result.

    The first item is the reset stack; then ``(stack, reward, done, info)`` per action,
    with the stack copied (the reference reuses its array).
    """
    env = Game(seed, game)
    yield env.reset().copy()
    for action in actions:
        stack, reward, done, info = env.step(int(action))
        yield stack.copy(), reward, done, info
