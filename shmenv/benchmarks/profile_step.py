"""Where one env-step's microseconds go (``shmenv bench profile``).

Runs shmenv's game core (:class:`shmenv.atari.AtariGame`, exactly the code a worker runs)
for ``steps`` random steps twice in this process: once plain, for the true CPU µs per step,
and once with stopwatches around the calls a step makes — ``ale.act`` (emulation),
``getScreenGrayscale`` (gray fetch), ``cv2.resize``, ``np.maximum``, the in-place stack
shift, ``restoreState`` (episode resets), the lives/game-over checks. The stopwatches read
this thread's CPU clock, so a busy machine does not inflate them; their own overhead (a
clock read is a system call) lands in "Python glue", which is the remainder. (cProfile
cannot do this: it does not see pybind11 methods or numpy ufuncs.)
The inter-process part of a step is measured by ``shmenv bench coordination``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from shmenv.benchmarks import report

ALE_PHASES = {
    "act": "emulation (ale.act)",
    "getScreenGrayscale": "gray fetch (getScreenGrayscale)",
    "restoreState": "episode resets (restoreState)",
    "lives": "lives / game_over checks",
    "game_over": "lives / game_over checks",
}
RESIZE = "resize (cv2.resize, INTER_AREA)"
MAXIMUM = "max of two frames (np.maximum)"
SHIFT = "stack shift + push (in place)"
GLUE = "Python glue (step logic, loop)"


class _Stopwatches:
    """Exclusive timers: time spent in a nested timed call is not counted twice."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._inner = [0.0]

    def wrap(self, phase: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._inner.append(0.0)
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - start
                inner = self._inner.pop()
                self.seconds[phase] += elapsed - inner
                self._inner[-1] += elapsed

        return timed


class _Proxy:
    """Forwards attribute access to ``target``, timing the named callables."""

    def __init__(self, target: Any, phases: dict[str, str], watches: _Stopwatches) -> None:
        self._target = target
        self._timed = {name: watches.wrap(phase, getattr(target, name))
                       for name, phase in phases.items()}

    def __getattr__(self, name: str) -> Any:
        return self._timed.get(name) or getattr(self._target, name)


def _play(game: Any, actions: np.ndarray) -> int:
    resets = 0
    for action in actions:
        _r, terminated, truncated = game.step(int(action))
        if terminated or truncated:
            game.reset()
            resets += 1
    return resets


def run(game: str = "Breakout", steps: int = 3000, maxpool: str = "seed",
        seed: int = 47) -> dict:
    import cv2

    import shmenv.atari as atari
    from shmenv.games import GameOptions

    cv2.setNumThreads(1)
    env = atari.AtariGame(game, seed, GameOptions(maxpool=maxpool))
    actions = np.random.default_rng(seed).integers(0, env.num_actions, steps)
    _play(env, actions[: steps // 10])  # warm caches

    cpu0 = time.process_time()
    resets = _play(env, actions)
    plain_us = 1e6 * (time.process_time() - cpu0) / steps

    watches = _Stopwatches()
    real_ale, real_cv2, real_np = env.ale, atari.cv2, atari.np
    env.ale = _Proxy(real_ale, ALE_PHASES, watches)
    atari.cv2 = _Proxy(real_cv2, {"resize": RESIZE}, watches)
    atari.np = _Proxy(real_np, {"maximum": MAXIMUM}, watches)
    env._push_pooled_frame = watches.wrap(SHIFT, env._push_pooled_frame)
    try:
        start = time.thread_time()
        _play(env, actions)
        total = time.thread_time() - start
    finally:
        env.ale, atari.cv2, atari.np = real_ale, real_cv2, real_np
        del env._push_pooled_frame
    phases = dict(watches.seconds)
    phases[GLUE] = max(total - sum(phases.values()), 0.0)
    breakdown = [{"phase": phase, "us_per_step": 1e6 * t / steps, "share": t / total}
                 for phase, t in sorted(phases.items(), key=lambda kv: -kv[1])]
    return {"benchmark": "profile", "machine": report.machine_info(),
            "config": {"game": game, "steps": steps, "maxpool": maxpool, "seed": seed},
            "cpu_us_per_step": plain_us, "timed_us_per_step": 1e6 * total / steps,
            "resets_per_1000_steps": 1000 * resets / steps, "phases": breakdown}


def print_result(result: dict) -> None:
    rows = [[p["phase"], f"{p['us_per_step']:.1f}", f"{100 * p['share']:.0f} %"]
            for p in result["phases"]]
    cfg = result["config"]
    report.print_table(
        f"One {cfg['game']} env-step, maxpool={cfg['maxpool']!r} ({cfg['steps']} steps)",
        ["phase", "µs per step", "share"], rows,
        f"Unprofiled: {result['cpu_us_per_step']:.0f} CPU µs per step "
        f"(with stopwatches: {result['timed_us_per_step']:.0f}); "
        f"{result['resets_per_1000_steps']:.0f} resets per 1000 steps.")
