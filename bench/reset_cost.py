"""What a reset costs: ALE's ``reset_game()`` against the state restore, and what that does to
one env's steps/s, for a few games (a focused timing, ~1 min; not part of ``shmenv bench``).

Steps/s: medians of 6 interleaved 2,000-step runs per kind, the same actions each run.

    python bench/reset_cost.py [Breakout Seaquest ...]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from shmenv.atari import AtariGame
from shmenv.games import GameOptions

ROUNDS = 6


class _AlwaysRestore(AtariGame):
    """Takes the restore shortcut on every ROM: for timing only, it is not exact on all."""

    def _restore_is_exact(self) -> bool:
        return True


def reset_ms(game: AtariGame, repeats: int = 40) -> float:
    """Median wall time of one ``reset()`` after a step, in ms."""
    times = []
    for _ in range(repeats):
        game.step(0)
        started = time.perf_counter()
        game.reset()
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def steps_per_s(game: AtariGame, steps: int = 2000) -> tuple[float, int]:
    """Random-play env-steps/s of one in-process game (a done resets), and episode ends;
    the same actions every call, from a reseeded start."""
    game.reseed(1)
    game.reset()
    actions = np.random.default_rng(0).integers(0, game.num_actions, steps)
    ends = 0
    started = time.perf_counter()
    for action in actions:
        _, terminated, truncated = game.step(int(action))
        if terminated or truncated:
            game.reset()
            ends += 1
    return steps / (time.perf_counter() - started), ends


def main(games: list[str]) -> None:
    print("| game | reset kind | reset_game() ms | restore ms | env-steps/s as shipped "
          "| env-steps/s, restore forced | episode ends / 2,000 steps |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in games:
        ends = 0
        shipped = AtariGame(name, 1)
        real = reset_ms(AtariGame(name, 1, GameOptions(fast_reset=False)))
        restore = reset_ms(_AlwaysRestore(name, 1))
        contenders = {"shipped": AtariGame(name, 1), "forced": _AlwaysRestore(name, 1)}
        steps_per_s(contenders["shipped"], 300)  # warm up caches and the allocator
        rates: dict[str, list[float]] = {"shipped": [], "forced": []}
        for round_ in range(ROUNDS):  # interleaved, order alternating: load hits both alike
            order = list(contenders.items())
            for kind, game in order if round_ % 2 else order[::-1]:
                rate, game_ends = steps_per_s(game)
                rates[kind].append(rate)
                ends = game_ends if kind == "shipped" else ends
        rate, forced = (float(np.median(rates[k])) for k in ("shipped", "forced"))
        print(f"| {name} | `{shipped.reset_kind}` | {real:.2f} | {restore:.3f} | {rate:,.0f} "
              f"| {forced:,.0f} | {ends} |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["Breakout", "Seaquest", "Berzerk", "Qbert"])
