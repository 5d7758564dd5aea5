"""Breakout throughput: sync step vs async batches, and unpinned vs pinned workers.

Contenders run in interleaved rounds (A B C D, A B C D, ...) so that the machine's load
drifts over all of them alike; the table shows medians and min-max, and ratios to sync.

    PYTHONPATH=$PWD python bench/async_and_pinning.py                   # 16 envs, 3 rounds
    PYTHONPATH=$PWD python bench/async_and_pinning.py --num-envs 32 --seconds 5
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

import shmenv


def main_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_sync(env, seconds: float, rng: np.random.Generator) -> tuple[float, float]:
    n = env.num_envs
    env.reset()
    for _ in range(20):
        env.step(rng.integers(0, 4, n))
    env_steps, cpu0, start = 0, main_cpu_seconds(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(rng.integers(0, 4, n))
        env_steps += n
    return env_steps / (time.perf_counter() - start), \
        (main_cpu_seconds() - cpu0) / env_steps * 1e6


def run_async(env, seconds: float, rng: np.random.Generator) -> tuple[float, float]:
    k = env.batch_size
    _obs, infos = env.reset()
    for _ in range(20):
        infos = env.step(rng.integers(0, 4, k), infos["env_id"])[-1]
    env_steps, cpu0, start = 0, main_cpu_seconds(), time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.send(rng.integers(0, 4, k), infos["env_id"])
        infos = env.recv()[-1]
        env_steps += k
    return env_steps / (time.perf_counter() - start), \
        (main_cpu_seconds() - cpu0) / env_steps * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="per contender per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.num_envs
    contenders = {
        "sync": (dict(), run_sync),
        f"async batch_size={n // 2}": (dict(batch_size=n // 2), run_async),
        "sync, pinned": (dict(cpu_affinity=True), run_sync),
        f"async batch_size={n // 2}, pinned": (dict(batch_size=n // 2, cpu_affinity=True),
                                               run_async),
    }
    envs = {name: shmenv.make(args.game, n, seed=0, **kwargs)
            for name, (kwargs, _) in contenders.items()}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    try:
        for round_index in range(args.rounds):
            for name, (_kwargs, runner) in contenders.items():
                rng = np.random.default_rng(round_index)
                results[name].append(runner(envs[name], args.seconds, rng))
                print(f"round {round_index + 1}: {name:<32} {results[name][-1][0]:8.0f} "
                      "steps/s", flush=True)
    finally:
        for env in envs.values():
            env.close()

    base = statistics.median(r for r, _ in results["sync"])
    print(f"\n{args.game}, {n} envs, {args.rounds} interleaved rounds of {args.seconds:g} s")
    print(f"{'contender':<34} {'workers':>7} {'steps/s median':>15} {'min-max':>15} "
          f"{'vs sync':>8} {'main us/step':>13}")
    for name, rows in results.items():
        rates = [r for r, _ in rows]
        cost = statistics.median(c for _, c in rows)
        workers = envs[name].num_workers
        print(f"{name:<34} {workers:>7} {statistics.median(rates):>15,.0f} "
              f"{min(rates):>7,.0f}-{max(rates):<7,.0f} {statistics.median(rates) / base:>8.2f} "
              f"{cost:>13.2f}")


if __name__ == "__main__":
    main()
