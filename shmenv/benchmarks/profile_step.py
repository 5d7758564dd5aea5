"""Where one env-step's microseconds go (``shmenv bench profile``).

Two copies of shmenv's game core (:class:`shmenv.atari.AtariGame`, the code a worker runs)
replay the same seeded random actions in this process, in alternating chunks so that a busy
spell hits both alike. The first runs ``step``/``reset`` untouched, for the true CPU µs per
step. The second is driven call by call through its public pieces (``game.ale``,
``game.action_set``, ``game.options``, ``game.stack``), making the calls ``step`` makes in
the same order, each with a stopwatch around it: ``ale.act`` (emulation),
``getScreenGrayscale`` (gray fetch), ``cv2.resize``, ``np.maximum``, the in-place stack
shift, the lives/game-over checks and ``reset`` (episode resets). Nothing is patched. Both
copies must end on the same stack (``replica_matches``); if they do not, the replica no
longer makes the calls ``step`` makes and the breakdown is void. The stopwatches read this
thread's CPU clock, so a busy machine does not inflate them, and each piece is net of what
an empty stopwatch reads (a clock read is a system call); "Python glue" is the untouched
step's time minus the pieces (when the pieces add up to more, the table says so: the
stopwatches' system calls disturb the timed calls more than the glue costs). The
inter-process part of a step is measured by ``shmenv bench coordination``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from shmenv.benchmarks import report

ACT = "emulation (ale.act)"
GRAY = "gray fetch (getScreenGrayscale)"
CHECKS = "lives / game_over checks"
RESET = "episode resets (reset)"
RESIZE = "resize (cv2.resize, INTER_AREA)"
MAXIMUM = "max of two frames (np.maximum)"
SHIFT = "stack shift + push (in place)"
GLUE = "Python glue (step logic, loop)"
CHUNK_STEPS = 100


def _play(game: Any, actions: np.ndarray) -> int:
    """The untouched game: ``step``, and ``reset`` after an episode ends."""
    resets = 0
    for action in actions:
        _r, terminated, truncated = game.step(int(action))
        if terminated or truncated:
            game.reset()
            resets += 1
    return resets


def _play_timed(game: Any, actions: np.ndarray, seconds: dict[str, float],
                calls: dict[str, int]) -> int:
    """The same episodes through the game's public pieces, each call timed (``seconds``)
    and counted (``calls``)."""
    import cv2

    clock = time.thread_time
    ale, opts, stack = game.ale, game.options, game.stack
    labml = opts.maxpool != "standard"
    height, width = ale.getScreenDims()
    gray = np.zeros((2, height, width), np.uint8)
    small = np.zeros((2, opts.height, opts.width), np.uint8)
    dsize = (opts.width, opts.height)
    episodic_life = opts.on_life_loss == "reset_game"
    first_kept = max(opts.frame_skip - 2, 0)
    one_kept = first_kept == opts.frame_skip - 1
    lives_at_reset = game.lives  # between steps, with the labml life rule, lives never dropped
    resets = 0
    for action in actions:
        ale_action = game.action_set[int(action)]
        done = False
        for frame in range(opts.frame_skip):
            t = clock()
            ale.act(ale_action)
            seconds[ACT] += clock() - t
            calls[ACT] += 1
            if frame >= first_kept:
                kept = frame - first_kept
                t = clock()
                ale.getScreenGrayscale(gray[kept])
                seconds[GRAY] += clock() - t
                calls[GRAY] += 1
                if labml:
                    t = clock()
                    cv2.resize(gray[kept], dsize, dst=small[kept], interpolation=cv2.INTER_AREA)
                    seconds[RESIZE] += clock() - t
                    calls[RESIZE] += 1
            t = clock()
            done = ale.game_over() or (episodic_life and ale.lives() < lives_at_reset)
            seconds[CHECKS] += clock() - t
            calls[CHECKS] += 1
            if done:
                break
        if done:
            t = clock()
            game.reset()
            lives_at_reset = game.lives
            seconds[RESET] += clock() - t
            calls[RESET] += 1
            resets += 1
            continue
        t = clock()
        stack[:-1] = stack[1:]
        if one_kept and labml:
            stack[-1] = small[0]
        seconds[SHIFT] += clock() - t
        calls[SHIFT] += 1
        if one_kept and not labml:
            t = clock()
            cv2.resize(gray[0], dsize, dst=stack[-1], interpolation=cv2.INTER_AREA)
            seconds[RESIZE] += clock() - t
            calls[RESIZE] += 1
        elif not one_kept:
            t = clock()
            if labml:
                np.maximum(small[0], small[1], out=stack[-1])
            else:
                np.maximum(gray[0], gray[1], out=gray[0])
            seconds[MAXIMUM] += clock() - t
            calls[MAXIMUM] += 1
            if not labml:
                t = clock()
                cv2.resize(gray[0], dsize, dst=stack[-1], interpolation=cv2.INTER_AREA)
                seconds[RESIZE] += clock() - t
                calls[RESIZE] += 1
    return resets


def stopwatch_cost(samples: int = 20_000) -> float:
    """Seconds an empty stopwatch reads: what each timed call's figure over-states."""
    clock = time.thread_time
    readings = []
    for _ in range(samples):
        t = clock()
        readings.append(clock() - t)
    return float(np.median(readings))


