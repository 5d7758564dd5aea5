"""``shmenv record``: save what the agent sees, the frame stack side by side, as an image.

For docs and for checking preprocessing: each agent step becomes one picture of its
``stack`` frames (oldest left, newest right) exactly as they sit in the shared block,
enlarged ``scale`` times with nearest-neighbour pixels so nothing is smoothed away.

* ``.gif``: one animation frame per agent step (15 steps/s, the game's own speed at
  frame skip 4);
* ``.png``: a strip of up to ``rows`` steps spread evenly over the run, one row each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

GAP = 2  # pixels of white between the stacked frames
GIF_FRAME_MS = 70  # 4 emulator frames at 60 Hz = 67 ms; GIF timing has 10 ms steps


def stack_picture(stack: np.ndarray, scale: int = 2) -> np.ndarray:
    """One ``(stack, size, size)`` uint8 stack as a single gray picture, frames side by
    side with a white gap, each pixel repeated ``scale`` times in both directions."""
    frames, size, _ = stack.shape
    big = size * scale
    picture = np.full((big, frames * big + (frames - 1) * GAP), 255, dtype=np.uint8)
    for i in range(frames):
        left = i * (big + GAP)
        picture[:, left:left + big] = stack[i].repeat(scale, axis=0).repeat(scale, axis=1)
    return picture


def picture_size(obs_shape: tuple[int, int, int], scale: int) -> tuple[int, int]:
    """(width, height) of one :func:`stack_picture`."""
    frames, size, _ = obs_shape
    return frames * size * scale + (frames - 1) * GAP, size * scale


def play(game: str, steps: int, seed: int = 0, **game_options: Any) -> np.ndarray:
    """Play ``steps`` uniformly random agent steps in one env; return every observation,
    the reset one first: ``(steps + 1, stack, size, size)`` uint8."""
    from shmenv.vector import ShmVectorEnv

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    rng = np.random.default_rng(seed)
    with ShmVectorEnv(game, 1, seed=seed, num_workers=1, **game_options) as env:
        obs, _ = env.reset()
        seen = np.empty((steps + 1, *obs.shape[1:]), dtype=np.uint8)
        seen[0] = obs[0]
        for t in range(1, steps + 1):
            obs, *_ = env.step(rng.integers(env.single_action_space.n, size=1))
            seen[t] = obs[0]
    return seen


def record(game: str = "Pong", steps: int = 300, out: str | Path = "pong.gif", *,
           seed: int = 0, scale: int = 2, rows: int = 8, **game_options: Any) -> Path:
    """Play ``game`` with random actions and write what the agent sees to ``out``
    (``.gif`` animation or ``.png`` strip). Returns the path written."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("shmenv record writes images with Pillow: pip install pillow") \
            from None
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".gif", ".png"):
        raise ValueError(f"--out must end in .gif (animation) or .png (strip), got {out}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    if not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a positive int, got {rows!r}")
    seen = play(game, steps, seed, **game_options)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        pictures = [Image.fromarray(stack_picture(s, scale)) for s in seen]
        pictures[0].save(out, save_all=True, append_images=pictures[1:],
                         duration=GIF_FRAME_MS, loop=0)
    else:
        picks = np.unique(np.linspace(0, len(seen) - 1, min(rows, len(seen))).round()
                          .astype(int))
        strip = [stack_picture(seen[i], scale) for i in picks]
        gap = np.full((GAP, strip[0].shape[1]), 255, dtype=np.uint8)
        parts = [p for picture in strip for p in (picture, gap)][:-1]
        Image.fromarray(np.concatenate(parts)).save(out)
    return out


def run(args: Any) -> int:
    """CLI entry: ``args`` has game, steps, out, seed, scale, rows."""
    path = record(args.game, args.steps, args.out, seed=args.seed, scale=args.scale,
                  rows=args.rows)
    width, height = picture_size((4, 84, 84), args.scale)
    what = (f"{args.steps + 1} frames of {width}x{height}" if path.suffix.lower() == ".gif"
            else "a strip of stacks")
    print(f"wrote {path}: {what} ({path.stat().st_size:,} bytes)")
    return 0
