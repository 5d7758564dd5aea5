"""Sweep every NoFrameskip-v4 Atari game: shmenv's paths against the reference, step by step.

The games are those gymnasium registers as ``<Game>NoFrameskip-v4`` once ale-py's envs are
registered. For each game, two seeded envs replay random actions through the in-process game,
the drop-in ``shmenv.Worker`` and ``shmenv.make`` with SAME_STEP and NEXT_STEP autoreset, and
every obs, reward, done and episode info is compared with the reference
(``shmenv.baseline.Game``); see :mod:`shmenv.exactness`. Writes a markdown table between the
sweep markers of docs/exactness.md.

    python bench/exact_sweep.py                     # every game, 3,000 steps (~15-20 min)
    python bench/exact_sweep.py --games Seaquest Breakout --steps 600 --no-docs
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from shmenv.exactness import compare_paths, registered_games, restore_check

# The in-process "game" path is what the drop-in worker runs; the sweep checks the paths
# users take.
PATHS = ("dropin", "vector-same", "vector-next")

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "exactness.md"
BEGIN, END = "<!-- sweep:begin -->", "<!-- sweep:end -->"


def _one(job: tuple[str, tuple[int, ...], int]) -> dict:
    game, seeds, steps = job
    started = time.perf_counter()
    result = compare_paths(game, seeds, steps, PATHS)
    # Many games end few episodes in a sweep: check the restore itself over short episodes.
    result["restore_check"] = restore_check(game, seeds[0], steps)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result), flush=True)
    return result


def table(results: list[dict], seeds: tuple[int, ...]) -> str:
    """The markdown table of the sweep, one row per game and path."""
    exact = sum(all(d is None for d in r["paths"].values()) for r in results)
    seeds_text = ", ".join(map(str, seeds))
    lines = [
        f"Sweep: {len(results)} games, {results[0]['steps'] if results else 0:,} random steps "
        f"per env, seeds {seeds_text} (one env each), ale-py "
        f"{_ale_version()}, Python {platform.python_version()}. "
        f"**{exact} / {len(results)} games exact on every path.** "
        "Episodes: episode ends in the reference's traces. Restore check: the forced "
        "restore against real resets, same actions, episodes cut at 1,200 frames "
        "(~10 resets per game); `reset_game` ROMs are expected to differ there.",
        "",
        "| game | steps | episodes | reset kind | " + " | ".join(PATHS)
        + " | restore check |",
        "|---|---:|---:|---|" + "---|" * (len(PATHS) + 1),
    ]
    for r in results:
        cells = ["equal" if r["paths"][p] is None else f"**{r['paths'][p]}**" for p in PATHS]
        check = r.get("restore_check", "not run")
        cells.append("equal" if check is None else
                     check if r["reset_kind"] == "reset_game" else f"**{check}**")
        lines.append(f"| {r['game']} | {r['steps']:,} | {r['episodes']} | "
                     f"`{r['reset_kind']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ale_version() -> str:
    import ale_py

    return ale_py.__version__


def write_docs(text: str) -> None:
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOC} has no {BEGIN} ... {END} markers to write the table between")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="*", help="default: every registered game")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[47, 48])
    parser.add_argument("--jobs", type=int, default=2, help="games compared at once")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--merge", type=Path,
                        help="results (--json) of an earlier sweep: rows of games not rerun "
                             "are kept from it")
    parser.add_argument("--no-docs", action="store_true", help="do not touch docs/exactness.md")
    args = parser.parse_args(argv)
    games = args.games or registered_games()
    seeds = tuple(args.seeds)
    print(f"{len(games)} games: {' '.join(games)}", flush=True)
    jobs = [(game, seeds, args.steps) for game in games]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(_one, jobs))
    if args.merge:
        rerun = {r["game"] for r in results}
        earlier = [r for r in json.loads(args.merge.read_text()) if r["game"] not in rerun]
        results = sorted(earlier + results, key=lambda r: r["game"])
    text = table(results, seeds)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.no_docs:
        write_docs(text)
    exact = all(d is None for r in results for d in r["paths"].values())
    restores_hold = all(r.get("restore_check") is None for r in results
                        if r["reset_kind"] == "restore")
    return 0 if exact and restores_hold else 1


if __name__ == "__main__":
    sys.exit(main())
