"""envpool against ``from shmenv import envpool`` at the same settings: agent steps/s of each,
and their ratio, in one run (a focused timing, < 1 min; not part of ``shmenv bench``).

CleanRL's settings (episodic_life, reward_clip, noop_max 30, fire reset), random actions,
synchronous steps; rounds interleave the two so that load from elsewhere hits both alike.

    python bench/envpool_switch.py [--num-envs 8] [--steps 300] [--rounds 3] [--task Breakout-v5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from shmenv import envpool as shm_envpool

OPTIONS = {"episodic_life": True, "reward_clip": True, "seed": 1}


def steps_per_s(make, task: str, num_envs: int, steps: int) -> float:
    """Agent steps/s of one env over ``steps`` synchronous steps after a warm-up."""
    env = make(task, num_envs=num_envs, **OPTIONS)
    try:
        env.reset()
        actions = np.random.default_rng(0).integers(0, env.action_space.n, (steps + 20, num_envs))
        for row in actions[:20]:
            env.step(row)
        started = time.perf_counter()
        for row in actions[20:]:
            env.step(row)
        return steps * num_envs / (time.perf_counter() - started)
    finally:
        env.close()


def main() -> None:
    import envpool

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task", default="Breakout-v5")
    args = parser.parse_args()
    contenders = {"envpool": envpool.make_gymnasium,
                  "shmenv.envpool": shm_envpool.make_gymnasium}
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, make in contenders.items():
            results[name].append(steps_per_s(make, args.task, args.num_envs, args.steps))
    medians = {name: float(np.median(values)) for name, values in results.items()}
    print(f"{args.task}, {args.num_envs} envs, {args.steps} steps x {args.rounds} rounds, "
          f"{OPTIONS}")
    for name, median in medians.items():
        runs = ", ".join(f"{value:,.0f}" for value in results[name])
        print(f"  {name:15s} median {median:8,.0f} agent steps/s  (runs: {runs})")
    print(f"  shmenv.envpool / envpool = {medians['shmenv.envpool'] / medians['envpool']:.2f}")


if __name__ == "__main__":
    main()
