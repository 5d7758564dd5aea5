"""`shmenv bench`: the smoke run's output, the CLI's errors, contender selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shmenv.benchmarks import throughput
from shmenv.cli import main

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
    assert [c.name for c in throughput.select(None)] == list(throughput.NAMES)


def test_missing_peer_is_listed_as_skipped_with_install_hint(monkeypatch):
    monkeypatch.setattr(throughput, "_missing", lambda module: module == "envpool")
    result = throughput.run(only="envpool", rounds=1, seconds=1, show_progress=False)
    (entry,) = result["contenders"]
    assert entry["status"] == "skipped"
    assert entry["install"] == "pip install envpool"
    assert entry["rounds"] == [] and "steps_per_s" not in entry
