"""Start-up: seconds from ``make()`` to ``reset()`` returned, each in a fresh subprocess.

Library imports happen before the clock starts (reported separately): a training script
pays them once whatever the env count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from shmenv.benchmarks import report
from shmenv.benchmarks.harness import Job, run_rounds
from shmenv.benchmarks.throughput import _missing

_MODULE = "shmenv.benchmarks.startup"
CONTENDERS = {
    "shmenv": ("shmenv", None),
    "gymnasium": ("gymnasium Async(shared_memory)", None),
    "envpool": ("envpool", "envpool"),
    "ale-vector": ("ale_py vector", "ale_py.vector_env"),
}


def measure_startup(contender: str, game: str, num_envs: int, seed: int = 47) -> dict:
    """Runs in a fresh subprocess."""
    from functools import partial

    from shmenv.benchmarks import contenders as c

    make: Callable[[], Any]
    t_import = time.perf_counter()
    if contender == "shmenv":
        import shmenv

        make = partial(shmenv.make, game, num_envs, seed=seed)
    elif contender == "gymnasium":
        import ale_py  # noqa: F401  (imported now so the clock below excludes it)
        from gymnasium.vector import AsyncVectorEnv

        make = partial(AsyncVectorEnv, [partial(c.make_gym_atari, c.gym_atari_id(game))]
                       * num_envs, shared_memory=True)
    elif contender == "envpool":
        import envpool  # noqa: F401

        make = partial(c.make_envpool, game, num_envs, seed)
    elif contender == "ale-vector":
        import ale_py.vector_env  # noqa: F401

        make = partial(c.make_ale_vector, game, num_envs)
    else:
        raise ValueError(f"unknown contender {contender!r}")
    start = time.perf_counter()
    env = make()
    env.reset(seed=seed)
    ready = time.perf_counter()
    env.close()
    return {"seconds": ready - start, "import_seconds": start - t_import,
            "close_seconds": time.perf_counter() - ready}


def run(game: str = "Breakout", env_counts: Sequence[int] = (8, 32), rounds: int = 3,
        only: str | None = None, show_progress: bool = True) -> dict:
    names = list(CONTENDERS) if not only else [n.strip() for n in only.split(",")]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        raise ValueError(f"unknown contender(s) {unknown}; choose from {', '.join(CONTENDERS)}")
    requires = {n: CONTENDERS[n][1] for n in names}
    skipped = {n: f"{module} is not installed" for n, module in requires.items()
               if module and _missing(module)}
    keys = [(n, k) for k in env_counts for n in names if n not in skipped]
    jobs = [Job((name, num_envs), f"{name} × {num_envs}", f"{_MODULE}:measure_startup",
                {"contender": name, "game": game, "num_envs": num_envs})
            for name, num_envs in keys]
    measured = run_rounds(jobs, rounds, show_progress, title="startup")
    rows = [{"contender": name, "label": CONTENDERS[name][0], "num_envs": num_envs,
             "seconds": report.summarize([m["seconds"] for m in runs]),
             "import_seconds": report.summarize([m["import_seconds"] for m in runs]),
             "rounds": runs}
            for (name, num_envs) in keys if (runs := measured.results[(name, num_envs)])]
    failures = {f"{name}/{num_envs}": reason
                for (name, num_envs), reason in measured.failures.items()}
    return {"benchmark": "startup", "machine": report.machine_info(),
            "config": {"game": game, "env_counts": list(env_counts), "rounds": rounds},
            "rows": rows, "skipped": skipped, "failures": failures}


def tables(result: dict) -> list[report.Table]:
    rows = [[r["label"], str(r["num_envs"]), f"{r['seconds']['median']:.2f}",
             f"{r['seconds']['min']:.2f}–{r['seconds']['max']:.2f}",
             f"{r['import_seconds']['median']:.2f}"] for r in result["rows"]]
    notes = [f"{k} skipped: {v}" for k, v in result["skipped"].items()]
    notes += [f"{k} failed: {v}" for k, v in result["failures"].items()]
    cfg = result["config"]
    return [report.Table(f"Start-up, {cfg['game']}: make() to reset() returned, "
                         f"{cfg['rounds']} rounds, each in a fresh process",
                         ["contender", "envs", "seconds (median)", "min–max",
                          "imports s (excluded)"], rows, notes)]


def print_result(result: dict) -> None:
    report.print_tables(tables(result))


def plot(result: dict, path: str) -> None:
    rows = result["rows"]
    report.bar_plot(path, [f"{r['label']} × {r['num_envs']}" for r in rows],
                    [r["seconds"]["median"] for r in rows], [r["seconds"]["min"] for r in rows],
                    [r["seconds"]["max"] for r in rows],
                    "seconds from make() to reset() returned (lower is better)",
                    f"Start-up, {result['config']['game']}",
                    highlight=[r["contender"] == "shmenv" for r in rows])
