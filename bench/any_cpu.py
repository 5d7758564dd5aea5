"""CPU µs per env-step (main + workers) of shmenv.AsyncVectorEnv, gymnasium's vector envs
and the no-coordination ceiling, for any registered env.

    PYTHONPATH=. python bench/any_cpu.py [--env CartPole-v1] [--num-envs 64] [--steps 300]
                                         [--rounds 5]

On a shared, loaded machine the env-steps per second of a contender swing with the load;
the CPU it spends per env-step (every process of it: the main process and its workers,
read from ``/proc`` through psutil) is the steadier figure. All contenders are built
first, then measured in interleaved rounds; the medians over the rounds are printed, with
each contender's CPU per env-step as a ratio of the ceiling's. The ceiling is one process
per core, each stepping its contiguous share of the envs in a plain loop (resetting an env
in the step that ends its episode), started together once per round.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np
import psutil

import shmenv


def _ceiling_worker(conn: Connection, env_id: str, count: int, actions: np.ndarray) -> None:
    """Step ``count`` envs through ``actions`` rows on each command; reply CPU seconds."""
    envs = [gym.make(env_id) for _ in range(count)]
    for k, env in enumerate(envs):
        env.reset(seed=k)
    while True:
        steps = conn.recv()
        if steps is None:
            return
        cpu = time.process_time()
        for row in actions[:steps]:
            for env, action in zip(envs, row):
                _obs, _reward, terminated, truncated, _info = env.step(action)
                if terminated or truncated:
                    env.reset()
        conn.send(time.process_time() - cpu)


class Ceiling:
    """One process per core stepping its share of the envs, no main process in the loop."""

    def __init__(self, env_id: str, num_envs: int, actions: np.ndarray) -> None:
        workers = min(num_envs, os.cpu_count() or 1)
        bounds = np.linspace(0, num_envs, workers + 1).astype(int)
        self.conns, self.procs = [], []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            ours, theirs = mp.Pipe()
            proc = mp.Process(target=_ceiling_worker,
                              args=(theirs, env_id, stop - start, actions[:, start:stop]))
            proc.start()
            self.conns.append(ours)
            self.procs.append(proc)

    def run(self, steps: int) -> tuple[float, float]:
        """(wall seconds, CPU seconds of all its processes) of ``steps`` steps."""
        start = time.perf_counter()
        for conn in self.conns:
            conn.send(steps)
        cpu = sum(conn.recv() for conn in self.conns)
        return time.perf_counter() - start, cpu

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            conn.send(None)
            proc.join()


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        times = proc.cpu_times()
        total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-gym-async", action="store_true")
    parser.add_argument("--spin-us", type=float, action="append", default=[],
                        help="also measure shmenv with this worker_spin_us (repeatable)")
    args = parser.parse_args()
    n = args.num_envs
    fns = [lambda: gym.make(args.env) for _ in range(n)]
    me = psutil.Process()
    space = gym.vector.utils.batch_space(gym.make(args.env).action_space, n)
    space.seed(0)
    actions = np.stack([space.sample() for _ in range(args.steps)])

    contenders: dict[str, tuple[Any, list[psutil.Process]]] = {}

    def build(name: str, make: Any) -> None:
        before = {p.pid for p in me.children(recursive=True)}
        envs = make()
        procs = [p for p in me.children(recursive=True) if p.pid not in before]
        contenders[name] = (envs, [me, *procs])

    build("shmenv.AsyncVectorEnv", lambda: shmenv.AsyncVectorEnv(fns))
    for spin in args.spin_us:
        build(f"shmenv spin {spin:g} µs",
              lambda spin=spin: shmenv.AsyncVectorEnv(fns, worker_spin_us=spin))
    build("gymnasium SyncVectorEnv", lambda: gym.vector.SyncVectorEnv(fns))
    if not args.no_gym_async:
        build("gymnasium AsyncVectorEnv", lambda: gym.vector.AsyncVectorEnv(fns))
    ceiling = Ceiling(args.env, n, actions)
    rates: dict[str, list[float]] = {name: [] for name in [*contenders, "ceiling"]}
    cpus: dict[str, list[float]] = {name: [] for name in rates}
    try:
        for envs, _procs in contenders.values():
            envs.reset(seed=0)
            for a in actions[:30]:
                envs.step(a)
        ceiling.run(30)
        for _ in range(args.rounds):
            for name, (envs, procs) in contenders.items():
                steps = args.steps if "gymnasium Async" not in name else args.steps // 4
                cpu, start = _cpu(procs), time.perf_counter()
                for a in actions[:steps]:
                    envs.step(a)
                wall, cpu = time.perf_counter() - start, _cpu(procs) - cpu
                rates[name].append(steps * n / wall)
                cpus[name].append(cpu / (steps * n) * 1e6)
            wall, cpu = ceiling.run(args.steps)
            rates["ceiling"].append(args.steps * n / wall)
            cpus["ceiling"].append(cpu / (args.steps * n) * 1e6)
    finally:
        for envs, _procs in contenders.values():
            envs.close()
        ceiling.close()
    ours_rate = statistics.median(rates["shmenv.AsyncVectorEnv"])
    ours_cpu = statistics.median(cpus["shmenv.AsyncVectorEnv"])
    print(f"{args.env} x {n} envs, medians of {args.rounds} interleaved rounds "
          f"(load {os.getloadavg()[0]:.1f})")
    print(f"{'':>26}  {'env-steps/s':>11} {'shmenv/this':>11}  {'CPU µs/step':>11} "
          f"{'shmenv/this':>11}")
    for name in rates:
        rate, cpu = statistics.median(rates[name]), statistics.median(cpus[name])
        print(f"{name:>26}: {rate:11,.0f} {ours_rate / rate:10.2f}x  {cpu:11.2f} "
              f"{ours_cpu / cpu:10.2f}x")


if __name__ == "__main__":
    main()
