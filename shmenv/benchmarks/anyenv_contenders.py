"""The contenders of ``shmenv bench anyenv``. Each ``measure_*`` function runs inside a fresh
subprocess (see :func:`shmenv.benchmarks.harness.run_isolated`), builds ``num_envs`` copies
of the gymnasium env ``env_id`` its own way, replays the suite's seeded random actions and
returns one :class:`~shmenv.benchmarks.harness.Measurement` as a dict.

Every contender builds its envs with :func:`make_env` (plain ``gymnasium.make``, the wrappers
it adds included) except envpool, which has its own implementation of the envs it knows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from shmenv.benchmarks.harness import (
    ActionCycle,
    MemorySampler,
    run_free,
    step_function,
    time_free_running,
    time_step_loop,
)
from shmenv.planning import split_envs

ACTION_ROWS = 1024  # steps before the action stream repeats


def make_env(env_id: str) -> Any:
    """One env as a gymnasium user makes it (module level, so it pickles for any context)."""
    import gymnasium as gym

    return gym.make(env_id)


def env_fns(env_id: str, num_envs: int) -> list[Callable[[], Any]]:
    return [partial(make_env, env_id)] * num_envs


def actions_for(env_id: str, num_envs: int, seed: int, rows: int = ACTION_ROWS) -> Any:
    """The seeded random actions every contender replays: ``rows`` batches of ``num_envs``
    actions drawn from the env's own action space (an array when the batches are arrays,
    as for Discrete and Box; else a list)."""
    from gymnasium.vector.utils import batch_space

    probe = make_env(env_id)
    space = batch_space(probe.action_space, num_envs)
    probe.close()
    space.seed(seed)
    batches = [space.sample() for _ in range(rows)]
    if all(isinstance(b, np.ndarray) for b in batches):
        return np.stack(batches)
    return batches


# ------------------------------------------------------------------ the ceiling
def _ceiling_process(env_id: str, env_ids: list[int], num_envs: int, seed: int,
                     counters: Any, ready: Any, stop: Any, index: int) -> None:
    """Step this process's share of the envs in a plain loop, resetting an env in the step
    that ends its episode; nothing waits on anything else."""
    actions = actions_for(env_id, num_envs, seed)
    envs = [make_env(env_id) for _ in env_ids]
    for env, env_index in zip(envs, env_ids):
        env.reset(seed=seed + env_index)

    def step_row(row: Any) -> None:
        for env, env_index in zip(envs, env_ids):
            _obs, _reward, terminated, truncated, _info = env.step(row[env_index])
            if terminated or truncated:
                env.reset()

    run_free(step_row, actions, len(envs), counters, ready, stop, index)


def measure_ceiling(env_id: str, num_envs: int, seconds: float, warmup: float,
                    seed: int) -> dict:
    """``os.cpu_count()`` processes, each stepping its contiguous share of the envs with no
    coordination at all: the most this machine can do for this work."""
    groups = [list(range(start, stop))
              for start, stop in split_envs(num_envs, min(num_envs, os.cpu_count() or 1))]
    args = [(env_id, envs, num_envs, seed) for envs in groups]
    return time_free_running(_ceiling_process, args, warmup, seconds).as_dict()


# ------------------------------------------------------------------ vector contenders
def _measure(make_vector: Callable[[], Any], reset: Callable[[Any], dict], env_id: str,
             num_envs: int, seconds: float, warmup: float, seed: int,
             batch: int | None = None) -> dict:
    """Build a vector env, reset it (``reset`` returns the infos), then time its steps;
    with ``batch`` below ``num_envs``, by ``send``/``recv`` of the envs that just replied."""
    batch = batch or num_envs
    cycle = ActionCycle(actions_for(env_id, batch, seed))
    with MemorySampler() as sampler:
        env = make_vector()
        try:
            infos = reset(env)
            step = step_function(env, cycle, infos["env_id"] if batch < num_envs else None)
            result = time_step_loop(step, batch, warmup, seconds, sampler)
        finally:
            env.close()
    return result.as_dict()


def _gymnasium_reset(seed: int) -> Callable[[Any], dict]:
    def reset(env: Any) -> dict:
        return env.reset(seed=seed)[1]
    return reset


def measure_shmenv(env_id: str, num_envs: int, seconds: float, warmup: float, seed: int,
                   async_batch: bool = False) -> dict:
    """``shmenv.AsyncVectorEnv`` with its defaults; ``async_batch`` steps first-ready
    batches of half the envs with ``send``/``recv``."""
    import shmenv

    batch = max(num_envs // 2, 1) if async_batch else num_envs
    options: dict[str, Any] = {"batch_size": batch} if async_batch else {}
    return _measure(lambda: shmenv.AsyncVectorEnv(env_fns(env_id, num_envs), **options),
                    _gymnasium_reset(seed), env_id, num_envs, seconds, warmup, seed, batch)


def measure_gymnasium_async(env_id: str, num_envs: int, seconds: float, warmup: float,
                            seed: int) -> dict:
    """gymnasium's ``AsyncVectorEnv`` with its defaults (shared memory, one process per env)."""
    from gymnasium.vector import AsyncVectorEnv

    return _measure(lambda: AsyncVectorEnv(env_fns(env_id, num_envs)),
                    _gymnasium_reset(seed), env_id, num_envs, seconds, warmup, seed)


def measure_gymnasium_sync(env_id: str, num_envs: int, seconds: float, warmup: float,
                           seed: int) -> dict:
    """gymnasium's ``SyncVectorEnv``: every env stepped in turn in this one process."""
    from gymnasium.vector import SyncVectorEnv

    return _measure(lambda: SyncVectorEnv(env_fns(env_id, num_envs)),
                    _gymnasium_reset(seed), env_id, num_envs, seconds, warmup, seed)


def measure_sb3(env_id: str, num_envs: int, seconds: float, warmup: float, seed: int) -> dict:
    """SB3's ``SubprocVecEnv`` (one process per env). Started with "fork", gymnasium's own
    default on Linux: SB3's default, "forkserver", makes every worker import SB3 and so
    torch afresh (some 200 MB and a second of CPU each)."""
    from stable_baselines3.common.vec_env import SubprocVecEnv

    def reset(env: Any) -> dict:
        env.seed(seed)
        env.reset()
        return {}

    return _measure(lambda: SubprocVecEnv(env_fns(env_id, num_envs), start_method="fork"),
                    reset, env_id, num_envs, seconds, warmup, seed)


def measure_envpool(env_id: str, num_envs: int, seconds: float, warmup: float,
                    seed: int) -> dict:
    """envpool's own implementation of ``env_id``, one thread per core, all envs a batch."""
    import envpool

    def make() -> Any:
        return envpool.make_gymnasium(env_id, num_envs=num_envs, batch_size=num_envs,
                                      num_threads=os.cpu_count() or 1, seed=seed)

    def reset(env: Any) -> dict:
        return env.reset()[1]

    return _measure(make, reset, env_id, num_envs, seconds, warmup, seed)
