"""The throughput contenders. Each ``measure_*`` function runs inside a fresh subprocess
(see :func:`shmenv.benchmarks.harness.run_isolated`), builds its contender for ``game`` and
``num_envs``, replays the shared seeded action stream and returns one
:class:`~shmenv.benchmarks.harness.Measurement` as a dict.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import numpy as np

from shmenv.benchmarks.harness import (
    ActionCycle,
    MemorySampler,
    action_stream,
    run_free,
    step_function,
    time_free_running,
    time_step_loop,
)
from shmenv.games import resolve_game
from shmenv.planning import split_envs

READY_TIMEOUT_S = 300.0


def gym_atari_id(game: str) -> str:
    """``"Breakout"`` -> ``"BreakoutNoFrameskip-v4"`` (the gymnasium id the reference uses)."""
    return "".join(p.capitalize() for p in resolve_game(game).split("_")) + "NoFrameskip-v4"


def envpool_id(game: str) -> str:
    return "".join(p.capitalize() for p in resolve_game(game).split("_")) + "-v5"


# ------------------------------------------------------------------ the ceilings
def _emulate_only(game: Any, action: int, lives_at_reset: int) -> int:
    """ALE emulation alone: the action repeated for frame_skip frames, ending at a lost life
    or game over (state-restore reset), no screen fetch, no preprocessing. Returns the
    lives count at the current episode's start."""
    ale = game.ale
    ale_action = game.action_set[action]
    for _ in range(game.options.frame_skip):
        ale.act(ale_action)
        if ale.game_over() or ale.lives() < lives_at_reset:
            game.reset()
            return game.lives
    return lives_at_reset


def _ceiling_process(game_name: str, env_ids: list[int], seeds: list[int], actions: np.ndarray,
                     emulation_only: bool, counters: Any, ready: Any, stop: Any,
                     index: int) -> None:
    import cv2

    from shmenv.atari import AtariGame

    cv2.setNumThreads(1)
    games = [AtariGame(game_name, seed) for seed in seeds]
    lives = [g.lives for g in games]

    def step_row(row: np.ndarray) -> None:
        for j, (game, env) in enumerate(zip(games, env_ids)):
            action = int(row[env])
            if emulation_only:
                lives[j] = _emulate_only(game, action, lives[j])
            else:
                _reward, terminated, truncated = game.step(action)
                if terminated or truncated:
                    game.reset()

    run_free(step_row, actions, len(games), counters, ready, stop, index)


def measure_ceiling(game: str, num_envs: int, seconds: float, warmup: float, seed: int,
                    emulation_only: bool = False) -> dict:
    """``os.cpu_count()`` independent processes running shmenv's game core in a loop, no
    coordination: the most this machine can do for this work. The count of env-steps is
    read from shared counters at the start and end of the window."""
    from shmenv.atari import AtariGame

    probe = AtariGame(game, seed)
    actions = action_stream(seed, num_envs, probe.num_actions)
    del probe
    groups = [list(range(start, stop))
              for start, stop in split_envs(num_envs, min(num_envs, os.cpu_count() or 1))]
    args = [(game, envs, [seed + e for e in envs], actions, emulation_only) for envs in groups]
    return time_free_running(_ceiling_process, args, warmup, seconds,
                             READY_TIMEOUT_S).as_dict()


