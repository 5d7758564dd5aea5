"""``shmenv bench``: env-steps/s of shmenv against every peer and the machine's ceiling.

Every contender gets the same game, env count and seeded random action stream, runs in its
own fresh subprocess, warms up, then is timed for ``seconds``. Rounds are interleaved
(A B C ... A B C ...) so that a noisy neighbour hurts every contender alike; the table shows
medians and min–max over rounds. The defaults are a quick run; ``--rounds/--seconds`` give
publication figures. ``--async-pinning`` compares shmenv's sync step with async batches
and pinned workers instead; ``--drop-in`` compares the drop-in ``shmenv.Worker`` with the
Pipe baseline in the same trainer loop (and the vector env on the same work).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shmenv.benchmarks import report
from shmenv.benchmarks.goals import score
from shmenv.benchmarks.harness import Job, run_rounds

_MODULE = "shmenv.benchmarks.contenders"


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    requires: str | None = None  # a module that must import
    install: str | None = None  # how to get it
    default: bool = True  # run by plain ``shmenv bench``


CONTENDERS: tuple[Contender, ...] = (
    Contender("ceiling", "ceiling", "measure_ceiling"),
    Contender("emulation", "emulation ceiling", "measure_ceiling",
              {"emulation_only": True}),
    Contender("shmenv", "shmenv", "measure_shmenv"),
    Contender("shmenv-standard", "shmenv standard", "measure_shmenv", {"maxpool": "standard"}),
    Contender("pipe", "Pipe baseline", "measure_pipe"),
    Contender("gymnasium", "gymnasium Async", "measure_gymnasium"),
    Contender("envpool", "envpool", "measure_envpool", requires="envpool",
              install="pip install envpool"),
    Contender("ale-vector", "ale_py vector", "measure_ale_vector",
              requires="ale_py.vector_env", install="pip install 'ale-py>=0.11'"),
    # shmenv's own variants (``--async-pinning``): async batches of half the envs, workers
    # pinned to cores, and both.
    Contender("shmenv-async", "shmenv async (batch n/2)", "measure_shmenv",
              {"async_batch": True}, default=False),
    Contender("shmenv-pinned", "shmenv pinned", "measure_shmenv", {"cpu_affinity": True},
              default=False),
    Contender("shmenv-async-pinned", "shmenv async (batch n/2), pinned", "measure_shmenv",
              {"async_batch": True, "cpu_affinity": True}, default=False),
    # The drop-in (``--drop-in``): the Pipe baseline's own loop with shmenv.Worker.
    Contender("dropin", "shmenv Worker (drop-in)", "measure_dropin", default=False),
    # The same with a message per pool process instead of one relayed message per step.
    Contender("dropin-direct", "shmenv Worker, no relay", "measure_dropin",
              {"relay_fanout": 0}, default=False),
)
NAMES = tuple(c.name for c in CONTENDERS)
ASYNC_PINNING = ("shmenv", "shmenv-async", "shmenv-pinned", "shmenv-async-pinned")
DROP_IN = ("shmenv", "pipe", "dropin")

# Plain ``shmenv bench``: a quick run, about a minute on 2 cores. Each measurement starts its
# contender afresh (a few seconds per contender on a busy 2-core machine), so one round of
# 3 s costs half the wall time of two rounds of 1.5 s for the same timed seconds; it gives
# up the min–max spread. Publication figures: ``--rounds 3 --seconds 10 --warmup 2`` (what
# bench/reproduce.sh runs).
QUICK: dict[str, Any] = {"seconds": 3.0, "rounds": 1, "warmup": 0.5}
PUBLICATION: dict[str, Any] = {"seconds": 10.0, "rounds": 3, "warmup": 2.0}


def select(only: str | None,
           contenders: Sequence[Contender] = CONTENDERS) -> list[Contender]:
    """The contenders named in ``only`` (comma-separated; default: the default ones), in
    the canonical order."""
    if not only:
        return [c for c in contenders if c.default]
    names = [c.name for c in contenders]
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ValueError(f"unknown contender(s) {unknown}; choose from {', '.join(names)}")
    return [c for c in contenders if c.name in wanted]


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ModuleNotFoundError:
        return True


def run(game: str = "Breakout", num_envs: int | None = None,
        seconds: float = QUICK["seconds"], rounds: int = QUICK["rounds"],
        warmup: float = QUICK["warmup"], seed: int = 47, only: str | None = None,
        show_progress: bool = True) -> dict:
    """Measure the selected contenders; returns the JSON-able result."""
    cores = os.cpu_count() or 1
    num_envs = num_envs or 4 * cores
    chosen = select(only)
    params = {"game": game, "num_envs": num_envs, "seconds": seconds, "warmup": warmup,
              "seed": seed}
    entries = measure_contenders(chosen, _MODULE, params, rounds, show_progress, "throughput")
    return derive({
        "benchmark": "throughput",
        "machine": report.machine_info(),
        "config": {**params, "rounds": rounds, "cores": cores,
                   "contenders": [c.name for c in chosen]},
        "contenders": entries,
    })


def measure_contenders(chosen: Sequence[Contender], module: str, params: dict[str, Any],
                       rounds: int, show_progress: bool, title: str,
                       unavailable: Callable[[Contender], str | None] | None = None
                       ) -> list[dict[str, Any]]:
    """Run each contender's ``module:function`` with ``params`` for ``rounds`` interleaved
    rounds; returns one entry per contender (its rounds, or why it was skipped or failed).
    A contender whose ``requires`` module is missing, or for which ``unavailable`` gives a
    reason, is skipped."""
    results: dict[str, dict[str, Any]] = {}
    runnable = []
    for c in chosen:
        entry: dict[str, Any] = {"name": c.name, "label": c.label, "rounds": []}
        reason = (f"{c.requires} is not installed" if c.requires and _missing(c.requires)
                  else unavailable(c) if unavailable else None)
        if reason:
            entry.update(status="skipped", reason=reason, install=c.install)
        else:
            entry["status"] = "ok"
            runnable.append(c)
        results[c.name] = entry
    jobs = [Job(c.name, c.name, f"{module}:{c.function}", {**params, **c.kwargs})
            for c in runnable]
    measured = run_rounds(jobs, rounds, show_progress, title=title)
    for c in runnable:
        results[c.name]["rounds"] = measured.results[c.name]
        if c.name in measured.failures:
            results[c.name].update(status="failed", reason=measured.failures[c.name],
                                   install=c.install)
    return list(results.values())


def derive(result: dict) -> dict:
    """Fill in the summaries, ratios and goals from each contender's rounds (idempotent, so
    saved results can be re-derived).

    Two kinds of ratio: wall-clock (env-steps/s) and CPU (env-steps per CPU-second of all
    the contender's processes). On a quiet machine they agree except where a contender
    leaves cores idle; on a busy one only the CPU ratio is stable, because the scheduler
    gives each contender a different share of the cores (it favours processes that sleep
    and wake, as synchronous workers do, over pure CPU loops like the ceiling's).
    """
    results = summarize_contenders(result["contenders"], ("ceiling", "pipe", "shmenv"))
    score(result, results, "throughput")
    return result


def summarize_contenders(entries: list[dict], bases: Sequence[str]) -> dict[str, dict]:
    """Each measured entry's medians and min–max over rounds, its env-steps per CPU-second
    and its ratios to each contender in ``bases`` (``ratio_to_<base>``, wall clock, and
    ``cpu_ratio_to_<base>``); returns the entries by name."""
    results = {e["name"]: e for e in entries}
    for entry in results.values():
        if entry["status"] == "ok" and entry["rounds"]:
            rs = entry["rounds"]
            for key in ("steps_per_s", "cpu_us_per_step", "main_thread_cpu_us_per_step",
                        "total_cpu_us_per_step", "peak_memory_bytes"):
                entry[key] = report.summarize([x[key] for x in rs])
            entry["steps_per_cpu_s"] = 1e6 / entry["total_cpu_us_per_step"]["median"]
    for name in bases:
        base = results.get(name, {})
        for entry in results.values():
            if "steps_per_s" in base and "steps_per_s" in entry:
                entry[f"ratio_to_{name}"] = (entry["steps_per_s"]["median"]
                                             / base["steps_per_s"]["median"])
                entry[f"cpu_ratio_to_{name}"] = (entry["steps_per_cpu_s"]
                                                 / base["steps_per_cpu_s"])
    return results


def run_kind(config: dict) -> str:
    """How the run was configured, for the table's header."""
    settings = {k: config.get(k) for k in QUICK}
    if settings == QUICK:
        kind = "quick run"
    elif settings == PUBLICATION:
        kind = "publication run"
    else:
        kind = "custom run"
    rounds = ("1 round" if config["rounds"] == 1
              else f"{config['rounds']} interleaved rounds")
    return f"{kind}: {rounds} × {config['seconds']:g} s after {config['warmup']:g} s warm-up"


def tables(result: dict) -> list[report.Table]:
    """The results table and the goals table of one throughput result."""
    cfg = result["config"]
    rows, skipped = [], []
    show_sync_ratio = any(e["name"] in ASYNC_PINNING[1:] for e in result["contenders"])
    ratios = ["ratio_to_ceiling", "ratio_to_pipe", "cpu_ratio_to_ceiling"]
    if show_sync_ratio:
        ratios.append("ratio_to_shmenv")
    for e in result["contenders"]:
        if "steps_per_s" not in e:
            skipped.append(skipped_note(e))
        else:
            rows.append(contender_row(e, ratios))
    columns = ["contender", "env-steps/s", "min–max", "× ceiling", "× Pipe",
               "× ceiling (CPU)"]
    if show_sync_ratio:
        columns.append("× shmenv sync")
    columns += ["main CPU µs/step", "all CPU µs/step", "peak memory"]
    title = (f"{cfg['game']}, {cfg['num_envs']} envs, {cfg['cores']} cores, "
             f"{run_kind(cfg)} (env-steps/s"
             + (", medians over rounds)" if cfg["rounds"] > 1 else ")"))
    return [report.Table(title, columns, rows, skipped), *goals_table(result)]


def skipped_note(entry: dict) -> str:
    """The table note for a contender that was skipped or failed, with how to add it."""
    return (f"{entry['name']}: {entry['status']} — {entry.get('reason', '')}"
            + (f" (add it: {entry['install']})" if entry.get("install") else ""))


def contender_row(entry: dict, ratios: Sequence[str]) -> list[str]:
    """One measured contender's table row: label, env-steps/s median and min–max, the
    ``ratios`` named, main and all-process CPU µs per env-step, peak memory."""
    s = entry["steps_per_s"]
    spread = f"{s['min']:,.0f}–{s['max']:,.0f}" if len(entry["rounds"]) > 1 else "—"
    return [entry["label"], f"{s['median']:,.0f}", spread,
            *(report.ratio(entry.get(key)) for key in ratios),
            f"{entry['cpu_us_per_step']['median']:,.1f}",
            f"{entry['total_cpu_us_per_step']['median']:,.0f}",
            report.mib(entry["peak_memory_bytes"]["median"])]


def goals_table(result: dict) -> list[report.Table]:
    """The goals met or missed in this run, wall-clock and CPU ratios (empty if none ran)."""
    met = [[k, f"{v:.2f}", report.ratio(result["goals_cpu"][k])[:-1]]
           for k, v in result["goals"].items() if v is not None]
    if not met:
        return []
    return [report.Table("Goals, this run", ["goal", "env-steps/s ratio",
                                             "env-steps per CPU-second ratio"], met)]


def print_result(result: dict) -> None:
    report.print_tables(tables(result))


def plot(result: dict, path: str) -> None:
    """Each measured contender's env-steps/s, shmenv's bars highlighted (no file if none
    was measured); also the any-env suite's plot (its subject is an env id, not a game)."""
    entries = [e for e in result["contenders"] if "steps_per_s" in e]
    if not entries:
        return
    cfg = result["config"]
    title = (f"{cfg.get('game') or cfg['env_id']}, {cfg['num_envs']} envs on "
             f"{cfg['cores']} cores")
    report.bar_plot(
        path, [e["label"] for e in entries],
        [e["steps_per_s"]["median"] for e in entries],
        [e["steps_per_s"]["min"] for e in entries],
        [e["steps_per_s"]["max"] for e in entries],
        "env-steps/s (median, whiskers: min–max over rounds)", title,
        highlight=[e["name"].startswith("shmenv") for e in entries],
    )
