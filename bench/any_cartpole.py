"""CartPole-v1 x N envs: shmenv.AsyncVectorEnv vs gymnasium's AsyncVectorEnv and SyncVectorEnv.

    PYTHONPATH=. python bench/any_cartpole.py [--num-envs 64] [--steps 2000] [--repeats 5]

One run, the same env count and the same pre-drawn random actions for every contender;
each repeat times ``--steps`` synchronous steps after a warm-up, and the medians of the
repeats are compared as ratios (the machine is shared: absolute figures are noisy).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import shmenv


def env_steps_per_s(envs, actions: np.ndarray, steps: int, repeats: int) -> float:
    envs.reset(seed=0)
    for a in actions[:200]:  # warm-up
        envs.step(a)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for a in actions[:steps]:
            envs.step(a)
        rates.append(steps * envs.num_envs / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="shmenv,sync,async")
    args = parser.parse_args()
    fns = [lambda: gym.make("CartPole-v1") for _ in range(args.num_envs)]
    actions = np.random.default_rng(0).integers(0, 2, size=(args.steps, args.num_envs))
    makers = {
        "shmenv": lambda: shmenv.AsyncVectorEnv(fns),
        "sync": lambda: gym.vector.SyncVectorEnv(fns),
        "async": lambda: gym.vector.AsyncVectorEnv(fns),
    }
    rates = {}
    for name in args.only.split(","):
        envs = makers[name]()
        try:
            steps = args.steps if name != "async" else args.steps // 4
            rates[name] = env_steps_per_s(envs, actions, steps, args.repeats)
        finally:
            envs.close()
        print(f"{name:>7}: {rates[name]:10,.0f} env-steps/s", flush=True)
    if "shmenv" in rates:
        for other in ("sync", "async"):
            if other in rates:
                print(f"shmenv / {other}: {rates['shmenv'] / rates[other]:.2f}x")


if __name__ == "__main__":
    main()
