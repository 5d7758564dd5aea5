"""Soak: step a ShmVectorEnv for a long time and check that no process's memory grows.

    python bench/soak.py                          # 1M env-steps of real Breakout
    python bench/soak.py --fake --env-steps 200000 --json   # the CI soak (tests/)

RSS of the main process and of every worker is read after a warm-up (10% of the steps)
and at the end; growth above 5% in any process fails the run (exit code 1). ``--fake``
replaces the emulator with shmenv.fakegames.CounterGame, so that the run measures
shmenv's own machinery (block, pipes, replies, autoreset, final_obs, infos) quickly.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import numpy as np
import psutil

import shmenv

MAX_GROWTH = 0.05


def rss_by_process(env: shmenv.ShmVectorEnv) -> dict[str, int]:
    sizes = {"main": psutil.Process().memory_info().rss}
    for index, pid in enumerate(env.worker_pids):
        sizes[f"worker{index}"] = psutil.Process(pid).memory_info().rss
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--env-steps", type=int, default=1_000_000)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--fake", action="store_true", help="CounterGame instead of ALE")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()

    options = {}
    if args.fake:
        from shmenv.fakegames import CounterGame

        options["game_factory"] = functools.partial(CounterGame, episode_steps=37)
    env = shmenv.make(args.game, args.num_envs, num_workers=args.num_workers, seed=0,
                      **options)
    steps = -(-args.env_steps // args.num_envs)
    warmup = max(steps // 10, 1)
    rng = np.random.default_rng(0)
    num_actions = env.single_action_space.n
    action_batches = rng.integers(0, num_actions, size=(997, args.num_envs))
    episodes = 0
    env.reset()
    start = time.perf_counter()
    for t in range(steps):
        if t == warmup:
            baseline = rss_by_process(env)
            warm_start = time.perf_counter()
        _obs, _rewards, _terms, _truncs, infos = env.step(action_batches[t % 997])
        if "_episode" in infos:
            episodes += int(infos["_episode"].sum())
        if not args.json and t and t % max(steps // 20, 1) == 0:
            rate = t * args.num_envs / (time.perf_counter() - start)
            print(f"{t * args.num_envs:>10,} env-steps  {rate:8.0f}/s  "
                  f"main RSS {psutil.Process().memory_info().rss / 2**20:.1f} MiB", flush=True)
    final = rss_by_process(env)
    elapsed = time.perf_counter() - warm_start
    env.close()
    growth = {name: (final[name] - baseline[name]) / baseline[name] for name in baseline}
    result = {
        "env_steps": steps * args.num_envs, "episodes": episodes, "fake": args.fake,
        "env_steps_per_s": round((steps - warmup) * args.num_envs / elapsed),
        "rss_baseline_mib": {k: round(v / 2**20, 2) for k, v in baseline.items()},
        "rss_final_mib": {k: round(v / 2**20, 2) for k, v in final.items()},
        "rss_growth": {k: round(v, 5) for k, v in growth.items()},
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    worst = max(growth.values())
    if worst >= MAX_GROWTH:
        print(f"FAIL: RSS grew {worst:.1%} (limit {MAX_GROWTH:.0%})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
