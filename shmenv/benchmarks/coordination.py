"""Coordination cost: what the main process pays per env-step, on a zero-cost game.

A zero-cost game (:mod:`shmenv.fakegames`) runs through shmenv and through
gymnasium's ``AsyncVectorEnv(shared_memory=True)``. With no emulation to wait for, the main
process's CPU µs per env-step is the price of coordinating one env-step; its inverse is the
most env-steps/s one main process can drive, and dividing that by one core's Breakout rate
says how many cores of Breakout it can keep fed. shmenv is measured with its default
one worker per core and with one env per worker, the message count a machine with as many
cores as envs would see. Flags add rows: ``--workers`` (other worker counts), ``--direct``
(no relay tree: the main talks to every worker itself), ``--async`` (batches of half the
envs), ``--breakout`` (the real game at 64 envs) and ``--cpu-affinity`` (pinned workers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shmenv.benchmarks import report
from shmenv.benchmarks.harness import (
    ActionCycle,
    Job,
    MemorySampler,
    action_stream,
    run_rounds,
    step_function,
    time_step_loop,
)
from shmenv.fakegames import NUM_ACTIONS

_MODULE = "shmenv.benchmarks.coordination"
BREAKOUT_ENVS = 64


@dataclass(frozen=True)
class Row:
    """One configuration measured: which vector env, which game, how it is set up."""

    contender: str  # "shmenv" or "gymnasium"
    num_envs: int
    breakout: bool = False  # the real game instead of the zero-cost one
    num_workers: int | None = None  # None: shmenv's default (one per core)
    direct: bool = False  # relay_fanout=0
    async_batch: bool = False  # batch_size = num_envs // 2, send/recv
    cpu_affinity: bool = False

    @property
    def label(self) -> str:
        if self.contender == "gymnasium":
            return "gymnasium Async(shared_memory)"
        parts = ["shmenv"]
        if self.num_workers is None:
            parts.append("cores workers")
        elif self.num_workers == self.num_envs:
            parts.append("1 env per worker")
        else:
            parts.append(f"{self.num_workers} workers")
        parts += [name for flag, name in ((self.direct, "direct"),
                                          (self.async_batch, "async n/2"),
                                          (self.cpu_affinity, "pinned")) if flag]
        return ("Breakout, " if self.breakout else "") + ", ".join(parts)


def plan_rows(env_counts: Sequence[int], workers: Sequence[int] = (), direct: bool = False,
              async_batch: bool = False, breakout: bool = False, cpu_affinity: bool = False,
              cores: int | None = None) -> list[Row]:
    """The rows a run measures: for each env count shmenv (default workers, 1 env per worker,
    each extra worker count) and gymnasium; ``direct`` doubles every shmenv sync row."""
    cores = cores or os.cpu_count() or 1
    rows: list[Row] = []

    def shmenv_rows(num_envs: int, breakout: bool) -> None:
        counts: list[int | None] = [None] if breakout else [None, num_envs]
        counts += [w for w in workers if w <= num_envs and w != min(num_envs, cores)
                   and w not in counts]
        for count in counts:
            for relay_off in ((False, True) if direct else (False,)):
                rows.append(Row("shmenv", num_envs, breakout, count, relay_off,
                                cpu_affinity=cpu_affinity))

    for num_envs in env_counts:
        shmenv_rows(num_envs, False)
        if async_batch and num_envs >= 2:
            rows.append(Row("shmenv", num_envs, async_batch=True, cpu_affinity=cpu_affinity))
        rows.append(Row("gymnasium", num_envs))
    if breakout:
        shmenv_rows(BREAKOUT_ENVS, True)
    return rows


def measure_row(row: dict, seconds: float, warmup: float, seed: int = 0) -> dict:
    """Runs in a fresh subprocess: one row's vector env, stepped for ``seconds``."""
    spec = Row(**row)
    batch = spec.num_envs // 2 if spec.async_batch else spec.num_envs
    env: Any
    with MemorySampler() as sampler:
        if spec.contender == "shmenv":
            import shmenv
            from shmenv.fakegames import NullGame

            options: dict[str, Any] = {"num_workers": spec.num_workers,
                                       "cpu_affinity": spec.cpu_affinity, "batch_size": batch}
            if not spec.breakout:
                options["game_factory"] = NullGame
            if spec.direct:
                options["relay_fanout"] = 0
            env = shmenv.make("Breakout", spec.num_envs, seed=seed, **options)
        elif spec.contender == "gymnasium":
            from gymnasium.vector import AsyncVectorEnv

            from shmenv.fakegames import NullEnv

            env = AsyncVectorEnv([NullEnv] * spec.num_envs, shared_memory=True)
        else:
            raise ValueError(f"unknown contender {spec.contender!r}")
        try:
            _obs, infos = env.reset(seed=seed)
            cycle = ActionCycle(action_stream(seed, batch, NUM_ACTIONS))
            step = step_function(env, cycle, infos["env_id"] if spec.async_batch else None)
            result = time_step_loop(step, batch, warmup, seconds, sampler)
        finally:
            env.close()
    return {**result.as_dict(), "workers": getattr(env, "num_workers", spec.num_envs)}


