"""CartPole-v1 x N envs: shmenv.AsyncVectorEnv vs gymnasium's AsyncVectorEnv and SyncVectorEnv.

    PYTHONPATH=. python bench/any_cartpole.py [--num-envs 64] [--steps 400] [--rounds 7]

One run, the same env count and the same pre-drawn random actions (a numpy array per
step) for every contender. All contenders are built first, then measured in interleaved
rounds (each times ``--steps`` synchronous steps; gymnasium's AsyncVectorEnv a quarter of
that), so a change in the shared machine's load hits them alike; the medians over the
rounds are compared as ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym

import shmenv


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--env", default="CartPole-v1")
    args = parser.parse_args()
    fns = [lambda: gym.make(args.env) for _ in range(args.num_envs)]
    contenders = {"shmenv.AsyncVectorEnv": shmenv.AsyncVectorEnv(fns),
                  "gymnasium SyncVectorEnv": gym.vector.SyncVectorEnv(fns),
                  "gymnasium AsyncVectorEnv": gym.vector.AsyncVectorEnv(fns)}
    space = contenders["gymnasium SyncVectorEnv"].action_space
    space.seed(0)
    actions = [space.sample() for _ in range(args.steps)]
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        for envs in contenders.values():
            envs.reset(seed=0)
            for a in actions[:50]:
                envs.step(a)
        for _ in range(args.rounds):
            for name, envs in contenders.items():
                steps = args.steps if "gymnasium Async" not in name else args.steps // 4
                start = time.perf_counter()
                for a in actions[:steps]:
                    envs.step(a)
                rates[name].append(steps * args.num_envs / (time.perf_counter() - start))
    finally:
        for envs in contenders.values():
            envs.close()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ours = medians["shmenv.AsyncVectorEnv"]
    print(f"{args.env} x {args.num_envs} envs, median of {args.rounds} interleaved rounds")
    for name, rate in medians.items():
        print(f"{name:>26}: {rate:10,.0f} env-steps/s   shmenv / this: {ours / rate:5.2f}x")


if __name__ == "__main__":
    main()
