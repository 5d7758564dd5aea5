"""CPU µs per env-step (main + workers) of shmenv.AsyncVectorEnv, gymnasium's vector envs
and the no-coordination ceiling, for any registered env.

    PYTHONPATH=. python bench/any_cpu.py [--env CartPole-v1] [--num-envs 64] [--steps 300]
                                         [--rounds 5]

On a shared, loaded machine the env-steps per second of a contender swing with the load;
the CPU it spends per env-step (every process of it: the main process and its workers,
read from ``/proc/PID/task/*/schedstat``) is the steadier figure. All contenders are built
first, then measured in interleaved rounds; the medians over the rounds are printed, with
each contender's CPU per env-step as a ratio of the ceiling's. The ceiling is one process
per core, each stepping its contiguous share of the envs in a plain loop (resetting an env
in the step that ends its episode), started together once per round.
"""

from __future__ import annotations

import argparse
import ast
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


def _ceiling_worker(conn: Connection, env_id: str, count: int, actions: np.ndarray,
                    lockstep: bool) -> None:
    """Step ``count`` envs through ``actions`` rows on each command and reply its CPU
    seconds; in lockstep, wait for a byte before each row and answer it with one."""
    envs = [gym.make(env_id) for _ in range(count)]
    for k, env in enumerate(envs):
        env.reset(seed=k)
    while True:
        steps = conn.recv()
        if steps is None:
            return
        cpu = time.process_time()
        for row in actions[:steps]:
            if lockstep:
                conn.recv_bytes()
            for env, action in zip(envs, row):
                _obs, _reward, terminated, truncated, _info = env.step(action)
                if terminated or truncated:
                    env.reset()
            if lockstep:
                conn.send_bytes(b"")
        conn.send(time.process_time() - cpu)


class Ceiling:
    """One process per core stepping its share of the envs, no main process in the loop;
    in ``lockstep``, the main sends every process a byte per step and waits for its
    answer: the least any synchronous vector env of these processes costs."""

    def __init__(self, env_id: str, num_envs: int, actions: np.ndarray,
                 lockstep: bool = False) -> None:
        self.lockstep = lockstep
        workers = min(num_envs, os.cpu_count() or 1)
        bounds = np.linspace(0, num_envs, workers + 1).astype(int)
        self.conns, self.procs = [], []
        for start, stop in zip(bounds[:-1], bounds[1:]):
            ours, theirs = mp.Pipe()
            proc = mp.Process(target=_ceiling_worker,
                              args=(theirs, env_id, stop - start, actions[:, start:stop],
                                    lockstep))
            proc.start()
            self.conns.append(ours)
            self.procs.append(proc)

    def run(self, steps: int) -> tuple[float, float]:
        """(wall seconds, CPU seconds of all its processes) of ``steps`` steps."""
        start, main_cpu = time.perf_counter(), time.process_time()
        for conn in self.conns:
            conn.send(steps)
        for _ in range(steps if self.lockstep else 0):
            for conn in self.conns:
                conn.send_bytes(b"s")
            for conn in self.conns:
                conn.recv_bytes()
        cpu = sum(conn.recv() for conn in self.conns)
        if self.lockstep:
            cpu += time.process_time() - main_cpu
        return time.perf_counter() - start, cpu

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            conn.send(None)
            proc.join()


def _cpu(procs: list[psutil.Process]) -> float:
    """CPU seconds of ``procs`` (every thread), to the ns: ``/proc/PID/task/*/schedstat``
    (``cpu_times`` counts in 10 ms ticks, too coarse for rounds of a fraction of a second)."""
    total = 0
    for proc in procs:
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
    return total * 1e-9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-gym-async", action="store_true")
    parser.add_argument("--variant", action="append", default=[],
                        help="also measure shmenv with these keyword arguments, as "
                             "'worker_spin_us=0,relay_fanout=0' (repeatable)")
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
    for variant in args.variant:
        kwargs = {key: ast.literal_eval(value) for key, value in
                  (item.split("=") for item in variant.split(","))}
        build(f"shmenv {variant}", lambda kwargs=kwargs: shmenv.AsyncVectorEnv(fns, **kwargs))
    build("gymnasium SyncVectorEnv", lambda: gym.vector.SyncVectorEnv(fns))
    if not args.no_gym_async:
        build("gymnasium AsyncVectorEnv", lambda: gym.vector.AsyncVectorEnv(fns))
    ceilings = {"ceiling": Ceiling(args.env, n, actions),
                "lockstep ceiling": Ceiling(args.env, n, actions, lockstep=True)}
    rates: dict[str, list[float]] = {name: [] for name in [*contenders, *ceilings]}
    cpus: dict[str, list[float]] = {name: [] for name in rates}
    main_cpus: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for envs, _procs in contenders.values():
            envs.reset(seed=0)
            for a in actions[:30]:
                envs.step(a)
        for ceiling in ceilings.values():
            ceiling.run(30)
        for _ in range(args.rounds):
            for name, (envs, procs) in contenders.items():
                steps = args.steps if "gymnasium Async" not in name else args.steps // 4
                main, cpu, start = _cpu(procs[:1]), _cpu(procs), time.perf_counter()
                for a in actions[:steps]:
                    envs.step(a)
                wall, cpu = time.perf_counter() - start, _cpu(procs) - cpu
                rates[name].append(steps * n / wall)
                cpus[name].append(cpu / (steps * n) * 1e6)
                main_cpus[name].append((_cpu(procs[:1]) - main) / (steps * n) * 1e6)
            for name, ceiling in ceilings.items():
                wall, cpu = ceiling.run(args.steps)
                rates[name].append(args.steps * n / wall)
                cpus[name].append(cpu / (args.steps * n) * 1e6)
    finally:
        for envs, _procs in contenders.values():
            envs.close()
        for ceiling in ceilings.values():
            ceiling.close()
    ours_rate = statistics.median(rates["shmenv.AsyncVectorEnv"])
    ours_cpu = statistics.median(cpus["shmenv.AsyncVectorEnv"])
    print(f"{args.env} x {n} envs, medians of {args.rounds} interleaved rounds "
          f"(load {os.getloadavg()[0]:.1f})")
    print(f"{'':>36}  {'env-steps/s':>11} {'shmenv/this':>11}  {'CPU µs/step':>11} "
          f"{'shmenv/this':>11}  {'of it main':>10}")
    for name in rates:
        rate, cpu = statistics.median(rates[name]), statistics.median(cpus[name])
        main = f"{statistics.median(main_cpus[name]):10.2f}" if name in main_cpus else ""
        print(f"{name:>36}: {rate:11,.0f} {ours_rate / rate:10.2f}x  {cpu:11.2f} "
              f"{ours_cpu / cpu:10.2f}x  {main}")


if __name__ == "__main__":
    main()