def measure_core_rate(game: str = "Breakout", seconds: float = 1.0, seed: int = 47) -> dict:
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


CORE_RATE = "core rate"


def run(env_counts: Sequence[int] = (8, 32, 64), seconds: float = 3.0, rounds: int = 3,
        warmup: float = 1.0, workers: Sequence[int] = (), direct: bool = False,
        async_batch: bool = False, breakout: bool = False, cpu_affinity: bool = False,
        show_progress: bool = True) -> dict:
    rows = plan_rows(env_counts, workers, direct, async_batch, breakout, cpu_affinity)
    jobs = [Job(row, f"{row.label} × {row.num_envs}", f"{_MODULE}:measure_row",
                {"row": asdict(row), "seconds": seconds, "warmup": warmup}) for row in rows]
    jobs.append(Job(CORE_RATE, "one core's Breakout rate", f"{_MODULE}:measure_core_rate", {}))
    measured = run_rounds(jobs, rounds, show_progress, title="coordination")
    core_rates = measured.results[CORE_RATE]
    core = report.summarize([m["steps_per_cpu_s"] for m in core_rates])["median"] \
        if core_rates else None

    out_rows = []
    for row in rows:
        runs = measured.results[row]
        if not runs:
            continue
        cpu = report.summarize([m["cpu_us_per_step"] for m in runs])
        max_rate = 1e6 / cpu["median"]
        out_rows.append({
            **asdict(row), "label": row.label, "workers": runs[0]["workers"],
            "steps_per_s": report.summarize([m["steps_per_s"] for m in runs]),
            "cpu_us_per_step": cpu, "max_coordinated_steps_per_s": max_rate,
            "breakout_cores_fed": max_rate / core if core else None, "rounds": runs,
        })
    failures = {(k if isinstance(k, str) else f"{k.label} × {k.num_envs}"): v
                for k, v in measured.failures.items()}
    return {"benchmark": "coordination", "machine": report.machine_info(),
            "config": {"env_counts": list(env_counts), "seconds": seconds, "rounds": rounds,
                       "warmup": warmup, "workers": list(workers), "direct": direct,
                       "async_batch": async_batch, "breakout": breakout,
                       "cpu_affinity": cpu_affinity, "cores": os.cpu_count()},
            "breakout_steps_per_core_s": core, "rows": out_rows, "failures": failures}


def tables(result: dict) -> list[report.Table]:
    cfg = result["config"]
    rows = [[r["label"], str(r["num_envs"]), str(r["workers"]),
             f"{r['steps_per_s']['median']:,.0f}",
             f"{r['cpu_us_per_step']['median']:.1f} "
             f"({r['cpu_us_per_step']['min']:.1f}–{r['cpu_us_per_step']['max']:.1f})",
             f"{r['max_coordinated_steps_per_s']:,.0f}",
             "—" if r["breakout_cores_fed"] is None else f"{r['breakout_cores_fed']:,.0f}"]
            for r in result["rows"]]
    core = result["breakout_steps_per_core_s"]
    notes = [f"One core runs {core:,.0f} Breakout env-steps per CPU-second; "
             "cores fed = (1e6 / main µs) / that." if core else "one core's rate failed"]
    notes += [f"{name} failed: {reason}" for name, reason in result["failures"].items()]
    title = (f"Coordination cost, zero-cost game unless marked Breakout: main-process CPU per "
             f"env-step, {cfg['rounds']} interleaved rounds × {cfg['seconds']:g} s")
    return [report.Table(title, ["contender", "envs", "workers", "env-steps/s",
                                 "main CPU µs/step (min–max)", "max env-steps/s one main",
                                 "Breakout cores fed"], rows, notes)]


def print_result(result: dict) -> None:
    report.print_tables(tables(result))


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels = dict.fromkeys(r["label"] for r in result["rows"] if not r.get("breakout"))
    for label in labels:
        rows = [r for r in result["rows"] if r["label"] == label]
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
