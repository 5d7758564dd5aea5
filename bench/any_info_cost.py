"""What an env's per-step info dict costs shmenv.AsyncVectorEnv: CPU µs per env-step of the
main process and of the workers, with the env's infos and with a wrapper that drops them.

    PYTHONPATH=. python bench/any_info_cost.py [--env HalfCheetah-v5] [--num-envs 64]

CPU time per env-step, unlike steps/s, barely depends on what else a shared machine runs,
so the two rows compare within one run. MuJoCo tasks return six floats of info every step;
CartPole returns none (its two rows should agree).
"""

from __future__ import annotations

import argparse
import resource
import time

import gymnasium as gym
import psutil

import shmenv


class DropInfo(gym.Wrapper):
    """The env with an empty info dict on every step."""

    def step(self, action):
        obs, reward, terminated, truncated, _info = self.env.step(action)
        return obs, reward, terminated, truncated, {}


def make(env_id: str, drop_info: bool) -> gym.Env:
    env = gym.make(env_id)
    return DropInfo(env) if drop_info else env


def cpu_per_step(env_id: str, num_envs: int, drop_info: bool, seconds: float) -> tuple:
    envs = shmenv.AsyncVectorEnv([lambda: make(env_id, drop_info)] * num_envs)
    try:
        envs.reset(seed=0)
        actions = envs.action_space.sample()
        for _ in range(50):
            envs.step(actions)
        workers = [psutil.Process(pid) for pid in envs.worker_pids]

        def cpu() -> tuple[float, float]:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            return (usage.ru_utime + usage.ru_stime,
                    sum(sum(w.cpu_times()[:2]) for w in workers))

        main0, workers0 = cpu()
        start, steps = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            envs.step(actions)
            steps += num_envs
        wall = time.perf_counter() - start
        main1, workers1 = cpu()
    finally:
        envs.close()
    return (steps / wall, 1e6 * (main1 - main0) / steps, 1e6 * (workers1 - workers0) / steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(f"{args.env} x {args.num_envs}: env-steps/s, CPU µs per env-step")
    for drop_info in (False, True):
        rate, main_us, worker_us = cpu_per_step(args.env, args.num_envs, drop_info,
                                                args.seconds)
        label = "infos dropped" if drop_info else "env's infos"
        print(f"  {label:14s} {rate:9,.0f} env-steps/s   main {main_us:5.1f} µs   "
              f"workers {worker_us:6.1f} µs")


if __name__ == "__main__":
    main()
