"""RayVectorEnv vs a plain ShmVectorEnv with the same envs, on a local Ray cluster.

Run from the repository root:  PYTHONPATH=$PWD python bench/ray_compare.py

Contenders, all alive at once and timed in interleaved rounds (A, B, C, A, B, C, ...) so
that the machine's background load hits them alike; report the ratios, not the absolute
figures, on a shared machine:

* ``shm``        ShmVectorEnv, ``k*m`` envs, ``k*m`` workers, one process tree;
* ``ray-sync``   RayVectorEnv, k actors x m envs (m workers each): ``step()``;
* ``ray-async``  the same env driven by ``send``/``recv`` (each actor restarted as soon as
  its results are in).

Each runs Breakout (real work) and a zero-cost game (only coordination). With the
zero-cost game the difference in wall time per step between ``ray-sync`` and ``shm`` is
the per-step overhead Ray adds; ``driver CPU`` is the learner process's own CPU per step.
A third figure, ``bare``, is k Ray actors that do nothing but return an obs-sized array:
the floor of one Ray round trip.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np
import ray

import shmenv
import shmenv.ray as shmenv_ray
from shmenv.fakegames import NullGame

# Importable by reference inside the Ray actors' spawned workers (a script's classes are not).
ZeroGame = functools.partial(NullGame, episode_steps=500)


@ray.remote(num_cpus=0)
class BareActor:
    """Returns an obs-sized batch per call: one Ray round trip with no env behind it."""

    def __init__(self, num_envs: int) -> None:
        self.obs = np.zeros((num_envs, 4, 84, 84), dtype=np.uint8)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.obs, np.zeros(len(actions))


def run_sync(env, actions: np.ndarray) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for step_actions in actions:
        env.step(step_actions)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_async(env, actions: np.ndarray) -> tuple[float, float]:
    """As many env-steps as ``run_sync`` does, actors restarted as they finish."""
    target = actions.size
    served = 0
    wall, cpu = time.perf_counter(), time.process_time()
    env.send(actions[0])
    while served < target:
        _, _, _, _, infos = env.recv()
        env_ids = infos["env_id"]
        served += len(env_ids)
        env.send(actions[0, env_ids], env_ids)
    while env._in_flight:
        env.recv()
    return time.perf_counter() - wall, time.process_time() - cpu


def run_bare(actors, actions: np.ndarray, m: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for step_actions in actions:
        refs = [actor.step.remote(step_actions[j * m:(j + 1) * m])
                for j, actor in enumerate(actors)]
        results = ray.get(refs)
        np.concatenate([obs for obs, _ in results])
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--envs-per-actor", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="steps per round (Breakout)")
    parser.add_argument("--zero-steps", type=int, default=1000, help="steps per round (zero)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    k, m = args.actors, args.envs_per_actor
    n = k * m

    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2 * n, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 2**20)
    print(f"ray.init: {time.perf_counter() - t0:.1f} s", flush=True)

    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for game_name, factory, steps in (("Breakout", None, args.steps),
                                      ("zero-cost", ZeroGame, args.zero_steps)):
        extra = {} if factory is None else {"game_factory": factory}
        t0 = time.perf_counter()
        shm_env = shmenv.make("Breakout", n, seed=1, num_workers=n, **extra)
        t_shm = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray_env = shmenv_ray.make("Breakout", n, num_actors=k, seed=1, **extra)
        t_ray = time.perf_counter() - t0
        print(f"{game_name}: start-up ShmVectorEnv {t_shm:.1f} s, RayVectorEnv {t_ray:.1f} s",
              flush=True)
        bare = [BareActor.remote(m) for _ in range(k)]
        ray.get([actor.step.remote(np.zeros(m)) for actor in bare])
        shm_env.reset()
        ray_env.reset()
        actions = np.random.default_rng(0).integers(0, 4, size=(steps, n))
        run_sync(shm_env, actions[:20])  # warm-up
        run_sync(ray_env, actions[:20])
        contenders = [("shm", run_sync, shm_env), ("ray-sync", run_sync, ray_env),
                      ("ray-async", run_async, ray_env)]
        if factory is not None:
            contenders.append(("bare", lambda actors, acts: run_bare(actors, acts, m), bare))
        for _ in range(args.rounds):
            for name, run, target in contenders:
                wall, cpu = run(target, actions)
                results.setdefault((game_name, name), []).append((wall, cpu, steps))
        shm_env.close()
        ray_env.close()
        for actor in bare:
            ray.kill(actor)

    print(f"\n{k} actors x {m} envs vs ShmVectorEnv({n} envs, {n} workers); "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'game':<10} {'contender':<10} {'env-steps/s':>12} {'vs shm':>7} "
          f"{'wall/step':>10} {'driver CPU/step':>16}")
    for game_name in ("Breakout", "zero-cost"):
        base = None
        for name in ("shm", "ray-sync", "ray-async", "bare"):
            rows = results.get((game_name, name))
            if not rows:
                continue
            wall = statistics.median(w / s for w, _, s in rows)
            cpu = statistics.median(c / s for _, c, s in rows)
            rate = n / wall
            base = base or rate
            print(f"{game_name:<10} {name:<10} {rate:>12.0f} {rate / base:>7.2f} "
                  f"{wall * 1e6:>8.0f}us {cpu * 1e6:>14.0f}us")
    ray.shutdown()


if __name__ == "__main__":
    main()
