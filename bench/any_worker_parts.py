"""Where a generic worker's CPU goes, part by part, against the no-coordination ceiling.

    PYTHONPATH=. python bench/any_worker_parts.py [--env HalfCheetah-v5] [--num-envs 64]
                                                  [--seconds 4] [--rounds 2]

Each round runs the ceiling (2 processes stepping half the envs each in a plain loop) and
then ``shmenv.AsyncVectorEnv`` for ``--seconds`` each, and prints CPU µs per env-step: the
ceiling's, and per worker its whole process, its ``step`` (the env loop, the observations'
write, the reply with the info columns) and what it spends outside a step (spin-wait,
command in, reply out, relay). The parts are timed with ``time.thread_time`` around the
worker's methods, patched in before the workers fork, so every part pays ~0.7 µs per
timer call; compare the parts within a round (docs/architecture.md, "Where the time goes").
Linux (fork) only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from time import perf_counter, process_time, thread_time
from typing import Any

import gymnasium as gym

import shmenv
from shmenv import anyinfos, anypipe, anyrelay, anyworker, spinwait

PARTS = ("step", "obs", "reply", "columns", "wait", "receive", "send", "forward", "collect")
SPENT = dict.fromkeys(PARTS, 0.0)
STEPS = [0]


def _timed(part: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            SPENT[part] += thread_time() - start
    return timed


def _patch_worker() -> None:
    """Time the worker's parts (inherited by the workers this process forks)."""
    runner = anyworker.EnvRunner
    step, serve = runner.step, runner.serve

    def counted_step(self: Any, message: bytes) -> bytes:
        STEPS[0] += 1
        return step(self, message)

    def reporting_serve(self: Any, conn: Any, relay: Any) -> None:
        cpu = process_time()
        try:
            serve(self, conn, relay)
        finally:
            _report(self.spec.index, process_time() - cpu, len(self.envs) * STEPS[0])

    runner.step = _timed("step", counted_step)  # type: ignore[method-assign]
    runner.serve = reporting_serve  # type: ignore[method-assign]
    runner._write_obs_batch = _timed("obs", runner._write_obs_batch)  # type: ignore[method-assign]
    runner._reply = _timed("reply", runner._reply)  # type: ignore[method-assign]
    anyinfos.InfoColumns.write = _timed(  # type: ignore[method-assign]
        "columns", anyinfos.InfoColumns.write)
    spinwait.SpinWait.wait = _timed("wait", spinwait.SpinWait.wait)  # type: ignore[method-assign]
    anypipe.WorkerPipe.receive = _timed(  # type: ignore[method-assign]
        "receive", anypipe.WorkerPipe.receive)
    anypipe.WorkerPipe.send = _timed("send", anypipe.WorkerPipe.send)  # type: ignore[method-assign]
    anyrelay.AnyRelay.forward = _timed(  # type: ignore[method-assign]
        "forward", anyrelay.AnyRelay.forward)
    anyrelay.AnyRelay.collect = _timed(  # type: ignore[method-assign]
        "collect", anyrelay.AnyRelay.collect)


def _report(index: int, cpu: float, env_steps: int) -> None:
    def us(seconds: float) -> str:
        return f"{seconds / max(env_steps, 1) * 1e6:5.1f}"
    outside = cpu - SPENT["step"]
    loop = SPENT["step"] - SPENT["obs"] - SPENT["reply"]
    print(f"  worker {index}: all {us(cpu)} | step {us(SPENT['step'])} = loop {us(loop)}"
          f" + obs {us(SPENT['obs'])} + reply {us(SPENT['reply'])} (columns "
          f"{us(SPENT['columns'])}) | outside {us(outside)}: wait {us(SPENT['wait'])},"
          f" receive {us(SPENT['receive'])}, send {us(SPENT['send'])}, relay "
          f"{us(SPENT['forward'] + SPENT['collect'])}", flush=True)


def _ceiling_process(env_id: str, count: int, seconds: float, results: Any) -> None:
    envs = [gym.make(env_id) for _ in range(count)]
    for k, env in enumerate(envs):
        env.reset(seed=k)
    actions = [[env.action_space.sample() for env in envs] for _ in range(64)]
    results.put(None)
    start, cpu, rows = perf_counter(), process_time(), 0
    while perf_counter() - start < seconds:
        for env, action in zip(envs, actions[rows % 64]):
            _obs, _reward, terminated, truncated, _info = env.step(action)
            if terminated or truncated:
                env.reset()
        rows += 1
    results.put((process_time() - cpu) / (rows * count) * 1e6)


def ceiling(env_id: str, num_envs: int, seconds: float) -> None:
    results: Any = mp.Queue()
    procs = [mp.Process(target=_ceiling_process, args=(env_id, num_envs // 2, seconds, results))
             for _ in range(2)]
    for proc in procs:
        proc.start()
    for _ in procs:
        results.get()
    cpus = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    print(f"  ceiling: {' / '.join(f'{cpu:.1f}' for cpu in cpus)} µs per env-step")


def shm(env_id: str, num_envs: int, seconds: float) -> None:
    envs = shmenv.AsyncVectorEnv([lambda: gym.make(env_id)] * num_envs)
    try:
        envs.reset(seed=0)
        actions = [envs.action_space.sample() for _ in range(64)]
        for action in actions[:20]:
            envs.step(action)
        start, cpu, steps = perf_counter(), process_time(), 0
        while perf_counter() - start < seconds:
            envs.step(actions[steps % 64])
            steps += 1
        print(f"  shmenv: {steps * num_envs / (perf_counter() - start):,.0f} env-steps/s, "
              f"main {(process_time() - cpu) / (steps * num_envs) * 1e6:.1f} µs per env-step",
              flush=True)
    finally:
        envs.close()  # the workers print their parts as they exit
    time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    mp.set_start_method("fork")
    _patch_worker()
    for round_ in range(args.rounds):
        print(f"round {round_ + 1} (load {os.getloadavg()[0]:.1f}), CPU µs per env-step")
        ceiling(args.env, args.num_envs, args.seconds)
        shm(args.env, args.num_envs, args.seconds)


if __name__ == "__main__":
    main()
