"""Rewrite the generated tables in docs/performance.md from bench/results/*.json.

Every generated block sits between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; the
prose around them is left alone. Usage: ``python bench/update_docs.py RESULTS_DIR DOC``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _load(results: Path, name: str) -> dict | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def machine(data: dict) -> str:
    m = data["machine"]
    load = m.get("load_average_at_start")
    load_text = f", load average at start {load[0]:.1f}" if load else ""
    return (f"{m['cpu_count']} cores ({m['processor']}), {m['memory_bytes'] / 2**30:.0f} GiB, "
            f"{m['platform']}, Python {m['python']}{load_text}")


def throughput(data: dict) -> str:
    from shmenv.benchmarks.throughput import derive

    data = derive(data)
    cfg = data["config"]
    rows, skipped = [], []
    for e in data["contenders"]:
        if "steps_per_s" not in e:
            skipped.append(f"- {e['name']}: {e['status']}, {e.get('reason', '')}"
                           + (f" (`{e['install']}`)" if e.get("install") else ""))
            continue
        s = e["steps_per_s"]
        rows.append([e["label"], f"{s['median']:,.0f}", f"{s['min']:,.0f}–{s['max']:,.0f}",
                     _ratio(e.get("ratio_to_ceiling")), _ratio(e.get("ratio_to_pipe")),
                     _ratio(e.get("cpu_ratio_to_ceiling")),
                     f"{e['cpu_us_per_step']['median']:,.1f}",
                     f"{e['total_cpu_us_per_step']['median']:,.0f}",
                     f"{e['peak_memory_bytes']['median'] / 2**20:,.0f} MiB"])
    text = (f"{cfg['game']}, {cfg['num_envs']} envs, {cfg['rounds']} interleaved rounds × "
            f"{cfg['seconds']:g} s after {cfg['warmup']:g} s warm-up. Machine: "
            f"{machine(data)}.\n\n")
    text += _table(["contender", "env-steps/s (median)", "min–max", "× ceiling", "× Pipe",
                    "× ceiling per CPU-second", "main-process CPU µs/step",
                    "all-process CPU µs/step", "peak memory"], rows)
    goals = [[k, f"{v:.2f}", f"{data['goals_cpu'][k]:.2f}"]
             for k, v in data["goals"].items() if v is not None]
    if goals:
        text += "\n\nGoals (ratios of medians in this run):\n\n" + _table(
            ["goal", "env-steps/s ratio", "env-steps per CPU-second ratio"], goals)
    if skipped:
        text += "\n\nNot run:\n" + "\n".join(skipped)
    return text


def coordination(data: dict) -> str:
    rows = [[r["label"], str(r["num_envs"]), str(r["workers"]),
             f"{r['steps_per_s']['median']:,.0f}",
             f"{r['cpu_us_per_step']['median']:.1f} ({r['cpu_us_per_step']['min']:.1f}–"
             f"{r['cpu_us_per_step']['max']:.1f})",
             f"{r['max_coordinated_steps_per_s']:,.0f}", f"{r['breakout_cores_fed']:,.0f}"]
            for r in data["rows"]]
    cfg = data["config"]
    return (f"{cfg['rounds']} rounds × {cfg['seconds']:g} s each. One core runs "
            f"{data['breakout_steps_per_core_s']:,.0f} Breakout env-steps per CPU-second "
            f"(shmenv's game core). Machine: {machine(data)}.\n\n"
            + _table(["contender", "envs", "workers", "env-steps/s",
                      "main-process CPU µs/env-step (min–max)", "max env-steps/s one main",
                      "Breakout cores fed"], rows))


def startup(data: dict) -> str:
    rows = [[r["label"], str(r["num_envs"]), f"{r['seconds']['median']:.2f}",
             f"{r['seconds']['min']:.2f}–{r['seconds']['max']:.2f}"] for r in data["rows"]]
    notes = "".join(f"\n- {k} skipped: {v}" for k, v in data["skipped"].items())
    notes += "".join(f"\n- {k} failed: {v}" for k, v in data["failures"].items())
    return (f"{data['config']['game']}, {data['config']['rounds']} rounds, each in a fresh "
            f"process. Machine: {machine(data)}.\n\n"
            + _table(["contender", "envs", "seconds (median)", "min–max"], rows) + notes)


def layouts(data: dict) -> str:
    titles = {"a": "(a) stack to trainer", "b": "(b) stack update",
              "c": "(c) neighbouring records", "d": "(d) batch hand-over",
              "e": "(e) consumer dtype", "f": "(f) blocks"}
    rows = [[titles[r["case"]], r["variant"], f"{r['us_per_env_step']:.3f}",
             f"{r['bytes_per_env_step']:,}", r["note"]] for r in data["rows"]]
    return (f"{data['config']['num_envs']} envs where a batch is involved. Machine: "
            f"{machine(data)}.\n\n"
            + _table(["case", "variant", "µs per env-step", "bytes per env-step", "note"],
                     rows))


def profile(data: dict) -> str:
    rows = [[p["phase"], f"{p['us_per_step']:.1f}", f"{100 * p['share']:.0f} %"]
            for p in data["phases"]]
    return (f"`maxpool={data['config']['maxpool']!r}`: {data['cpu_us_per_step']:.0f} CPU µs "
            f"per env-step unprofiled; {data['resets_per_1000_steps']:.0f} episode resets per "
            "1000 steps.\n\n" + _table(["phase", "CPU µs per env-step", "share"], rows))


SECTIONS = {
    "throughput": ("throughput", throughput),
    "coordination": ("coordination", coordination),
    "startup": ("startup", startup),
    "layouts": ("layouts", layouts),
    "profile_seed": ("profile_seed", profile),
    "profile_standard": ("profile_standard", profile),
}


def main(results_dir: str, doc_path: str) -> None:
    results, doc = Path(results_dir), Path(doc_path)
    text = doc.read_text()
    for marker, (name, render) in SECTIONS.items():
        data = _load(results, name)
        if data is None:
            continue
        pattern = re.compile(rf"(<!-- BEGIN {marker} -->\n).*?(<!-- END {marker} -->)",
                             re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{doc}: no <!-- BEGIN {marker} --> ... <!-- END {marker} --> block")
        block = render(data) + "\n"
        text = pattern.sub(lambda m, b=block: m.group(1) + b + m.group(2), text)
    doc.write_text(text)


if __name__ == "__main__":
    main(*sys.argv[1:3])
