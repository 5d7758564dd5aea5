"""The project's throughput goals: every suite's in one table, scored as ratios of a run's results.

A goal compares two contenders of one suite (``shmenv bench`` is "throughput", ``shmenv bench
anyenv`` is "anyenv"); its label, which states the target, is its row in the "Goals, this
run" table and its key in a saved result's ``"goals"`` and ``"goals_cpu"``, so a label
never changes once results carry it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    """Contender ``of`` against contender ``to``: the first's rate over the second's."""

    suite: str  # the benchmark that measures both
    label: str
    of: str
    to: str


# On 2 cores. The any-env ceiling goal is for envs heavier than CartPole, where the work,
# not the coordination, should decide the rate.
GOALS: tuple[Goal, ...] = (
    Goal("throughput", "shmenv / ceiling (goal >= 0.90)", "shmenv", "ceiling"),
    Goal("throughput", "shmenv / pipe (goal >= 2.0)", "shmenv", "pipe"),
    Goal("throughput", "shmenv / gymnasium (goal >= 1.5)", "shmenv", "gymnasium"),
    Goal("throughput", "shmenv standard / envpool (goal >= 1.0)", "shmenv-standard", "envpool"),
    Goal("throughput", "drop-in Worker / pipe (goal >= 2.5)", "dropin", "pipe"),
    Goal("anyenv", "shmenv / gymnasium Async (goal >= 10)", "shmenv", "gymnasium-async"),
    Goal("anyenv", "shmenv / gymnasium Sync (goal >= 1.0)", "shmenv", "gymnasium-sync"),
    Goal("anyenv", "shmenv / ceiling (goal >= 0.90 on a heavier env)", "shmenv", "ceiling"),
    Goal("anyenv", "shmenv n/2 batches / ceiling (goal >= 0.90 on a heavier env)",
         "shmenv-async", "ceiling"),
    Goal("anyenv", "shmenv / SB3 SubprocVecEnv", "shmenv", "sb3"),
    Goal("anyenv", "shmenv / envpool", "shmenv", "envpool"),
)


def goals(results: dict[str, dict], key: str, suite: str) -> dict[str, float | None]:
    """``suite``'s goals as ratios of ``key`` (None when a contender was not run)."""
    def value(name: str) -> float | None:
        v = results.get(name, {}).get(key)
        return v["median"] if isinstance(v, dict) else v

    out = {}
    for goal in GOALS:
        if goal.suite == suite:
            x, y = value(goal.of), value(goal.to)
            out[goal.label] = x / y if x and y else None
    return out


def score(result: dict, results: dict[str, dict], suite: str) -> None:
    """Set ``result["goals"]`` (env-steps/s ratios) and ``result["goals_cpu"]`` (env-steps
    per CPU-second ratios) from the summarized contenders ``results``."""
    result["goals"] = goals(results, "steps_per_s", suite)
    result["goals_cpu"] = goals(results, "steps_per_cpu_s", suite)
