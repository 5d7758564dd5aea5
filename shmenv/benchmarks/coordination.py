"""Coordination cost: what the main process pays per env-step when the game costs nothing.

A zero-cost game (:mod:`shmenv.benchmarks.nullgame`) runs through shmenv and through
gymnasium's ``AsyncVectorEnv(shared_memory=True)``. With no emulation to wait for, the main
process's CPU µs per env-step is the price of coordinating one env-step; its inverse is the
most env-steps/s one main process can drive, and dividing that by one core's Breakout rate
says how many cores of Breakout it can keep fed. shmenv is measured twice: with its default
one worker per core (here: few workers, many envs each) and with one env per worker, the
message count a machine with as many cores as envs would see.
"""

from __future__ import annotations

import time

from shmenv.benchmarks import report
from shmenv.benchmarks.harness import (
    ActionCycle,
    MemorySampler,
    SubprocessError,
    action_stream,
    run_isolated,
    time_step_loop,
)
from shmenv.benchmarks.nullgame import NUM_ACTIONS

_MODULE = "shmenv.benchmarks.coordination"
CONTENDERS = {
    "shmenv": "shmenv (cores workers)",
    "shmenv-1-per-worker": "shmenv (1 env per worker)",
    "gymnasium": "gymnasium Async(shared_memory)",
}


def measure_zero_cost(contender: str, num_envs: int, seconds: float, warmup: float,
                      seed: int = 0) -> dict:
    """Runs in a fresh subprocess: one contender over the zero-cost game."""
    with MemorySampler() as sampler:
        if contender.startswith("shmenv"):
            from shmenv.benchmarks.nullgame import NullGame
            from shmenv.vector import ShmVectorEnv

            # Default: one worker per core. One env per worker is what a machine with as
            # many cores as envs would run: the most messages per env-step.
            workers = num_envs if contender == "shmenv-1-per-worker" else None
            env = ShmVectorEnv("Breakout", num_envs, seed=seed, num_workers=workers,
                               game_factory=NullGame)
        elif contender == "gymnasium":
            from gymnasium.vector import AsyncVectorEnv

            from shmenv.benchmarks.nullgame import NullEnv

            env = AsyncVectorEnv([NullEnv] * num_envs, shared_memory=True)
        else:
            raise ValueError(f"unknown contender {contender!r}")
        try:
            env.reset(seed=seed)
            cycle = ActionCycle(action_stream(seed, num_envs, NUM_ACTIONS))
            result = time_step_loop(lambda: env.step(cycle.next()), num_envs, warmup, seconds,
                                    sampler)
        finally:
            env.close()
    return {**result.as_dict(), "workers": getattr(env, "num_workers", num_envs)}


def measure_core_rate(game: str = "Breakout", seconds: float = 3.0, seed: int = 47) -> dict:
    """One core's Breakout rate: env-steps per CPU-second of shmenv's game core in one
    process (CPU time, not wall time, so a busy machine does not lower it)."""
    import cv2
    import numpy as np

    from shmenv.atari import AtariGame

    cv2.setNumThreads(1)
    games = [AtariGame(game, seed + i) for i in range(4)]
    actions = np.random.default_rng(seed).integers(0, games[0].num_actions, (4096, 4))
    cpu0, wall0, steps = time.process_time(), time.perf_counter(), 0
    while time.perf_counter() - wall0 < seconds:
        for game_, action in zip(games, actions[steps % 4096]):
            _r, terminated, truncated = game_.step(int(action))
            if terminated or truncated:
                game_.reset()
        steps += 1
    return {"steps_per_cpu_s": 4 * steps / (time.process_time() - cpu0)}


def run(env_counts: list[int] = (8, 32, 64), seconds: float = 3.0, rounds: int = 3,
        warmup: float = 1.0, show_progress: bool = True) -> dict:
    runs = {(c, n): [] for n in env_counts for c in CONTENDERS}
    failures: dict[str, str] = {}
    bar = report.progress() if show_progress else None
    if bar:
        bar.start()
        task = bar.add_task("coordination", total=rounds * len(runs) + 1)
    try:
        for r in range(rounds):
            for (contender, num_envs), measured in runs.items():
                if bar:
                    bar.update(task, description=f"round {r + 1}/{rounds}: {contender} "
                                                 f"× {num_envs}")
                try:
                    measured.append(run_isolated(
                        f"{_MODULE}:measure_zero_cost",
                        {"contender": contender, "num_envs": num_envs, "seconds": seconds,
                         "warmup": warmup}))
                except SubprocessError as exc:
                    failures[f"{contender}/{num_envs}"] = str(exc)
                if bar:
                    bar.advance(task)
        core = run_isolated(f"{_MODULE}:measure_core_rate", {})
        if bar:
            bar.advance(task)
    finally:
        if bar:
            bar.stop()

    rows = []
    for (contender, num_envs), measured in runs.items():
        if not measured:
            continue
        cpu = report.summarize([m["cpu_us_per_step"] for m in measured])
        rate = report.summarize([m["steps_per_s"] for m in measured])
        max_rate = 1e6 / cpu["median"]
        rows.append({
            "contender": contender, "label": CONTENDERS[contender], "num_envs": num_envs,
            "workers": measured[0]["workers"], "steps_per_s": rate, "cpu_us_per_step": cpu,
            "max_coordinated_steps_per_s": max_rate,
            "breakout_cores_fed": max_rate / core["steps_per_cpu_s"],
            "rounds": measured,
        })
    return {"benchmark": "coordination", "machine": report.machine_info(),
            "config": {"env_counts": list(env_counts), "seconds": seconds, "rounds": rounds,
                       "warmup": warmup},
            "breakout_steps_per_core_s": core["steps_per_cpu_s"],
            "rows": rows, "failures": failures}


def print_result(result: dict) -> None:
    rows = [[r["label"], str(r["num_envs"]), str(r["workers"]),
             f"{r['steps_per_s']['median']:,.0f}",
             f"{r['cpu_us_per_step']['median']:.1f} "
             f"({r['cpu_us_per_step']['min']:.1f}–{r['cpu_us_per_step']['max']:.1f})",
             f"{r['max_coordinated_steps_per_s']:,.0f}", f"{r['breakout_cores_fed']:,.0f}"]
            for r in result["rows"]]
    caption = (f"One core runs {result['breakout_steps_per_core_s']:,.0f} Breakout env-steps "
               "per CPU-second; cores fed = (1e6 / main µs) / that.")
    for name, reason in result["failures"].items():
        caption += f"\n{name} failed: {reason}"
    report.print_table("Coordination cost, zero-cost game (main-process CPU per env-step)",
                       ["contender", "envs", "workers", "steps/s", "main CPU µs/step",
                        "max steps/s one main", "Breakout cores fed"], rows, caption)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for contender, label in CONTENDERS.items():
        rows = [r for r in result["rows"] if r["contender"] == contender]
        if not rows:
            continue
        xs = [r["num_envs"] for r in rows]
        med = [r["cpu_us_per_step"]["median"] for r in rows]
        err = [[m - r["cpu_us_per_step"]["min"] for m, r in zip(med, rows)],
               [r["cpu_us_per_step"]["max"] - m for m, r in zip(med, rows)]]
        ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=label)
        for x, m in zip(xs, med):
            ax.annotate(f"{m:.1f}", (x, m), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(result["config"]["env_counts"], [str(n) for n in
                                                   result["config"]["env_counts"]])
    ax.set_xlabel("envs")
    ax.set_ylabel("main-process CPU µs per env-step")
    ax.set_title("Coordination cost with a zero-cost game (lower is better)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