# ------------------------------------------------------------------ vector contenders
def measure_shmenv(game: str, num_envs: int, seconds: float, warmup: float, seed: int,
                   maxpool: str | None = None, async_batch: bool = False,
                   cpu_affinity: bool = False, options: dict[str, Any] | None = None) -> dict:
    """shmenv's vector env; ``maxpool`` None keeps its default (the labml design),
    ``async_batch`` steps batches of half the envs with ``send``/``recv``; ``options``
    are more keyword arguments of :func:`shmenv.make` (``copy``, game options)."""
    import shmenv

    options = {**(options or {}), "cpu_affinity": cpu_affinity}
    if maxpool is not None:
        options["maxpool"] = maxpool
    batch = max(num_envs // 2, 1) if async_batch else num_envs
    return _measure_vector(lambda: shmenv.make(game, num_envs, seed=seed, batch_size=batch,
                                               **options),
                           num_envs, seconds, warmup, seed, batch)


def measure_pipe(game: str, num_envs: int, seconds: float, warmup: float, seed: int) -> dict:
    """The labml design as a trainer drives it: send to all, receive from all, copy each
    stack into a (n, 4, 84, 84) uint8 batch."""
    from shmenv.baseline import Worker

    return _measure_workers(Worker, game, num_envs, seconds, warmup, seed)


def measure_dropin(game: str, num_envs: int, seconds: float, warmup: float, seed: int,
                   relay_fanout: int | None = None) -> dict:
    """The same trainer loop with only the import changed: ``shmenv.Worker`` (Workers
    created together share one block and a process per core). ``relay_fanout``: the
    group's (None: the default; 0: a message per pool process, no relay)."""
    from shmenv import Worker, WorkerGroup

    if relay_fanout is None:
        return _measure_workers(Worker, game, num_envs, seconds, warmup, seed)
    group = WorkerGroup(relay_fanout=relay_fanout)
    return _measure_workers(partial(Worker, group=group), game, num_envs, seconds, warmup,
                            seed)


def _measure_workers(worker_class: Any, game: str, num_envs: int, seconds: float,
                     warmup: float, seed: int) -> dict:
    """The reference's sampling loop over ``worker_class(seed, game)`` Workers: seeds
    ``seed + i``, send to all, receive from all, each stack copied into one batch."""
    import gymnasium as gym

    action_space = gym.make(gym_atari_id(game)).action_space
    assert isinstance(action_space, gym.spaces.Discrete)
    num_actions = int(action_space.n)
    with MemorySampler() as sampler:
        workers = [worker_class(seed + i, game) for i in range(num_envs)]
        try:
            for w in workers:
                w.child.send(("reset", None))
            obs = np.zeros((num_envs, 4, 84, 84), dtype=np.uint8)
            for i, w in enumerate(workers):
                obs[i] = w.child.recv()
            cycle = ActionCycle(action_stream(seed, num_envs, num_actions))

            def step() -> None:
                for w, action in zip(workers, cycle.next()):
                    w.child.send(("step", int(action)))
                for i, w in enumerate(workers):
                    stack, _reward, _done, _info = w.child.recv()
                    obs[i] = stack

            result = time_step_loop(step, num_envs, warmup, seconds, sampler)
        finally:
            for w in workers:
                w.child.send(("close", None))
            for w in workers:
                w.process.join(timeout=5)
    return result.as_dict()


def make_gym_atari(gym_id: str):
    """gymnasium's standard Atari stack for this comparison (module level: picklable)."""
    import ale_py
    import gymnasium as gym
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    gym.register_envs(ale_py)
    env = gym.make(gym_id)
    env = AtariPreprocessing(env, frame_skip=4, noop_max=0, terminal_on_life_loss=True,
                             screen_size=84, grayscale_obs=True)
    return FrameStackObservation(env, 4)


def _measure_vector(make_env, num_envs: int, seconds: float, warmup: float, seed: int,
                    batch: int | None = None) -> dict:
    """Step a gymnasium-style vector env; with ``batch`` below ``num_envs`` (shmenv's async
    mode) by ``send``/``recv``, each batch's actions going to the envs that just replied."""
    with MemorySampler() as sampler:
        env = make_env()
        try:
            _obs, infos = env.reset(seed=seed)
            batch = batch or num_envs
            cycle = ActionCycle(action_stream(seed, batch, int(env.single_action_space.n)))
            step = step_function(env, cycle, infos["env_id"] if batch < num_envs else None)
            result = time_step_loop(step, batch, warmup, seconds, sampler)
        finally:
            env.close()
    return result.as_dict()


def measure_gymnasium(game: str, num_envs: int, seconds: float, warmup: float,
                      seed: int) -> dict:
    from gymnasium.vector import AsyncVectorEnv

    def make_env():
        return AsyncVectorEnv([partial(make_gym_atari, gym_atari_id(game))] * num_envs,
                              shared_memory=True)

    return _measure_vector(make_env, num_envs, seconds, warmup, seed)


def make_envpool(game: str, num_envs: int, seed: int):
    """envpool with the reference's settings where it has them: episodic life, no sticky
    actions, no FIRE on reset, no reward clipping, no no-op starts."""
    import envpool

    return envpool.make_gymnasium(
        envpool_id(game), num_envs=num_envs, batch_size=num_envs,
        num_threads=os.cpu_count() or 1, seed=seed, episodic_life=True, reward_clip=False,
        repeat_action_probability=0.0, noop_max=1, use_fire_reset=False, stack_num=4,
        frame_skip=4, img_height=84, img_width=84, gray_scale=True,
    )


def measure_envpool(game: str, num_envs: int, seconds: float, warmup: float,
                    seed: int) -> dict:
    return _measure_vector(partial(make_envpool, game, num_envs, seed), num_envs, seconds,
                           warmup, seed)


def make_ale_vector(game: str, num_envs: int):
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        resolve_game(game), num_envs, num_threads=os.cpu_count() or 1,
        repeat_action_probability=0.0, episodic_life=True, noop_max=0,
        reward_clipping=False, use_fire_reset=False, stack_num=4, frameskip=4,
        img_height=84, img_width=84, grayscale=True, maxpool=True,
    )


def measure_ale_vector(game: str, num_envs: int, seconds: float, warmup: float,
                       seed: int) -> dict:
    return _measure_vector(partial(make_ale_vector, game, num_envs), num_envs, seconds,
                           warmup, seed)
