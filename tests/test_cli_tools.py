"""``shmenv record`` and ``shmenv info``, run as ``python -m shmenv`` like a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shmenv.cli import main
from shmenv.record import GAP, picture_size, play, stack_picture

Image = pytest.importorskip("PIL.Image", reason="shmenv record needs Pillow")
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("no_leaked_segments")


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_shmenv(capsys):
    """Run the ``shmenv`` command in-process (fast); ``python -m shmenv`` is tested once."""
    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return run


def test_python_dash_m_shmenv_is_the_shmenv_command():
    import shmenv

    result = subprocess.run([sys.executable, "-m", "shmenv", "--version"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"shmenv {shmenv.__version__}"
    usage = subprocess.run([sys.executable, "-m", "shmenv"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert usage.returncode == 2 and "record" in usage.stderr and "info" in usage.stderr


def gray_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as image:
        frames = []
        for index in range(image.n_frames):
            image.seek(index)
            frames.append(np.array(image.convert("L")))
    return frames


def test_record_gif_is_what_the_agent_saw(tmp_path, run_shmenv):
    out = tmp_path / "pong.gif"  # the docs run 300 steps; 120 keep the test short
    result = run_shmenv("record", "--game", "Pong", "--steps", "120", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "121 frames of 678x168" in result.stdout
    frames = gray_frames(out)
    assert len(frames) == 121  # the reset stack, then one picture per step
    assert frames[0].shape == (168, 678) == picture_size((4, 84, 84), 2)[::-1]
    seen = play("Pong", 120, seed=0)  # the same seed and random actions
    for t in (0, 1, 100, 120):  # GIF keeps 256 gray levels exactly
        np.testing.assert_array_equal(frames[t], stack_picture(seen[t], 2))
    # The picture is the stack: the 4 panels of a mid-game step are 4 different frames,
    # and each panel is its frame enlarged 2x.
    panels = [frames[100][:, i * (168 + GAP): i * (168 + GAP) + 168] for i in range(4)]
    np.testing.assert_array_equal(panels[3][::2, ::2], seen[100][3])
    assert len({p.tobytes() for p in panels}) == 4


def test_record_png_strip_and_bad_input(tmp_path, run_shmenv):
    out = tmp_path / "strip.png"
    result = run_shmenv("record", "--game", "Breakout", "--steps", "40", "--out", str(out),
                        "--rows", "3", "--scale", "1")
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.size == (4 * 84 + 3 * GAP, 3 * 84 + 2 * GAP)
    strip = np.array(Image.open(out).convert("L"))
    seen = play("Breakout", 40, seed=0)
    np.testing.assert_array_equal(strip[:84], stack_picture(seen[0], 1))  # step 0
    np.testing.assert_array_equal(strip[-84:], stack_picture(seen[40], 1))  # last step

    bad = run_shmenv("record", "--out", str(tmp_path / "x.jpg"), "--steps", "5")
    assert bad.returncode == 2 and ".gif" in bad.stderr and "Traceback" not in bad.stderr
    unknown = run_shmenv("record", "--game", "Breakoutt", "--steps", "5",
                         "--out", str(tmp_path / "y.gif"))
    assert unknown.returncode == 2 and "breakout" in unknown.stderr
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path / "y.gif").exists()


def test_info_reports_versions_block_size_and_games(run_shmenv):
    result = run_shmenv("info", "--num-envs", "8", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    import ale_py
    import gymnasium

    import shmenv

    assert info["versions"]["shmenv"] == shmenv.__version__
    assert info["versions"]["gymnasium"] == gymnasium.__version__
    assert info["versions"]["ale-py"] == ale_py.__version__
    assert info["versions"]["numpy"] == np.__version__
    # 8 slots of 4*84*84 bytes for obs, 8 more for final_obs: 2 * 8 * 28,224.
    assert info["block"]["nbytes"] == 2 * 8 * 28_224 == 451_584
    assert info["cores"]["usable"] >= 1
    assert "breakout" in info["games"] and "pong" in info["games"]
    assert info["shm"]["free_bytes"] is None or info["shm"]["free_bytes"] > 0

    text = run_shmenv("info", "--num-envs", "100")
    assert text.returncode == 0, text.stderr
    assert "block for 100 envs: 5,644,800 bytes" in text.stdout  # 2 * 100 * 28,224
    assert "breakout" in text.stdout
    bad = run_shmenv("info", "--num-envs", "0")
    assert bad.returncode == 2 and "num_envs must be a positive int" in bad.stderr
