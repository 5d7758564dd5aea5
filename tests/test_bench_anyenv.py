"""`shmenv bench anyenv`: one run of every contender on the same env, the same env count and
the same actions; what it skips and why; its tables, goals and plot (behaviour, not
timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shmenv.benchmarks import anyenv, anyenv_contenders, throughput
from shmenv.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_RUN = ["--num-envs", "4", "--seconds", "0.4", "--rounds", "1", "--warmup", "0.1",
             "--no-progress"]


def _has_shmenv_async() -> bool:
    import shmenv

    return hasattr(shmenv, "AsyncVectorEnv")


@pytest.mark.timeout(180)
def test_quick_run_measures_each_contender_on_the_same_work(tmp_path, no_leaked_segments):
    json_path, plot_path = tmp_path / "anyenv.json", tmp_path / "anyenv.png"
    only = "ceiling,shmenv,gymnasium-async,gymnasium-sync"
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "shmenv", "bench", "anyenv", "--env", "CartPole-v1",
         *QUICK_RUN, "--only", only, "--json", str(json_path), "--plot", str(plot_path)],
        capture_output=True, text=True, env=env, timeout=170)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(json_path.read_text())
    assert result["benchmark"] == "anyenv"
    assert result["config"]["env_id"] == "CartPole-v1" and result["config"]["num_envs"] == 4
    assert result["config"]["contenders"] == only.split(",")
    by_name = {e["name"]: e for e in result["contenders"]}

    measured = ["ceiling", "gymnasium-async", "gymnasium-sync"]
    if _has_shmenv_async():
        measured.append("shmenv")
    else:
        assert by_name["shmenv"]["status"] == "skipped"
        assert "no AsyncVectorEnv" in by_name["shmenv"]["reason"]
    for name in measured:
        entry = by_name[name]
        assert entry["status"] == "ok", entry.get("reason")
        (round_,) = entry["rounds"]
        assert round_["env_steps"] > 0
        if name != "ceiling":  # vector envs step all 4 envs at once
            assert round_["env_steps"] % 4 == 0
    sync = by_name["gymnasium-sync"]
    assert sync["ratio_to_gymnasium-sync"] == pytest.approx(1.0)
    for name in measured:
        assert by_name[name]["ratio_to_ceiling"] == pytest.approx(
            by_name[name]["steps_per_s"]["median"] / by_name["ceiling"]["steps_per_s"]["median"])
    goal = "shmenv / gymnasium Sync (goal >= 1.0)"
    if "shmenv" in measured:
        assert result["goals"][goal] == pytest.approx(by_name["shmenv"]["ratio_to_gymnasium-sync"])
    else:
        assert result["goals"][goal] is None

    # The console and the markdown for docs/ show the same rows.
    table = anyenv.tables(result)[0]
    assert table.title.startswith("CartPole-v1, 4 envs")
    assert [row[0] for row in table.rows] == [by_name[n]["label"] for n in only.split(",")
                                              if n in measured]
    for row in table.rows:
        assert row[0] in proc.stdout and row[1] in proc.stdout
        assert "| " + " | ".join(row) + " |" in table.markdown()
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_contender_replays_the_same_seeded_actions():
    first = anyenv_contenders.actions_for("CartPole-v1", 8, seed=3, rows=50)
    again = anyenv_contenders.actions_for("CartPole-v1", 8, seed=3, rows=50)
    other = anyenv_contenders.actions_for("CartPole-v1", 8, seed=4, rows=50)
    assert first.shape == (50, 8) and np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert set(np.unique(first)) == {0, 1}  # CartPole's two actions, both drawn
    box = anyenv_contenders.actions_for("Pendulum-v1", 3, seed=3, rows=20)
    assert box.shape == (20, 3, 1) and box.dtype == np.float32
    assert box.min() >= -2.0 and box.max() <= 2.0  # inside Pendulum's action bounds


def test_ceiling_counts_every_env_of_every_process():
    result = anyenv_contenders.measure_ceiling("CartPole-v1", 5, seconds=0.3, warmup=0.05,
                                               seed=1)
    assert result["env_steps"] > 0 and result["total_cpu_seconds"] > 0


def test_an_env_that_cannot_be_made_here_skips_the_run_saying_why(monkeypatch, capsys):
    import gymnasium as gym

    def no_mujoco(env_id, **kwargs):
        raise gym.error.DependencyNotInstalled('MuJoCo is not installed, run `pip install '
                                               '"gymnasium[mujoco]"`')

    monkeypatch.setattr(gym, "make", no_mujoco)
    assert main(["bench", "anyenv", "--env", "HalfCheetah-v5", *QUICK_RUN]) == 0
    out = capsys.readouterr().out
    assert "every contender skipped: HalfCheetah-v5 cannot be made here" in out
    assert "gymnasium[mujoco]" in out
    result = anyenv.run("HalfCheetah-v5", 4, show_progress=False)
    assert {e["status"] for e in result["contenders"]} == {"skipped"}
    assert all(e["rounds"] == [] for e in result["contenders"])


def test_unknown_env_and_unknown_contender_are_clear_errors(capsys):
    assert main(["bench", "anyenv", "--env", "NoSuchEnv-v9", *QUICK_RUN]) == 2
    assert "NoSuchEnv-v9" in capsys.readouterr().err
    assert main(["bench", "anyenv", "--only", "shmenv,warp-drive", *QUICK_RUN]) == 2
    err = capsys.readouterr().err
    assert "warp-drive" in err and "gymnasium-sync" in err


def test_missing_peer_or_env_is_skipped_with_a_line_saying_so(monkeypatch):
    monkeypatch.setattr(throughput, "_missing", lambda module: module == "stable_baselines3")
    result = anyenv.run("CartPole-v1", 2, only="sb3,envpool", show_progress=False,
                        seconds=0.3, warmup=0.05)
    sb3, envpool_entry = result["contenders"]
    assert sb3["status"] == "skipped" and sb3["install"] == "pip install 'shmenv[sb3]'"
    assert envpool_entry["status"] == "ok", envpool_entry.get("reason")  # envpool has CartPole
    notes = anyenv.tables(result)[0].notes
    assert notes == ["sb3: skipped — stable_baselines3 is not installed "
                     "(add it: pip install 'shmenv[sb3]')"]
    check = anyenv.contender_unavailable("NoSuchEnv-v9")
    envpool_contender = next(c for c in anyenv.CONTENDERS if c.name == "envpool")
    if not throughput._missing("envpool"):
        assert check(envpool_contender) == "envpool has no NoSuchEnv-v9"


def test_sb3_contender_steps_subprocvecenv():
    pytest.importorskip("stable_baselines3")
    result = anyenv_contenders.measure_sb3("CartPole-v1", 2, seconds=0.2, warmup=0.05, seed=1)
    assert result["env_steps"] > 0 and result["env_steps"] % 2 == 0
