"""``shmenv bench anyenv``: env-steps/s of ``shmenv.AsyncVectorEnv`` on any gymnasium env
against gymnasium's vector envs, SB3, envpool and the machine's ceiling.

Every contender gets the same env id, env count and seeded random action stream (drawn from
the env's own action space), runs in its own fresh subprocess, warms up, then is timed;
rounds are interleaved and the table shows medians, as in ``shmenv bench``. A contender that
is not installed (SB3, envpool) or does not have the env (envpool) is skipped with a line
saying why; an env that cannot be made here (MuJoCo without ``gymnasium[mujoco]``) skips the
whole run the same way.
"""

from __future__ import annotations

import os
from typing import Any

from shmenv.benchmarks import report
from shmenv.benchmarks.goals import score
from shmenv.benchmarks.throughput import (
    QUICK,
    Contender,
    contender_row,
    goals_table,
    measure_contenders,
    run_kind,
    select,
    skipped_note,
    summarize_contenders,
)

_MODULE = "shmenv.benchmarks.anyenv_contenders"
DEFAULT_ENV = "CartPole-v1"
DEFAULT_NUM_ENVS = 64

CONTENDERS: tuple[Contender, ...] = (
    Contender("ceiling", "ceiling", "measure_ceiling"),
    Contender("shmenv", "shmenv Async", "measure_shmenv"),
    Contender("gymnasium-async", "gymnasium Async", "measure_gymnasium_async"),
    Contender("gymnasium-sync", "gymnasium Sync", "measure_gymnasium_sync"),
    Contender("sb3", "SB3 Subproc", "measure_sb3", requires="stable_baselines3",
              install="pip install 'shmenv[sb3]'"),
    Contender("envpool", "envpool", "measure_envpool", requires="envpool",
              install="pip install envpool"),
    # Not in the plain run: first-ready batches of half the envs (send/recv).
    Contender("shmenv-async", "shmenv Async, n/2 batches", "measure_shmenv",
              {"async_batch": True}, default=False),
)
NAMES = tuple(c.name for c in CONTENDERS)

_BASES = ("ceiling", "gymnasium-async", "gymnasium-sync")
_RATIOS = ("ratio_to_ceiling", "ratio_to_gymnasium-async", "ratio_to_gymnasium-sync",
           "cpu_ratio_to_ceiling")


def env_unavailable(env_id: str) -> str | None:
    """Why ``env_id`` cannot be made here (a missing extra such as MuJoCo), or None.
    An id gymnasium does not know is bad input: ValueError."""
    import gymnasium as gym

    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise ValueError(f"gymnasium does not know the env {env_id!r} ({exc}); pass a "
                         "registered id such as CartPole-v1 or HalfCheetah-v5") from None
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as exc:
        return f"{env_id} cannot be made here: {exc}"
    env.close()
    return None


def contender_unavailable(env_id: str) -> Any:
    """A check for :func:`measure_contenders`: why a contender cannot run ``env_id``."""
    def check(contender: Contender) -> str | None:
        if contender.name.startswith("shmenv"):
            import shmenv

            if not hasattr(shmenv, "AsyncVectorEnv"):
                return "this shmenv has no AsyncVectorEnv"
        if contender.name == "envpool":
            import envpool

            if env_id not in envpool.list_all_envs():
                return f"envpool has no {env_id}"
        return None
    return check


def run(env_id: str = DEFAULT_ENV, num_envs: int = DEFAULT_NUM_ENVS,
        seconds: float = QUICK["seconds"], rounds: int = QUICK["rounds"],
        warmup: float = QUICK["warmup"], seed: int = 47, only: str | None = None,
        show_progress: bool = True) -> dict:
    """Measure the selected contenders on ``num_envs`` copies of ``env_id``; returns the
    JSON-able result."""
    chosen = select(only, CONTENDERS)
    params = {"env_id": env_id, "num_envs": num_envs, "seconds": seconds, "warmup": warmup,
              "seed": seed}
    env_reason = env_unavailable(env_id)
    if env_reason:
        entries = [{"name": c.name, "label": c.label, "rounds": [], "status": "skipped",
                    "reason": env_reason} for c in chosen]
    else:
        entries = measure_contenders(chosen, _MODULE, params, rounds, show_progress,
                                     f"anyenv {env_id}", contender_unavailable(env_id))
    return derive({
        "benchmark": "anyenv",
        "machine": report.machine_info(),
        "config": {**params, "rounds": rounds, "cores": os.cpu_count() or 1,
                   "contenders": [c.name for c in chosen]},
        "env_skipped": env_reason,
        "contenders": entries,
    })


def derive(result: dict) -> dict:
    """Fill in the summaries, ratios and goals from each contender's rounds (idempotent, so
    saved results can be re-derived); see :func:`shmenv.benchmarks.throughput.derive`."""
    results = summarize_contenders(result["contenders"], _BASES)
    score(result, results, "anyenv")
    return result


def tables(result: dict) -> list[report.Table]:
    """The results table and the goals table of one run."""
    cfg = result["config"]
    rows, notes = [], []
    for e in result["contenders"]:
        if "steps_per_s" in e:
            rows.append(contender_row(e, _RATIOS))
        elif not result.get("env_skipped"):
            notes.append(skipped_note(e))
    if result.get("env_skipped"):
        notes.append(f"every contender skipped: {result['env_skipped']}")
    columns = ["contender", "env-steps/s", "min–max", "× ceiling", "× gym Async",
               "× gym Sync", "× ceiling (CPU)", "main CPU µs/step", "all CPU µs/step",
               "peak memory"]
    title = (f"{cfg['env_id']}, {cfg['num_envs']} envs, {cfg['cores']} cores, "
             f"{run_kind(cfg)} (env-steps/s"
             + (", medians over rounds)" if cfg["rounds"] > 1 else ")"))
    return [report.Table(title, columns, rows, notes), *goals_table(result)]


def print_result(result: dict) -> None:
    report.print_tables(tables(result))
