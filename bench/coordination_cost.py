"""Main-process CPU per env-step: what one shmenv main process costs to coordinate its envs.

With the zero-cost :class:`shmenv.benchmarks.nullgame.NullGame` every microsecond the main
process spends is coordination (validate, send, wait, read replies, build outputs). The
main's CPU is read with ``resource.getrusage(RUSAGE_SELF)`` (user + system; the workers are
children and not counted), so sleeping in the kernel costs nothing and spinning would show.

    PYTHONPATH=$PWD python bench/coordination_cost.py                # NullGame table
    PYTHONPATH=$PWD python bench/coordination_cost.py --breakout     # + Breakout rows
    PYTHONPATH=$PWD python bench/coordination_cost.py --async --gymnasium
    PYTHONPATH=$PWD python bench/coordination_cost.py --breakout --direct  # relay vs not

Rows: 8/32/64 envs with the default workers (min(envs, cores)) and with 8 workers
(``--workers`` changes the extra counts, ``--envs`` the env counts);
``--async`` adds batch_size = envs/2 rows (send/recv), ``--gymnasium`` adds gymnasium's
AsyncVectorEnv(shared_memory=True) over a zero-cost env with the same observation.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

import shmenv
from shmenv.benchmarks.nullgame import NullEnv, NullGame

BREAKOUT_STEPS_PER_CORE = 630  # DESIGN.md §3: ~1260 agent steps/s on 2 cores, no coordination


def main_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


ACTION_ROWS = 4096


def action_stream(num_envs: int, seed: int = 0) -> np.ndarray:
    """The seeded random actions every row replays (cycling). Random, not all-NOOP: in
    Breakout NOOP never launches the ball, so no episode would ever end and the main's
    episode-end work (statistics, ``final_obs`` copies) would never be measured."""
    return np.random.default_rng(seed).integers(0, 4, size=(ACTION_ROWS, num_envs))


def measure_sync(env, seconds: float) -> tuple[float, float]:
    """(main CPU µs per env-step, env-steps/s) of ``env.step`` over ``seconds``."""
    stream = action_stream(env.num_envs)
    env.reset(seed=0)
    for row in range(50):
        env.step(stream[row])
    steps = 0
    cpu0, wall0 = main_cpu_seconds(), time.perf_counter()
    deadline = wall0 + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            env.step(stream[steps % ACTION_ROWS])
            steps += 1
    cpu, wall = main_cpu_seconds() - cpu0, time.perf_counter() - wall0
    env_steps = steps * env.num_envs
    return cpu / env_steps * 1e6, env_steps / wall


def measure_async(env, seconds: float) -> tuple[float, float]:
    """The same for envpool-style ``send``/``recv`` with ``env.batch_size``."""
    stream = action_stream(env.batch_size)
    _obs, infos = env.reset(seed=0)
    for row in range(50):
        infos = env.step(stream[row], infos["env_id"])[-1]
    env_steps = rounds = 0
    cpu0, wall0 = main_cpu_seconds(), time.perf_counter()
    deadline = wall0 + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            env.send(stream[rounds % ACTION_ROWS], infos["env_id"])
            infos = env.recv()[-1]
            rounds += 1
        env_steps += 20 * env.batch_size
    cpu, wall = main_cpu_seconds() - cpu0, time.perf_counter() - wall0
    return cpu / env_steps * 1e6, env_steps / wall


def measure_gymnasium(num_envs: int, seconds: float) -> tuple[float, float]:
    import gymnasium as gym

    env = gym.vector.AsyncVectorEnv([NullEnv] * num_envs, shared_memory=True)
    env.num_workers = num_envs
    try:
        return measure_sync(env, seconds)
    finally:
        env.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="8,32,64", help="comma-separated env counts")
    parser.add_argument("--seconds", type=float, default=2.0, help="per row")
    parser.add_argument("--breakout", action="store_true", help="add Breakout rows (64 envs)")
    parser.add_argument("--async", dest="batches", action="store_true",
                        help="add async rows with batch_size = envs / 2")
    parser.add_argument("--gymnasium", action="store_true",
                        help="add gymnasium AsyncVectorEnv rows (zero-cost env)")
    parser.add_argument("--workers", default="8",
                        help="comma-separated worker counts to run besides the default "
                             "min(envs, cores), e.g. 8,64,256 for a many-worker picture")
    parser.add_argument("--cpu-affinity", action="store_true", help="pin workers")
    parser.add_argument("--direct", action="store_true",
                        help="add sync rows with relay_fanout=0: the main writes to and reads "
                             "from every worker itself (shmenv before relayed steps)")
    args = parser.parse_args(argv)
    env_counts = [int(n) for n in args.envs.split(",")]
    worker_counts = [int(n) for n in args.workers.split(",") if n]
    cores = os.cpu_count() or 1

    rows: list[tuple[str, int, int | str, float, float]] = []

    def run(label: str, num_envs: int, **kwargs) -> None:
        batch_size = kwargs.get("batch_size")
        with shmenv.make("Breakout", num_envs, cpu_affinity=args.cpu_affinity,
                         **kwargs) as env:
            measure = measure_async if batch_size else measure_sync
            cost, rate = measure(env, args.seconds)
            rows.append((label, num_envs, env.num_workers, cost, rate))
        print(f"  {label:<26} {num_envs:>4} envs {rows[-1][2]:>3} workers: {cost:6.2f} us",
              file=sys.stderr, flush=True)

    for num_envs in env_counts:
        run("NullGame sync", num_envs, game_factory=NullGame)
        if args.direct:
            run("NullGame sync, direct", num_envs, game_factory=NullGame, relay_fanout=0)
        for workers in worker_counts:
            if workers > num_envs or workers == min(num_envs, cores):  # or the default again
                continue
            run("NullGame sync", num_envs, game_factory=NullGame, num_workers=workers)
            if args.direct:
                run("NullGame sync, direct", num_envs, game_factory=NullGame,
                    num_workers=workers, relay_fanout=0)
        if args.batches:
            run("NullGame async (n/2)", num_envs, game_factory=NullGame,
                batch_size=num_envs // 2)
        if args.gymnasium:
            cost, rate = measure_gymnasium(num_envs, args.seconds)
            rows.append(("gymnasium Async (zero-cost)", num_envs, num_envs, cost, rate))
    if args.breakout:
        for workers in (None, 8):
            run("Breakout sync", 64, num_workers=workers)
            if args.direct:
                run("Breakout sync, direct", 64, num_workers=workers, relay_fanout=0)

    print(f"\nMain-process CPU per env-step ({cores} cores; getrusage user+sys of the main)\n")
    print(f"{'contender':<28} {'envs':>5} {'workers':>8} {'main us/env-step':>17} "
          f"{'env-steps/s':>12} {'main-bound steps/s':>19} {'Breakout cores fed':>19}")
    for label, num_envs, workers, cost, rate in rows:
        ceiling = 1e6 / cost
        print(f"{label:<28} {num_envs:>5} {workers:>8} {cost:>17.2f} {rate:>12,.0f} "
              f"{ceiling:>19,.0f} {ceiling / BREAKOUT_STEPS_PER_CORE:>19,.0f}")
    print(f"\nmain-bound steps/s = 1e6 / (main us per env-step): what one main process could "
          f"coordinate at 100% of a core.\nBreakout cores fed = that / "
          f"{BREAKOUT_STEPS_PER_CORE} steps/s per core (DESIGN.md §3).")


if __name__ == "__main__":
    main()
