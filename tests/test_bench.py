"""`shmenv bench`: the smoke run's output, the CLI's errors, contender selection, the rounds
loop, the table model, and the suites' own options (coordination rows, async/pinning,
the profile's replica)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shmenv.benchmarks import coordination, harness, profile_step, report, throughput
from shmenv.cli import build_parser, main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive_numbers(value, path="result"):
    """Every number in a nested structure, with where it is."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _positive_numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _positive_numbers(item, f"{path}[{i}]")


@pytest.mark.timeout(120)
def test_bench_smoke_json_and_plot(tmp_path, no_leaked_segments):
    json_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "shmenv", "bench", "--seconds", "1", "--rounds", "1",
         "--warmup", "0.3", "--num-envs", "4", "--only", "shmenv,pipe", "--no-progress",
         "--json", str(json_path), "--plot", str(plot_path)],
        capture_output=True, text=True, env=env, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    assert "shmenv" in proc.stdout and "Pipe baseline" in proc.stdout

    result = json.loads(json_path.read_text())
    assert result["benchmark"] == "throughput"
    assert result["config"]["num_envs"] == 4
    assert result["config"]["contenders"] == ["shmenv", "pipe"]
    by_name = {c["name"]: c for c in result["contenders"]}
    assert set(by_name) == {"shmenv", "pipe"}
    for entry in by_name.values():
        assert entry["status"] == "ok", entry.get("reason")
        assert len(entry["rounds"]) == 1
        for key in ("steps_per_s", "cpu_us_per_step", "total_cpu_us_per_step",
                    "peak_memory_bytes"):
            assert set(entry[key]) == {"median", "min", "max"}
        assert entry["rounds"][0]["env_steps"] >= 4
        assert "ratio_to_ceiling" not in entry  # no ceiling was run
    assert by_name["pipe"]["ratio_to_pipe"] == pytest.approx(1.0)
    assert by_name["shmenv"]["ratio_to_pipe"] == pytest.approx(
        by_name["shmenv"]["steps_per_s"]["median"] / by_name["pipe"]["steps_per_s"]["median"])
    assert result["goals"]["shmenv / pipe (goal >= 2.0)"] == pytest.approx(
        by_name["shmenv"]["ratio_to_pipe"])
    assert result["goals"]["shmenv / ceiling (goal >= 0.90)"] is None
    assert by_name["shmenv"]["steps_per_cpu_s"] == pytest.approx(
        1e6 / by_name["shmenv"]["total_cpu_us_per_step"]["median"])
    assert result["goals_cpu"]["shmenv / pipe (goal >= 2.0)"] == pytest.approx(
        by_name["shmenv"]["cpu_ratio_to_pipe"])

    figures = [(p, v) for p, v in _positive_numbers(by_name)]
    assert figures
    not_positive = [(p, v) for p, v in figures if not v > 0]
    assert not not_positive, not_positive

    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The console table and the markdown for docs/ come from the same cells.
    table, goals = throughput.tables(result)
    markdown = table.markdown()
    assert "custom run: 1 round × 1 s after 0.3 s warm-up" in table.title
    for row in table.rows:
        assert "| " + " | ".join(row) + " |" in markdown
        assert row[0] in proc.stdout and row[1] in proc.stdout
    assert goals.rows[0][0] in goals.markdown()


def test_unknown_contender_is_a_clear_error(capsys):
    assert main(["bench", "--only", "shmenv,warp-drive"]) == 2
    err = capsys.readouterr().err
    assert "warp-drive" in err and "ceiling" in err and "pipe" in err


def test_bad_flag_values_are_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--seconds", "0"])
    assert exc.value.code == 2
    assert "--seconds" in capsys.readouterr().err


def test_select_keeps_canonical_order():
    assert [c.name for c in throughput.select("pipe, shmenv,ceiling")] == [
        "ceiling", "shmenv", "pipe"]
    defaults = [c.name for c in throughput.select(None)]
    assert defaults == ["ceiling", "emulation", "shmenv", "shmenv-standard", "pipe",
                        "gymnasium", "envpool", "ale-vector"]  # every peer in the plain run


def test_plain_bench_is_the_quick_run_and_says_so():
    args = build_parser().parse_args(["bench"])
    settings = {"seconds": args.seconds, "rounds": args.rounds, "warmup": args.warmup}
    assert settings == throughput.QUICK
    assert throughput.run_kind({**throughput.QUICK}).startswith("quick run: 1 round × 3 s")
    assert throughput.run_kind({**throughput.PUBLICATION}).startswith("publication run: 3 ")
    args = build_parser().parse_args(["bench", "--rounds", "3", "--seconds", "10",
                                      "--warmup", "2"])
    assert {"seconds": args.seconds, "rounds": args.rounds,
            "warmup": args.warmup} == throughput.PUBLICATION


def test_async_pinning_runs_shmenvs_variants(monkeypatch):
    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before measuring anything

    monkeypatch.setattr(throughput, "run", fake_run)
    assert main(["bench", "--async-pinning"]) == 130
    assert [c.name for c in throughput.select(seen["only"])] == list(throughput.ASYNC_PINNING)
    assert main(["bench", "--async-pinning", "--only", "shmenv"]) == 2