def run(game: str = "Breakout", steps: int = 3000, maxpool: str | None = None,
        seed: int = 47) -> dict:
    """Profile ``steps`` steps; ``maxpool`` None or "labml" keeps the default (the labml
    design), "standard" pools full screens before resizing."""
    import cv2

    from shmenv.atari import AtariGame
    from shmenv.games import GameOptions

    cv2.setNumThreads(1)
    chosen: dict[str, Any] = {} if maxpool in (None, "labml") else {"maxpool": maxpool}
    options = GameOptions(**chosen)
    plain, pieces = AtariGame(game, seed, options), AtariGame(game, seed, options)
    actions = np.random.default_rng(seed).integers(0, plain.num_actions, steps)
    warm = actions[: steps // 10]
    _play(plain, warm)  # warm caches
    _play(pieces, warm)

    # Alternate chunks of the two runs, so that a busy spell hits both alike.
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    total = timed_total = 0.0
    resets = timed_resets = 0
    for chunk in np.array_split(actions, max(steps // CHUNK_STEPS, 1)):
        start = time.thread_time()
        resets += _play(plain, chunk)
        middle = time.thread_time()
        timed_resets += _play_timed(pieces, chunk, seconds, calls)
        total += middle - start
        timed_total += time.thread_time() - middle
    matches = timed_resets == resets and np.array_equal(plain.stack, pieces.stack)

    empty = stopwatch_cost()
    phases = {phase: max(t - calls[phase] * empty, 0.0) for phase, t in seconds.items()}
    glue = total - sum(phases.values())
    phases[GLUE] = max(glue, 0.0)
    breakdown = [{"phase": phase, "us_per_step": 1e6 * t / steps, "share": t / total}
                 for phase, t in sorted(phases.items(), key=lambda kv: -kv[1])]
    return {"benchmark": "profile", "machine": report.machine_info(),
            "config": {"game": game, "steps": steps, "maxpool": maxpool or "labml",
                       "seed": seed},
            "cpu_us_per_step": 1e6 * total / steps,
            "timed_us_per_step": 1e6 * timed_total / steps,
            "resets_per_1000_steps": 1000 * resets / steps, "replica_matches": bool(matches),
            "stopwatch_us": 1e6 * empty, "glue_us_per_step": 1e6 * glue / steps,
            "phases": breakdown}


def tables(result: dict) -> list[report.Table]:
    rows = [[p["phase"], f"{p['us_per_step']:.1f}", f"{100 * p['share']:.0f} %"]
            for p in result["phases"]]
    cfg = result["config"]
    notes = [f"Untouched step: {result['cpu_us_per_step']:.0f} CPU µs "
             f"(piece by piece with stopwatches: {result['timed_us_per_step']:.0f}); "
             f"{result['resets_per_1000_steps']:.0f} resets per 1000 steps."]
    glue = result.get("glue_us_per_step", 0.0)
    if glue < 0:
        notes.append(f"The timed pieces add up to {-glue:.0f} µs more than the untouched step: "
                     "the stopwatches disturb what they time by about that much, so the "
                     "Python glue is below what this run can resolve.")
    if result.get("replica_matches") is False:
        notes.append("WARNING: the piece-by-piece replay ended on a different stack than "
                     "AtariGame.step: the breakdown does not describe the real step.")
    return [report.Table(f"One {cfg['game']} env-step, maxpool={cfg['maxpool']!r} "
                         f"({cfg['steps']} steps)", ["phase", "CPU µs per step", "share"],
                         rows, notes)]


def print_result(result: dict) -> None:
    report.print_tables(tables(result))
