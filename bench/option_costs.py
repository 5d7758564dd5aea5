"""What each Atari option costs where it touches the hot path, in ``shmenv bench`` terms.

Breakout, 8 envs, synchronous steps of the seeded random action stream; each variant is
shmenv's throughput contender (``shmenv.benchmarks.contenders.measure_shmenv``) with one
option changed, in its own subprocess, rounds interleaved so that load from elsewhere hits
every variant alike. Reported: medians of env-steps/s and of CPU µs per env-step (the main
process's, and all processes' together: the figure that depends least on the machine's
other load), each as a ratio to the defaults of the same run.

``writable obs`` hands out the shared block's writable array instead of its read-only
view (what shmenv did before views became read-only), to measure that flag's cost.

``--zero-cost`` runs the variants that touch the coordination path (the read-only view,
``copy``, ``reward_clip``) on :class:`shmenv.fakegames.NullGame` instead: with no emulation
in the way (and its noise), what is left per env-step is the vector env's own work, as in
``shmenv bench coordination``.

    python bench/option_costs.py [--rounds 3] [--seconds 3] [--num-envs 8] [--game Breakout]
    python bench/option_costs.py --zero-cost --num-envs 32
    python bench/option_costs.py --only reward_clip --rounds 8   # one option, more rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from shmenv.benchmarks.harness import Job, run_rounds

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults (read-only obs view)": {},
    "writable obs": {"writable_obs": True},
    "copy=True": {"options": {"copy": True}},
    "reward_clip=True": {"options": {"reward_clip": True}},
    "noop_max=30, fire_reset=True": {"options": {"noop_max": 30, "fire_reset": True}},
    'on_life_loss="end_episode"': {"options": {"on_life_loss": "end_episode"}},
    "gray_scale=False (RGB)": {"options": {"gray_scale": False}},
}


# The variants a zero-cost game can show: the others change only the emulation.
COORDINATION = ("defaults (read-only obs view)", "writable obs", "copy=True",
                "reward_clip=True")


def measure(game: str, num_envs: int, seconds: float, warmup: float, seed: int,
            options: dict[str, Any] | None = None, writable_obs: bool = False,
            zero_cost: bool = False) -> dict:
    """One variant, inside the measurement subprocess."""
    from shmenv.benchmarks.contenders import measure_shmenv

    if zero_cost:
        from shmenv.fakegames import NullGame

        options = {**(options or {}), "game_factory": NullGame}

    if writable_obs:
        from shmenv.block import SharedBlock

        original = SharedBlock.__init__

        def writable_init(self: SharedBlock, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            self.obs_readonly = self.obs

        SharedBlock.__init__ = writable_init  # type: ignore[method-assign]
    return measure_shmenv(game, num_envs, seconds, warmup, seed, options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--game", default="Breakout")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=47)
    parser.add_argument("--zero-cost", action="store_true",
                        help="the coordination-path variants on a zero-cost game")
    parser.add_argument("--only", metavar="A,B,...",
                        help="only the variants whose names start with these (the defaults "
                             "always run): e.g. --only reward_clip,writable")
    args = parser.parse_args()
    # The measurement subprocesses import this file as ``option_costs``.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    params = {"game": args.game, "num_envs": args.num_envs, "seconds": args.seconds,
              "warmup": args.warmup, "seed": args.seed, "zero_cost": args.zero_cost}
    names = COORDINATION if args.zero_cost else tuple(VARIANTS)
    if args.only:
        wanted = tuple(w.strip() for w in args.only.split(",") if w.strip())
        names = (names[0], *(n for n in names[1:] if n.startswith(wanted)))
    jobs = [Job(name, name, "option_costs:measure", {**params, **VARIANTS[name]})
            for name in names]
    measured = run_rounds(jobs, args.rounds, show_progress=sys.stderr.isatty(),
                          title="option costs")
    for name, error in measured.failures.items():
        print(f"{name}: failed: {error}", file=sys.stderr)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in measured.results[name])

    base = names[0]
    game = "zero-cost game" if args.zero_cost else args.game
    print(f"{game}, {args.num_envs} envs, {args.rounds} rounds x {args.seconds:g} s "
          f"(medians; ratio to the defaults of this run)")
    print("| variant | env-steps/s | × defaults | main CPU µs/step | all CPU µs/step "
          "| × defaults | env-steps/s per round |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        if name in measured.failures or not measured.results[name]:
            continue
        sps, cpu = median(name, "steps_per_s"), median(name, "total_cpu_us_per_step")
        runs = ", ".join(f"{r['steps_per_s']:,.0f}" for r in measured.results[name])
        print(f"| {name} | {sps:,.0f} | {sps / median(base, 'steps_per_s'):.2f} "
              f"| {median(name, 'cpu_us_per_step'):.1f} | {cpu:,.1f} "
              f"| {cpu / median(base, 'total_cpu_us_per_step'):.2f} | {runs} |")


if __name__ == "__main__":
    main()