def test_async_contender_steps_batches_of_half_the_envs(no_leaked_segments):
    from shmenv.benchmarks import contenders

    result = contenders.measure_shmenv("Breakout", 4, seconds=0.3, warmup=0.1, seed=1,
                                       async_batch=True)
    assert result["env_steps"] > 0 and result["env_steps"] % 2 == 0


def test_coordination_flags_add_rows():
    plain = coordination.plan_rows([8], cores=2)
    assert [(r.contender, r.num_workers, r.direct) for r in plain] == [
        ("shmenv", None, False), ("shmenv", 8, False), ("gymnasium", None, False)]
    rows = coordination.plan_rows([8], workers=[2, 4, 64], direct=True, async_batch=True,
                                  breakout=True, cores=2)
    labels = [(r.label, r.num_envs) for r in rows]
    assert ("shmenv, 4 workers, direct", 8) in labels  # 2 is the default, 64 > envs
    assert not any("2 workers" in label or "64 workers" in label for label, _ in labels)
    assert ("shmenv, cores workers, async n/2", 8) in labels
    assert ("Breakout, shmenv, cores workers", 64) in labels
    assert ("Breakout, shmenv, cores workers, direct", 64) in labels
    assert len(labels) == len(set(labels))


@pytest.mark.parametrize("row", [
    coordination.Row("shmenv", 4, num_workers=2, direct=True),
    coordination.Row("shmenv", 4, async_batch=True),
    coordination.Row("gymnasium", 2),
])
def test_coordination_row_measures_its_env(row, no_leaked_segments):
    from dataclasses import asdict

    result = coordination.measure_row(asdict(row), seconds=0.2, warmup=0.05)
    batch = row.num_envs // 2 if row.async_batch else row.num_envs
    assert result["env_steps"] > 0 and result["env_steps"] % batch == 0
    assert result["workers"] == (row.num_workers or result["workers"])


def record_job(path: str, name: str, fail: bool = False) -> dict:
    """A rounds-loop job for the test below: appends its name to ``path``."""
    with open(path, "a") as f:
        f.write(name + "\n")
    if fail:
        raise RuntimeError("this job fails")
    return {"name": name}


def test_rounds_are_interleaved_and_a_failed_job_stops(tmp_path):
    log = tmp_path / "order.txt"
    target = f"{__name__}:record_job"
    jobs = [harness.Job(name, name, target, {"path": str(log), "name": name,
                                              "fail": name == "b"}) for name in "abc"]
    measured = harness.run_rounds(jobs, rounds=2, show_progress=False)
    assert log.read_text().split() == ["a", "b", "c", "a", "c"]
    assert measured.results == {"a": [{"name": "a"}] * 2, "b": [], "c": [{"name": "c"}] * 2}
    assert list(measured.failures) == ["b"] and "this job fails" in measured.failures["b"]


def test_table_markdown_escapes_and_keeps_notes():
    table = report.Table("T", ["a", "b"], [["x|y", "1"]], ["note one"])
    assert table.markdown().splitlines() == [
        "T.", "", "| a | b |", "|---|---:|", "| x\\|y | 1 |", "", "- note one"]


def test_profile_replays_the_real_step_piece_by_piece():
    result = profile_step.run(steps=300)
    assert result["replica_matches"]
    assert result["config"]["maxpool"] == "labml"
    phases = {p["phase"]: p["us_per_step"] for p in result["phases"]}
    assert phases[profile_step.ACT] > 0 and phases[profile_step.RESIZE] > 0
    standard = profile_step.run(steps=300, maxpool="standard")
    assert standard["replica_matches"] and standard["config"]["maxpool"] == "standard"


def test_missing_peer_is_listed_as_skipped_with_install_hint(monkeypatch):
    monkeypatch.setattr(throughput, "_missing", lambda module: module == "envpool")
    result = throughput.run(only="envpool", rounds=1, seconds=1, show_progress=False)
    (entry,) = result["contenders"]
    assert entry["status"] == "skipped"
    assert entry["install"] == "pip install envpool"
    assert entry["rounds"] == [] and "steps_per_s" not in entry


def test_update_docs_writes_each_suites_own_tables(tmp_path):
    import importlib.util

    from shmenv.benchmarks import layouts

    spec = importlib.util.spec_from_file_location(
        "update_docs", os.path.join(REPO, "bench", "update_docs.py"))
    update_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update_docs)
    doc = tmp_path / "doc.md"
    blocks = "".join(f"<!-- BEGIN {m} -->\nold\n<!-- END {m} -->\n" for m in update_docs.SECTIONS)
    doc.write_text("intro\n" + blocks + "outro\n")
    results = os.path.join(REPO, "bench", "results")
    update_docs.main(results, str(doc))
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "\nold\n" not in text
    with open(os.path.join(results, "layouts.json")) as f:
        assert layouts.tables(json.load(f))[0].markdown() in text
    doc.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="BEGIN throughput"):
        update_docs.main(results, str(doc))
